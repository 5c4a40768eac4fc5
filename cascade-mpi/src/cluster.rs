//! [`ClusterStore`]: one Cascade over every rank of an MPI job.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::JoinHandle;

use cascade_core::{
    BlockId, CascadeConfig, CascadeStore, Error, ErrorKind, PutOutcome, RefreshReport, Result,
    StoreStats,
};
use parking_lot::Mutex;

use crate::comm::{Comm, TAG_MAX};
use crate::direct::{self, DirectReads, copy_place};
use crate::directory::Directory;
use crate::owner::owner_of;
use crate::runtime::Mpi;
use crate::server::{self, Counters, REQUEST_TAG, Shared, bump};
use crate::wire::{FetchState, Op, Places, Reader, Writer};
use crate::{ClusterStats, ClusterTotals};

/// A block's length and holder ranks, or `None` when no rank holds it.
type Located = Option<(u64, Vec<u32>)>;

/// How many ids one registration message carries at open.
const REGISTER_CHUNK: usize = 16_384;

/// A store spanning every rank of `MPI_COMM_WORLD`.
///
/// Each rank keeps its blocks in its own [`CascadeStore`] (its GPU, shm and file tiers).
/// Every block id has an owner rank, picked by rendezvous hashing of the id
/// ([`crate::owner_of`]); the owner records which ranks hold the block. A put stores
/// locally and registers with the owner; with dedup on, a block some rank holds already
/// is not stored again. A get reads locally when it can, else asks the owner and fetches
/// from a holder straight into the caller's buffer. A rank's progress thread answers the
/// other ranks.
///
/// [`ClusterStore::open`], [`ClusterStore::close`], [`ClusterStore::barrier`] and
/// [`ClusterStore::totals`] are collective: every rank calls them, in the same order.
/// Everything else is called by any thread of any rank at any time.
///
/// A remote read that fails, or whose bytes fail their checksum, is a miss for that
/// block; MPI errors are returned as errors of kind `Io`. A rank that dies ends the MPI
/// job (MPI has no recovery from it); started again with the same ranks, every rank
/// re-registers what its persistent tiers hold, so every block flushed before the failure
/// is readable from any rank.
pub struct ClusterStore {
    mpi: Mpi,
    shared: Arc<Shared>,
    control: Mutex<Comm>,
    server: Mutex<Option<JoinHandle<()>>>,
    next_tag: AtomicU32,
    ranks: usize,
    dedup: bool,
    direct: DirectReads,
    closed: AtomicBool,
}

/// One request and where its reply comes from.
struct Call {
    rank: usize,
    tag: i32,
    request: Vec<u8>,
}

impl ClusterStore {
    /// Opens this rank's part of the cluster (collective): the local store from `config`
    /// as [`crate::config::for_rank`] rewrites it, opened by `open_local` (the facade
    /// passes `cascade::Cascade::open`); then every rank registers the blocks its tiers
    /// hold already with their owners.
    ///
    /// Errors: any rank's failure to open fails the open on every rank (the failing rank
    /// returns its own error); MPI errors; `Unavailable` without `MPI_THREAD_MULTIPLE`.
    pub fn open(
        mpi: &Mpi,
        config: &CascadeConfig,
        open_local: impl FnOnce(&CascadeConfig) -> Result<CascadeStore>,
    ) -> Result<Self> {
        let requests = Comm::dup_world()?;
        let replies = Comm::dup_world()?;
        let control = Comm::dup_world()?;
        let rank = control.rank();
        let ranks = usize::try_from(control.size()).unwrap_or(1);
        let local = open_local(&crate::config::for_rank(config, rank as usize));
        // One collective for both: whether any rank failed, and each rank's node.
        let mut mine = vec![0u64; ranks + 1];
        mine[0] = u64::from(local.is_err());
        mine[rank as usize + 1] = direct::node_id();
        let summed = control.sum_u64(&mine)?;
        let (failed, nodes) = summed.split_at(1);
        let store = match local {
            Err(e) => return Err(e.with_context("rank", rank)),
            Ok(_) if failed[0] > 0 => {
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    format!(
                        "{} rank(s) failed to open their local store; see their errors",
                        failed[0]
                    ),
                ));
            }
            Ok(store) => store,
        };
        let shared = Arc::new(Shared {
            store: Arc::new(store),
            directory: Directory::default(),
            requests,
            replies,
            counters: Counters::default(),
        });
        let serving = Arc::clone(&shared);
        let server = std::thread::Builder::new()
            .name(format!("cascade-mpi-{rank}"))
            .spawn(move || server::serve(serving))
            .map_err(|e| {
                Error::new(ErrorKind::Unavailable, "cannot start the progress thread")
                    .with_source(e)
            })?;
        let cluster = Self {
            mpi: mpi.clone(),
            shared,
            control: Mutex::new(control),
            server: Mutex::new(Some(server)),
            next_tag: AtomicU32::new(0),
            ranks,
            dedup: config.dedup,
            direct: DirectReads::new(nodes.to_vec(), rank as usize, direct::enabled_by_env()),
            closed: AtomicBool::new(false),
        };
        cluster.barrier()?;
        cluster.register_all_local()?;
        cluster.barrier()?;
        Ok(cluster)
    }

    /// Tells the owners about every block this rank's tiers hold (at open: reopened
    /// persistent tiers).
    fn register_all_local(&self) -> Result<()> {
        let store = &self.shared.store;
        let ids: Vec<(BlockId, u64)> = store
            .ids()
            .into_iter()
            .filter_map(|id| store.len_of(id).map(|len| (id, len)))
            .collect();
        for chunk in ids.chunks(REGISTER_CHUNK) {
            let groups = self.by_owner(chunk.iter().map(|(id, _)| *id));
            let calls = groups
                .iter()
                .map(|(&rank, members)| {
                    self.call(rank, Op::Register, members.len(), |w| {
                        for &i in members {
                            w.id(chunk[i].0);
                            w.u64(chunk[i].1);
                        }
                    })
                })
                .collect();
            for (reply, rank) in self.exchange(calls).into_iter().zip(groups.keys()) {
                Reader::reply(&reply?, *rank)?;
            }
        }
        Ok(())
    }

    /// This rank.
    pub fn rank(&self) -> usize {
        self.shared.rank() as usize
    }

    /// How many ranks the cluster has.
    pub fn ranks(&self) -> usize {
        self.ranks
    }

    /// The MPI handle.
    pub fn mpi(&self) -> &Mpi {
        &self.mpi
    }

    /// This rank's local store.
    pub fn local(&self) -> &CascadeStore {
        &self.shared.store
    }

    /// Whether blocks held by ranks on this node are read straight from their shm pools
    /// (on unless `CASCADE_CLUSTER_DIRECT_READS=0` was set at open); see
    /// [`ClusterStore::get_batch`].
    pub fn direct_reads(&self) -> bool {
        self.direct.enabled()
    }

    /// Turns direct reads from other ranks' shm pools on this node on or off (off: every
    /// remote block comes over MPI, as between nodes).
    pub fn set_direct_reads(&self, on: bool) {
        self.direct.set_enabled(on);
    }

    /// The owner rank of `id`.
    pub fn owner(&self, id: BlockId) -> usize {
        owner_of(id, self.ranks)
    }

    fn next_tag(&self) -> i32 {
        (self.next_tag.fetch_add(1, Ordering::Relaxed) % TAG_MAX as u32) as i32 + 1
    }

    fn call(&self, rank: usize, op: Op, items: usize, body: impl FnOnce(&mut Writer)) -> Call {
        let tag = self.next_tag();
        let mut writer = Writer::request(op, tag, items);
        body(&mut writer);
        Call {
            rank,
            tag,
            request: writer.finish(),
        }
    }

    /// Sends every request, then collects the replies in order. Requests to this rank
    /// are answered in place, without MPI.
    fn exchange(&self, calls: Vec<Call>) -> Vec<Result<Vec<u8>>> {
        let me = self.rank();
        let sent: Vec<Result<()>> = calls
            .iter()
            .map(|call| {
                if call.rank == me {
                    Ok(())
                } else {
                    self.shared
                        .requests
                        .send(&call.request, call.rank as i32, REQUEST_TAG)
                }
            })
            .collect();
        calls
            .iter()
            .zip(sent)
            .map(|(call, sent)| {
                sent?;
                if call.rank == me {
                    let mut reader = Reader::new(&call.request);
                    let (op, _, items) = reader.request()?;
                    return server::handle(&self.shared, me as u32, op, &mut reader, items);
                }
                self.shared.replies.recv_vec(call.rank as i32, call.tag)
            })
            .collect()
    }

    /// Groups item positions by the owner of their ids.
    fn by_owner(&self, ids: impl Iterator<Item = BlockId>) -> BTreeMap<usize, Vec<usize>> {
        let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (i, id) in ids.enumerate() {
            groups.entry(self.owner(id)).or_default().push(i);
        }
        groups
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "the cluster store is closed",
            ));
        }
        Ok(())
    }

    /// Stores `data` under `id` (see [`ClusterStore::put_batch`]).
    pub fn put(&self, id: BlockId, data: &[u8]) -> Result<PutOutcome> {
        self.put_batch(&[(id, data)])
            .pop()
            .unwrap_or_else(|| Err(Error::new(ErrorKind::Io, "empty batch result")))
    }

    /// Stores many blocks; one result per item, in order. Messages go once per owner rank.
    ///
    /// With dedup on, a block this rank or any other holds is not stored again
    /// ([`PutOutcome::Deduplicated`]): the owner answers which rank stores it. With dedup
    /// off, each block is stored here and registered with its owner.
    pub fn put_batch(&self, items: &[(BlockId, &[u8])]) -> Vec<Result<PutOutcome>> {
        if let Err(e) = self.check_open() {
            return items.iter().map(|_| Err(e.clone_kind())).collect();
        }
        if self.dedup {
            self.put_claimed(items)
        } else {
            self.put_registered(items)
        }
    }

    fn put_claimed(&self, items: &[(BlockId, &[u8])]) -> Vec<Result<PutOutcome>> {
        let store = &self.shared.store;
        let mut results: Vec<Option<Result<PutOutcome>>> = items
            .iter()
            .map(|(id, _)| store.contains(*id).then_some(Ok(PutOutcome::Deduplicated)))
            .collect();
        let pending: Vec<usize> = (0..items.len()).filter(|&i| results[i].is_none()).collect();
        let groups = self.by_owner(pending.iter().map(|&i| items[i].0));
        let calls = groups
            .iter()
            .map(|(&rank, members)| {
                self.call(rank, Op::Claim, members.len(), |w| {
                    for &m in members {
                        let (id, data) = items[pending[m]];
                        w.id(id);
                        w.u64(data.len() as u64);
                    }
                })
            })
            .collect();
        let mut claimed: Vec<usize> = Vec::new();
        for ((rank, members), reply) in groups.iter().zip(self.exchange(calls)) {
            let answers = reply.and_then(|bytes| {
                let mut reader = Reader::reply(&bytes, *rank)?;
                members
                    .iter()
                    .map(|_| reader.u8())
                    .collect::<Result<Vec<u8>>>()
            });
            match answers {
                Ok(answers) => {
                    for (&m, held) in members.iter().zip(answers) {
                        let i = pending[m];
                        if held == 0 {
                            claimed.push(i);
                        } else {
                            bump(&self.shared.counters.dedup_hits, 1);
                            bump(
                                &self.shared.counters.dedup_bytes_saved,
                                items[i].1.len() as u64,
                            );
                            results[i] = Some(Ok(PutOutcome::Deduplicated));
                        }
                    }
                }
                Err(e) => {
                    for &m in members {
                        results[pending[m]] = Some(Err(e.clone_kind()));
                    }
                }
            }
        }
        let batch: Vec<(BlockId, &[u8])> = claimed.iter().map(|&i| items[i]).collect();
        let mut failed: Vec<BlockId> = Vec::new();
        for (&i, outcome) in claimed.iter().zip(store.put_batch(&batch)) {
            if outcome.is_err() {
                failed.push(items[i].0);
            }
            results[i] = Some(outcome);
        }
        if !failed.is_empty() {
            // The claim made this rank the holder; release it so a later put elsewhere
            // stores the block instead of being told it is held.
            if let Err(e) = self.unregister(&failed, self.rank() as u32) {
                tracing::warn!(error = %e, "could not release claims of blocks that failed to store");
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::new(ErrorKind::Io, "block not placed"))))
            .collect()
    }

    fn put_registered(&self, items: &[(BlockId, &[u8])]) -> Vec<Result<PutOutcome>> {
        let mut results = self.shared.store.put_batch(items);
        let stored: Vec<usize> = (0..items.len()).filter(|&i| results[i].is_ok()).collect();
        let groups = self.by_owner(stored.iter().map(|&i| items[i].0));
        let calls = groups
            .iter()
            .map(|(&rank, members)| {
                self.call(rank, Op::Register, members.len(), |w| {
                    for &m in members {
                        let (id, data) = items[stored[m]];
                        w.id(id);
                        w.u64(data.len() as u64);
                    }
                })
            })
            .collect();
        for ((rank, members), reply) in groups.iter().zip(self.exchange(calls)) {
            if let Err(e) = reply.and_then(|bytes| Reader::reply(&bytes, *rank).map(|_| ())) {
                for &m in members {
                    results[stored[m]] = Err(e.clone_kind().with_context(
                        "detail",
                        "stored on this rank but not registered with its owner",
                    ));
                }
            }
        }
        results
    }

    fn unregister(&self, ids: &[BlockId], holder: u32) -> Result<()> {
        let groups = self.by_owner(ids.iter().copied());
        let calls = groups
            .iter()
            .map(|(&rank, members)| {
                self.call(rank, Op::Unregister, members.len(), |w| {
                    for &m in members {
                        w.id(ids[m]);
                        w.u32(holder);
                    }
                })
            })
            .collect();
        for (reply, rank) in self.exchange(calls).into_iter().zip(groups.keys()) {
            Reader::reply(&reply?, *rank)?;
        }
        Ok(())
    }

    /// Where each block is: its length and holders, as its owner knows them; `None` for
    /// blocks nobody holds. One message per owner rank.
    fn locate(&self, ids: &[BlockId]) -> Vec<Result<Located>> {
        let mut results: Vec<Option<Result<Located>>> = (0..ids.len()).map(|_| None).collect();
        let groups = self.by_owner(ids.iter().copied());
        let calls = groups
            .iter()
            .map(|(&rank, members)| {
                self.call(rank, Op::Locate, members.len(), |w| {
                    for &m in members {
                        w.id(ids[m]);
                    }
                })
            })
            .collect();
        for ((rank, members), reply) in groups.iter().zip(self.exchange(calls)) {
            let parsed = reply.and_then(|bytes| {
                let mut reader = Reader::reply(&bytes, *rank)?;
                members
                    .iter()
                    .map(|_| {
                        let len = reader.u64()?;
                        let count = usize::from(reader.u16()?);
                        let holders = (0..count)
                            .map(|_| reader.u32())
                            .collect::<Result<Vec<u32>>>()?;
                        Ok((!holders.is_empty()).then_some((len, holders)))
                    })
                    .collect::<Result<Vec<_>>>()
            });
            match parsed {
                Ok(found) => {
                    for (&m, where_) in members.iter().zip(found) {
                        results[m] = Some(Ok(where_));
                    }
                }
                Err(e) => {
                    for &m in members {
                        results[m] = Some(Err(e.clone_kind()));
                    }
                }
            }
        }
        results.into_iter().map(|r| r.unwrap_or(Ok(None))).collect()
    }

    /// Copies the block into the start of `out` (see [`ClusterStore::get_batch`]).
    pub fn get(&self, id: BlockId, out: &mut [u8]) -> Result<Option<usize>> {
        self.get_batch(&mut [(id, out)])
            .pop()
            .unwrap_or_else(|| Err(Error::new(ErrorKind::Io, "empty batch result")))
    }

    /// Reads many blocks into their buffers; one result per item, in order (`Ok(None)`
    /// for a miss). Blocks this rank holds are read locally; the others are located with
    /// one message per owner rank. A holder on this node (same kernel boot id) is asked
    /// where its blocks lie in its shm pool, and they are copied from there
    /// ([`ClusterStore::direct_reads`]); the rest are fetched with one request per holder
    /// rank, each block received straight into its buffer. Every block is checked
    /// against the checksum it was stored with. A failed or mismatching transfer is a
    /// miss (`Ok(None)`); the buffer's bytes are then unspecified.
    pub fn get_batch(&self, items: &mut [(BlockId, &mut [u8])]) -> Vec<Result<Option<usize>>> {
        if let Err(e) = self.check_open() {
            return items.iter().map(|_| Err(e.clone_kind())).collect();
        }
        let mut results = self.shared.store.get_batch(items);
        if self.ranks < 2 {
            return results;
        }
        // Misses and local failures (a corrupt local copy, an I/O error) try the cluster;
        // a buffer too small stays the caller's error.
        let pending: Vec<usize> = (0..items.len())
            .filter(|&i| match &results[i] {
                Ok(None) => true,
                Ok(Some(_)) => false,
                Err(e) => e.kind() != ErrorKind::InvalidInput,
            })
            .collect();
        if pending.is_empty() {
            return results;
        }
        let ids: Vec<BlockId> = pending.iter().map(|&i| items[i].0).collect();
        let me = self.rank() as u32;
        // holder rank -> positions in `pending`, and each position's length
        let mut by_holder: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        let mut lens = vec![0u64; pending.len()];
        for (p, located) in self.locate(&ids).into_iter().enumerate() {
            let i = pending[p];
            match located {
                Ok(Some((len, holders))) => {
                    let others: Vec<u32> = holders.into_iter().filter(|&h| h != me).collect();
                    if others.is_empty() {
                        self.miss(&mut results[i]);
                    } else if (items[i].1.len() as u64) < len {
                        results[i] = Err(Error::new(
                            ErrorKind::InvalidInput,
                            "output buffer smaller than the block",
                        )
                        .with_context("id", items[i].0)
                        .with_context("block_bytes", len)
                        .with_context("buffer_bytes", items[i].1.len()));
                    } else {
                        let holder = others[self.rank() % others.len()] as usize;
                        lens[p] = len;
                        by_holder.entry(holder).or_default().push(p);
                    }
                }
                Ok(None) => self.miss(&mut results[i]),
                Err(e) => results[i] = Err(e),
            }
        }
        self.read_direct(items, &pending, &lens, &mut by_holder, &mut results);
        self.fetch(items, &pending, &lens, &by_holder, &mut results);
        results
    }

    /// Copies the blocks of holders on this node straight out of their shm pools (see
    /// [`crate::direct`]) and takes them out of `by_holder`; what is left (blocks not in a
    /// pool, copies that failed their checksum, holders that did not answer) is fetched
    /// over MPI.
    fn read_direct(
        &self,
        items: &mut [(BlockId, &mut [u8])],
        pending: &[usize],
        lens: &[u64],
        by_holder: &mut BTreeMap<usize, Vec<usize>>,
        results: &mut [Result<Option<usize>>],
    ) {
        if !self.direct.enabled() {
            return;
        }
        let holders: Vec<usize> = by_holder
            .keys()
            .copied()
            .filter(|&h| self.direct.same_node(h))
            .collect();
        if holders.is_empty() {
            return;
        }
        let calls = holders
            .iter()
            .map(|&holder| {
                let members = &by_holder[&holder];
                self.call(holder, Op::Place, members.len(), |w| {
                    for &p in members {
                        w.id(items[pending[p]].0);
                    }
                })
            })
            .collect();
        for (&holder, reply) in holders.iter().zip(self.exchange(calls)) {
            let Some(members) = by_holder.remove(&holder) else {
                continue;
            };
            let places = match reply.and_then(|b| Places::decode(&b, holder, members.len())) {
                Ok(places) => places,
                Err(e) => {
                    tracing::debug!(holder, error = %e, "no places from a rank on this node; fetching over MPI");
                    by_holder.insert(holder, members);
                    continue;
                }
            };
            let maps: Vec<_> = places
                .files
                .iter()
                .map(|(tier, file)| (*tier, self.direct.mapping(holder as u32, file)))
                .collect();
            let mut left = Vec::new();
            for (&p, place) in members.iter().zip(places.items) {
                // Between blocks, answer what other ranks asked of this one (their own
                // places and locates wait on this rank's core otherwise).
                server::serve_pending(&self.shared);
                let i = pending[p];
                let read =
                    place
                        .filter(|(_, place)| place.len == lens[p])
                        .and_then(|(tier, place)| {
                            let map = maps.iter().find(|(t, _)| *t == tier)?.1.as_ref()?;
                            copy_place(map, &place, items[i].1).then_some(place.len)
                        });
                match read {
                    Some(len) => {
                        let counters = &self.shared.counters;
                        bump(&counters.remote_hits, 1);
                        bump(&counters.remote_bytes, len);
                        bump(&counters.direct_hits, 1);
                        results[i] = Ok(Some(len as usize));
                    }
                    None => left.push(p),
                }
            }
            if !left.is_empty() {
                by_holder.insert(holder, left);
            }
        }
    }

    /// A block the cluster does not have: a miss, unless the local read failed (that
    /// error is kept).
    fn miss(&self, result: &mut Result<Option<usize>>) {
        if result.is_ok() {
            bump(&self.shared.counters.remote_misses, 1);
            *result = Ok(None);
        }
    }

    fn fetch(
        &self,
        items: &mut [(BlockId, &mut [u8])],
        pending: &[usize],
        lens: &[u64],
        by_holder: &BTreeMap<usize, Vec<usize>>,
        results: &mut [Result<Option<usize>>],
    ) {
        // One request per holder, split where it would exceed what a holder serves at once.
        let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
        for (&holder, members) in by_holder {
            let mut bytes = 0usize;
            let mut group: Vec<usize> = Vec::new();
            for &p in members {
                let len = lens[p] as usize;
                if !group.is_empty() && bytes + len > server::MAX_FETCH_BYTES {
                    groups.push((holder, std::mem::take(&mut group)));
                    bytes = 0;
                }
                bytes += len;
                group.push(p);
            }
            groups.push((holder, group));
        }
        let calls: Vec<Call> = groups
            .iter()
            .map(|(holder, members)| {
                self.call(*holder, Op::Fetch, members.len(), |w| {
                    for &p in members {
                        w.id(items[pending[p]].0);
                        w.u64(lens[p]);
                    }
                })
            })
            .collect();
        let sent: Vec<Result<()>> = calls
            .iter()
            .map(|c| {
                self.shared
                    .requests
                    .send(&c.request, c.rank as i32, REQUEST_TAG)
            })
            .collect();
        let mut absent: Vec<(BlockId, u32)> = Vec::new();
        for ((call, sent), (_, members)) in calls.iter().zip(sent).zip(&groups) {
            let outcome = sent.and_then(|()| {
                self.receive_fetch(call, members, items, pending, lens, results, &mut absent)
            });
            if let Err(e) = outcome {
                tracing::warn!(holder = call.rank, error = %e, "remote fetch failed; its blocks are misses");
                for &p in members {
                    bump(&self.shared.counters.transfer_failures, 1);
                    self.miss(&mut results[pending[p]]);
                }
            }
        }
        // Holders that lost a block (evicted it): the owner forgets them, so the next put
        // of the block stores it again instead of being told it is held.
        for (id, holder) in absent {
            if let Err(e) = self.unregister(&[id], holder) {
                tracing::debug!(%id, error = %e, "could not drop a stale holder");
            }
        }
    }

    /// Receives one holder's answer: a message per block straight into its buffer, then
    /// the trailer with each block's state and checksum.
    #[allow(clippy::too_many_arguments)]
    fn receive_fetch(
        &self,
        call: &Call,
        members: &[usize],
        items: &mut [(BlockId, &mut [u8])],
        pending: &[usize],
        lens: &[u64],
        results: &mut [Result<Option<usize>>],
        absent: &mut Vec<(BlockId, u32)>,
    ) -> Result<()> {
        let ids: Vec<BlockId> = items.iter().map(|(id, _)| *id).collect();
        let wanted: Vec<usize> = members.iter().map(|&p| pending[p]).collect();
        let received = {
            let mut by_index: BTreeMap<usize, &mut [u8]> = BTreeMap::new();
            let mut sorted = wanted.clone();
            sorted.sort_unstable();
            for (i, (_, out)) in items.iter_mut().enumerate() {
                if sorted.binary_search(&i).is_ok() {
                    by_index.insert(i, &mut **out);
                }
            }
            // Positions are distinct within a batch, so each buffer is handed out once.
            let mut buffers: Vec<&mut [u8]> = members
                .iter()
                .filter_map(|&p| {
                    let len = lens[p] as usize;
                    by_index.remove(&pending[p]).map(|out| &mut out[..len])
                })
                .collect();
            if buffers.len() != members.len() {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    "a batch position was handed out twice",
                ));
            }
            self.shared
                .replies
                .recv_parts(&mut buffers, call.rank as i32, call.tag)?
        };
        let trailer = self.shared.replies.recv_vec(call.rank as i32, call.tag)?;
        let mut reader = Reader::reply(&trailer, call.rank)?;
        for ((&p, &i), n) in members.iter().zip(&wanted).zip(received) {
            let state = reader.u8()?;
            let checksum = reader.u64()?;
            let len = lens[p] as usize;
            match verdict(state, n, len, checksum, &items[i].1[..n.min(len)]) {
                Verdict::Hit => {
                    bump(&self.shared.counters.remote_hits, 1);
                    bump(&self.shared.counters.remote_bytes, n as u64);
                    results[i] = Ok(Some(n));
                    continue;
                }
                Verdict::Absent => absent.push((ids[i], call.rank as u32)),
                Verdict::Damaged => {
                    tracing::warn!(id = %ids[i], holder = call.rank,
                        "a remote block failed its checksum; treated as a miss");
                    bump(&self.shared.counters.transfer_failures, 1);
                }
                Verdict::Failed => bump(&self.shared.counters.transfer_failures, 1),
            }
            self.miss(&mut results[i]);
        }
        Ok(())
    }

    /// Whether any rank holds `id`.
    pub fn contains(&self, id: BlockId) -> Result<bool> {
        Ok(self.len_of(id)?.is_some())
    }

    /// The stored length of `id` on this rank, or else as its owner knows it.
    pub fn len_of(&self, id: BlockId) -> Result<Option<u64>> {
        self.check_open()?;
        if let Some(len) = self.shared.store.len_of(id) {
            return Ok(Some(len));
        }
        match self.locate(&[id]).pop() {
            Some(found) => Ok(found?.map(|(len, _)| len)),
            None => Ok(None),
        }
    }

    /// How many leading keys of a token-prefix chain the cluster holds (any rank), with
    /// one message per owner rank for the keys this rank lacks.
    pub fn lookup_prefix(&self, keys: &[BlockId]) -> Result<usize> {
        self.check_open()?;
        let local = self.shared.store.lookup_prefix(keys);
        if local == keys.len() || self.ranks < 2 {
            return Ok(local);
        }
        let rest = &keys[local..];
        let mut count = local;
        for (key, found) in rest.iter().zip(self.locate(rest)) {
            if found?.is_none() && !self.shared.store.contains(*key) {
                break;
            }
            count += 1;
        }
        Ok(count)
    }

    /// Removes `id` from every rank holding it; returns whether any did.
    pub fn remove(&self, id: BlockId) -> Result<bool> {
        self.check_open()?;
        let me = self.rank() as u32;
        let mut removed = self.shared.store.remove(id)?;
        let holders = self
            .locate(&[id])
            .pop()
            .transpose()?
            .flatten()
            .map(|(_, h)| h)
            .unwrap_or_default();
        let calls: Vec<Call> = holders
            .iter()
            .filter(|&&h| h != me)
            .map(|&h| self.call(h as usize, Op::Remove, 1, |w| w.id(id)))
            .collect();
        let ranks: Vec<usize> = calls.iter().map(|c| c.rank).collect();
        for (reply, rank) in self.exchange(calls).into_iter().zip(ranks) {
            let reply = reply?;
            let mut reader = Reader::reply(&reply, rank)?;
            removed |= reader.u8()? != 0;
        }
        for holder in holders.into_iter().chain(std::iter::once(me)) {
            self.unregister(&[id], holder)?;
        }
        Ok(removed)
    }

    /// Makes this rank's persistent tiers durable (see [`CascadeStore::flush`]).
    pub fn flush(&self) -> Result<()> {
        self.shared.store.flush()
    }

    /// Picks up blocks other ranks wrote to a shared tier (a file tier over one
    /// directory), so they are read locally from then on (see [`CascadeStore::refresh`]).
    pub fn refresh(&self) -> Result<RefreshReport> {
        self.check_open()?;
        self.shared.store.refresh()
    }

    /// Every block id this rank holds.
    pub fn ids(&self) -> Vec<BlockId> {
        self.shared.store.ids()
    }

    /// Removes every block this rank holds and tells their owners.
    pub fn clear(&self) -> Result<()> {
        self.check_open()?;
        let ids = self.shared.store.ids();
        self.shared.store.clear()?;
        self.unregister(&ids, self.rank() as u32)
    }

    /// This rank's counters: its local store's and the cluster-level ones.
    pub fn stats(&self) -> ClusterStats {
        let c = &self.shared.counters;
        let read = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        ClusterStats {
            rank: self.rank(),
            ranks: self.ranks,
            owned_blocks: self.shared.directory.len() as u64,
            remote_hits: read(&c.remote_hits),
            direct_hits: read(&c.direct_hits),
            remote_misses: read(&c.remote_misses),
            remote_bytes: read(&c.remote_bytes),
            dedup_hits: read(&c.dedup_hits),
            dedup_bytes_saved: read(&c.dedup_bytes_saved),
            transfer_failures: read(&c.transfer_failures),
            blocks_served: read(&c.blocks_served),
            bytes_served: read(&c.bytes_served),
            local: self.shared.store.stats(),
        }
    }

    /// Blocks and bytes stored over all ranks (collective).
    pub fn totals(&self) -> Result<ClusterTotals> {
        let s: StoreStats = self.shared.store.stats();
        let c = self.stats();
        let sums = self.control.lock().sum_u64(&[
            s.blocks,
            s.bytes,
            c.dedup_hits + s.dedup_hits,
            c.remote_hits,
            c.transfer_failures,
        ])?;
        Ok(ClusterTotals {
            blocks: sums[0],
            bytes: sums[1],
            dedup_hits: sums[2],
            remote_hits: sums[3],
            transfer_failures: sums[4],
        })
    }

    /// Every rank's `value`, in rank order (collective).
    pub fn gather(&self, value: u64) -> Result<Vec<u64>> {
        let mut mine = vec![0u64; self.ranks];
        mine[self.rank()] = value;
        self.control.lock().sum_u64(&mine)
    }

    /// Waits until every rank reached this call (collective).
    pub fn barrier(&self) -> Result<()> {
        self.control.lock().barrier()
    }

    /// Closes this rank's part (collective): waits for every rank, so no request is in
    /// flight, stops the progress thread and flushes the local store. Closing twice does
    /// nothing; later calls fail with `InvalidInput`.
    pub fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let barrier = self.barrier();
        let me = self.rank() as i32;
        let stop = Writer::request(Op::Stop, 0, 0).finish();
        let stopped = self.shared.requests.send(&stop, me, REQUEST_TAG);
        if let Some(server) = self.server.lock().take() {
            if stopped.is_ok() {
                if server.join().is_err() {
                    tracing::warn!("the cluster progress thread panicked");
                }
            } else {
                tracing::warn!("could not stop the progress thread; leaving it detached");
            }
        }
        barrier?;
        stopped?;
        self.shared.store.flush()
    }

    /// Whether [`ClusterStore::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

impl Drop for ClusterStore {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::warn!(error = %e, "closing the cluster store failed");
        }
    }
}

impl std::fmt::Debug for ClusterStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterStore")
            .field("rank", &self.rank())
            .field("ranks", &self.ranks)
            .field("local", &*self.shared.store)
            .finish()
    }
}

/// What one fetched block's trailer entry and received bytes amount to.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// The bytes arrived whole and match the holder's checksum.
    Hit,
    /// The holder no longer has the block.
    Absent,
    /// The holder could not read it (or it changed length).
    Failed,
    /// The holder sent it, but what arrived is short or fails the checksum.
    Damaged,
}

fn verdict(state: u8, received: usize, expected: usize, checksum: u64, bytes: &[u8]) -> Verdict {
    if state == FetchState::Absent as u8 {
        Verdict::Absent
    } else if state != FetchState::Found as u8 {
        Verdict::Failed
    } else if received == expected && bytes.len() == expected && crate::checksum(bytes) == checksum
    {
        Verdict::Hit
    } else {
        Verdict::Damaged
    }
}

/// Copies an error's kind and text (errors are not `Clone`: they may carry a source).
trait CloneKind {
    fn clone_kind(&self) -> Error;
}

impl CloneKind for Error {
    fn clone_kind(&self) -> Error {
        Error::new(self.kind(), self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_blocks_matching_their_checksum_are_hits() {
        let block: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
        let sum = crate::checksum(&block);
        let found = FetchState::Found as u8;
        assert_eq!(verdict(found, 4096, 4096, sum, &block), Verdict::Hit);
        let mut flipped = block.clone();
        flipped[100] ^= 1;
        assert_eq!(verdict(found, 4096, 4096, sum, &flipped), Verdict::Damaged);
        assert_eq!(
            verdict(found, 4000, 4096, sum, &block[..4000]),
            Verdict::Damaged
        );
        assert_eq!(
            verdict(FetchState::Absent as u8, 0, 4096, 0, &[]),
            Verdict::Absent
        );
        assert_eq!(
            verdict(FetchState::Failed as u8, 0, 4096, 0, &[]),
            Verdict::Failed
        );
        assert_eq!(
            verdict(99, 4096, 4096, sum, &block),
            Verdict::Failed,
            "unknown state"
        );
    }
}
