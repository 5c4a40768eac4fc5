//! Cascade's `memory` tier as a runtime plugin: the smallest useful Rust plugin.
//!
//! ```toml
//! [[tiers]]
//! kind = "plugin"
//! path = "target/release/libcascade_plugin_memory.so"
//! [tiers.settings]
//! capacity = "1 GiB"   # the memory tier's own settings
//! prefault = false
//! ```
//!
//! The same tier compiled in and loaded as a plugin is what the plugin-boundary
//! benchmark compares (`cargo bench -p cascade-plugin-memory`).

use std::path::PathBuf;

use cascade_core::{MemoryTier, MemoryTierConfig, Result};

/// The plugin's name.
pub const NAME: &str = "memory-rs";

/// Builds the tier from the TOML text of its settings ([`MemoryTierConfig`]).
pub fn create(settings: &str) -> Result<MemoryTier> {
    let config: MemoryTierConfig = cascade_plugin_sdk::parse_settings(settings)?;
    MemoryTier::open(NAME, &config)
}

cascade_plugin_sdk::export_tier!(c"memory-rs", create);

/// Where cargo puts this plugin's cdylib for the program running now: next to the
/// `deps/` folder holding a test or bench executable (`target/<profile>/`), or next to
/// an executable built in `target/<profile>/` itself. `None` when it is not there.
pub fn built_library() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    let file = format!(
        "{}cascade_plugin_memory{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    );
    [dir.join(&file), dir.parent()?.join(&file)]
        .into_iter()
        .find(|candidate| candidate.is_file())
}
