//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;

use cascade_core::config::ByteSize;
use cascade_shm::ShmTierConfig;

/// A fresh directory on /dev/shm (where tmpfs is), else under the system temp dir;
/// removed with everything in it when dropped.
pub fn pool_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let builder = tempfile::Builder::new().prefix("cascade-shm-test-").clone();
    if shm.is_dir() {
        builder.tempdir_in(shm).unwrap()
    } else {
        builder.tempdir().unwrap()
    }
}

/// A pool of `mib` MiB at `dir/pool`.
pub fn config(dir: &Path, mib: u64) -> ShmTierConfig {
    ShmTierConfig::new(dir.join("pool"), ByteSize::mib(mib))
}

/// A block whose bytes tell which id and version wrote it, so a reader can regenerate
/// and compare all of it: [id, version, len] then seeded random bytes.
pub fn tagged_block(id: u64, version: u64, len: usize) -> Vec<u8> {
    let mut data =
        cascade_core::conformance::random_block(id.wrapping_mul(1_000_003) ^ version, len.max(24));
    data[0..8].copy_from_slice(&id.to_le_bytes());
    data[8..16].copy_from_slice(&version.to_le_bytes());
    data[16..24].copy_from_slice(&(len.max(24) as u64).to_le_bytes());
    data
}

/// Checks a block read back against what its tag says was written; returns the version.
pub fn check_tagged(id: u64, bytes: &[u8]) -> u64 {
    assert!(bytes.len() >= 24, "block {id} shorter than its tag");
    let word = |i: usize| u64::from_le_bytes(bytes[8 * i..8 * i + 8].try_into().unwrap());
    assert_eq!(word(0), id, "block {id} holds another id's bytes");
    assert_eq!(
        word(2),
        bytes.len() as u64,
        "block {id} has the wrong length"
    );
    let want = tagged_block(id, word(1), bytes.len());
    assert!(
        want == bytes,
        "block {id} version {} differs from what was written",
        word(1)
    );
    word(1)
}
