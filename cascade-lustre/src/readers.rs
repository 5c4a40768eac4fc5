//! Per-thread read handles: each thread reads a segment through an open file description
//! of its own, so each keeps its own readahead state.
//!
//! The kernel keeps readahead state per open file description. When several threads read
//! one segment through one descriptor (two readers of one writer's lane, a thread that
//! finished its share early and helps another), their reads interleave in that one state,
//! it stops recognising any stream, and every thread's reads turn into small
//! synchronous requests. A second description of the same file is opened through
//! `/proc/self/fd`, which names the very inode that is open (even after compaction
//! deleted the file); where that fails, reads fall back to the segment's shared handle.
//! Handles are kept in a small LRU, so the descriptors a tier holds stay bounded.

use std::fs::{File, OpenOptions};
use std::num::NonZeroUsize;
use std::ops::Deref;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::ThreadId;

use lru::LruCache;
use parking_lot::Mutex;

use crate::segment::Segment;

/// Handles kept per tier: enough for every I/O and caller thread on the segments being
/// read at one time.
pub const READ_HANDLES: usize = 64;

/// The file a read goes through.
pub enum ReadFile<'a> {
    /// A handle of the calling thread's own.
    Own(Arc<File>),
    /// The segment's shared handle.
    Shared(&'a File),
}

impl Deref for ReadFile<'_> {
    type Target = File;

    fn deref(&self) -> &File {
        match self {
            ReadFile::Own(file) => file,
            ReadFile::Shared(file) => file,
        }
    }
}

/// The tier's per-thread read handles.
pub struct ReadHandles {
    cache: Mutex<LruCache<(u64, ThreadId), Arc<File>>>,
}

impl ReadHandles {
    /// Room for `capacity` handles (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            cache: Mutex::new(LruCache::new(
                NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN),
            )),
        }
    }

    /// The calling thread's handle on `segment`, opened on its first read; the shared
    /// handle for a retired segment or when no second handle can be opened.
    pub fn for_caller<'a>(&self, segment: &'a Segment) -> ReadFile<'a> {
        if segment.retired.load(Ordering::Acquire) {
            return ReadFile::Shared(&segment.file);
        }
        let key = (segment.serial, std::thread::current().id());
        if let Some(file) = self.cache.lock().get(&key) {
            return ReadFile::Own(Arc::clone(file));
        }
        match reopen(&segment.file) {
            Ok(file) => {
                let file = Arc::new(file);
                self.cache.lock().put(key, Arc::clone(&file));
                ReadFile::Own(file)
            }
            Err(e) => {
                tracing::debug!(segment = %segment.path.display(), error = %e, "no per-thread read handle; reading through the shared one");
                ReadFile::Shared(&segment.file)
            }
        }
    }

    /// Closes every handle on the segment `serial` (retired: its disk space is freed
    /// only when the last descriptor closes).
    pub fn forget(&self, serial: u64) {
        let mut cache = self.cache.lock();
        let keys: Vec<(u64, ThreadId)> = cache
            .iter()
            .filter(|((s, _), _)| *s == serial)
            .map(|(key, _)| *key)
            .collect();
        for key in keys {
            cache.pop(&key);
        }
    }

    /// Closes every handle.
    pub fn forget_all(&self) {
        self.cache.lock().clear();
    }

    /// Handles open now.
    pub fn len(&self) -> usize {
        self.cache.lock().len()
    }
}

/// A new open file description, read-only, of the inode `file` has open.
fn reopen(file: &File) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .open(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::FileExt;

    #[test]
    fn reopened_handles_read_the_same_inode_even_after_unlink() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut file = File::create(&path).unwrap();
        file.write_all(b"segment bytes").unwrap();
        let shared = File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let own = reopen(&shared).unwrap();
        let mut buf = [0u8; 7];
        own.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"segment");
    }

    fn segment(dir: &std::path::Path, number: u64) -> Segment {
        Segment::create(
            dir,
            "t",
            number,
            false,
            None,
            &cascade_core::Access::PRIVATE,
        )
        .unwrap()
    }

    fn fd_of(file: &ReadFile<'_>) -> i32 {
        file.as_raw_fd()
    }

    #[test]
    fn each_thread_gets_its_own_handle_and_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let seg = segment(dir.path(), 0);
        let handles = ReadHandles::new(8);
        let mine = fd_of(&handles.for_caller(&seg));
        assert_ne!(mine, seg.file.as_raw_fd(), "not the shared descriptor");
        assert_eq!(
            fd_of(&handles.for_caller(&seg)),
            mine,
            "kept for this thread"
        );
        let theirs =
            std::thread::scope(|s| s.spawn(|| fd_of(&handles.for_caller(&seg))).join().unwrap());
        assert_ne!(theirs, mine, "another thread, another description");
        assert_eq!(handles.len(), 2);
    }

    #[test]
    fn handles_stay_bounded_and_retired_segments_lose_theirs() {
        let dir = tempfile::tempdir().unwrap();
        let segments: Vec<Segment> = (0..5).map(|n| segment(dir.path(), n)).collect();
        let handles = ReadHandles::new(3);
        for seg in &segments {
            assert!(matches!(handles.for_caller(seg), ReadFile::Own(_)));
        }
        assert_eq!(handles.len(), 3, "the least recently used were closed");
        handles.forget(segments[4].serial);
        assert_eq!(handles.len(), 2);
        segments[3].retired.store(true, Ordering::Release);
        handles.forget(segments[3].serial);
        assert!(matches!(
            handles.for_caller(&segments[3]),
            ReadFile::Shared(_)
        ));
        assert_eq!(handles.len(), 1, "a retired segment gets no new handle");
        handles.forget_all();
        assert_eq!(handles.len(), 0);
    }
}
