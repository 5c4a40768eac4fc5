//! Behaviour of the shm tier beyond the conformance kit: restart, locking, refusal of
//! foreign or damaged files, bad locations, integrity, direct access, threads.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns too

mod common;

use std::os::unix::fs::{FileExt, PermissionsExt};
use std::sync::Arc;

use cascade_core::config::ByteSize;
use cascade_core::{BlockId, ErrorKind, Tier};
use cascade_shm::{ShmTier, ShmTierConfig};
use common::{check_tagged, config, pool_dir, tagged_block};

fn id(n: u64) -> BlockId {
    BlockId::from_u128(u128::from(n) + 1)
}

#[test]
fn write_drop_reopen_reads_every_block() {
    let dir = pool_dir();
    let config = config(dir.path(), 16);
    let sizes = [1usize, 24, 4095, 4096, 4097, 100_000, 1 << 20];
    let used = {
        let tier = ShmTier::open("shm0", &config).unwrap();
        for (n, &len) in sizes.iter().enumerate() {
            tier.put(id(n as u64), &tagged_block(n as u64, 1, len))
                .unwrap();
        }
        // A replaced id and a removed one must come back as the latest state.
        tier.put(id(0), &tagged_block(0, 2, 5000)).unwrap();
        tier.put(id(100), &tagged_block(100, 1, 3000)).unwrap();
        assert!(tier.remove(id(100)).unwrap());
        tier.used()
    };
    let mode = std::fs::metadata(config.path.as_ref().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the pool is private to its user");
    let tier = ShmTier::open("shm0", &config).unwrap();
    assert_eq!(tier.recovered_blocks(), sizes.len());
    assert_eq!(tier.dropped_at_open(), 0);
    assert_eq!(tier.used(), used, "the allocator is rebuilt exactly");
    assert!(!tier.contains(id(100)));
    for n in 0..sizes.len() as u64 {
        let len = tier.len_of(id(n)).unwrap() as usize;
        let mut out = vec![0u8; len];
        assert_eq!(tier.get(id(n), &mut out).unwrap(), len);
        let version = check_tagged(n, &out);
        assert_eq!(version, if n == 0 { 2 } else { 1 });
    }
    // New puts after reopen never land on recovered bytes.
    for n in 200..220u64 {
        tier.put(id(n), &tagged_block(n, 1, 50_000)).unwrap();
    }
    for n in (0..sizes.len() as u64).chain(200..220) {
        tier.get_with(id(n), &mut |bytes| {
            check_tagged(n, bytes);
            Ok(())
        })
        .unwrap();
    }
}

#[test]
fn second_opener_gets_busy_until_the_first_closes() {
    let dir = pool_dir();
    let config = config(dir.path(), 4);
    let first = ShmTier::open("shm0", &config).unwrap();
    first.put(id(1), b"held").unwrap();
    let err = ShmTier::open("shm0", &config).err().unwrap();
    assert_eq!(err.kind(), ErrorKind::Busy, "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&config.path.clone().unwrap().display().to_string()),
        "{text}"
    );
    assert!(
        first.contains(id(1)),
        "the refused opener did not disturb the pool"
    );
    drop(first);
    let second = ShmTier::open("shm0", &config).unwrap();
    assert!(second.contains(id(1)));
}

fn refused_untouched(mutate: impl Fn(&mut Vec<u8>), want: ErrorKind) {
    let dir = pool_dir();
    let config = config(dir.path(), 4);
    let path = config.path.clone().unwrap();
    {
        let tier = ShmTier::open("shm0", &config).unwrap();
        tier.put(id(1), &tagged_block(1, 1, 10_000)).unwrap();
    }
    let mut bytes = std::fs::read(&path).unwrap();
    mutate(&mut bytes);
    std::fs::write(&path, &bytes).unwrap();
    let err = ShmTier::open("shm0", &config).err().unwrap();
    assert_eq!(err.kind(), want, "{err}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    assert!(
        std::fs::read(&path).unwrap() == bytes,
        "a refused pool file must be left untouched"
    );
}

#[test]
fn another_format_version_is_refused_and_left_untouched() {
    refused_untouched(|b| b[8] = 2, ErrorKind::Incompatible);
}

#[test]
fn a_foreign_file_is_refused_and_left_untouched() {
    refused_untouched(
        |b| b[..8].copy_from_slice(b"GGUF\0\0\0\0"),
        ErrorKind::Incompatible,
    );
}

#[test]
fn a_damaged_header_is_refused_and_left_untouched() {
    refused_untouched(|b| b[40] ^= 0x10, ErrorKind::Corrupt);
    refused_untouched(|b| b.truncate(b.len() - 4096), ErrorKind::Corrupt);
}

#[test]
fn reopening_with_another_capacity_is_refused_with_the_pools_size() {
    let dir = pool_dir();
    let small = config(dir.path(), 4);
    drop(ShmTier::open("shm0", &small).unwrap());
    let before = std::fs::read(small.path.as_ref().unwrap()).unwrap();
    let bigger = config(dir.path(), 8);
    let err = ShmTier::open("shm0", &bigger).err().unwrap();
    assert_eq!(err.kind(), ErrorKind::Incompatible, "{err}");
    assert!(err.to_string().contains(&(4u64 << 20).to_string()), "{err}");
    assert!(std::fs::read(small.path.as_ref().unwrap()).unwrap() == before);
}

#[test]
fn missing_directory_names_the_path_and_suggests_another() {
    let dir = pool_dir();
    let config = ShmTierConfig::new(dir.path().join("no/such/dir/pool"), ByteSize::mib(4));
    let err = ShmTier::open("shm0", &config).err().unwrap();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    let text = err.to_string();
    assert!(text.contains("no/such/dir/pool"), "{text}");
    assert!(text.contains("path = "), "{text}");
}

#[test]
fn a_pool_larger_than_the_file_system_names_the_sizes_and_leaves_no_file() {
    let dir = pool_dir();
    let config = ShmTierConfig::new(dir.path().join("pool"), ByteSize(1 << 44));
    let err = ShmTier::open("shm0", &config).err().unwrap();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("need_bytes") && text.contains("available_bytes"),
        "{text}"
    );
    assert!(text.contains("path = "), "{text}");
    assert!(
        !dir.path().join("pool").exists(),
        "a refused new pool leaves no file"
    );
}

#[test]
fn bad_settings_are_config_errors() {
    let dir = pool_dir();
    let tiny = ShmTierConfig::new(dir.path().join("pool"), ByteSize(100));
    assert_eq!(
        ShmTier::open("shm0", &tiny).err().unwrap().kind(),
        ErrorKind::Config
    );
    let mut no_slots = config(dir.path(), 4);
    no_slots.max_blocks = Some(0);
    assert_eq!(
        ShmTier::open("shm0", &no_slots).err().unwrap().kind(),
        ErrorKind::Config
    );
}

/// Flips one byte of block `n`'s payload through a second descriptor, as a stray writer
/// (or bad memory) would.
fn corrupt_payload(tier: &ShmTier, path: &std::path::Path, n: u64) {
    let region = tier.host_region().unwrap();
    let mut ptr = std::ptr::null();
    tier.get_with(id(n), &mut |bytes| {
        ptr = bytes.as_ptr();
        Ok(())
    })
    .unwrap();
    let data_offset = std::fs::metadata(path).unwrap().len() - region.len as u64;
    let offset = data_offset + (ptr as u64 - region.base as u64) + 100;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset).unwrap();
    file.write_all_at(&[byte[0] ^ 0xFF], offset).unwrap();
}

#[test]
fn damaged_bytes_are_never_served() {
    let dir = pool_dir();
    let mut config = config(dir.path(), 4);
    let path = config.path.clone().unwrap();
    {
        let tier = ShmTier::open("shm0", &config).unwrap();
        for n in 0..4 {
            tier.put(id(n), &tagged_block(n, 1, 8192)).unwrap();
        }
        // Damage after the checksums are stored (a background commit would otherwise
        // checksum the damaged bytes).
        tier.wait_committed();
        corrupt_payload(&tier, &path, 1);
    }
    // Reopen verifies every block: the damaged one is dropped, the rest kept.
    config.verify_on_read = true;
    let tier = ShmTier::open("shm0", &config).unwrap();
    assert_eq!(tier.dropped_at_open(), 1);
    assert!(!tier.contains(id(1)));
    for n in [0, 2, 3] {
        let mut out = vec![0u8; 8192];
        tier.get(id(n), &mut out).unwrap();
        check_tagged(n, &out);
    }
    // With verify_on_read, damage while open is caught at the next read.
    corrupt_payload(&tier, &path, 2);
    let err = tier.get(id(2), &mut vec![0u8; 8192]).err().unwrap();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(
        !tier.contains(id(2)),
        "a block failing its checksum is dropped"
    );
}

#[test]
fn a_checked_lend_hands_the_write_time_checksum_not_one_of_damaged_bytes() {
    let dir = pool_dir();
    let config = config(dir.path(), 4);
    let path = config.path.clone().unwrap();
    let tier = ShmTier::open("shm0", &config).unwrap();
    for n in 0..3 {
        tier.put(id(n), &tagged_block(n, 1, 8192)).unwrap();
    }
    tier.wait_committed();
    corrupt_payload(&tier, &path, 1);
    let ids = [id(0), id(1), id(2), id(9)];
    let mut seen = Vec::new();
    let results = tier.get_with_batch_checked(&ids, &mut |lent| {
        for &(i, bytes, stored) in lent {
            seen.push((i, cascade_hash::checksum(bytes), stored));
        }
        vec![Ok(()); lent.len()]
    });
    assert!(results[..3].iter().all(Result::is_ok), "{results:?}");
    assert_eq!(
        results[3].as_ref().err().map(|e| e.kind()),
        Some(ErrorKind::NotFound)
    );
    seen.sort_by_key(|&(i, _, _)| i);
    assert_eq!(seen.len(), 3, "only stored blocks are lent");
    for (i, now, stored) in seen {
        let stored = stored.expect("the shm tier keeps a checksum for every committed block");
        if i == 1 {
            assert_ne!(
                stored, now,
                "the damaged block carries its write-time checksum"
            );
        } else {
            assert_eq!(
                stored, now,
                "an intact block's stored checksum is its bytes' hash"
            );
        }
    }
}

#[test]
fn get_with_lends_bytes_inside_the_host_region_and_put_with_writes_in_place() {
    let dir = pool_dir();
    let tier = ShmTier::open("shm0", &config(dir.path(), 4)).unwrap();
    let region = tier.host_region().unwrap();
    assert_eq!(region.len as u64, tier.capacity());
    assert_eq!(region.base as usize % 4096, 0);
    let want = tagged_block(7, 1, 20_000);
    tier.put_with(id(7), want.len(), &mut |target| {
        assert!(target.as_ptr() as usize >= region.base as usize);
        target.copy_from_slice(&want);
        Ok(())
    })
    .unwrap();
    tier.get_with(id(7), &mut |bytes| {
        let start = bytes.as_ptr() as usize;
        assert!(
            start >= region.base as usize
                && start + bytes.len() <= region.base as usize + region.len
        );
        assert!(bytes == want.as_slice());
        Ok(())
    })
    .unwrap();
    // A failing fill leaves nothing behind.
    let used = tier.used();
    let err = tier
        .put_with(id(8), 4096, &mut |_| {
            Err(cascade_core::Error::new(ErrorKind::Io, "source gone"))
        })
        .err()
        .unwrap();
    assert_eq!(err.kind(), ErrorKind::Io);
    assert!(!tier.contains(id(8)));
    assert_eq!(tier.used(), used);
}

#[test]
fn slot_exhaustion_is_tier_full() {
    let dir = pool_dir();
    let mut config = config(dir.path(), 4);
    config.max_blocks = Some(3);
    let tier = ShmTier::open("shm0", &config).unwrap();
    for n in 0..3 {
        tier.put(id(n), b"x").unwrap();
    }
    let err = tier.put(id(3), b"x").err().unwrap();
    assert_eq!(err.kind(), ErrorKind::TierFull, "{err}");
    tier.remove(id(0)).unwrap();
    tier.put(id(3), b"x").unwrap();
}

#[test]
fn many_threads_then_reopen_agree() {
    let dir = pool_dir();
    let config = config(dir.path(), 16);
    let tier = Arc::new(ShmTier::open("shm0", &config).unwrap());
    std::thread::scope(|scope| {
        for t in 0..6u64 {
            let tier = Arc::clone(&tier);
            scope.spawn(move || {
                for round in 0..40u64 {
                    // Threads share ids 0..20 (replacing each other's blocks) and own others.
                    let n = if round % 2 == 0 {
                        round % 20
                    } else {
                        1000 + t * 100 + round
                    };
                    let len = 1000 + ((t * 7919 + round * 104_729) % 60_000) as usize;
                    let data = tagged_block(n, t * 1000 + round, len);
                    tier.put(id(n), &data).unwrap();
                    let _ = tier.get_with(id(n), &mut |bytes| {
                        check_tagged(n, bytes);
                        Ok(())
                    });
                    if round % 5 == 4 {
                        tier.remove(id(n)).unwrap();
                    }
                    assert!(tier.used() <= tier.capacity());
                }
            });
        }
    });
    let mut before = tier.ids();
    before.sort();
    let used: u64 = before
        .iter()
        .map(|(_, len)| len.div_ceil(4096) * 4096)
        .sum();
    assert_eq!(
        tier.used(),
        used,
        "used() is the sum of the rounded blocks held"
    );
    drop(tier);
    let tier = ShmTier::open("shm0", &config).unwrap();
    let mut after = tier.ids();
    after.sort();
    assert_eq!(before, after);
    assert_eq!(tier.dropped_at_open(), 0);
    for (block, len) in after {
        let mut out = vec![0u8; len as usize];
        tier.get(block, &mut out).unwrap();
        check_tagged(block.as_u128() as u64 - 1, &out);
    }
}

#[test]
fn stats_report_fragmentation_and_slots() {
    let dir = pool_dir();
    let tier = ShmTier::open("shm0", &config(dir.path(), 4)).unwrap();
    let stat = |name: &str| {
        tier.extra_stats()
            .into_iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value)
            .unwrap()
    };
    for n in 0..8 {
        tier.put(id(n), &vec![n as u8; 64 * 1024]).unwrap();
    }
    assert_eq!(stat("fragmentation"), 0.0);
    assert_eq!(stat("slots_used"), 8.0);
    // Every other block removed: the free space is split into holes.
    for n in (0..8).step_by(2) {
        tier.remove(id(n)).unwrap();
    }
    assert!(stat("fragmentation") > 0.0);
    assert_eq!(stat("slots_used"), 4.0);
    assert_eq!(tier.used(), 4 * 64 * 1024);
}

/// A batch large enough to be hashed on the pool before it is published: every block's
/// stored checksum is its own (a reopen that verifies keeps all of them, and later damage
/// to one is caught by that block's checksum alone).
#[test]
fn a_large_batch_is_filled_in_chunks_and_keeps_only_what_its_fill_wrote() {
    let dir = pool_dir();
    let mut config = config(dir.path(), 64);
    config.verify_on_read = true;
    // 24 blocks of 512 KiB: 12 MiB, filled in chunks while earlier chunks are hashed.
    let len = 512 << 10;
    let items: Vec<(BlockId, usize)> = (0..24).map(|n| (id(n), len)).collect();
    let refused = [3usize, 17];
    let (used, calls) = {
        let tier = ShmTier::open("shm0", &config).unwrap();
        let mut calls = 0;
        let mut seen = Vec::new();
        let results = tier.put_with_batch(&items, &mut |targets| {
            calls += 1;
            targets
                .iter_mut()
                .map(|(i, out)| {
                    seen.push(*i);
                    if refused.contains(i) {
                        return Err(cascade_core::Error::new(
                            ErrorKind::InvalidInput,
                            "refused by the fill",
                        ));
                    }
                    out.copy_from_slice(&tagged_block(*i as u64, 1, out.len()));
                    Ok(())
                })
                .collect()
        });
        seen.sort_unstable();
        assert_eq!(
            seen,
            (0..24).collect::<Vec<_>>(),
            "each buffer handed out once"
        );
        for (n, result) in results.iter().enumerate() {
            assert_eq!(result.is_err(), refused.contains(&n), "{n}: {result:?}");
        }
        for n in 0..24u64 {
            assert_eq!(tier.contains(id(n)), !refused.contains(&(n as usize)));
        }
        (tier.used(), calls)
    };
    assert!(calls > 1, "a 12 MiB batch is filled in more than one call");
    let tier = ShmTier::open("shm0", &config).unwrap();
    assert_eq!(tier.recovered_blocks(), 22);
    assert_eq!(
        tier.dropped_at_open(),
        0,
        "every block was committed with its checksum"
    );
    assert_eq!(tier.used(), used, "refused items gave their room back");
    for n in (0..24u64).filter(|n| !refused.contains(&(*n as usize))) {
        let mut out = vec![0u8; len];
        assert_eq!(tier.get(id(n), &mut out).unwrap(), len);
        check_tagged(n, &out);
    }
}

#[test]
fn a_large_batch_is_checksummed_block_by_block() {
    let dir = pool_dir();
    let mut config = config(dir.path(), 64);
    config.verify_on_read = true;
    let path = config.path.clone().unwrap();
    let sizes: Vec<usize> = (0..24).map(|n| (1 << 20) + n * 4099).collect();
    {
        let tier = ShmTier::open("shm0", &config).unwrap();
        let items: Vec<(BlockId, usize)> = sizes
            .iter()
            .enumerate()
            .map(|(n, &len)| (id(n as u64), len))
            .collect();
        let results = tier.put_with_batch(&items, &mut |targets| {
            targets
                .iter_mut()
                .map(|(i, out)| {
                    out.copy_from_slice(&tagged_block(*i as u64, 1, out.len()));
                    Ok(())
                })
                .collect()
        });
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        tier.wait_committed();
    }
    let tier = ShmTier::open("shm0", &config).unwrap();
    assert_eq!(tier.recovered_blocks(), sizes.len());
    assert_eq!(
        tier.dropped_at_open(),
        0,
        "every stored checksum matches its block"
    );
    for (n, &len) in sizes.iter().enumerate() {
        let mut out = vec![0u8; len];
        assert_eq!(tier.get(id(n as u64), &mut out).unwrap(), len);
        check_tagged(n as u64, &out);
    }
    corrupt_payload(&tier, &path, 7);
    let err = tier.get(id(7), &mut vec![0u8; sizes[7]]).err().unwrap();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    for n in [6u64, 8] {
        let mut out = vec![0u8; sizes[n as usize]];
        tier.get(id(n), &mut out).unwrap();
        check_tagged(n, &out);
    }
}

/// Stores `items` with `put_with_batch_checked`, each block tagged by its position; the
/// fill hands `checksum(position, bytes)` with it.
fn put_checked(
    tier: &ShmTier,
    items: &[(BlockId, usize)],
    checksum: impl Fn(usize, &[u8]) -> Option<u64>,
) -> Vec<cascade_core::Result<()>> {
    tier.put_with_batch_checked(items, &mut |targets| {
        targets
            .iter_mut()
            .map(|(i, out)| {
                out.copy_from_slice(&tagged_block(*i as u64, 1, out.len()));
                Ok(checksum(*i, out))
            })
            .collect()
    })
}

/// Checksums a batch fill hands (as the GPU computes them) are stored as the tier's
/// own: small and pipelined batches, every checksum known or only some, with and
/// without a background committer; a reopen verifies every block against them.
#[test]
fn checksums_from_the_fill_are_stored_and_verified_on_reopen() {
    for background_commit in [false, true] {
        // 4 blocks of 64 KiB (one call), 24 of 512 KiB (12 MiB: pipelined); every
        // checksum known, or only those of even positions.
        for (count, len) in [(4u64, 64usize << 10), (24, 512 << 10)] {
            for all_known in [true, false] {
                let dir = pool_dir();
                let mut config = config(dir.path(), 64);
                config.background_commit = background_commit;
                let items: Vec<(BlockId, usize)> = (0..count).map(|n| (id(n), len)).collect();
                let known = |i: usize| all_known || i % 2 == 0;
                {
                    let tier = ShmTier::open("shm0", &config).unwrap();
                    let results = put_checked(&tier, &items, |i, bytes| {
                        known(i).then(|| cascade_hash::checksum(bytes))
                    });
                    assert!(results.iter().all(Result::is_ok), "{results:?}");
                    let handed = (0..count as usize).filter(|&i| known(i)).count();
                    assert_eq!(tier.checksums_from_fill(), handed as u64);
                }
                let tier = ShmTier::open("shm0", &config).unwrap();
                let case = format!(
                    "{count} x {len}, all known {all_known}, background {background_commit}"
                );
                assert_eq!(tier.recovered_blocks(), count as usize, "{case}");
                assert_eq!(tier.dropped_at_open(), 0, "{case}");
                for n in 0..count {
                    let mut out = vec![0u8; len];
                    assert_eq!(tier.get(id(n), &mut out).unwrap(), len);
                    check_tagged(n, &out);
                }
            }
        }
    }
}

/// A fill that hands a wrong checksum loses that block, never serves it: a verifying
/// read refuses it (and drops it), a reopen drops one not read since, and the blocks
/// beside them are kept.
#[test]
fn a_wrong_checksum_from_the_fill_drops_the_block_rather_than_serving_it() {
    let dir = pool_dir();
    let mut config = config(dir.path(), 64);
    config.verify_on_read = true;
    let len = 512 << 10;
    let items: Vec<(BlockId, usize)> = (0..24).map(|n| (id(n), len)).collect();
    let (read_wrong, unread_wrong) = (5u64, 9u64);
    {
        let tier = ShmTier::open("shm0", &config).unwrap();
        let results = put_checked(&tier, &items, |i, bytes| {
            let sum = cascade_hash::checksum(bytes);
            Some(if [read_wrong, unread_wrong].contains(&(i as u64)) {
                sum ^ 1
            } else {
                sum
            })
        });
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        let err = tier.get(id(read_wrong), &mut vec![0u8; len]).err().unwrap();
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    }
    let tier = ShmTier::open("shm0", &config).unwrap();
    assert_eq!(tier.recovered_blocks(), 22);
    assert_eq!(
        tier.dropped_at_open(),
        1,
        "the unread block with a wrong checksum"
    );
    for wrong in [read_wrong, unread_wrong] {
        assert!(!tier.contains(id(wrong)));
    }
    for n in (0..24u64).filter(|n| ![read_wrong, unread_wrong].contains(n)) {
        let mut out = vec![0u8; len];
        tier.get(id(n), &mut out).unwrap();
        check_tagged(n, &out);
    }
}

#[test]
fn shared_places_name_where_another_process_finds_each_block() {
    let dir = pool_dir();
    let config = config(dir.path(), 16);
    let tier = ShmTier::open("shm0", &config).unwrap();
    let blocks: Vec<Vec<u8>> = [4096usize, 100_000, 1]
        .iter()
        .enumerate()
        .map(|(n, &len)| tagged_block(n as u64, 1, len))
        .collect();
    for (n, b) in blocks.iter().enumerate() {
        tier.put(id(n as u64), b).unwrap();
    }
    let file = tier.shared_file().expect("the pool is a shared file");
    assert_eq!(file.path.as_path(), config.path.as_deref().unwrap());
    let meta = std::fs::metadata(&file.path).unwrap();
    assert_eq!(meta.len(), file.len);
    // Another opener of the file (here: a plain read of it) finds each block's bytes at
    // its place, and the checksum is the block's XXH3-64.
    let pool = std::fs::File::open(&file.path).unwrap();
    let ids: Vec<BlockId> = (0..4).map(id).collect();
    let places = tier.shared_places(&ids);
    for (n, b) in blocks.iter().enumerate() {
        let place = places[n].expect("a stored block has a place");
        assert_eq!(place.len, b.len() as u64);
        let mut read = vec![0u8; b.len()];
        pool.read_exact_at(&mut read, place.offset).unwrap();
        assert_eq!(&read, b, "block {n}");
        assert_eq!(place.checksum, cascade_hash::checksum(b));
    }
    assert!(places[3].is_none(), "a block not stored has no place");
    assert!(tier.remove(id(0)).unwrap());
    assert!(tier.shared_places(&ids[..1])[0].is_none());
}
