//! The C ABI called from Rust as C would call it: a store from the documented config
//! struct, round trips, batches with a missing id, a full tier, bad arguments, threads.

use std::ffi::{CStr, CString};
use std::ptr::{null, null_mut};

use cascade_c::*;

fn last_message() -> String {
    // SAFETY: the library returns a NUL-terminated string valid until the next failure.
    unsafe { CStr::from_ptr(cascade_last_error_message()) }
        .to_string_lossy()
        .into_owned()
}

/// A store over one shm tier of `capacity` bytes whose pool lives in `dir`.
fn shm_store(dir: &tempfile::TempDir, capacity: u64) -> *mut CascadeHandle {
    let pool = CString::new(dir.path().join("c.pool").display().to_string()).expect("no NUL");
    let mut config = std::mem::MaybeUninit::<CascadeConfigC>::uninit();
    // SAFETY: config is writable.
    let status = unsafe { cascade_config_default(config.as_mut_ptr()) };
    assert_eq!(status, CascadeStatus::Ok);
    // SAFETY: cascade_config_default filled it.
    let mut config = unsafe { config.assume_init() };
    config.gpu_capacity_bytes = 0;
    config.shm_capacity_bytes = capacity;
    config.shm_path = pool.as_ptr();
    config.num_io_threads = 2;
    let mut store = null_mut();
    // SAFETY: valid config (its strings outlive the call) and out pointer.
    let status = unsafe { cascade_open_config(&config, &mut store) };
    assert_eq!(status, CascadeStatus::Ok, "{}", last_message());
    store
}

fn id(n: u64) -> CascadeBlockId {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&n.to_le_bytes());
    CascadeBlockId { bytes }
}

fn block(n: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u64 * 31 + n * 7) as u8).collect()
}

#[test]
fn round_trip_reports_sizes_and_misses() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = shm_store(&dir, 4 << 20);
    let data = block(1, 100_000);
    let mut out = vec![0u8; 100_000];
    let mut len = 0usize;
    let mut dedup = true;
    // SAFETY: store is open; the buffers are valid for their lengths.
    unsafe {
        assert_eq!(
            cascade_put(store, id(1), data.as_ptr(), data.len(), &mut dedup),
            CascadeStatus::Ok
        );
        assert!(!dedup);
        assert_eq!(
            cascade_get(store, id(1), out.as_mut_ptr(), out.len(), &mut len),
            CascadeStatus::Ok
        );
        assert_eq!((len, &out), (data.len(), &data));

        assert_eq!(
            cascade_get(store, id(1), out.as_mut_ptr(), 99_999, &mut len),
            CascadeStatus::InvalidInput
        );
        assert_eq!(len, 100_000, "the size needed is reported");

        assert_eq!(
            cascade_get(store, id(2), out.as_mut_ptr(), out.len(), &mut len),
            CascadeStatus::NotFound
        );
        assert_eq!(len, 0);
        assert_eq!(cascade_last_error_status(), CascadeStatus::NotFound);
        assert!(last_message().contains(&cascade::BlockId::from(id(2)).to_hex()));

        let mut stats = std::mem::MaybeUninit::uninit();
        assert_eq!(
            cascade_get_stats(store, stats.as_mut_ptr()),
            CascadeStatus::Ok
        );
        let stats = stats.assume_init();
        assert_eq!(
            (stats.blocks, stats.hits, stats.misses, stats.tier_count),
            (1, 1, 1, 1)
        );
        cascade_close(store);
    }
}

#[test]
fn batch_reports_the_missing_id_per_item() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = shm_store(&dir, 4 << 20);
    let blocks: Vec<Vec<u8>> = (0..4).map(|n| block(n, 8192 + n as usize)).collect();
    let ids: Vec<CascadeBlockId> = (0..4).map(id).collect();
    let ptrs: Vec<*const u8> = blocks.iter().map(|b| b.as_ptr()).collect();
    let lens: Vec<usize> = blocks.iter().map(Vec::len).collect();
    let mut statuses = [CascadeStatus::Internal; 4];
    let mut stored = 0usize;
    // SAFETY: arrays of 3 (put) and 4 (get) valid entries; store is open.
    unsafe {
        let status = cascade_put_batch(
            store,
            ids.as_ptr(),
            ptrs.as_ptr(),
            lens.as_ptr(),
            3,
            statuses.as_mut_ptr(),
            &mut stored,
        );
        assert_eq!((status, stored), (CascadeStatus::Ok, 3));

        let mut outs: Vec<Vec<u8>> = vec![vec![0u8; 9000]; 4];
        let out_ptrs: Vec<*mut u8> = outs.iter_mut().map(|o| o.as_mut_ptr()).collect();
        let caps = [9000usize; 4];
        let mut got = [usize::MAX; 4];
        let mut found = 0usize;
        let status = cascade_get_batch(
            store,
            ids.as_ptr(),
            out_ptrs.as_ptr(),
            caps.as_ptr(),
            got.as_mut_ptr(),
            4,
            statuses.as_mut_ptr(),
            &mut found,
        );
        assert_eq!((status, found), (CascadeStatus::NotFound, 3));
        assert_eq!(
            statuses,
            [
                CascadeStatus::Ok,
                CascadeStatus::Ok,
                CascadeStatus::Ok,
                CascadeStatus::NotFound
            ]
        );
        assert_eq!(got, [8192, 8193, 8194, 0]);
        for i in 0..3 {
            assert_eq!(&outs[i][..lens[i]], &blocks[i][..]);
        }
        cascade_close(store);
    }
}

#[test]
fn a_full_tier_evicts_within_its_capacity_and_refuses_what_never_fits() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = shm_store(&dir, 256 << 10);
    let data = block(9, 64 << 10);
    // SAFETY: store is open; buffers valid.
    unsafe {
        for n in 0..10 {
            assert_eq!(
                cascade_put(store, id(n), data.as_ptr(), data.len(), null_mut()),
                CascadeStatus::Ok
            );
        }
        let mut tier = std::mem::MaybeUninit::uninit();
        assert_eq!(
            cascade_get_tier_stats(store, 0, tier.as_mut_ptr()),
            CascadeStatus::Ok
        );
        let tier = tier.assume_init();
        assert!(tier.used_bytes <= tier.capacity_bytes);
        assert!(tier.evictions >= 6, "{} evictions", tier.evictions);
        let mut present = true;
        assert_eq!(
            cascade_contains(store, id(0), &mut present),
            CascadeStatus::Ok
        );
        assert!(!present, "the coldest block was evicted");

        let big = vec![0u8; 1 << 20];
        assert_eq!(
            cascade_put(store, id(99), big.as_ptr(), big.len(), null_mut()),
            CascadeStatus::TooLarge
        );
        cascade_close(store);
    }
}

#[test]
fn bad_arguments_are_errors_not_crashes() {
    let mut store = null_mut();
    let mut len = 0usize;
    let mut flag = false;
    // SAFETY: every pointer is valid or NULL, which the library must refuse.
    unsafe {
        assert_eq!(
            cascade_open_toml_str(null(), &mut store),
            CascadeStatus::InvalidInput
        );
        assert_eq!(
            cascade_open_toml_str(c"tiers = 1".as_ptr(), &mut store),
            CascadeStatus::Config
        );
        assert!(store.is_null());
        assert_eq!(
            cascade_put(null(), id(1), null(), 0, null_mut()),
            CascadeStatus::InvalidInput
        );
        assert!(last_message().contains("store is NULL"));

        let toml = c"[[tiers]]\nkind = \"memory\"\ncapacity = \"1 MiB\"\n";
        assert_eq!(
            cascade_open_toml_str(toml.as_ptr(), &mut store),
            CascadeStatus::Ok
        );
        assert_eq!(
            cascade_put(store, id(1), null(), 8, null_mut()),
            CascadeStatus::InvalidInput
        );
        assert_eq!(
            cascade_get(store, id(1), null_mut(), 8, &mut len),
            CascadeStatus::InvalidInput
        );
        assert_eq!(
            cascade_get(store, id(1), null_mut(), 0, null_mut()),
            CascadeStatus::InvalidInput
        );
        let mut buf = [0u8; 8];
        assert_eq!(
            cascade_get(store, id(1), buf.as_mut_ptr(), usize::MAX, &mut len),
            CascadeStatus::InvalidInput
        );
        assert_eq!(
            cascade_contains(store, id(1), null_mut()),
            CascadeStatus::InvalidInput
        );
        assert_eq!(
            cascade_put_batch(store, null(), null(), null(), 2, null_mut(), null_mut()),
            CascadeStatus::InvalidInput
        );
        let ids = [id(1), id(2)];
        let blocks = [buf.as_ptr(), null()];
        let lens = [8usize, 8];
        let mut statuses = [CascadeStatus::Internal; 2];
        let status = cascade_put_batch(
            store,
            ids.as_ptr(),
            blocks.as_ptr(),
            lens.as_ptr(),
            2,
            statuses.as_mut_ptr(),
            null_mut(),
        );
        assert_eq!(status, CascadeStatus::InvalidInput);
        assert!(
            last_message().contains("blocks[1] is NULL"),
            "{}",
            last_message()
        );
        assert_eq!(
            statuses,
            [CascadeStatus::Internal; 2],
            "refused before any item ran"
        );
        let mut present = true;
        assert_eq!(
            cascade_contains(store, id(1), &mut present),
            CascadeStatus::Ok
        );
        assert!(!present, "nothing of a refused batch is stored");
        let misaligned = (&mut buf as *mut u8).wrapping_add(1).cast::<usize>();
        assert_eq!(
            cascade_block_size(store, id(1), misaligned),
            CascadeStatus::InvalidInput
        );
        assert!(last_message().contains("aligned"));

        // Overlapping outputs of one batch would race: refused before any read.
        let data = [5u8; 8];
        assert_eq!(
            cascade_put(store, id(1), data.as_ptr(), 8, &mut flag),
            CascadeStatus::Ok
        );
        let mut out = [0u8; 16];
        let outs = [out.as_mut_ptr(), out.as_mut_ptr().wrapping_add(4)];
        let ids = [id(1), id(1)];
        let caps = [8usize, 8];
        let mut lens = [0usize; 2];
        let status = cascade_get_batch(
            store,
            ids.as_ptr(),
            outs.as_ptr(),
            caps.as_ptr(),
            lens.as_mut_ptr(),
            2,
            null_mut(),
            null_mut(),
        );
        assert_eq!(status, CascadeStatus::InvalidInput);
        assert_eq!(out, [0u8; 16]);

        // No GPU on this machine: a GPU build cannot reach device memory (UNAVAILABLE),
        // a build without GPU support refuses device pointers (UNSUPPORTED).
        let expected = if cascade_has_gpu_support() {
            CascadeStatus::Unavailable
        } else {
            CascadeStatus::Unsupported
        };
        let status = cascade_put_device(store, id(2), 0x1000, 8, null_mut());
        assert_eq!(status, expected, "{}", last_message());
        cascade_close(store);
        cascade_close(null_mut());
    }
}

#[test]
fn two_threads_share_one_handle() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = shm_store(&dir, 16 << 20) as usize;
    let workers: Vec<_> = (0..2u64)
        .map(|t| {
            std::thread::spawn(move || {
                let store = store as *const CascadeHandle;
                let mut out = vec![0u8; 4096];
                for i in 0..300 {
                    let n = t * 1_000_000 + i;
                    let data = block(n, 4096);
                    let mut len = 0;
                    // SAFETY: the handle stays open until both threads are joined.
                    unsafe {
                        assert_eq!(
                            cascade_put(store, id(n), data.as_ptr(), 4096, null_mut()),
                            CascadeStatus::Ok
                        );
                        assert_eq!(
                            cascade_get(store, id(n), out.as_mut_ptr(), 4096, &mut len),
                            CascadeStatus::Ok
                        );
                    }
                    assert_eq!(out, data);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker finished");
    }
    let mut stats = std::mem::MaybeUninit::uninit();
    // SAFETY: the handle is open and no other thread uses it now.
    unsafe {
        assert_eq!(
            cascade_get_stats(store as *const _, stats.as_mut_ptr()),
            CascadeStatus::Ok
        );
        assert_eq!(stats.assume_init().blocks, 600);
        cascade_close(store as *mut CascadeHandle);
    }
}

#[test]
fn a_prefetch_moves_blocks_up_and_reports_its_progress() {
    // Four blocks of 64 KiB fit the fast tier; of sixteen, the first twelve move down.
    let toml = CString::new(
        "promote_on_read = false\n\
         [[tiers]]\nkind = \"memory\"\ncapacity = \"256 KiB\"\n\
         [[tiers]]\nkind = \"memory\"\ncapacity = \"4 MiB\"\n",
    )
    .expect("no NUL");
    let mut store = null_mut();
    let len = 64 * 1024;
    // SAFETY: a valid string and out pointer; the store is open until closed below, the
    // buffers are valid for their lengths, and every handle is freed once.
    unsafe {
        assert_eq!(
            cascade_open_toml_str(toml.as_ptr(), &mut store),
            CascadeStatus::Ok
        );
        for n in 0..16 {
            let data = block(n, len);
            let status = cascade_put(store, id(n), data.as_ptr(), len, null_mut());
            assert_eq!(status, CascadeStatus::Ok, "{}", last_message());
        }
        let ids: Vec<CascadeBlockId> = (0..4).map(id).chain([id(99)]).collect();
        let mut prefetch = null_mut();
        let status = cascade_prefetch(
            store,
            ids.as_ptr(),
            ids.len(),
            CASCADE_PREFETCH_FASTEST,
            &mut prefetch,
        );
        assert_eq!(status, CascadeStatus::Ok, "{}", last_message());
        let mut done = false;
        assert_eq!(
            cascade_prefetch_wait(prefetch, -1, &mut done),
            CascadeStatus::Ok
        );
        assert!(done);
        let mut progress = CascadePrefetchProgress::default();
        assert_eq!(
            cascade_prefetch_progress(prefetch, &mut progress),
            CascadeStatus::Ok
        );
        assert_eq!(
            (
                progress.blocks,
                progress.ready,
                progress.missing,
                progress.pending
            ),
            (5, 4, 1, 0)
        );
        cascade_prefetch_free(prefetch);

        let mut stats = CascadePrefetchStats::default();
        assert_eq!(
            cascade_get_prefetch_stats(store, &mut stats),
            CascadeStatus::Ok
        );
        assert_eq!(stats.prefetched, 4);
        let mut out = vec![0u8; len];
        for n in 0..4 {
            let mut got = 0usize;
            assert_eq!(
                cascade_get(store, id(n), out.as_mut_ptr(), len, &mut got),
                CascadeStatus::Ok
            );
            assert_eq!((got, &out), (len, &block(n, len)));
        }
        assert_eq!(
            cascade_get_prefetch_stats(store, &mut stats),
            CascadeStatus::Ok
        );
        assert_eq!(stats.prefetch_hits, 4);

        // A prefix prefetch stops at the first key not stored.
        let keys: Vec<CascadeBlockId> = [4, 5, 99, 6].into_iter().map(id).collect();
        let mut prefix = null_mut();
        let status = cascade_prefetch_prefix(store, keys.as_ptr(), keys.len(), 0, &mut prefix);
        assert_eq!(status, CascadeStatus::Ok, "{}", last_message());
        assert_eq!(
            cascade_prefetch_wait(prefix, 60_000, null_mut()),
            CascadeStatus::Ok
        );
        assert_eq!(
            cascade_prefetch_progress(prefix, &mut progress),
            CascadeStatus::Ok
        );
        assert_eq!((progress.blocks, progress.ready), (2, 2));
        // Cancel, detach and free are accepted on a finished prefetch; free takes NULL.
        assert_eq!(cascade_prefetch_cancel(prefix), CascadeStatus::Ok);
        assert_eq!(cascade_prefetch_detach(prefix), CascadeStatus::Ok);
        cascade_prefetch_free(prefix);
        cascade_prefetch_free(null_mut());

        // Bad arguments are errors, and `*out` is NULL after them.
        let mut bad = std::ptr::dangling_mut::<CascadePrefetch>();
        assert_eq!(
            cascade_prefetch(store, ids.as_ptr(), ids.len(), 7, &mut bad),
            CascadeStatus::InvalidInput
        );
        assert!(bad.is_null());
        assert_eq!(
            cascade_prefetch(store, ids.as_ptr(), ids.len(), -5, &mut bad),
            CascadeStatus::InvalidInput
        );
        assert_eq!(
            cascade_prefetch(store, null(), 3, CASCADE_PREFETCH_FASTEST, &mut bad),
            CascadeStatus::InvalidInput
        );
        assert_eq!(
            cascade_prefetch(
                store,
                ids.as_ptr(),
                ids.len(),
                CASCADE_PREFETCH_FASTEST,
                null_mut()
            ),
            CascadeStatus::InvalidInput
        );
        assert_eq!(
            cascade_prefetch_progress(null(), &mut progress),
            CascadeStatus::InvalidInput
        );
        assert_eq!(
            cascade_prefetch_wait(null(), 0, null_mut()),
            CascadeStatus::InvalidInput
        );
        cascade_close(store);
    }
}

#[test]
fn an_async_batch_get_reports_what_the_synchronous_one_does() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = shm_store(&dir, 8 << 20);
    let len = 32 * 1024;
    // SAFETY: the store is open until closed below; every buffer outlives the handle
    // reading into it (each is waited for or freed before the buffers go).
    unsafe {
        for n in 0..8 {
            let data = block(n, len);
            assert_eq!(
                cascade_put(store, id(n), data.as_ptr(), len, null_mut()),
                CascadeStatus::Ok
            );
        }
        // Eight stored blocks, one missing, one buffer too small.
        let ids: Vec<CascadeBlockId> = (0..8).map(id).chain([id(77), id(3)]).collect();
        let mut bufs: Vec<Vec<u8>> = (0..10)
            .map(|k| vec![0u8; if k == 9 { 100 } else { len }])
            .collect();
        let outs: Vec<*mut u8> = bufs.iter_mut().map(|b| b.as_mut_ptr()).collect();
        let caps: Vec<usize> = bufs.iter().map(Vec::len).collect();
        let mut handle = null_mut();
        let status = cascade_get_batch_async(
            store,
            ids.as_ptr(),
            outs.as_ptr(),
            caps.as_ptr(),
            10,
            &mut handle,
        );
        assert_eq!(status, CascadeStatus::Ok, "{}", last_message());
        let (mut lens, mut statuses, mut found, mut done) =
            (vec![0usize; 10], vec![CascadeStatus::Ok; 10], 0usize, false);
        let status = cascade_get_batch_async_wait(
            handle,
            -1,
            lens.as_mut_ptr(),
            statuses.as_mut_ptr(),
            &mut found,
            &mut done,
        );
        assert!(done);
        // The synchronous call into other buffers, for comparison.
        let mut again: Vec<Vec<u8>> = caps.iter().map(|&c| vec![0u8; c]).collect();
        let again_outs: Vec<*mut u8> = again.iter_mut().map(|b| b.as_mut_ptr()).collect();
        let (mut sync_lens, mut sync_statuses, mut sync_found) =
            (vec![0usize; 10], vec![CascadeStatus::Ok; 10], 0usize);
        let sync_status = cascade_get_batch(
            store,
            ids.as_ptr(),
            again_outs.as_ptr(),
            caps.as_ptr(),
            sync_lens.as_mut_ptr(),
            10,
            sync_statuses.as_mut_ptr(),
            &mut sync_found,
        );
        assert_eq!(
            (status, &lens, &statuses, found),
            (sync_status, &sync_lens, &sync_statuses, sync_found)
        );
        assert_eq!(
            (found, statuses[8], statuses[9], lens[9]),
            (8, CascadeStatus::NotFound, CascadeStatus::InvalidInput, len)
        );
        for n in 0..8 {
            assert_eq!(bufs[n], block(n as u64, len));
            assert_eq!(bufs[n], again[n]);
        }
        cascade_get_batch_async_free(handle);
        cascade_get_batch_async_free(null_mut());

        // Freed while running: it waits, so the buffers may go right after.
        let mut late = null_mut();
        let status = cascade_get_batch_async(
            store,
            ids.as_ptr(),
            outs.as_ptr(),
            caps.as_ptr(),
            8,
            &mut late,
        );
        assert_eq!(status, CascadeStatus::Ok);
        assert_eq!(cascade_get_batch_async_cancel(late), CascadeStatus::Ok);
        cascade_get_batch_async_free(late);

        // Overlapping outputs are refused before anything is read.
        let same = [outs[0], outs[0]];
        let mut bad = std::ptr::dangling_mut::<CascadeGetBatchAsync>();
        assert_eq!(
            cascade_get_batch_async(
                store,
                ids.as_ptr(),
                same.as_ptr(),
                caps.as_ptr(),
                2,
                &mut bad
            ),
            CascadeStatus::InvalidInput
        );
        assert!(bad.is_null());
        cascade_close(store);
    }
}
