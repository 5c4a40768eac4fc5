//! Shared-memory tier of Cascade: a pre-faulted mmap pool on `/dev/shm` that survives
//! restarts.
//!
//! [`ShmTier`] keeps blocks in one file mapped into memory, by default
//! `/dev/shm/cascade-<uid>-<tier name>.pool`. The file holds a header (magic, format
//! version, layout), a slot table (one record per block: id, extent, length, xxh3-64
//! checksum, commit word), and the data region, carved by
//! [`cascade_core::ExtentAllocator`]. Because the file outlives the process, a later
//! open finds every block committed before, verifies their checksums in parallel, and
//! drops whatever a crash left half-written. One process at a time may open a pool
//! (an advisory `flock`); a second opener gets [`cascade_core::ErrorKind::Busy`].
//!
//! Crash safety rests on the order of writes: a put copies the bytes into a free extent,
//! then its checksum and slot record are written, and the record's commit word last,
//! with release ordering. A process killed at any instant therefore leaves each block
//! committed with complete bytes, or uncommitted and ignored at the next open. By
//! default each put checksums and commits before it returns; with `background_commit =
//! true` a background thread does it and the caller only copies
//! ([`cascade_core::Tier::flush`] and a clean close wait for those commits). A file of another
//! format version, or a damaged header, is refused and left untouched.
//!
//! Figures (put and get against memcpy, open and reopen times) are in
//! `docs/benchmarks.md`, section "Shared-memory tier (cascade-shm)".
//!
//! The pool's data region is exposed through [`Tier::host_region`] so the GPU tier can
//! register it with CUDA and copy blocks without staging.
//!
//! ```no_run
//! use cascade_core::{BlockId, Tier, config::ByteSize};
//! use cascade_shm::{ShmTier, ShmTierConfig};
//!
//! let config = ShmTierConfig::new("/dev/shm/example.pool", ByteSize::mib(64));
//! let tier = ShmTier::open("shm0", &config)?;
//! tier.put(BlockId::from_u128(1), b"kv bytes")?;
//! let mut out = [0u8; 8];
//! assert_eq!(tier.get(BlockId::from_u128(1), &mut out)?, 8);
//! # Ok::<(), cascade_core::Error>(())
//! ```
//!
//! [`Tier::host_region`]: cascade_core::Tier::host_region

mod commit;
mod config;
mod layout;
mod pool;
mod recover;
mod slots;
mod tier;

pub use config::{DEFAULT_DIR, ShmTierConfig, default_path};
pub use layout::FORMAT_VERSION;
pub use tier::{KIND, ShmTier};

/// `kind = "shm"` in a `[[tiers]]` entry.
impl cascade_core::TierKind for ShmTier {
    const KIND: &'static str = KIND;
    type Config = ShmTierConfig;

    fn open_kind(name: String, config: &ShmTierConfig) -> cascade_core::Result<Self> {
        Self::open(name, config)
    }
}
