//! The store's figures in the Prometheus text format: its counters and per-tier gauges
//! (read from [`StoreStats`] when rendered, so the ledger stays their only owner) and
//! latency histograms of put and get (recorded by the store as calls return).
//!
//! Names and meanings are listed in `docs/operations.md`; every name starts with
//! `cascade_`, per-tier series carry the labels `tier` (instance name) and `kind`.

use std::time::{Duration, Instant};

use prometheus::core::Collector;
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{Histogram, HistogramOpts, HistogramVec, TextEncoder};

use crate::stats::{StoreStats, TierStats};

/// The `Content-Type` of [`render`]'s output, for HTTP responses.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// Which entry point a latency sample comes from (the `call` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// One block from host memory (`put`, `get`).
    Single,
    /// A batch from host memory (`put_batch`, `get_batch`); one sample per batch.
    Batch,
    /// One block from device memory (`put_device`, `get_device`).
    Device,
    /// A batch from device memory; one sample per batch.
    DeviceBatch,
}

impl Call {
    const ALL: [Call; 4] = [Call::Single, Call::Batch, Call::Device, Call::DeviceBatch];

    fn label(self) -> &'static str {
        match self {
            Call::Single => "single",
            Call::Batch => "batch",
            Call::Device => "device",
            Call::DeviceBatch => "device_batch",
        }
    }
}

/// Latency histograms of the store's put and get calls.
///
/// Each (operation, call) series is resolved once here, so recording a sample is a
/// bucket search and a few atomic adds, with no lock or label lookup.
#[derive(Clone)]
pub struct Latency {
    put_vec: HistogramVec,
    get_vec: HistogramVec,
    put: [Histogram; 4],
    get: [Histogram; 4],
}

impl std::fmt::Debug for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Latency").finish_non_exhaustive()
    }
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

/// Upper bounds in seconds, 1-2.5-5 steps from 2 us (a memory-tier get) to 2.5 s (a
/// large batch from a slow file system).
const BUCKETS: [f64; 19] = [
    0.000_002, 0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001,
    0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

fn histograms(name: &str, help: &str) -> (HistogramVec, [Histogram; 4]) {
    let vec = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(BUCKETS.to_vec()),
        &["call"],
    )
    // Constant names, one label and increasing buckets: no input reaches this.
    .expect("constant histogram options are valid");
    let children = Call::ALL.map(|call| vec.with_label_values(&[call.label()]));
    (vec, children)
}

impl Latency {
    /// Empty histograms.
    pub fn new() -> Self {
        let (put_vec, put) = histograms(
            "cascade_put_duration_seconds",
            "Time of store put calls, by entry point (call); a batch is one sample.",
        );
        let (get_vec, get) = histograms(
            "cascade_get_duration_seconds",
            "Time of store get calls (hits and misses), by entry point (call); a batch is one sample.",
        );
        Self {
            put_vec,
            get_vec,
            put,
            get,
        }
    }

    /// Records a put that took `elapsed`.
    pub fn observe_put(&self, call: Call, elapsed: Duration) {
        self.put[call as usize].observe(elapsed.as_secs_f64());
    }

    /// Records a get that took `elapsed`.
    pub fn observe_get(&self, call: Call, elapsed: Duration) {
        self.get[call as usize].observe(elapsed.as_secs_f64());
    }

    /// Samples recorded so far of puts and of gets, over every call.
    pub fn counts(&self) -> (u64, u64) {
        let sum = |hs: &[Histogram; 4]| hs.iter().map(Histogram::get_sample_count).sum();
        (sum(&self.put), sum(&self.get))
    }

    fn families(&self) -> Vec<MetricFamily> {
        let mut families = self.put_vec.collect();
        families.extend(self.get_vec.collect());
        families
    }
}

/// Times a call for [`Latency`]: started where the call enters, recorded by
/// [`Timer::put`] / [`Timer::get`]. Without histograms (metrics off) it reads no clock.
pub struct Timer<'a> {
    started: Option<(&'a Latency, Instant)>,
}

impl<'a> Timer<'a> {
    /// Starts timing when `latency` is there.
    #[inline]
    pub fn start(latency: Option<&'a Latency>) -> Self {
        Self {
            started: latency.map(|l| (l, Instant::now())),
        }
    }

    /// Records the time since [`Timer::start`] as a put.
    #[inline]
    pub fn put(self, call: Call) {
        if let Some((latency, at)) = self.started {
            latency.observe_put(call, at.elapsed());
        }
    }

    /// Records the time since [`Timer::start`] as a get.
    #[inline]
    pub fn get(self, call: Call) {
        if let Some((latency, at)) = self.started {
            latency.observe_get(call, at.elapsed());
        }
    }
}

fn label(name: &str, value: &str) -> LabelPair {
    let mut pair = LabelPair::default();
    pair.set_name(name.to_string());
    pair.set_value(value.to_string());
    pair
}

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(name.to_string());
    family.set_help(help.to_string());
    family.set_field_type(kind);
    family.set_metric(metrics);
    family
}

fn sample(kind: MetricType, value: f64, labels: Vec<LabelPair>) -> Metric {
    let mut metric = Metric::default();
    metric.set_label(labels);
    match kind {
        MetricType::COUNTER => {
            let mut counter = Counter::default();
            counter.set_value(value);
            metric.set_counter(counter);
        }
        _ => {
            let mut gauge = Gauge::default();
            gauge.set_value(value);
            metric.set_gauge(gauge);
        }
    }
    metric
}

/// One store-wide series.
fn store_family(name: &str, help: &str, kind: MetricType, value: u64) -> MetricFamily {
    family(
        name,
        help,
        kind,
        vec![sample(kind, value as f64, Vec::new())],
    )
}

/// One series per tier of `value`.
fn tier_family(
    stats: &StoreStats,
    name: &str,
    help: &str,
    kind: MetricType,
    value: impl Fn(&TierStats) -> u64,
) -> MetricFamily {
    let metrics = stats
        .tiers
        .iter()
        .map(|t| sample(kind, value(t) as f64, tier_labels(t)))
        .collect();
    family(name, help, kind, metrics)
}

fn tier_labels(t: &TierStats) -> Vec<LabelPair> {
    vec![label("tier", &t.name), label("kind", &t.kind)]
}

/// The metric families of `stats` (and of `latency` when given), in the order of
/// `docs/operations.md`.
pub fn families(stats: &StoreStats, latency: Option<&Latency>) -> Vec<MetricFamily> {
    use MetricType::{COUNTER, GAUGE};
    let mut out = vec![
        store_family(
            "cascade_misses_total",
            "Gets of blocks the store does not hold.",
            COUNTER,
            stats.misses,
        ),
        store_family(
            "cascade_dedup_hits_total",
            "Puts of an id already stored, which copied nothing.",
            COUNTER,
            stats.dedup_hits,
        ),
        store_family(
            "cascade_dedup_saved_bytes_total",
            "Payload bytes that dedup hits did not copy.",
            COUNTER,
            stats.dedup_bytes_saved,
        ),
        store_family(
            "cascade_write_through_failures_total",
            "Write-through copies that could not be written (the block is then only in a non-persistent tier).",
            COUNTER,
            stats.write_through_failures,
        ),
        store_family(
            "cascade_prefetched_blocks_total",
            "Blocks a prefetch moved into a faster tier.",
            COUNTER,
            stats.prefetched,
        ),
        store_family(
            "cascade_prefetch_hits_total",
            "Gets served by a prefetched block from the tier it was prefetched to, first read there.",
            COUNTER,
            stats.prefetch_hits,
        ),
        store_family(
            "cascade_prefetch_wasted_total",
            "Prefetched blocks that left the tier they were prefetched to before any get read them there.",
            COUNTER,
            stats.prefetch_wasted,
        ),
        tier_family(
            stats,
            "cascade_tier_capacity_bytes",
            "Bytes the tier may hold.",
            GAUGE,
            |t| t.capacity_bytes,
        ),
        tier_family(
            stats,
            "cascade_tier_used_bytes",
            "Bytes the tier has allocated to blocks (with its rounding and headers).",
            GAUGE,
            |t| t.used_bytes,
        ),
        tier_family(
            stats,
            "cascade_tier_stored_bytes",
            "Payload bytes of the blocks the store places in the tier.",
            GAUGE,
            |t| t.bytes,
        ),
        tier_family(
            stats,
            "cascade_tier_blocks",
            "Blocks the store places in the tier.",
            GAUGE,
            |t| t.blocks,
        ),
        tier_family(
            stats,
            "cascade_tier_hits_total",
            "Gets served by the tier.",
            COUNTER,
            |t| t.hits,
        ),
        tier_family(
            stats,
            "cascade_tier_puts_total",
            "Puts whose bytes landed in the tier.",
            COUNTER,
            |t| t.puts,
        ),
        tier_family(
            stats,
            "cascade_tier_evictions_total",
            "Blocks dropped from the store by the tier to make room (the last tier's policy).",
            COUNTER,
            |t| t.evictions,
        ),
        tier_family(
            stats,
            "cascade_tier_demotions_total",
            "Blocks moved from the tier to a slower one to make room.",
            COUNTER,
            |t| t.demotions,
        ),
        tier_family(
            stats,
            "cascade_tier_promotions_total",
            "Blocks copied into the tier from a slower one on read.",
            COUNTER,
            |t| t.promotions,
        ),
        tier_family(
            stats,
            "cascade_tier_corrupt_dropped_total",
            "Blocks dropped because their bytes failed the checksum (never served).",
            COUNTER,
            |t| t.corrupt,
        ),
        tier_family(
            stats,
            "cascade_tier_fallback_puts_total",
            "Puts that landed in the tier because no room could be made in time in a faster one.",
            COUNTER,
            |t| t.fallback_puts,
        ),
        tier_family(
            stats,
            "cascade_tier_write_through_copies",
            "Write-through copies held by the tier of blocks a faster tier serves.",
            GAUGE,
            |t| t.copies,
        ),
    ];
    let extra: Vec<Metric> = stats
        .tiers
        .iter()
        .flat_map(|t| {
            t.extra.iter().map(move |(stat, value)| {
                let mut labels = tier_labels(t);
                labels.push(label("stat", stat));
                sample(GAUGE, *value, labels)
            })
        })
        .collect();
    if !extra.is_empty() {
        out.push(family(
            "cascade_tier_stat",
            "Tier-specific figures (the file tier's segments and compactions, ...), by name (stat).",
            GAUGE,
            extra,
        ));
    }
    if let Some(latency) = latency {
        out.extend(latency.families());
    }
    out
}

/// `stats` (and `latency` when given) in the Prometheus text exposition format.
pub fn render(stats: &StoreStats, latency: Option<&Latency>) -> String {
    let mut text = String::new();
    // Encoding fails only for families without metrics or names, which this module
    // never builds; what was encoded before such a failure is still returned.
    if let Err(e) = TextEncoder::new().encode_utf8(&families(stats, latency), &mut text) {
        tracing::warn!(error = %e, "could not render a metric family");
    }
    text
}

impl crate::CascadeStore {
    /// The store's counters, per-tier gauges and latency histograms in the Prometheus
    /// text exposition format (names and meanings: docs/operations.md).
    pub fn metrics_text(&self) -> String {
        render(&self.stats(), self.latency())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn stats() -> StoreStats {
        let mut shm = TierStats {
            name: "shm0".into(),
            kind: "shm".into(),
            capacity_bytes: 1 << 30,
            used_bytes: 8192,
            blocks: 2,
            bytes: 8000,
            hits: 5,
            puts: 3,
            evictions: 0,
            demotions: 1,
            promotions: 2,
            corrupt: 0,
            fallback_puts: 1,
            copies: 0,
            extra: Default::default(),
        };
        shm.extra.insert("fragmentation".into(), 0.25);
        StoreStats {
            misses: 4,
            dedup_hits: 6,
            dedup_bytes_saved: 600,
            prefetched: 7,
            prefetch_hits: 5,
            prefetch_wasted: 1,
            tiers: vec![shm],
            ..StoreStats::default()
        }
    }

    /// The value of the series `name{labels}` in `text`.
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn every_counter_and_gauge_is_rendered_with_its_type_and_labels() {
        let text = render(&stats(), None);
        assert!(
            text.contains("# TYPE cascade_misses_total counter"),
            "{text}"
        );
        assert!(text.contains("# TYPE cascade_tier_blocks gauge"), "{text}");
        assert_eq!(value(&text, "cascade_misses_total"), Some(4.0));
        assert_eq!(value(&text, "cascade_dedup_hits_total"), Some(6.0));
        assert_eq!(value(&text, "cascade_dedup_saved_bytes_total"), Some(600.0));
        assert_eq!(value(&text, "cascade_prefetched_blocks_total"), Some(7.0));
        assert_eq!(value(&text, "cascade_prefetch_hits_total"), Some(5.0));
        assert_eq!(value(&text, "cascade_prefetch_wasted_total"), Some(1.0));
        let tier = "{tier=\"shm0\",kind=\"shm\"}";
        for (name, want) in [
            ("cascade_tier_capacity_bytes", (1u64 << 30) as f64),
            ("cascade_tier_used_bytes", 8192.0),
            ("cascade_tier_stored_bytes", 8000.0),
            ("cascade_tier_blocks", 2.0),
            ("cascade_tier_hits_total", 5.0),
            ("cascade_tier_puts_total", 3.0),
            ("cascade_tier_evictions_total", 0.0),
            ("cascade_tier_demotions_total", 1.0),
            ("cascade_tier_promotions_total", 2.0),
            ("cascade_tier_corrupt_dropped_total", 0.0),
            ("cascade_tier_fallback_puts_total", 1.0),
            ("cascade_tier_write_through_copies", 0.0),
        ] {
            assert_eq!(value(&text, &format!("{name}{tier}")), Some(want), "{name}");
        }
        assert_eq!(
            value(
                &text,
                "cascade_tier_stat{tier=\"shm0\",kind=\"shm\",stat=\"fragmentation\"}"
            ),
            Some(0.25)
        );
        assert!(
            !text.contains("duration_seconds"),
            "no histograms without latency"
        );
    }

    #[test]
    fn latency_samples_land_in_their_call_and_bucket() {
        let latency = Latency::new();
        latency.observe_put(Call::Single, Duration::from_micros(30));
        latency.observe_put(Call::Single, Duration::from_micros(30));
        latency.observe_get(Call::Batch, Duration::from_millis(3));
        Timer::start(Some(&latency)).get(Call::Device);
        Timer::start(None).get(Call::Device);
        assert_eq!(latency.counts(), (2, 2));
        let text = render(&stats(), Some(&latency));
        assert!(
            text.contains("# TYPE cascade_put_duration_seconds histogram"),
            "{text}"
        );
        assert_eq!(
            value(&text, "cascade_put_duration_seconds_count{call=\"single\"}"),
            Some(2.0)
        );
        assert_eq!(
            value(&text, "cascade_get_duration_seconds_count{call=\"batch\"}"),
            Some(1.0)
        );
        assert_eq!(
            value(&text, "cascade_get_duration_seconds_count{call=\"device\"}"),
            Some(1.0)
        );
        // 30 us is above the 25 us bound and within the 50 us one.
        assert_eq!(
            value(
                &text,
                "cascade_put_duration_seconds_bucket{call=\"single\",le=\"0.000025\"}"
            ),
            Some(0.0),
            "{text}"
        );
        assert_eq!(
            value(
                &text,
                "cascade_put_duration_seconds_bucket{call=\"single\",le=\"0.00005\"}"
            ),
            Some(2.0),
            "{text}"
        );
    }

    fn memory_store() -> crate::CascadeStore {
        let config = crate::MemoryTierConfig {
            capacity: crate::config::ByteSize::mib(4),
            prefault: false,
        };
        let tier = crate::MemoryTier::open("memory0", &config).unwrap();
        crate::CascadeStore::new(vec![std::sync::Arc::new(tier)], Default::default()).unwrap()
    }

    #[test]
    fn a_store_records_one_sample_per_call_and_none_when_off() {
        let store = memory_store();
        let id = crate::BlockId::from_u128;
        store.put(id(1), b"one").unwrap();
        let blocks: Vec<(crate::BlockId, &[u8])> = vec![(id(2), b"two"), (id(3), b"three")];
        store.put_batch(&blocks);
        let mut out = [0u8; 8];
        store.get(id(1), &mut out).unwrap();
        store.get(id(9), &mut out).unwrap();
        let (mut a, mut b) = ([0u8; 8], [0u8; 8]);
        store.get_batch(&mut [(id(2), &mut a[..]), (id(3), &mut b[..])]);
        assert_eq!(store.latency().unwrap().counts(), (2, 3));
        let text = store.metrics_text();
        assert_eq!(
            value(&text, "cascade_put_duration_seconds_count{call=\"batch\"}"),
            Some(1.0),
            "a batch is one sample: {text}"
        );
        assert_eq!(
            value(&text, "cascade_get_duration_seconds_count{call=\"single\"}"),
            Some(2.0)
        );
        assert_eq!(value(&text, "cascade_misses_total"), Some(1.0));

        let quiet = memory_store().without_latency_metrics();
        quiet.put(id(1), b"one").unwrap();
        assert!(quiet.latency().is_none());
        assert!(!quiet.metrics_text().contains("duration_seconds"));
    }
}
