//! Settings of the Redis tier (the `[tiers.settings]` table of its `[[tiers]]` entry).

use cascade_core::config::ByteSize;
use serde::Deserialize;

/// Settings of a Redis tier.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisTierConfig {
    /// Server address, `redis://[user:password@]host:port[/db]`.
    /// Default: `"redis://127.0.0.1:6379"`.
    pub url: String,
    /// Namespace of every key this tier writes. Nodes configured with the same server
    /// and prefix share one tier: one set of blocks and one capacity count.
    /// Default: `"cascade"`.
    pub prefix: String,
    /// Payload bytes the tier may hold, counted in the server across all nodes sharing
    /// the prefix (Redis's own per-key overhead is not counted). Nodes sharing a prefix
    /// should configure the same value. Default: 1 GiB.
    pub capacity: ByteSize,
    /// Largest block accepted. Default: 256 MiB (Redis strings stop at 512 MB).
    pub max_block_size: ByteSize,
    /// Connections kept open to the server; calls beyond this many at once wait.
    /// Default: 16.
    pub pool_size: u32,
    /// Seconds to wait for a connection (at open and when the pool is exhausted).
    /// Default: 5.
    pub connect_timeout_secs: u64,
    /// How long `used()` may answer from this node's last known figure before asking
    /// the server again, in milliseconds. The store asks `used()` on every put, and a
    /// fresh answer costs a round trip; this node's own puts and removes update the
    /// figure as they go, so only other nodes' writes are seen late (the server still
    /// enforces the capacity exactly). 0 asks every time. Default: 100.
    pub used_refresh_ms: u64,
}

impl Default for RedisTierConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            prefix: "cascade".into(),
            capacity: ByteSize::gib(1),
            max_block_size: ByteSize::mib(256),
            pool_size: 16,
            connect_timeout_secs: 5,
            used_refresh_ms: 100,
        }
    }
}
