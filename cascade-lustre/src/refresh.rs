//! Refresh: seeing what other writers sharing the directory stored or removed since this
//! tier opened, without reopening it.
//!
//! The directory is listed again, and the result is merged into the index with the rules
//! of an open: the newest sequence of an id wins unless some writer's delete log killed
//! it. Only other writers' files are read; this writer's own segments, lanes and
//! delete log are never touched, and nothing is written to any file. Segments of writers
//! that died since are read like live ones: taking them over (sealing, compacting) is
//! left to the next open.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use cascade_core::{BlockId, ErrorKind, Result, TierRefresh};

use crate::deletes::{self, Kills};
use crate::directory::list;
use crate::format::{RecordMeta, record_span};
use crate::segment::Segment;
use crate::store::{Entry, Inner};

/// What the I/O half of a refresh read, before anything is merged.
struct Found {
    /// Other writers' segments this tier did not know.
    fresh: Vec<Arc<Segment>>,
    /// Records appended to known segments of other writers since they were read.
    appended: Vec<(Arc<Segment>, RecordMeta)>,
    /// Known segments of other writers whose files are gone (compacted or cleared).
    vanished: Vec<Arc<Segment>>,
    /// Every writer's kills.
    kills: Kills,
}

impl Inner {
    /// Merges other writers' new records, removals and compactions into the index; see
    /// [`cascade_core::Tier::refresh`] and the module documentation.
    pub fn refresh(&self) -> Result<TierRefresh> {
        let _one_at_a_time = self.refreshing.lock();
        let found = self.read_others()?;
        let mut added: HashMap<BlockId, u64> = HashMap::new();
        let mut removed: Vec<BlockId> = Vec::new();
        let gone: HashSet<u64> = found.vanished.iter().map(|s| s.serial).collect();

        let mut w = self.writer.lock();
        {
            let mut map = self.segments.write();
            for segment in &found.fresh {
                map.insert(segment.name.clone(), Arc::clone(segment));
            }
        }
        let mut last_seq = w.last_seq;
        let fresh_records = found.fresh.iter().flat_map(|segment| {
            let records = segment.records.lock().clone();
            records.into_iter().map(move |r| (Arc::clone(segment), r))
        });
        for (segment, record) in fresh_records.chain(found.appended) {
            last_seq = last_seq.max(record.seq);
            if found.kills.kills(record.id, record.seq) {
                continue;
            }
            self.offer(&segment, record, &gone, &mut added);
        }
        // A writer's sequences follow the clock; a later put here must still win.
        w.last_seq = last_seq;

        if !found.vanished.is_empty() {
            self.rehome(&found.vanished, &gone, &mut added, &mut removed);
        }
        for (id, _) in found.kills.iter() {
            if self
                .index
                .with(&id, |e| found.kills.kills(id, e.record.seq))
                == Some(true)
            {
                if let Some(old) = self.index.remove_value(&id) {
                    self.release(&old);
                    added.remove(&id);
                    removed.push(id);
                }
            }
        }
        drop(w);
        let added = added
            .into_iter()
            .filter(|(id, _)| self.index.contains_key(id))
            .collect();
        Ok(TierRefresh { added, removed })
    }

    /// Lists the directory and reads what other writers added since: new segments
    /// (footer or scan), records appended to segments they were appending to, and their
    /// delete logs. No lock but the refresh's own is held meanwhile.
    fn read_others(&self) -> Result<Found> {
        // Taken before the listing: a segment this tier creates or deletes meanwhile is
        // its own, never mistaken for another writer's new or vanished one.
        let known: BTreeMap<String, Arc<Segment>> = self.segments.read().clone();
        let listing = list(&self.dir)?;
        let mut on_disk: HashSet<String> = HashSet::new();
        let mut fresh_paths: Vec<(String, PathBuf)> = Vec::new();
        for (writer, files) in &listing.segments {
            for (_, path) in files {
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if *writer != self.writer_id && !known.contains_key(&name) {
                    fresh_paths.push((writer.clone(), path.clone()));
                }
                on_disk.insert(name);
            }
        }
        let foreign = |s: &Segment| !s.owned && s.writer != self.writer_id;
        let vanished: Vec<Arc<Segment>> = known
            .values()
            .filter(|s| foreign(s) && !on_disk.contains(&s.name))
            .cloned()
            .collect();
        let appending: Vec<Arc<Segment>> = known
            .values()
            .filter(|s| {
                foreign(s) && on_disk.contains(&s.name) && !s.sealed.load(Ordering::Acquire)
            })
            .cloned()
            .collect();

        // One by one, not on rayon: the `refreshing` lock is held here, and a rayon
        // thread waiting on its subtasks may pick up another refresh, which would then
        // wait on that lock forever.
        let loaded: Vec<_> = fresh_paths
            .iter()
            .map(|(writer, path)| Segment::load(path, writer, self.direct, false))
            .collect();
        let mut fresh = Vec::with_capacity(loaded.len());
        for (result, (_, path)) in loaded.into_iter().zip(&fresh_paths) {
            match result {
                Ok(Some((segment, _))) => fresh.push(Arc::new(segment)),
                // No header yet (being created): looked at again by the next refresh.
                Ok(None) => {}
                // Deleted since the listing by its writer's compaction: its records are
                // in that writer's newer segments.
                Err(e) if e.kind() == ErrorKind::Unavailable => {
                    tracing::debug!(path = %path.display(), "segment vanished during refresh");
                }
                Err(e) => return Err(e.with_context("tier", &self.name)),
            }
        }
        let mut appended = Vec::new();
        for segment in &appending {
            let records = segment
                .catch_up(self.direct)
                .map_err(|e| e.with_context("tier", &self.name))?;
            appended.extend(records.into_iter().map(|r| (Arc::clone(segment), r)));
        }
        let mut kills = Kills::default();
        for path in listing.deletes.values() {
            match deletes::read(path) {
                Ok((entries, _)) => kills.extend(entries),
                // Renamed over or removed by its writer between listing and reading.
                Err(e) if e.kind() == ErrorKind::Unavailable => continue,
                Err(e) => return Err(e.with_context("tier", &self.name)),
            }
        }
        Ok(Found {
            fresh,
            appended,
            vanished,
            kills,
        })
    }

    /// Points the index at `record` of `segment` when it is newer than what the index
    /// holds for its id, or the same record (a compaction copy) while the held one's
    /// segment is gone. Keeps `used` and the segments' live bytes exact. Runs under the
    /// writer lock.
    fn offer(
        &self,
        segment: &Arc<Segment>,
        record: RecordMeta,
        gone: &HashSet<u64>,
        added: &mut HashMap<BlockId, u64>,
    ) {
        let held = self
            .index
            .with(&record.id, |e| (e.record.seq, e.segment.serial));
        let take = match held {
            None => true,
            Some((seq, _)) if record.seq > seq => true,
            Some((seq, serial)) => record.seq == seq && gone.contains(&serial),
        };
        if !take {
            return;
        }
        let span = record_span(record.len);
        segment.live.fetch_add(span, Ordering::AcqRel);
        let entry = Entry {
            segment: Arc::clone(segment),
            record,
        };
        match self.index.insert_value(record.id, entry) {
            // The same record moved by its writer's compaction: same block, same bytes.
            Some(old) if old.record.seq == record.seq => {
                old.segment
                    .live
                    .fetch_sub(record_span(old.record.len), Ordering::AcqRel);
            }
            Some(old) => {
                self.used.fetch_add(span, Ordering::AcqRel);
                self.release(&old);
                added.insert(record.id, record.len);
            }
            None => {
                self.used.fetch_add(span, Ordering::AcqRel);
                added.insert(record.id, record.len);
            }
        }
    }

    /// Moves entries off segments whose files other writers deleted, to the copies their
    /// compaction made (same id and sequence, in any segment still on disk); an entry
    /// without a copy is dropped, as an open would not find it. Then forgets those
    /// segments (reads in flight keep their open file). Runs under the writer lock.
    fn rehome(
        &self,
        vanished: &[Arc<Segment>],
        gone: &HashSet<u64>,
        added: &mut HashMap<BlockId, u64>,
        removed: &mut Vec<BlockId>,
    ) {
        let mut homeless: HashMap<BlockId, u64> = HashMap::new();
        for segment in vanished {
            for record in segment.records.lock().iter() {
                let here = self.index.with(&record.id, |e| {
                    Arc::ptr_eq(&e.segment, segment) && e.record.offset == record.offset
                });
                if here == Some(true) {
                    homeless.insert(record.id, record.seq);
                }
            }
        }
        if !homeless.is_empty() {
            let homes: Vec<Arc<Segment>> = self
                .segments
                .read()
                .values()
                .filter(|s| !gone.contains(&s.serial))
                .cloned()
                .collect();
            for home in &homes {
                let records = home.records.lock().clone();
                for record in records {
                    if homeless.get(&record.id) == Some(&record.seq) {
                        self.offer(home, record, gone, added);
                        homeless.remove(&record.id);
                    }
                }
            }
            for id in homeless.keys() {
                let stranded = self
                    .index
                    .with(id, |e| gone.contains(&e.segment.serial))
                    .unwrap_or(false);
                if stranded {
                    if let Some(old) = self.index.remove_value(id) {
                        self.release(&old);
                        removed.push(*id);
                    }
                }
            }
        }
        let mut map = self.segments.write();
        for segment in vanished {
            if map
                .get(&segment.name)
                .is_some_and(|held| Arc::ptr_eq(held, segment))
            {
                map.remove(&segment.name);
            }
            segment.retired.store(true, Ordering::Release);
            self.read_handles.forget(segment.serial);
        }
    }
}
