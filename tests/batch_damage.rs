//! A damaged block read through a batch get: the batch reports it `Corrupt` (not
//! missing), its neighbours come back intact, the store counts it and drops it, and a
//! later read is a plain miss. The file tier drops a block whose checksum fails as it
//! reads it, so the batch path must judge that failure itself.

use std::path::{Path, PathBuf};

use cascade::{BlockId, Cascade, CascadeConfig, ErrorKind, TierConfig};

const BLOCK: usize = 64 * 1024;
const BLOCKS: u64 = 8;
const DAMAGED: u64 = 3;

fn config(dir: &Path) -> CascadeConfig {
    CascadeConfig {
        promote_on_read: false,
        tiers: vec![
            TierConfig::new("file")
                .named("file")
                .with("path", dir.display().to_string())
                .with("capacity", "16 MiB"),
        ],
        ..CascadeConfig::default()
    }
}

fn block(n: u64) -> Vec<u8> {
    (0..BLOCK as u64)
        .map(|i| (i.wrapping_mul(2_654_435_761) ^ n.wrapping_mul(0x9E37_79B9)) as u8)
        .collect()
}

fn id(n: u64) -> BlockId {
    BlockId::from_u128(0xBAD0_0000 + u128::from(n))
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Flips one payload byte of block `n` where it lies in a segment file.
fn damage(dir: &Path, n: u64) {
    let needle = block(n);
    let needle = &needle[..256];
    for path in files_under(dir) {
        let mut bytes = std::fs::read(&path).expect("read segment");
        if let Some(at) = bytes.windows(needle.len()).position(|w| w == needle) {
            bytes[at + 100] ^= 0x40;
            std::fs::write(&path, &bytes).expect("write damaged segment");
            return;
        }
    }
    panic!(
        "block {n} was not found in any file under {}",
        dir.display()
    );
}

#[test]
fn a_corrupt_block_in_a_batch_is_reported_corrupt_and_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = Cascade::open(&config(dir.path())).expect("open");
        for n in 0..BLOCKS {
            store.put(id(n), &block(n)).expect("put");
        }
        store.flush().expect("flush");
    }
    damage(dir.path(), DAMAGED);

    let store = Cascade::open(&config(dir.path())).expect("reopen");
    let mut buffers: Vec<Vec<u8>> = (0..BLOCKS).map(|_| vec![0xAA; BLOCK]).collect();
    let mut items: Vec<(BlockId, &mut [u8])> = buffers
        .iter_mut()
        .enumerate()
        .map(|(n, b)| (id(n as u64), b.as_mut_slice()))
        .collect();
    let results = store.get_batch(&mut items);
    drop(items);
    for (n, result) in results.iter().enumerate() {
        let n = n as u64;
        if n == DAMAGED {
            let err = result.as_ref().expect_err("the damaged block must fail");
            assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
            let buf = &buffers[n as usize];
            assert!(
                buf.iter().all(|&b| b == 0) || buf.iter().all(|&b| b == 0xAA),
                "bytes of the damaged block were served"
            );
        } else {
            assert_eq!(*result.as_ref().expect("intact block"), Some(BLOCK));
            assert_eq!(buffers[n as usize], block(n), "block {n} bytes");
        }
    }
    let stats = store.stats();
    assert_eq!(stats.tiers[0].corrupt, 1, "{stats:?}");
    let mut out = vec![0u8; BLOCK];
    assert_eq!(
        store.get(id(DAMAGED), &mut out).expect("get after drop"),
        None
    );
    assert!(!store.contains(id(DAMAGED)));
}
