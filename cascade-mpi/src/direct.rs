//! Direct reads between ranks of one node: a holder on the same node tells the reader
//! where each block lies in its shm pool ([`cascade_core::SharedPlace`]), and the reader
//! copies the bytes out of its own read-only mapping of that pool, checking them against
//! the checksum the block was stored with.
//!
//! Why: a block fetched over MPI costs the holder's progress thread a lend, a send per
//! block and a wait for each, on a core it shares with the holder's own work; MPI's
//! shared-memory transport then copies it once anyway. Reading the pool directly is the
//! same single copy without the holder in the data path: the holder only answers where
//! the blocks are. A place is a hint, not a lend: the holder may evict or replace the block
//! while the reader copies it, so the copy is checked, and a block that fails the check
//! (or could not be read this way) is fetched over MPI instead. Bytes that fail their
//! checksum are never served.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use cascade_core::{SharedFile, SharedPlace};
use memmap2::Mmap;
use parking_lot::Mutex;

/// Turns direct reads off when set to `0`, `false`, `no` or `off` (read at open).
pub const DIRECT_READS_ENV: &str = "CASCADE_CLUSTER_DIRECT_READS";

/// What a rank knows for reading other ranks' pools on its node.
pub(crate) struct DirectReads {
    /// Each rank's node (a hash of the kernel's boot id; 0 when unknown).
    node_of: Vec<u64>,
    me: usize,
    enabled: AtomicBool,
    /// Mapped pools, by holder rank and file identity; `None`: this file cannot be read
    /// here (looked at once).
    maps: Mutex<HashMap<PoolKey, Option<Arc<PoolMap>>>>,
}

/// A mapped pool's holder rank, device and inode.
type PoolKey = (u32, u64, u64);

/// The page-table granule of [`PoolMap`]: a read fills this much of the mapping's page
/// table at its first touch, in one call instead of a fault per 16 pages (faulting in
/// a pool's pages block by block halved the read rate of the rounds that took them).
const POPULATE_CHUNK: usize = 2 << 20;

/// Another rank's pool, mapped read-only here.
pub(crate) struct PoolMap {
    map: Mmap,
    /// One bit per [`POPULATE_CHUNK`]: its page-table entries were filled.
    populated: Vec<AtomicU64>,
}

impl PoolMap {
    fn new(map: Mmap) -> Self {
        let chunks = map.len().div_ceil(POPULATE_CHUNK);
        Self {
            populated: (0..chunks.div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
            map,
        }
    }

    /// Fills the page table for `offset..end` (inside the mapping) where it was not yet.
    fn populate(&self, offset: usize, end: usize) {
        for chunk in offset / POPULATE_CHUNK..end.div_ceil(POPULATE_CHUNK) {
            let (word, bit) = (chunk / 64, 1u64 << (chunk % 64));
            let Some(flags) = self.populated.get(word) else {
                return;
            };
            if flags.load(Ordering::Relaxed) & bit != 0 {
                continue;
            }
            let start = chunk * POPULATE_CHUNK;
            let len = POPULATE_CHUNK.min(self.map.len() - start);
            // SAFETY: `start..start + len` lies inside the live mapping; the advice only
            // fills page-table entries (a kernel without it answers EINVAL, and faults
            // then do the same work).
            unsafe {
                libc::madvise(
                    self.map.as_ptr().add(start) as *mut libc::c_void,
                    len,
                    libc::MADV_POPULATE_READ,
                );
            }
            flags.fetch_or(bit, Ordering::Relaxed);
        }
    }
}

impl DirectReads {
    /// `node_of[r]` is rank r's node id (0: unknown, never the same node as any rank).
    pub(crate) fn new(node_of: Vec<u64>, me: usize, enabled: bool) -> Self {
        Self {
            node_of,
            me,
            enabled: AtomicBool::new(enabled),
            maps: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
    }

    pub(crate) fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Whether `rank` runs on this rank's node, so its pools can be mapped here.
    pub(crate) fn same_node(&self, rank: usize) -> bool {
        let mine = self.node_of.get(self.me).copied().unwrap_or(0);
        mine != 0 && self.node_of.get(rank).copied() == Some(mine)
    }

    /// The mapping of `holder`'s pool `file`, mapped at first use; `None` when it cannot
    /// be opened, is another file than the holder's (another mount namespace), or is
    /// shorter than the holder says.
    pub(crate) fn mapping(&self, holder: u32, file: &SharedFile) -> Option<Arc<PoolMap>> {
        let key = (holder, file.device, file.inode);
        let mut maps = self.maps.lock();
        if let Some(known) = maps.get(&key) {
            return known.clone();
        }
        let mapped = map_pool(file).map(|map| Arc::new(PoolMap::new(map)));
        if let Err(why) = &mapped {
            tracing::debug!(holder, path = %file.path.display(), why = %why,
                "cannot map another rank's shm pool; its blocks come over MPI");
        }
        let mapped = mapped.ok();
        maps.insert(key, mapped.clone());
        mapped
    }
}

fn map_pool(file: &SharedFile) -> std::result::Result<Mmap, String> {
    let opened = File::open(&file.path).map_err(|e| e.to_string())?;
    let meta = opened.metadata().map_err(|e| e.to_string())?;
    if meta.dev() != file.device || meta.ino() != file.inode {
        return Err("the path names another file here".into());
    }
    if meta.len() < file.len {
        return Err(format!(
            "the file is {} bytes, the holder maps {}",
            meta.len(),
            file.len
        ));
    }
    let len = usize::try_from(file.len).map_err(|e| e.to_string())?;
    // SAFETY: a read-only shared mapping of a pool file that its owner never shrinks (the
    // shm tier only ever sizes a pool at creation; its length was checked above). The
    // owner writes it while this rank reads it: bytes read through the mapping are only
    // ever copied out with `copy_place` and checked, never handed out in place.
    unsafe { memmap2::MmapOptions::new().len(len).map(&opened) }.map_err(|e| e.to_string())
}

/// Copies the block at `place` out of `map` into the start of `out` and checks it;
/// returns whether the copy is the block it names (right length, inside the mapping,
/// matching checksum). `out`'s bytes are unspecified when it is not.
pub(crate) fn copy_place(pool: &PoolMap, place: &SharedPlace, out: &mut [u8]) -> bool {
    let map = &pool.map;
    let (Ok(offset), Ok(len)) = (usize::try_from(place.offset), usize::try_from(place.len)) else {
        return false;
    };
    let Some(end) = offset.checked_add(len).filter(|&end| end <= map.len()) else {
        return false;
    };
    if len > out.len() {
        return false;
    }
    pool.populate(offset, end);
    // SAFETY: `offset..offset + len` lies inside the mapping (checked above) and `out`
    // holds `len` bytes; the mapping is another process's memory, so the copy may see a
    // block being replaced, which the checksum below catches. Raw pointers, not a shared
    // slice, because the holder may write these bytes while they are copied.
    unsafe {
        std::ptr::copy_nonoverlapping(map.as_ptr().add(offset), out.as_mut_ptr(), len);
    }
    crate::checksum(&out[..len]) == place.checksum
}

/// This node's id: a hash of the kernel's boot id, which differs between hosts and is
/// shared by every process of one host; 0 when it cannot be read (no direct reads).
pub(crate) fn node_id() -> u64 {
    match std::fs::read_to_string("/proc/sys/kernel/random/boot_id") {
        Ok(text) => crate::checksum(text.trim().as_bytes()).max(1),
        Err(e) => {
            tracing::debug!(error = %e, "no boot id; ranks of this node read each other over MPI");
            0
        }
    }
}

/// Whether the environment leaves direct reads on (they are on unless
/// [`DIRECT_READS_ENV`] says otherwise).
pub(crate) fn enabled_by_env() -> bool {
    match std::env::var(DIRECT_READS_ENV) {
        Ok(v) => !matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "0" | "false" | "no" | "off"
        ),
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn pool_with(bytes: &[u8]) -> (tempfile::NamedTempFile, SharedFile) {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(bytes).expect("write");
        let meta = file.as_file().metadata().expect("stat");
        let shared = SharedFile {
            path: file.path().to_path_buf(),
            device: meta.dev(),
            inode: meta.ino(),
            len: bytes.len() as u64,
        };
        (file, shared)
    }

    #[test]
    fn a_place_is_read_only_when_its_bytes_match_the_checksum() {
        let bytes: Vec<u8> = (0..8192u64)
            .map(|i| ((i * 2_654_435_761) >> 13) as u8)
            .collect();
        let (_file, shared) = pool_with(&bytes);
        let reads = DirectReads::new(vec![5, 5], 0, true);
        let map = reads.mapping(1, &shared).expect("mapped");
        let block = &bytes[4096..4096 + 1000];
        let place = SharedPlace {
            offset: 4096,
            len: 1000,
            checksum: crate::checksum(block),
        };
        let mut out = vec![0u8; 1000];
        assert!(copy_place(&map, &place, &mut out));
        assert_eq!(out, block);
        // A block replaced since its place was given: the copy is refused.
        let moved = SharedPlace { offset: 0, ..place };
        assert!(!copy_place(&map, &moved, &mut out));
        // Past the end of the pool, or larger than the buffer: refused without a copy.
        let past = SharedPlace {
            offset: 8000,
            ..place
        };
        assert!(!copy_place(&map, &past, &mut out));
        assert!(!copy_place(&map, &place, &mut out[..999]));
    }

    #[test]
    fn another_file_at_the_path_or_a_short_one_is_not_mapped() {
        let (_file, shared) = pool_with(&[1u8; 4096]);
        let reads = DirectReads::new(vec![5, 5], 0, true);
        let other = SharedFile {
            inode: shared.inode + 1,
            ..shared.clone()
        };
        assert!(reads.mapping(1, &other).is_none());
        let longer = SharedFile {
            len: 8192,
            ..shared.clone()
        };
        assert!(reads.mapping(2, &longer).is_none());
        assert!(reads.mapping(1, &shared).is_some());
    }

    #[test]
    fn ranks_share_a_node_only_when_both_ids_are_known_and_equal() {
        let reads = DirectReads::new(vec![7, 7, 9, 0], 0, true);
        assert!(reads.same_node(1));
        assert!(!reads.same_node(2));
        assert!(!reads.same_node(3));
        assert!(!reads.same_node(4));
        let unknown = DirectReads::new(vec![0, 0], 0, true);
        assert!(!unknown.same_node(1));
        assert_ne!(node_id(), 0, "Linux has a boot id");
    }
}
