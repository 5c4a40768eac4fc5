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

/// This plugin's cdylib as cargo built it for the running test or bench (see
/// [`cascade_plugin_sdk::find_built_cdylib`]).
pub fn built_library() -> Option<PathBuf> {
    cascade_plugin_sdk::find_built_cdylib("cascade_plugin_memory")
}
