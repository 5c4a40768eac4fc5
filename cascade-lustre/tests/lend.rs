//! The file tier's batch lend (`get_with_batch`, the store's path into device memory):
//! a batch larger than one chunk is lent in several visits, every block exactly once
//! and with its stored bytes; a missing block is `NotFound`, a damaged one `Corrupt`
//! (and dropped, its bytes never lent); a visit's error lands on its own block.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns too

mod common;

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use cascade_core::config::ByteSize;
use cascade_core::conformance::random_block;
use cascade_core::{BlockId, Error, ErrorKind, Tier};
use cascade_lustre::format::HEADER_LEN;
use cascade_lustre::{FileTier, FileTierConfig, IoEngine};

/// One I/O thread: chunks of one 16 MiB run, so the 40 MiB batch below is three or more.
fn config(dir: &Path, engine: IoEngine, direct_io: bool) -> FileTierConfig {
    let mut config = FileTierConfig::new(dir);
    config.capacity = ByteSize::mib(256);
    config.segment_size = ByteSize::mib(16);
    config.io_threads = 1;
    config.io_engine = engine;
    config.direct_io = direct_io;
    config.writer_id = Some("lend".into());
    config.background_compaction = false;
    config
}

fn id(n: usize) -> BlockId {
    BlockId::from_u128(0x1e2d_0000 + n as u128)
}

/// Block `n`'s length: about 1 MiB, never a whole number of pages.
fn len_of(n: usize) -> usize {
    (1 << 20) + 777 * (n % 5)
}

/// Flips one payload byte of `block` in its segment file.
fn damage(tier: &FileTier, block: BlockId) {
    let (path, offset) = tier.location(block).unwrap();
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let at = offset + HEADER_LEN as u64 + 1000;
    let mut byte = [0u8];
    file.seek(SeekFrom::Start(at)).unwrap();
    file.read_exact(&mut byte).unwrap();
    file.seek(SeekFrom::Start(at)).unwrap();
    file.write_all(&[byte[0] ^ 0x40]).unwrap();
    file.sync_all().unwrap();
}

fn lends_a_large_batch_in_chunks(engine: IoEngine, direct_io: bool) {
    const BLOCKS: usize = 40;
    const DAMAGED: usize = 17;
    const REFUSED_BY_VISIT: usize = 23;
    let dir = tempfile::tempdir().unwrap();
    let tier = FileTier::open("file0", &config(dir.path(), engine, direct_io)).unwrap();
    let blocks: Vec<(BlockId, Vec<u8>)> = (0..BLOCKS)
        .map(|n| (id(n), random_block(n as u64, len_of(n))))
        .collect();
    let batch: Vec<(BlockId, &[u8])> = blocks.iter().map(|(i, b)| (*i, b.as_slice())).collect();
    assert!(tier.put_batch(&batch).iter().all(Result::is_ok));
    tier.flush().unwrap();
    damage(&tier, id(DAMAGED));
    tier.drop_page_cache().unwrap();

    // Asked in an order unlike the disk's, with one block never stored.
    let mut asked: Vec<usize> = (0..BLOCKS).rev().collect();
    asked.swap(3, 30);
    asked.push(BLOCKS + 1);
    let ids: Vec<BlockId> = asked.iter().map(|&n| id(n)).collect();
    let mut visits = 0;
    let mut lent: Vec<Option<Vec<u8>>> = vec![None; ids.len()];
    let results = tier.get_with_batch(&ids, &mut |given| {
        visits += 1;
        given
            .iter()
            .map(|&(position, bytes)| {
                assert!(lent[position].is_none(), "position {position} lent twice");
                lent[position] = Some(bytes.to_vec());
                if asked[position] == REFUSED_BY_VISIT {
                    Err(Error::new(ErrorKind::InvalidInput, "refused by the visit"))
                } else {
                    Ok(())
                }
            })
            .collect()
    });

    assert_eq!(results.len(), ids.len(), "one result per id");
    assert!(
        visits >= 3,
        "a 40 MiB batch in 16 MiB chunks took {visits} visits"
    );
    for (position, (&n, result)) in asked.iter().zip(&results).enumerate() {
        let kind = result.as_ref().err().map(Error::kind);
        match n {
            n if n >= BLOCKS => {
                assert_eq!(kind, Some(ErrorKind::NotFound), "block {n}");
                assert!(lent[position].is_none());
            }
            DAMAGED => {
                assert_eq!(kind, Some(ErrorKind::Corrupt), "block {n}: {result:?}");
                assert!(
                    lent[position].is_none(),
                    "a damaged block's bytes were lent"
                );
                assert!(!tier.contains(id(n)), "a damaged block is dropped");
            }
            REFUSED_BY_VISIT => {
                assert_eq!(kind, Some(ErrorKind::InvalidInput), "block {n}");
            }
            n => {
                assert!(result.is_ok(), "block {n}: {result:?}");
                assert!(
                    lent[position].as_deref() == Some(blocks[n].1.as_slice()),
                    "block {n}: the bytes lent differ from those stored"
                );
            }
        }
    }

    // The kept buffers serve the next lend with no stale bytes: a smaller batch lends
    // exactly its own blocks.
    let again = [id(2), id(5)];
    let mut second: Vec<(usize, Vec<u8>)> = Vec::new();
    let results = tier.get_with_batch(&again, &mut |given| {
        given
            .iter()
            .map(|&(position, bytes)| {
                second.push((position, bytes.to_vec()));
                Ok(())
            })
            .collect()
    });
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    second.sort_by_key(|(position, _)| *position);
    assert_eq!(second.len(), 2);
    assert!(second[0].1 == blocks[2].1 && second[1].1 == blocks[5].1);
}

fn buffered(engine: IoEngine) {
    lends_a_large_batch_in_chunks(engine, false);
}

fn direct(engine: IoEngine) {
    lends_a_large_batch_in_chunks(engine, true);
}

per_engine!(buffered, direct);

#[test]
fn an_empty_or_all_missing_batch_never_visits() {
    let dir = tempfile::tempdir().unwrap();
    let tier = FileTier::open("file0", &config(dir.path(), IoEngine::Psync, false)).unwrap();
    let mut visits = 0;
    assert!(
        tier.get_with_batch(&[], &mut |_| {
            visits += 1;
            Vec::new()
        })
        .is_empty()
    );
    let results = tier.get_with_batch(&[id(1), id(2)], &mut |given| {
        visits += 1;
        given.iter().map(|_| Ok(())).collect()
    });
    assert_eq!(visits, 0);
    assert!(
        results
            .iter()
            .all(|r| r.as_ref().err().map(Error::kind) == Some(ErrorKind::NotFound))
    );
}
