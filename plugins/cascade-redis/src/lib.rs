//! A Cascade tier over Redis or Valkey, built as a runtime plugin.
//!
//! Several nodes naming the same server and `prefix` share one tier: the blocks, their
//! lengths and the capacity count live in the server, and every put or remove updates
//! them in one server-side Lua script, so `used` never passes `capacity` however many
//! nodes write at once. Each block carries an xxh3-64 checksum that is verified on every
//! read; a block failing it is dropped and reported as corrupt.
//!
//! ```toml
//! [[tiers]]
//! kind = "plugin"
//! path = "/opt/cascade/plugins/libcascade_redis.so"
//! [tiers.settings]
//! url = "redis://10.0.0.5:6379"
//! prefix = "cluster-a"
//! capacity = "64 GiB"
//! ```
//!
//! Build: `cargo build --release -p cascade-redis` gives
//! `target/release/libcascade_redis.so`. Settings: [`RedisTierConfig`].

mod config;
mod scripts;
mod tier;

pub use config::RedisTierConfig;
pub use tier::RedisTier;

/// The plugin's name, and the `kind` its tiers report.
pub const NAME: &str = "redis";

/// Builds the tier from the TOML text of its settings.
pub fn create(settings: &str) -> cascade_core::Result<RedisTier> {
    let config: RedisTierConfig = cascade_plugin_sdk::parse_settings(settings)?;
    RedisTier::open(NAME, config)
}

cascade_plugin_sdk::export_tier!(c"redis", create);

/// This plugin's cdylib as cargo built it for the running test or bench.
pub fn built_library() -> Option<std::path::PathBuf> {
    cascade_plugin_sdk::find_built_cdylib("cascade_redis")
}
