//! Write Cascade tier plugins in Rust.
//!
//! Implement [`cascade_core::Tier`] as for a built-in tier, then export it from a crate
//! built as a `cdylib`:
//!
//! ```no_run
//! use cascade_core::{MemoryTier, MemoryTierConfig, Result};
//!
//! fn create(settings: &str) -> Result<MemoryTier> {
//!     let config: MemoryTierConfig = cascade_plugin_sdk::parse_settings(settings)?;
//!     MemoryTier::open("memory-plugin", &config)
//! }
//!
//! cascade_plugin_sdk::export_tier!(c"memory-rs", create);
//! ```
//!
//! The macro exports `cascade_plugin_entry` with a vtable whose every function catches
//! panics ([`std::panic::catch_unwind`]): a panic becomes [`Status::PLUGIN`] with the
//! panic message as the error text, and never unwinds into the host. Errors keep their
//! [`ErrorKind`](cascade_core::ErrorKind) across the boundary (see [`Status::from_kind`]),
//! and their full text (message and context) reaches the host's error.
//!
//! Build the plugin with unwinding (the default `panic = "unwind"`); with
//! `panic = "abort"` a panic ends the host process instead.

mod shim;

pub use cascade_core::plugin::abi::{self, Status, Vtable};
pub use shim::{Factory, SyncVtable};

use cascade_core::{Error, Result};
use serde::de::DeserializeOwned;

/// Parses the TOML text handed to `create` into a typed settings struct; a bad value is
/// an [`ErrorKind::Config`](cascade_core::ErrorKind::Config) error naming the field.
pub fn parse_settings<T: DeserializeOwned>(settings: &str) -> Result<T> {
    toml::from_str(settings).map_err(|e| Error::config(format!("invalid plugin settings: {e}")))
}

/// Finds the cdylib `lib<lib_name>.so` that cargo built for the program running now:
/// beside a test or bench executable (in `target/<profile>/deps/`) or one folder up
/// (`target/<profile>/`). Plugin crates use it in their tests and benches, which cargo
/// builds after the package's cdylib. `None` when it is in neither place.
pub fn find_built_cdylib(lib_name: &str) -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    let file = format!(
        "{}{lib_name}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    );
    [dir.join(&file), dir.parent()?.join(&file)]
        .into_iter()
        .find(|candidate| candidate.is_file())
}

/// Exports a tier type as a Cascade plugin.
///
/// `$name` is the plugin's name as a C string literal (`c"redis"`); `$create` is a
/// function or closure `fn(&str) -> cascade_core::Result<T>` with `T: Tier + 'static`,
/// called with the TOML text of the tier's settings. Invoke once per `cdylib`.
#[macro_export]
macro_rules! export_tier {
    ($name:expr, $create:expr) => {
        #[doc(hidden)]
        pub struct __CascadePluginFactory;

        impl $crate::Factory for __CascadePluginFactory {
            const NAME: &'static ::std::ffi::CStr = $name;

            fn create(
                settings: &str,
            ) -> ::cascade_core::Result<::std::boxed::Box<dyn ::cascade_core::Tier>> {
                let create = $create;
                let tier = create(settings)?;
                ::std::result::Result::Ok(::std::boxed::Box::new(tier))
            }
        }

        #[doc(hidden)]
        pub static __CASCADE_PLUGIN_VTABLE: $crate::SyncVtable =
            $crate::SyncVtable::new::<__CascadePluginFactory>();

        /// The plugin's entry point (see `cascade-plugin.h`).
        #[unsafe(no_mangle)]
        pub extern "C" fn cascade_plugin_entry() -> *const $crate::Vtable {
            __CASCADE_PLUGIN_VTABLE.as_ptr()
        }
    };
}
