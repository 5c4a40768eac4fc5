//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;
use std::sync::OnceLock;

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

/// Random bytes every tagged block is cut from, made once per process.
fn source() -> &'static [u8] {
    static SOURCE: OnceLock<Vec<u8>> = OnceLock::new();
    SOURCE.get_or_init(|| cascade_core::conformance::random_block(0xC0FFEE, 3 << 20))
}

/// Longest block [`tagged_block`] makes.
pub const MAX_TAGGED: usize = 2 << 20;

/// Writes a block whose bytes tell which id and version wrote it, so a reader can
/// regenerate and compare all of it: [id, version, len], then bytes cut from a shared
/// random source at an offset that depends on the id and version.
pub fn fill_tagged(id: u64, version: u64, out: &mut [u8]) {
    assert!(
        (24..=MAX_TAGGED).contains(&out.len()),
        "tagged blocks are 24 bytes to 2 MiB"
    );
    out[0..8].copy_from_slice(&id.to_le_bytes());
    out[8..16].copy_from_slice(&version.to_le_bytes());
    let total = out.len() as u64;
    out[16..24].copy_from_slice(&total.to_le_bytes());
    let start = (id
        .wrapping_mul(7919)
        .wrapping_add(version.wrapping_mul(104_729))
        % (1 << 20)) as usize;
    let len = out.len() - 24;
    out[24..].copy_from_slice(&source()[start..start + len]);
}

/// A tagged block of `len` bytes (at least 24).
pub fn tagged_block(id: u64, version: u64, len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len.max(24)];
    fill_tagged(id, version, &mut data);
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
