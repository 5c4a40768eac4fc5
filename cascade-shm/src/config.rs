//! Settings of a `shm` tier, read from its `[[tiers]]` entry.

use std::path::{Path, PathBuf};

use cascade_core::config::ByteSize;
use serde::Deserialize;

/// Settings of a `shm` tier.
///
/// ```toml
/// [[tiers]]
/// kind = "shm"
/// capacity = "8 GiB"
/// path = "/dev/shm/cascade-kv.pool"   # optional
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShmTierConfig {
    /// The pool file. Default: `/dev/shm/cascade-<uid>-<tier name>.pool`, so two users
    /// (and two shm tiers of one deployment) never share a file. Any file system works
    /// (`/tmp/cascade.pool` where `/dev/shm` is missing or small); on a disk-backed file
    /// system the pool survives reboots too, and `flush` writes it back.
    pub path: Option<PathBuf>,
    /// Bytes for blocks (the file is this plus a header and the slot table). Default:
    /// 1 GiB. Reopening a pool with another capacity is refused with the capacity it has.
    pub capacity: ByteSize,
    /// Map every page of the pool at open, in parallel, so that puts never take a page
    /// fault (a copy that faults on every page is several times slower than one into
    /// mapped pages).
    /// Default: true.
    pub prefault: bool,
    /// Most blocks the pool can hold at once (one slot-table entry each, 64 bytes).
    /// Default: one per 16 KiB of capacity, at least 1024.
    pub max_blocks: Option<u64>,
    /// Hash each put's bytes and commit its slot record on a background thread, so the
    /// caller's thread only copies. The block is readable at once; it becomes durable
    /// across a crash when committed, which [`cascade_core::Tier::flush`] and a clean
    /// close wait for (a process killed before then loses those puts: after reopen they
    /// are absent, never torn). When false, each put commits before it returns.
    /// Default: false: on this 2-core machine committing inside the put measured as fast
    /// or faster (the hand-off to the committer costs what the checksum saves), and a put
    /// that has returned then survives a crash.
    pub background_commit: bool,
    /// Verify each block's checksum on every read. Every block is verified when a pool
    /// is reopened; while it is open only this process writes it, through its
    /// allocator, so reads skip the check by default (it costs about a third of read
    /// bandwidth). Default: false.
    pub verify_on_read: bool,
}

impl Default for ShmTierConfig {
    fn default() -> Self {
        Self {
            path: None,
            capacity: ByteSize::gib(1),
            prefault: true,
            max_blocks: None,
            verify_on_read: false,
            background_commit: false,
        }
    }
}

/// Where the default pool lives.
pub const DEFAULT_DIR: &str = "/dev/shm";

/// Each slot-table entry stands for this much capacity unless `max_blocks` says otherwise.
const BYTES_PER_DEFAULT_SLOT: u64 = 16 << 10;
const MIN_DEFAULT_SLOTS: u64 = 1024;

impl ShmTierConfig {
    /// A config for a pool at `path` of `capacity` bytes, other settings default.
    pub fn new(path: impl Into<PathBuf>, capacity: ByteSize) -> Self {
        Self {
            path: Some(path.into()),
            capacity,
            ..Self::default()
        }
    }

    /// The pool file for the tier named `name`.
    pub fn resolved_path(&self, name: &str) -> PathBuf {
        match &self.path {
            Some(path) => path.clone(),
            None => default_path(Path::new(DEFAULT_DIR), name),
        }
    }

    /// The number of slots the pool gets.
    pub fn slot_count(&self) -> u64 {
        self.max_blocks.unwrap_or_else(|| {
            (self.capacity.as_u64() / BYTES_PER_DEFAULT_SLOT)
                .clamp(MIN_DEFAULT_SLOTS, u64::from(u32::MAX))
        })
    }
}

/// `<dir>/cascade-<uid>-<name>.pool`, with characters outside `[A-Za-z0-9._-]` in the
/// name replaced so a tier name can never escape `dir`.
pub fn default_path(dir: &Path, name: &str) -> PathBuf {
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join(format!("cascade-{uid}-{safe}.pool"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_per_user_and_per_tier() {
        let config = ShmTierConfig::default();
        let path = config.resolved_path("shm0");
        let text = path.to_string_lossy();
        assert!(text.starts_with("/dev/shm/cascade-"), "{text}");
        assert!(text.ends_with("-shm0.pool"), "{text}");
        assert_ne!(path, config.resolved_path("shm1"));
        assert!(config.prefault);
        assert_eq!(config.capacity, ByteSize::gib(1));
        assert_eq!(config.slot_count(), 65536);
    }

    #[test]
    fn tier_names_cannot_leave_the_directory() {
        let path = default_path(Path::new("/dev/shm"), "../../etc/x");
        assert_eq!(path.parent(), Some(Path::new("/dev/shm")));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let table: toml::Table = toml::from_str("capacity = \"64 MiB\"\nsize = 3").unwrap();
        let err = ShmTierConfig::deserialize(toml::Value::Table(table)).unwrap_err();
        assert!(err.to_string().contains("size"), "{err}");
    }

    #[test]
    fn sizes_parse_with_units() {
        let table: toml::Table =
            toml::from_str("capacity = \"64 MiB\"\npath = \"/tmp/p.pool\"\nprefault = false")
                .unwrap();
        let config = ShmTierConfig::deserialize(toml::Value::Table(table)).unwrap();
        assert_eq!(config.capacity, ByteSize::mib(64));
        assert_eq!(config.resolved_path("x"), PathBuf::from("/tmp/p.pool"));
        assert!(!config.prefault);
        assert_eq!(config.slot_count(), 4096);
    }
}
