//! The conformance kit: one behaviour suite every tier and plugin must pass.
//!
//! Each behaviour checks one promise of [`Tier`] and says which [`Capability`] it needs;
//! a tier whose capability lacks it is reported as skipped, with the reason, instead of
//! being checked. A tier's tests describe the tier once as a [`Subject`] (how to open it,
//! and for a [`Capability::shared`] tier how to open a second instance on the same
//! storage, as another process would) and expand [`conformance_tests!`](crate::conformance_tests)
//! into one `#[test]` per behaviour:
//!
//! ```ignore
//! fn subject() -> Option<Subject> {
//!     let dir = tempfile::tempdir().ok()?;
//!     let config = MyTierConfig::new(dir.path());
//!     Some(Subject::new(move || Ok(Arc::new(MyTier::open("t0", &config)?) as Arc<dyn Tier>)).keeping(dir))
//! }
//! cascade_core::conformance_tests!(mod my_tier_kit, subject);
//! ```
//!
//! `subject` is called once per test and returns `None` where the tier cannot be opened
//! on this machine (after [`crate::require::skip`] has said why). The opener is called
//! several times; each call must open the same tier location (persistent tiers then see
//! what earlier instances wrote; the kit clears the tier before each check). Give the
//! tier a capacity of 4 to 256 MiB; the kit sizes its blocks from the capacity.
//! [`run_all`] runs every behaviour in one call instead.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::any::Any;
use std::sync::Arc;

use rand::{Rng, RngCore, SeedableRng, rngs::StdRng};

use crate::{BlockId, Capability, ErrorKind, Result, Tier};

/// Opens the tier under test.
pub type Opener<'a> = &'a dyn Fn() -> Result<Arc<dyn Tier>>;

type BoxedOpener = Box<dyn Fn() -> Result<Arc<dyn Tier>>>;

/// The tier under test: how to open it, and what must live as long as it (a temporary
/// directory, a server).
pub struct Subject {
    open: BoxedOpener,
    peer: Option<BoxedOpener>,
    // Dropped after every tier the kit opened (the kit drops those first).
    keep: Vec<Box<dyn Any>>,
}

impl Subject {
    /// A subject opened by `open`.
    pub fn new(open: impl Fn() -> Result<Arc<dyn Tier>> + 'static) -> Self {
        Self {
            open: Box::new(open),
            peer: None,
            keep: Vec::new(),
        }
    }

    /// How to open a second instance on the same storage while the first is open, as
    /// another process sharing it would (another writer id on the same directory, the
    /// same server and prefix). The behaviours that need [`Capability::shared`] use it.
    pub fn with_peer(mut self, peer: impl Fn() -> Result<Arc<dyn Tier>> + 'static) -> Self {
        self.peer = Some(Box::new(peer));
        self
    }

    /// Keeps `guard` alive for as long as the subject.
    pub fn keeping(mut self, guard: impl Any) -> Self {
        self.keep.push(Box::new(guard));
        self
    }

    /// Opens the tier (the opener's error fails the check).
    pub fn open(&self) -> Arc<dyn Tier> {
        (self.open)().unwrap_or_else(|e| panic!("the opener failed: {e}"))
    }

    fn opener(&self) -> Opener<'_> {
        &*self.open
    }
}

/// One promise of [`Tier`], checked on its own.
pub struct Behaviour {
    /// The behaviour's name, also the name of its `#[test]`.
    pub name: &'static str,
    /// Why this tier is not checked for it (`None`: it is).
    pub skip_reason: fn(&Capability, &Subject) -> Option<String>,
    /// The check; panics naming what failed.
    pub check: fn(&Subject),
}

fn always(_: &Capability, _: &Subject) -> Option<String> {
    None
}

fn needs_persistent(cap: &Capability, _: &Subject) -> Option<String> {
    (!cap.persistent).then(|| "the tier is not persistent (Capability::persistent)".to_string())
}

fn needs_shared_peer(cap: &Capability, subject: &Subject) -> Option<String> {
    if !cap.shared {
        return Some("the tier's storage is not shared (Capability::shared)".into());
    }
    subject
        .peer
        .is_none()
        .then(|| "the subject gives no peer opener (Subject::with_peer)".to_string())
}

fn needs_refresh_peer(cap: &Capability, subject: &Subject) -> Option<String> {
    if !cap.refresh {
        return Some("the tier does not refresh (Capability::refresh)".into());
    }
    needs_shared_peer(cap, subject)
}

/// The largest block the kit allocates to check [`Capability::max_block_size`].
const LARGEST_CHECKED: u64 = 64 << 20;

fn needs_checkable_largest_block(cap: &Capability, subject: &Subject) -> Option<String> {
    let _ = subject;
    (cap.max_block_size > LARGEST_CHECKED).then(|| {
        format!(
            "the largest block ({} bytes) is more than the kit allocates ({LARGEST_CHECKED})",
            cap.max_block_size
        )
    })
}

/// Every behaviour, in the order [`run_all`] checks them.
pub const BEHAVIOURS: &[Behaviour] = &[
    Behaviour {
        name: "capability_is_consistent",
        skip_reason: always,
        check: capability_is_consistent,
    },
    Behaviour {
        name: "round_trip_random_sizes",
        skip_reason: always,
        check: round_trip_random_sizes,
    },
    Behaviour {
        name: "replace_keeps_latest",
        skip_reason: always,
        check: replace_keeps_latest,
    },
    Behaviour {
        name: "missing_and_short_buffer",
        skip_reason: always,
        check: missing_and_short_buffer,
    },
    Behaviour {
        name: "remove_frees_space",
        skip_reason: always,
        check: remove_frees_space,
    },
    Behaviour {
        name: "capacity_exhaustion",
        skip_reason: always,
        check: capacity_exhaustion,
    },
    Behaviour {
        name: "largest_block_fits",
        skip_reason: needs_checkable_largest_block,
        check: largest_block_fits,
    },
    Behaviour {
        name: "clear_empties",
        skip_reason: always,
        check: clear_empties,
    },
    Behaviour {
        name: "batch_round_trip",
        skip_reason: always,
        check: batch_round_trip,
    },
    Behaviour {
        name: "batch_results_per_item",
        skip_reason: always,
        check: batch_results_per_item,
    },
    Behaviour {
        name: "in_place_batches",
        skip_reason: always,
        check: in_place_batches,
    },
    Behaviour {
        name: "many_threads",
        skip_reason: always,
        check: many_threads,
    },
    Behaviour {
        name: "reopen_keeps_blocks",
        skip_reason: needs_persistent,
        check: reopen_keeps_blocks,
    },
    Behaviour {
        name: "refresh_reports_only_others",
        skip_reason: always,
        check: refresh_reports_only_others,
    },
    Behaviour {
        name: "peer_sees_blocks",
        skip_reason: needs_shared_peer,
        check: peer_sees_blocks,
    },
    Behaviour {
        name: "refresh_reports_peer_changes",
        skip_reason: needs_refresh_peer,
        check: refresh_reports_peer_changes,
    },
];

/// What a behaviour did for one tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Checked and kept.
    Passed,
    /// Not checked, and why.
    Skipped(String),
}

/// Checks the behaviour called `name` on the subject `subject` returns (`None`: the
/// tier is absent on this machine and the test passes as skipped). Prints a skip with
/// its reason; panics when the behaviour fails or `name` is unknown.
pub fn check(name: &str, subject: Option<Subject>) -> Outcome {
    let behaviour = BEHAVIOURS
        .iter()
        .find(|b| b.name == name)
        .unwrap_or_else(|| panic!("no conformance behaviour is called {name:?}"));
    let Some(subject) = subject else {
        return Outcome::Skipped("the tier cannot be opened here".into());
    };
    check_one(behaviour, &subject)
}

fn check_one(behaviour: &Behaviour, subject: &Subject) -> Outcome {
    let capability = subject.open().capability();
    if let Some(reason) = (behaviour.skip_reason)(&capability, subject) {
        eprintln!("conformance {}: skipped: {reason}", behaviour.name);
        return Outcome::Skipped(reason);
    }
    (behaviour.check)(subject);
    Outcome::Passed
}

/// Which behaviours a [`run_all`] checked and which it skipped (with the reasons).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Behaviours checked and kept.
    pub passed: Vec<&'static str>,
    /// Behaviours not checked, with the reason.
    pub skipped: Vec<(&'static str, String)>,
}

/// Checks every behaviour in turn; panics with a message naming the failed check.
pub fn run_all(subject: &Subject) -> Report {
    let mut report = Report::default();
    for behaviour in BEHAVIOURS {
        match check_one(behaviour, subject) {
            Outcome::Passed => report.passed.push(behaviour.name),
            Outcome::Skipped(reason) => report.skipped.push((behaviour.name, reason)),
        }
    }
    report
}

/// Panics unless `names` lists every behaviour exactly once (the check behind the
/// `every_behaviour_has_a_test` test of [`conformance_tests!`](crate::conformance_tests)).
pub fn assert_covers_every_behaviour(names: &[&str]) {
    let mut given: Vec<&str> = names.to_vec();
    given.sort_unstable();
    let mut all: Vec<&str> = BEHAVIOURS.iter().map(|b| b.name).collect();
    all.sort_unstable();
    assert_eq!(
        given, all,
        "conformance_tests! and BEHAVIOURS list different behaviours"
    );
}

/// Expands to a module of one `#[test]` per conformance behaviour, each calling
/// `$subject()` (a function returning `Option<Subject>`) for a fresh tier.
#[macro_export]
macro_rules! conformance_tests {
    (mod $module:ident, $subject:ident) => {
        mod $module {
            $crate::conformance_tests!(@tests $subject;
                capability_is_consistent,
                round_trip_random_sizes,
                replace_keeps_latest,
                missing_and_short_buffer,
                remove_frees_space,
                capacity_exhaustion,
                largest_block_fits,
                clear_empties,
                batch_round_trip,
                batch_results_per_item,
                in_place_batches,
                many_threads,
                reopen_keeps_blocks,
                refresh_reports_only_others,
                peer_sees_blocks,
                refresh_reports_peer_changes,
            );
        }
    };
    (@tests $subject:ident; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::conformance::check(stringify!($name), super::$subject());
            }
        )*

        #[test]
        fn every_behaviour_has_a_test() {
            $crate::conformance::assert_covers_every_behaviour(&[$(stringify!($name)),*]);
        }
    };
}

fn fresh_from(subject: &Subject) -> Arc<dyn Tier> {
    fresh(subject.opener())
}

fn fresh(open: Opener<'_>) -> Arc<dyn Tier> {
    let tier = open().expect("the opener failed");
    tier.clear().expect("clear failed");
    assert_eq!(tier.used(), 0, "{}: used() after clear", tier.name());
    tier
}

/// Random bytes of `len`, reproducible from `seed`.
pub fn random_block(seed: u64, len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    data
}

fn id(n: u64) -> BlockId {
    BlockId::from_u128(u128::from(n) * 0x9E37_79B9_7F4A_7C15 + 1)
}

fn unit(tier: &dyn Tier) -> usize {
    let cap = tier.capacity().min(tier.capability().max_block_size);
    (cap / 32).clamp(1, 1 << 20) as usize
}

fn read_back(tier: &dyn Tier, id: BlockId, want: &[u8]) {
    let mut out = vec![0xA5u8; want.len() + 7];
    let n = tier
        .get(id, &mut out)
        .unwrap_or_else(|e| panic!("{}: get {id}: {e}", tier.name()));
    assert_eq!(n, want.len(), "{}: length of {id}", tier.name());
    assert!(
        out[..n] == *want,
        "{}: bytes of {id} differ from what was put",
        tier.name()
    );
    assert_eq!(tier.len_of(id), Some(want.len() as u64));
    assert!(tier.contains(id));
}

pub fn round_trip_random_sizes(subject: &Subject) {
    let tier = fresh_from(subject);
    let max = unit(&*tier) * 2;
    let mut rng = StdRng::seed_from_u64(1);
    let mut blocks = Vec::new();
    for n in 0..24u64 {
        let len = match n {
            0 => 1,
            1 => 4096,
            2 => max,
            _ => rng.random_range(1..=max),
        };
        let data = random_block(n, len);
        tier.put(id(n), &data)
            .unwrap_or_else(|e| panic!("{}: put {len} bytes: {e}", tier.name()));
        assert!(
            tier.used() <= tier.capacity(),
            "{}: used exceeds capacity",
            tier.name()
        );
        blocks.push((id(n), data));
    }
    for (id, data) in &blocks {
        read_back(&*tier, *id, data);
    }
    let mut listed: Vec<BlockId> = tier.ids().into_iter().map(|(id, _)| id).collect();
    listed.sort();
    let mut want: Vec<BlockId> = blocks.iter().map(|(id, _)| *id).collect();
    want.sort();
    assert_eq!(listed, want, "{}: ids() lists what was put", tier.name());
    let mut seen = Vec::new();
    let (first, data) = &blocks[3];
    tier.get_with(*first, &mut |bytes| {
        seen.extend_from_slice(bytes);
        Ok(())
    })
    .unwrap();
    assert!(seen == *data, "{}: get_with bytes", tier.name());
}

pub fn replace_keeps_latest(subject: &Subject) {
    let tier = fresh_from(subject);
    let len = unit(&*tier);
    tier.put(id(1), &random_block(10, len)).unwrap();
    let newer = random_block(11, len / 2 + 1);
    tier.put(id(1), &newer).unwrap();
    read_back(&*tier, id(1), &newer);
    assert_eq!(
        tier.ids().len(),
        1,
        "{}: a replaced block is listed once",
        tier.name()
    );
}

pub fn missing_and_short_buffer(subject: &Subject) {
    let tier = fresh_from(subject);
    let mut out = vec![0u8; 16];
    let err = tier
        .get(id(99), &mut out)
        .expect_err("get of a missing id must fail");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{}: {err}", tier.name());
    assert!(!tier.contains(id(99)));
    tier.put(id(2), &random_block(2, 4096)).unwrap();
    let mut short = vec![0u8; 100];
    let err = tier
        .get(id(2), &mut short)
        .expect_err("a short buffer must fail");
    assert_eq!(
        err.kind(),
        ErrorKind::InvalidInput,
        "{}: {err}",
        tier.name()
    );
    read_back(&*tier, id(2), &random_block(2, 4096));
}

pub fn remove_frees_space(subject: &Subject) {
    let tier = fresh_from(subject);
    let data = random_block(3, unit(&*tier));
    tier.put(id(3), &data).unwrap();
    let used = tier.used();
    assert!(
        used >= data.len() as u64,
        "{}: used counts the block",
        tier.name()
    );
    assert!(tier.remove(id(3)).unwrap());
    assert!(
        !tier.remove(id(3)).unwrap(),
        "{}: second remove",
        tier.name()
    );
    assert!(!tier.contains(id(3)));
    assert!(tier.used() < used, "{}: remove frees space", tier.name());
    let err = tier
        .get(id(3), &mut vec![0u8; data.len()])
        .expect_err("removed");
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

pub fn capacity_exhaustion(subject: &Subject) {
    let tier = fresh_from(subject);
    let len = unit(&*tier);
    let mut stored = Vec::new();
    let mut full = false;
    for n in 0..(tier.capacity() / len as u64 + 64) {
        let data = random_block(1000 + n, len);
        match tier.put(id(1000 + n), &data) {
            Ok(()) => stored.push((id(1000 + n), data)),
            Err(e) if e.kind() == ErrorKind::TierFull => {
                full = true;
                break;
            }
            Err(e) => panic!("{}: put while filling: {e}", tier.name()),
        }
        assert!(
            tier.used() <= tier.capacity(),
            "{}: used {} > capacity {}",
            tier.name(),
            tier.used(),
            tier.capacity()
        );
    }
    assert!(
        full,
        "{}: filling past capacity must answer TierFull",
        tier.name()
    );
    for (id, data) in &stored {
        read_back(&*tier, *id, data);
    }
    let huge = vec![0u8; (tier.capability().max_block_size.min(tier.capacity()) + 1) as usize];
    let err = tier
        .put(id(5000), &huge)
        .expect_err("a block larger than the tier");
    assert!(
        matches!(err.kind(), ErrorKind::TooLarge),
        "{}: a block larger than capacity gives TooLarge, got {err}",
        tier.name()
    );
    let (victim, _) = stored[0].clone();
    assert!(tier.remove(victim).unwrap());
    tier.put(id(6000), &random_block(6000, len))
        .unwrap_or_else(|e| panic!("{}: put after remove: {e}", tier.name()));
    for (id, data) in &stored[1..] {
        read_back(&*tier, *id, data);
    }
}

pub fn clear_empties(subject: &Subject) {
    let tier = fresh_from(subject);
    for n in 0..8 {
        tier.put(id(n), &random_block(n, 4096)).unwrap();
    }
    tier.clear().unwrap();
    assert_eq!(tier.used(), 0);
    assert!(tier.ids().is_empty());
    assert!(!tier.contains(id(0)));
}

pub fn batch_round_trip(subject: &Subject) {
    let tier = fresh_from(subject);
    let len = unit(&*tier) / 2 + 3;
    let blocks: Vec<(BlockId, Vec<u8>)> = (0..16)
        .map(|n| (id(200 + n), random_block(200 + n, len)))
        .collect();
    let items: Vec<(BlockId, &[u8])> = blocks.iter().map(|(id, d)| (*id, d.as_slice())).collect();
    for result in tier.put_batch(&items) {
        result.unwrap();
    }
    let mut outs: Vec<Vec<u8>> = blocks.iter().map(|_| vec![0x5Au8; len]).collect();
    let mut requests: Vec<(BlockId, &mut [u8])> = blocks
        .iter()
        .zip(outs.iter_mut())
        .map(|((id, _), out)| (*id, out.as_mut_slice()))
        .collect();
    for result in tier.get_batch(&mut requests) {
        assert_eq!(result.unwrap(), len);
    }
    for ((_, data), out) in blocks.iter().zip(&outs) {
        assert!(data == out, "{}: batch bytes differ", tier.name());
    }
}

pub fn many_threads(subject: &Subject) {
    let tier = fresh_from(subject);
    let len = (unit(&*tier) / 4).max(1);
    std::thread::scope(|scope| {
        for t in 0..8u64 {
            let tier = Arc::clone(&tier);
            scope.spawn(move || {
                for round in 0..12u64 {
                    let n = 10_000 + t * 100 + round;
                    let data = random_block(n, len + round as usize);
                    tier.put(id(n), &data)
                        .unwrap_or_else(|e| panic!("{}: thread put: {e}", tier.name()));
                    read_back(&*tier, id(n), &data);
                    assert!(tier.used() <= tier.capacity());
                    if round % 3 == 0 {
                        assert!(tier.remove(id(n)).unwrap());
                    }
                }
            });
        }
    });
    assert_eq!(
        tier.ids().len(),
        8 * 8,
        "{}: blocks left after threads",
        tier.name()
    );
}

pub fn reopen_keeps_blocks(subject: &Subject) {
    let tier = fresh_from(subject);
    if !tier.capability().persistent {
        return;
    }
    let blocks: Vec<(BlockId, Vec<u8>)> = (0..10)
        .map(|n| {
            (
                id(300 + n),
                random_block(300 + n, 4096 * (n as usize + 1) + 5),
            )
        })
        .collect();
    for (id, data) in &blocks {
        tier.put(*id, data).unwrap();
    }
    tier.remove(blocks[0].0).unwrap();
    tier.flush().unwrap();
    drop(tier);
    let reopened = (subject.open)().expect("reopen failed");
    assert!(
        !reopened.contains(blocks[0].0),
        "{}: a removed block came back after reopen",
        reopened.name()
    );
    for (id, data) in &blocks[1..] {
        read_back(&*reopened, *id, data);
    }
    assert_eq!(reopened.ids().len(), blocks.len() - 1);
    reopened.clear().unwrap();
}

/// A tier that no other process shares has nothing to refresh: its own puts, replaces
/// and removes are never reported, and its blocks stay as they were.
pub fn refresh_reports_only_others(subject: &Subject) {
    let tier = fresh_from(subject);
    let len = unit(&*tier);
    let blocks: Vec<(BlockId, Vec<u8>)> = (0..4)
        .map(|n| (id(400 + n), random_block(400 + n, len / 2 + n as usize)))
        .collect();
    for (id, data) in &blocks {
        tier.put(*id, data).unwrap();
    }
    let newer = random_block(499, len / 3);
    tier.put(blocks[1].0, &newer).unwrap();
    assert!(tier.remove(blocks[0].0).unwrap());
    let found = tier.refresh().unwrap();
    assert_eq!(
        found,
        crate::TierRefresh::default(),
        "{}: refresh reported the tier's own changes",
        tier.name()
    );
    assert!(
        !tier.contains(blocks[0].0),
        "{}: removed block back",
        tier.name()
    );
    read_back(&*tier, blocks[1].0, &newer);
    for (id, data) in &blocks[2..] {
        read_back(&*tier, *id, data);
    }
}

/// What the capability claims hangs together: a device only for device memory, refresh
/// only for shared storage, and room for at least one byte.
pub fn capability_is_consistent(subject: &Subject) {
    let tier = subject.open();
    let cap = tier.capability();
    assert!(
        cap.max_block_size > 0,
        "{}: max_block_size is 0",
        tier.name()
    );
    assert!(
        cap.device.is_none() || cap.device_memory,
        "{}: names a device but holds host memory",
        tier.name()
    );
    assert!(
        !cap.refresh || cap.shared,
        "{}: refreshes but its storage is not shared",
        tier.name()
    );
    assert!(
        tier.used() <= tier.capacity(),
        "{}: used exceeds capacity",
        tier.name()
    );
}

/// A block of the largest size the tier promises to accept fits in the empty tier.
pub fn largest_block_fits(subject: &Subject) {
    let tier = fresh_from(subject);
    let len = tier.capability().max_block_size.min(tier.capacity()) as usize;
    let data = random_block(7, len);
    tier.put(id(7), &data).unwrap_or_else(|e| {
        panic!(
            "{}: put of the largest block ({len} bytes): {e}",
            tier.name()
        )
    });
    assert!(
        tier.used() <= tier.capacity(),
        "{}: used exceeds capacity",
        tier.name()
    );
    read_back(&*tier, id(7), &data);
    tier.clear().unwrap();
}

/// A batch answers each item on its own: a missing block, a short buffer or a block too
/// large fail their item and no other.
pub fn batch_results_per_item(subject: &Subject) {
    let tier = fresh_from(subject);
    let len = unit(&*tier) / 2 + 1;
    let a = random_block(800, len);
    let b = random_block(801, len + 5);
    let limit = tier.capability().max_block_size.min(tier.capacity());
    let huge = (limit < LARGEST_CHECKED).then(|| vec![0u8; limit as usize + 1]);
    let mut items: Vec<(BlockId, &[u8])> = vec![(id(800), &a)];
    if let Some(huge) = &huge {
        items.push((id(899), huge));
    }
    items.push((id(801), &b));
    let results = tier.put_batch(&items);
    assert_eq!(
        results.len(),
        items.len(),
        "{}: one result per item",
        tier.name()
    );
    assert!(results[0].is_ok(), "{}: {:?}", tier.name(), results[0]);
    assert!(
        results[items.len() - 1].is_ok(),
        "{}: {:?}",
        tier.name(),
        results[items.len() - 1]
    );
    if huge.is_some() {
        let kind = results[1].as_ref().err().map(|e| e.kind());
        assert_eq!(
            kind,
            Some(ErrorKind::TooLarge),
            "{}: the oversized item",
            tier.name()
        );
        assert!(!tier.contains(id(899)));
    }
    let mut out_a = vec![0u8; len];
    let mut missing = vec![0u8; len];
    let mut out_b = vec![0u8; len + 5];
    let mut short = vec![0u8; 3];
    let mut requests: Vec<(BlockId, &mut [u8])> = vec![
        (id(800), &mut out_a),
        (id(898), &mut missing),
        (id(801), &mut out_b),
        (id(800), &mut short),
    ];
    let results = tier.get_batch(&mut requests);
    let kinds: Vec<std::result::Result<usize, ErrorKind>> = results
        .into_iter()
        .map(|r| r.map_err(|e| e.kind()))
        .collect();
    assert_eq!(
        kinds,
        [
            Ok(len),
            Err(ErrorKind::NotFound),
            Ok(len + 5),
            Err(ErrorKind::InvalidInput)
        ],
        "{}: get_batch results",
        tier.name()
    );
    assert!(
        out_a == a && out_b == b,
        "{}: batch bytes differ",
        tier.name()
    );
}

/// `put_with_batch` stores what its fill wrote (and nothing the fill refused);
/// `get_with_batch` lends the same bytes back and reports a missing block.
pub fn in_place_batches(subject: &Subject) {
    let tier = fresh_from(subject);
    let unit = unit(&*tier);
    let items: Vec<(BlockId, usize)> = (0..6u64)
        .map(|n| (id(900 + n), unit / 4 + 1 + n as usize * 97))
        .collect();
    const REFUSED: usize = 2;
    let results = tier.put_with_batch(&items, &mut |targets| {
        targets
            .iter_mut()
            .map(|(i, room)| {
                if *i == REFUSED {
                    return Err(crate::Error::new(
                        ErrorKind::InvalidInput,
                        "refused by the fill",
                    ));
                }
                room.copy_from_slice(&random_block(900 + *i as u64, room.len()));
                Ok(())
            })
            .collect()
    });
    assert_eq!(
        results.len(),
        items.len(),
        "{}: one result per item",
        tier.name()
    );
    for (i, result) in results.iter().enumerate() {
        if i == REFUSED {
            let kind = result.as_ref().err().map(|e| e.kind());
            assert_eq!(
                kind,
                Some(ErrorKind::InvalidInput),
                "{}: the fill's error",
                tier.name()
            );
        } else {
            assert!(
                result.is_ok(),
                "{}: put_with_batch item {i}: {result:?}",
                tier.name()
            );
        }
    }
    assert!(
        !tier.contains(items[REFUSED].0),
        "{}: a block whose fill failed was stored",
        tier.name()
    );
    assert!(tier.used() <= tier.capacity());
    let mut ids: Vec<BlockId> = items.iter().map(|&(id, _)| id).collect();
    ids.push(id(999));
    let mut seen: Vec<(usize, Vec<u8>)> = Vec::new();
    let results = tier.get_with_batch(&ids, &mut |lent| {
        lent.iter()
            .map(|(i, bytes)| {
                seen.push((*i, bytes.to_vec()));
                Ok(())
            })
            .collect()
    });
    assert_eq!(results.len(), ids.len());
    for (i, result) in results.iter().enumerate() {
        let want_missing = i == REFUSED || i == ids.len() - 1;
        let kind = result.as_ref().err().map(|e| e.kind());
        if want_missing {
            assert_eq!(
                kind,
                Some(ErrorKind::NotFound),
                "{}: get_with_batch {i}",
                tier.name()
            );
        } else {
            assert!(
                result.is_ok(),
                "{}: get_with_batch {i}: {result:?}",
                tier.name()
            );
        }
    }
    seen.sort_by_key(|(i, _)| *i);
    let positions: Vec<usize> = seen.iter().map(|(i, _)| *i).collect();
    assert_eq!(positions, [0, 1, 3, 4, 5], "{}: blocks lent", tier.name());
    for (i, bytes) in &seen {
        assert!(
            *bytes == random_block(900 + *i as u64, items[*i].1),
            "{}: bytes lent for item {i} differ from the fill's",
            tier.name()
        );
    }
    // The checked lend: the same blocks and bytes, and a checksum, where the tier hands
    // one, that is the XXH3-64 of what was written.
    let mut checked: Vec<(usize, Vec<u8>, Option<u64>)> = Vec::new();
    let results = tier.get_with_batch_checked(&ids, &mut |lent| {
        lent.iter()
            .map(|&(i, bytes, checksum)| {
                checked.push((i, bytes.to_vec(), checksum));
                Ok(())
            })
            .collect()
    });
    let kinds = |r: &[crate::Result<()>]| -> Vec<Option<ErrorKind>> {
        r.iter()
            .map(|r| r.as_ref().err().map(|e| e.kind()))
            .collect()
    };
    assert_eq!(
        kinds(&results),
        (0..ids.len())
            .map(|i| (i == REFUSED || i == ids.len() - 1).then_some(ErrorKind::NotFound))
            .collect::<Vec<_>>(),
        "{}: get_with_batch_checked results",
        tier.name()
    );
    checked.sort_by_key(|(i, _, _)| *i);
    assert_eq!(
        checked
            .iter()
            .map(|(i, b, _)| (*i, b.clone()))
            .collect::<Vec<_>>(),
        seen,
        "{}: get_with_batch_checked lends what get_with_batch lends",
        tier.name()
    );
    for (i, bytes, checksum) in &checked {
        if let Some(sum) = checksum {
            assert_eq!(
                *sum,
                twox_hash::XxHash3_64::oneshot(bytes),
                "{}: the stored checksum of item {i} is not the XXH3-64 of its bytes",
                tier.name()
            );
        }
    }
}

fn open_peer(subject: &Subject) -> Arc<dyn Tier> {
    let peer = subject
        .peer
        .as_ref()
        .expect("the gate checked for a peer opener");
    peer().unwrap_or_else(|e| panic!("the peer opener failed: {e}"))
}

/// Two instances sharing the storage see each other's blocks (after a refresh, for a
/// tier that needs one), and a removal on one is seen on the other.
pub fn peer_sees_blocks(subject: &Subject) {
    let a = fresh_from(subject);
    let b = open_peer(subject);
    let len = unit(&*a) / 2 + 11;
    let from_a = random_block(1100, len);
    a.put(id(1100), &from_a).unwrap();
    a.flush().unwrap();
    b.refresh().unwrap();
    read_back(&*b, id(1100), &from_a);
    let from_b = random_block(1101, len + 1);
    b.put(id(1101), &from_b).unwrap();
    b.flush().unwrap();
    a.refresh().unwrap();
    read_back(&*a, id(1101), &from_b);
    assert!(a.remove(id(1100)).unwrap());
    a.flush().unwrap();
    b.refresh().unwrap();
    assert!(
        !b.contains(id(1100)),
        "{}: a block removed by a peer is still listed",
        b.name()
    );
    drop(b);
    a.clear().unwrap();
}

/// [`Tier::refresh`] reports what a peer stored, replaced and removed, each once.
pub fn refresh_reports_peer_changes(subject: &Subject) {
    let a = fresh_from(subject);
    let b = open_peer(subject);
    b.refresh().unwrap();
    let len = unit(&*a) / 2 + 3;
    a.put(id(1200), &random_block(1200, len)).unwrap();
    a.put(id(1201), &random_block(1201, len)).unwrap();
    a.flush().unwrap();
    let mut found = b.refresh().unwrap();
    found.added.sort();
    let mut want = vec![(id(1200), len as u64), (id(1201), len as u64)];
    want.sort();
    assert_eq!(
        found,
        crate::TierRefresh {
            added: want,
            removed: vec![],
        },
        "{}: the peer's puts",
        b.name()
    );
    assert!(a.remove(id(1200)).unwrap());
    let newer = random_block(1299, len / 2);
    a.put(id(1201), &newer).unwrap();
    a.flush().unwrap();
    let found = b.refresh().unwrap();
    assert_eq!(found.removed, [id(1200)], "{}: the peer's remove", b.name());
    assert_eq!(
        found.added,
        [(id(1201), newer.len() as u64)],
        "{}: the peer's replace",
        b.name()
    );
    read_back(&*b, id(1201), &newer);
    assert_eq!(
        b.refresh().unwrap(),
        crate::TierRefresh::default(),
        "{}: a second refresh reports nothing new",
        b.name()
    );
    assert_eq!(
        a.refresh().unwrap(),
        crate::TierRefresh::default(),
        "{}: the writer's own changes",
        a.name()
    );
    drop(b);
    a.clear().unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MemoryTier, MemoryTierConfig, config::ByteSize};

    fn memory_subject() -> Option<Subject> {
        Some(Subject::new(|| {
            let config = MemoryTierConfig {
                capacity: ByteSize::mib(8),
                prefault: false,
            };
            Ok(Arc::new(MemoryTier::open("memory0", &config)?) as Arc<dyn Tier>)
        }))
    }

    crate::conformance_tests!(mod memory_tier_kit, memory_subject);

    #[test]
    fn run_all_checks_what_the_memory_tier_can_do_and_says_why_it_skips_the_rest() {
        let report = run_all(&memory_subject().unwrap());
        assert!(report.passed.contains(&"many_threads"), "{report:?}");
        assert!(report.passed.contains(&"largest_block_fits"), "{report:?}");
        let skipped: Vec<&str> = report.skipped.iter().map(|(name, _)| *name).collect();
        assert_eq!(
            skipped,
            [
                "reopen_keeps_blocks",
                "peer_sees_blocks",
                "refresh_reports_peer_changes"
            ]
        );
        assert!(report.skipped[0].1.contains("not persistent"), "{report:?}");
        assert_eq!(report.passed.len() + report.skipped.len(), BEHAVIOURS.len());
    }

    /// A tier that claims persistence but comes back empty: the kit must catch it, or
    /// the suite could not fail.
    #[test]
    #[should_panic(expected = "get")]
    fn a_tier_that_forgets_on_reopen_fails_the_kit() {
        struct Forgetful(MemoryTier);
        impl Tier for Forgetful {
            fn kind(&self) -> &str {
                "forgetful"
            }
            fn name(&self) -> &str {
                "forgetful"
            }
            fn capability(&self) -> Capability {
                Capability {
                    persistent: true,
                    ..self.0.capability()
                }
            }
            fn capacity(&self) -> u64 {
                self.0.capacity()
            }
            fn used(&self) -> u64 {
                self.0.used()
            }
            fn put(&self, id: BlockId, data: &[u8]) -> Result<()> {
                self.0.put(id, data)
            }
            fn get(&self, id: BlockId, out: &mut [u8]) -> Result<usize> {
                self.0.get(id, out)
            }
            fn len_of(&self, id: BlockId) -> Option<u64> {
                self.0.len_of(id)
            }
            fn remove(&self, id: BlockId) -> Result<bool> {
                self.0.remove(id)
            }
            fn flush(&self) -> Result<()> {
                Ok(())
            }
            fn clear(&self) -> Result<()> {
                self.0.clear()
            }
            fn ids(&self) -> Vec<(BlockId, u64)> {
                self.0.ids()
            }
        }
        let subject = Subject::new(|| {
            let config = MemoryTierConfig {
                capacity: ByteSize::mib(8),
                prefault: false,
            };
            Ok(Arc::new(Forgetful(MemoryTier::open("m", &config)?)) as Arc<dyn Tier>)
        });
        check("reopen_keeps_blocks", Some(subject));
    }
}
