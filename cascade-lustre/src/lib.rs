//! The parallel-file-system tier of Cascade (`kind = "file"`, alias `"lustre"`).
//!
//! Blocks are appended to large segment files in one directory on Lustre, GPFS or any
//! POSIX filesystem, instead of one file per block, which drowns a parallel filesystem
//! in metadata operations. On Lustre (detected by the `statfs` magic `0x0BD00BD0`) new
//! segment files are striped with `lfs setstripe` (default 8 stripes of 4 MiB).
//!
//! # Layout
//!
//! A directory holds a format marker (`CASCADE-FILE-TIER`), and per writer: segment files
//! `<writer>.<number>.seg`, a delete log `<writer>.del` and a lock file `<writer>.lock`.
//! The writer id defaults to `<host>-<pid>`, so processes on many nodes can share one
//! directory; each appends only to its own segments and reads everyone's: as they were at
//! open, and again at each [`cascade_core::Tier::refresh`], which picks up what the others
//! stored, removed or compacted since (`docs/file-tier.md`, "Several writers, one
//! directory", has the rules and limits). Within a writer,
//! each writing thread appends to the segment of its own write lane (`write_lanes`), so
//! the blocks one thread writes stay contiguous and read back as one sequential stream;
//! `get_batch` reads each run of adjacent records with one call. A segment is a
//! header page, then records (a 64-byte header with magic, version, id, sequence, length
//! and xxh3-64 checksum, then the payload, padded to 4 KiB so every direct I/O is
//! aligned), and once sealed a footer listing its records, so that opening a directory
//! reads one footer per segment instead of every record header. See [`format`](mod@format).
//!
//! # Durability
//!
//! - Every `put`, `put_batch` and `remove` that returned has been written to the file
//!   (with `pwrite`, not into a user-space buffer), so it **survives a kill -9 of the
//!   process** without any flush: the kernel writes the page cache back on its own.
//!   A call still running when the process dies may be lost; it is then as if it never
//!   started (a torn record is cut off at the next open, with a warning in the log).
//! - [`cascade_core::Tier::flush`] fsyncs the segments being appended to, every segment sealed or
//!   written by compaction since the last flush, the delete log and the directory:
//!   after it returns, everything written so far also **survives a power loss or a
//!   kernel crash**. Without it, a power loss may lose recent writes and removals (a
//!   removal lost this way brings the block back).
//! - With `direct_io = true`, data bypasses the page cache but is still only durable
//!   against power loss after `flush` (the device's cache).
//!
//! # Recovery and damage
//!
//! Opening a directory loads each sealed segment's footer; a segment without a valid
//! footer (its writer crashed) is scanned record by record, skipping damaged pages, and
//! sealed if its writer is gone. The newest record of each id wins unless the delete log
//! of some writer killed it. A record whose bytes fail their checksum on a read is
//! reported [`cascade_core::ErrorKind::Corrupt`] and dropped; its bytes are never
//! returned. A directory or segment of another format version is refused with
//! [`cascade_core::ErrorKind::Incompatible`]. A full filesystem fails the put with an
//! I/O error and loses nothing stored before.
//!
//! # Space
//!
//! `capacity` bounds the bytes of live records (headers and padding included). Removed
//! and replaced records stay in their segment until compaction, which rewrites a sealed
//! segment once `compaction_threshold` of it is dead, on a background thread, without
//! blocking readers, and safely against a crash at any point (copy, fsync, then delete).

mod compact;
mod config;
mod deletes;
mod directory;
mod engine;
pub mod format;
mod io;
mod lane;
mod lend;
mod lustre;
mod readers;
mod recover;
mod refresh;
mod segment;
mod signal;
mod store;
mod tier;
mod uring;
mod uring_path;
mod verify;

pub use compact::CompactionReport;
pub use config::FileTierConfig;
pub use directory::FORMAT_FILE;
pub use engine::{EngineInUse, IoEngine, io_uring_available};
pub use io::{advise_sequential, drop_file_cache, drop_path_cache};
pub use lustre::{LUSTRE_SUPER_MAGIC, is_lustre};
pub use recover::OpenReport;
pub use tier::FileTier;
pub use verify::{DamagedBlock, VerifyReport};

/// The kind string of this tier in `[[tiers]]` entries.
pub const KIND: &str = "file";
/// Another accepted kind string for the same tier.
pub const ALIAS: &str = "lustre";

/// `kind = "file"` (alias `"lustre"`) in a `[[tiers]]` entry.
impl cascade_core::TierKind for FileTier {
    const KIND: &'static str = KIND;
    const ALIASES: &'static [&'static str] = &[ALIAS];
    type Config = FileTierConfig;

    fn open_kind(name: String, config: &FileTierConfig) -> cascade_core::Result<Self> {
        Self::open(name, config)
    }
}
