//! The report: every table as one serde struct (written as JSON) and as Markdown text.

use std::fmt::Write as _;

use serde::Serialize;

use crate::cold_read::{Direction, FileTable, Layout};
use crate::dedup::DedupTable;
use crate::hashing::HashRow;
use crate::latency::LatencyRow;
use crate::machine::Machine;
use crate::overflow::OverflowTable;
use crate::peers::{PeersTable, Ratio};
use crate::reopen::ReopenTable;
use crate::scaling::ScalingTable;
use crate::stats::Samples;
use crate::tiers::TierRow;

/// The settings a run used.
#[derive(Debug, Clone, Serialize)]
pub struct RunSettings {
    /// Blocks per pass.
    pub blocks: usize,
    /// Bytes per block.
    pub block_size: usize,
    /// Threads of the per-tier, overflow, dedup and peer tables (largest of the scaling table).
    pub threads: usize,
    /// Timed repetitions per figure (after one untimed warm-up where noted).
    pub repeat: u32,
    /// Blocks per batch call.
    pub batch: u32,
    /// The deployment.
    pub deployment: String,
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The command line.
    pub command: String,
    /// The machine.
    pub machine: Machine,
    /// When (UTC).
    pub date: String,
    /// Settings.
    pub settings: RunSettings,
    /// Per-tier table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tiers: Option<Vec<TierRow>>,
    /// File tier cold read against its baselines, same rounds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<FileTable>,
    /// Thread scaling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scaling: Option<ScalingTable>,
    /// Tiered overflow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overflow: Option<OverflowTable>,
    /// Dedup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dedup: Option<DedupTable>,
    /// Latency.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<Vec<LatencyRow>>,
    /// Hashing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash: Option<Vec<HashRow>>,
    /// Peers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peers: Option<PeersTable>,
    /// Cascade / peer.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ratios: Vec<Ratio>,
    /// Wall time of each section (and of removing the run's files), seconds.
    pub section_seconds: Vec<(String, f64)>,
    /// Wall time of the whole run, seconds.
    pub wall_seconds: f64,
}

fn gb(v: f64) -> String {
    format!("{v:.2}")
}

fn opt_gb(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), gb)
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{:.0}%", v * 100.0))
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / f64::from(1 << 20))
}

impl Report {
    /// The report as Markdown: a header, then one table per section.
    pub fn to_text(&self) -> String {
        let mut t = String::new();
        let s = &self.settings;
        let _ = writeln!(t, "# cascade-bench\n");
        let _ = writeln!(t, "- command: `{}`", self.command);
        let _ = writeln!(t, "- machine: {}", self.machine.describe());
        let _ = writeln!(t, "- date: {}", self.date);
        let _ = writeln!(t, "- deployment: {}", s.deployment);
        let _ = writeln!(
            t,
            "- data: {} blocks x {} KiB = {}, {} threads, batches of {}; figures are medians of {} timed repetitions in GB/s (10^9 bytes/s)",
            s.blocks,
            s.block_size / 1024,
            mib((s.blocks * s.block_size) as u64),
            s.threads,
            s.batch,
            s.repeat
        );
        if let Some(rows) = &self.tiers {
            self.tiers_text(&mut t, rows);
        }
        if let Some(table) = &self.file {
            file_text(&mut t, table);
        }
        if let Some(table) = &self.scaling {
            scaling_text(&mut t, table);
        }
        if let Some(table) = &self.overflow {
            overflow_text(&mut t, table);
        }
        if let Some(table) = &self.dedup {
            dedup_text(&mut t, table);
        }
        if let Some(rows) = &self.latency {
            latency_text(&mut t, rows);
        }
        if let Some(rows) = &self.hash {
            hash_text(&mut t, rows);
        }
        if let Some(table) = &self.peers {
            peers_text(&mut t, table, &self.ratios);
        }
        let sections: Vec<String> = self
            .section_seconds
            .iter()
            .map(|(name, secs)| format!("{name} {secs:.1} s"))
            .collect();
        let _ = writeln!(
            t,
            "\nwall time: {:.1} s ({})",
            self.wall_seconds,
            sections.join(", ")
        );
        t
    }

    fn tiers_text(&self, t: &mut String, rows: &[TierRow]) {
        let _ = writeln!(t, "\n## Per tier ({} threads)\n", self.settings.threads);
        let _ = writeln!(
            t,
            "| tier | write GB/s | read GB/s | limit measured in this run | limit write / read GB/s | write efficiency | read efficiency |"
        );
        let _ = writeln!(t, "|---|---|---|---|---|---|---|");
        for row in rows {
            if let Some(reason) = &row.skipped {
                let _ = writeln!(t, "| {} | skipped: {reason} | | | | | |", row.kind);
                continue;
            }
            let read = row.read_gbps.as_ref().map(|s| s.median);
            let cold = if crate::setup::is_file_kind(&row.kind) {
                " (cold)"
            } else {
                ""
            };
            let (what, limits) = match &row.limit {
                Some(l) if l.skipped.is_none() => (
                    l.what.clone(),
                    format!(
                        "{} / {}",
                        opt_gb(l.write_gbps.as_ref().map(|s| s.median)),
                        opt_gb(l.read_gbps.as_ref().map(|s| s.median))
                    ),
                ),
                Some(l) => (
                    format!(
                        "{}: skipped, {}",
                        l.what,
                        l.skipped.clone().unwrap_or_default()
                    ),
                    "-".into(),
                ),
                None => ("-".into(), "-".into()),
            };
            let _ = writeln!(
                t,
                "| {} | {} | {}{cold} | {what} | {limits} | {} | {} |",
                row.kind,
                opt_gb(row.write_gbps.as_ref().map(|s| s.median)),
                opt_gb(read),
                pct(row.write_efficiency),
                pct(row.read_efficiency)
            );
        }
    }
}

fn file_text(t: &mut String, table: &FileTable) {
    let _ = writeln!(
        t,
        "\n## File tier cold read ({} threads, all layouts in the same rounds)\n",
        table.threads
    );
    let _ = writeln!(t, "{}\n", table.note);
    match &table.skipped {
        Some(reason) => {
            let _ = writeln!(t, "skipped: {reason}");
        }
        None => file_layouts_text(t, table),
    }
    if let Some(reopen) = &table.reopen {
        reopen_text(t, reopen);
    }
}

fn reopen_text(t: &mut String, table: &ReopenTable) {
    let _ = writeln!(
        t,
        "\n### File tier reopen ({} blocks of {} bytes)\n",
        table.blocks, table.block_bytes
    );
    if let Some(reason) = &table.skipped {
        let _ = writeln!(t, "skipped: {reason}");
        return;
    }
    let _ = writeln!(t, "{}\n", table.note);
    let _ = writeln!(
        t,
        "| blocks | segment files | cold open ms | warm open ms | cold per open | warm per open | goal |"
    );
    let _ = writeln!(t, "|---|---|---|---|---|---|---|");
    let ms = |s: Option<&Samples>| s.map_or_else(|| "-".into(), |s| format!("{:.1}", s.median));
    let each = |s: Option<&Samples>| {
        s.map_or_else(String::new, |s| {
            let v: Vec<String> = s.values.iter().map(|v| format!("{v:.1}")).collect();
            v.join(", ")
        })
    };
    let verdict = if table.met == Some(true) {
        "met"
    } else {
        "NOT met"
    };
    let _ = writeln!(
        t,
        "| {} | {} | {} | {} | {} | {} | < {:.0} ms (cold median): {verdict} |",
        table.blocks,
        table.segments.map_or_else(|| "-".into(), |n| n.to_string()),
        ms(table.cold_ms.as_ref()),
        ms(table.warm_ms.as_ref()),
        each(table.cold_ms.as_ref()),
        each(table.warm_ms.as_ref()),
        table.goal_ms
    );
}

fn file_layouts_text(t: &mut String, table: &FileTable) {
    let _ = writeln!(t, "| layout | write GB/s | cold read GB/s | how |");
    let _ = writeln!(t, "|---|---|---|---|");
    for r in &table.layouts {
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} |",
            r.layout.name(),
            gb(r.write_gbps.median),
            gb(r.cold_read_gbps.median),
            r.description
        );
    }
    let _ = writeln!(
        t,
        "\n| comparison (median of per-round ratios) | ratio | per round | goal |"
    );
    let _ = writeln!(t, "|---|---|---|---|");
    for r in &table.ratios {
        // Against a raw read of one file the goal is a share of it; elsewhere a speedup.
        let raw = matches!(r.baseline, Layout::RawBuffered | Layout::RawDirect)
            && r.direction == Direction::ColdRead;
        let show = |v: f64| {
            if raw {
                format!("{:.0}%", v * 100.0)
            } else {
                format!("{v:.2}x")
            }
        };
        let goal = match (r.goal, r.met) {
            (Some(g), met) => {
                let verdict = if met == Some(true) { "met" } else { "NOT met" };
                let ceiling = if raw { " (the faster raw read)" } else { "" };
                let g = if raw {
                    format!("{:.0}%", g * 100.0)
                } else {
                    format!("{g}x")
                };
                format!(">= {g}: {verdict}{ceiling}")
            }
            (None, _) if raw => "shown, not judged (the slower raw read)".into(),
            (None, _) => String::new(),
        };
        let rounds: Vec<String> = r.ratio.values.iter().map(|v| show(*v)).collect();
        let _ = writeln!(
            t,
            "| {} | {} | {} | {goal} |",
            r.what,
            show(r.ratio.median),
            rounds.join(", ")
        );
    }
}

fn scaling_text(t: &mut String, table: &ScalingTable) {
    let _ = writeln!(t, "\n## Thread scaling ({})\n", table.kind);
    if let Some(reason) = &table.skipped {
        let _ = writeln!(t, "skipped: {reason}\n");
    }
    if table.rows.is_empty() {
        return;
    }
    let limit = table.rows.last().map(|r| r.limit.as_str()).unwrap_or("-");
    let _ = writeln!(t, "Limit: {limit}, each row with its own thread count.\n");
    let _ = writeln!(
        t,
        "| threads | write GB/s | read GB/s | limit write / read GB/s | write efficiency | read efficiency | read speedup |"
    );
    let _ = writeln!(t, "|---|---|---|---|---|---|---|");
    for r in &table.rows {
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} / {} | {} | {} | {} |",
            r.threads,
            gb(r.write_gbps),
            gb(r.read_gbps),
            opt_gb(r.limit_write_gbps),
            opt_gb(r.limit_read_gbps),
            pct(r.write_efficiency),
            pct(r.read_efficiency),
            r.read_speedup
                .map_or_else(|| "-".into(), |v| format!("{v:.2}x"))
        );
    }
}

fn overflow_text(t: &mut String, table: &OverflowTable) {
    let _ = writeln!(
        t,
        "\n## Tiered overflow ({} over {}, cold reads)\n",
        table.upper, table.lower
    );
    let _ = writeln!(t, "{}.\n", table.note);
    if let Some(reason) = &table.skipped {
        let _ = writeln!(t, "skipped: {reason}\n");
    }
    if table.rows.is_empty() {
        return;
    }
    let base = match (&table.baseline_cold_read_gbps, &table.baseline_skipped) {
        (Some(b), _) => gb(*b),
        (None, Some(reason)) => format!("skipped: {reason}"),
        (None, None) => "-".into(),
    };
    let _ = writeln!(
        t,
        "| overflow | {} capacity | data in file tier | write GB/s | cold read GB/s | one file per block cold read GB/s | speedup |",
        table.upper
    );
    let _ = writeln!(t, "|---|---|---|---|---|---|---|");
    for r in &table.rows {
        let _ = writeln!(
            t,
            "| {}% | {} | {:.0}% | {} | {} | {base} | {} |",
            r.overflow_percent,
            mib(r.upper_capacity_bytes),
            r.measured_lower_percent,
            gb(r.write_gbps.median),
            gb(r.cold_read_gbps.median),
            r.speedup.map_or_else(|| "-".into(), |v| format!("{v:.2}x"))
        );
    }
}

fn dedup_text(t: &mut String, d: &DedupTable) {
    let w = &d.workload;
    let _ = writeln!(
        t,
        "\n## Dedup (conversations sharing system prompts and earlier turns)\n"
    );
    let _ = writeln!(
        t,
        "Workload: {} system prompts of {} blocks, {} conversations of {} turns adding {} blocks each; every turn puts its whole context with `put_content` ({}).\n",
        w.system_prompts,
        w.system_prompt_blocks,
        w.conversations,
        w.turns,
        w.blocks_per_turn,
        d.hasher
    );
    if let Some(reason) = &d.skipped {
        let _ = writeln!(t, "skipped: {reason}");
        return;
    }
    let _ = writeln!(
        t,
        "| requests | blocks put | distinct blocks | bytes put | bytes stored | bytes saved | dedup ratio (expected) | put_content GB/s |"
    );
    let _ = writeln!(t, "|---|---|---|---|---|---|---|---|");
    let _ = writeln!(
        t,
        "| {} | {} | {} | {} | {} | {} | {:.2}x ({:.2}x) | {} |",
        d.requests,
        d.logical_blocks,
        d.unique_blocks,
        mib(d.logical_bytes),
        mib(d.stored_bytes),
        mib(d.bytes_saved),
        d.dedup_ratio,
        d.expected_ratio,
        gb(d.put_gbps.median)
    );
}

fn latency_text(t: &mut String, rows: &[LatencyRow]) {
    let ops = rows.iter().map(|r| r.ops).max().unwrap_or(0);
    let _ = writeln!(
        t,
        "\n## Latency of single calls (1 thread, {ops} calls each, microseconds)\n"
    );
    let _ = writeln!(t, "| tier | put p50 | put p99 | get p50 | get p99 |");
    let _ = writeln!(t, "|---|---|---|---|---|");
    for r in rows {
        match &r.skipped {
            Some(reason) => {
                let _ = writeln!(t, "| {} | skipped: {reason} | | | |", r.kind);
            }
            None => {
                let _ = writeln!(
                    t,
                    "| {} | {:.1} | {:.1} | {:.1} | {:.1} |",
                    r.kind, r.put_p50_us, r.put_p99_us, r.get_p50_us, r.get_p99_us
                );
            }
        }
    }
}

fn hash_text(t: &mut String, rows: &[HashRow]) {
    let threads = rows.first().map_or(1, |r| r.threads);
    let _ = writeln!(t, "\n## Hashing\n");
    let _ = writeln!(
        t,
        "| function | used for | GB/s per core | GB/s on {threads} threads (batch call) |"
    );
    let _ = writeln!(t, "|---|---|---|---|");
    for r in rows {
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} |",
            r.name,
            r.role,
            gb(r.per_core_gbps.median),
            gb(r.all_threads_gbps.median)
        );
    }
}

fn peers_text(t: &mut String, table: &PeersTable, ratios: &[Ratio]) {
    let _ = writeln!(t, "\n## Peers (same blocks, same run)\n");
    let _ = writeln!(
        t,
        "| peer | layout | write GB/s | read GB/s | read | version, settings |"
    );
    let _ = writeln!(t, "|---|---|---|---|---|---|");
    for r in &table.rows {
        match &r.skipped {
            Some(reason) => {
                let _ = writeln!(t, "| {} | {} | skipped: {reason} | | | |", r.peer, r.layout);
            }
            None => {
                let _ = writeln!(
                    t,
                    "| {} | {} | {} | {} | {} | {} |",
                    r.peer,
                    r.layout,
                    opt_gb(r.write()),
                    opt_gb(r.read()),
                    r.read,
                    r.note.clone().unwrap_or_default()
                );
            }
        }
    }
    if ratios.is_empty() {
        return;
    }
    let _ = writeln!(t, "\n## Cascade / peer\n");
    let _ = writeln!(
        t,
        "| comparison | Cascade GB/s | peer GB/s | ratio | goal |"
    );
    let _ = writeln!(t, "|---|---|---|---|---|");
    for r in ratios {
        let goal = match (r.goal, r.met) {
            (Some(g), Some(true)) => format!(">= {g}x: met"),
            (Some(g), _) => format!(">= {g}x: NOT met"),
            _ => String::new(),
        };
        let _ = writeln!(
            t,
            "| {} | {} | {} | {:.2}x | {goal} |",
            r.what,
            gb(r.cascade_gbps),
            gb(r.peer_gbps),
            r.ratio
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reopen(skipped: Option<&str>, cold: Vec<f64>) -> ReopenTable {
        ReopenTable {
            blocks: 100_000,
            block_bytes: 4032,
            goal_ms: 1000.0,
            note: "how".into(),
            skipped: skipped.map(String::from),
            segments: skipped.is_none().then_some(7),
            met: skipped
                .is_none()
                .then(|| crate::reopen::meets_goal(&Samples::new(cold.clone()))),
            cold_ms: skipped.is_none().then(|| Samples::new(cold)),
            warm_ms: skipped
                .is_none()
                .then(|| Samples::new(vec![40.0, 50.0, 45.0])),
        }
    }

    #[test]
    fn reopen_row_shows_medians_and_the_verdict_on_the_cold_median() {
        let mut t = String::new();
        reopen_text(&mut t, &reopen(None, vec![1200.0, 900.0, 1100.0]));
        assert!(t.contains("100000 blocks of 4032 bytes"), "{t}");
        assert!(
            t.contains("| 100000 | 7 | 1100.0 | 45.0 | 1200.0, 900.0, 1100.0 | 40.0, 50.0, 45.0 | < 1000 ms (cold median): NOT met |"),
            "{t}"
        );
        let mut t = String::new();
        reopen_text(&mut t, &reopen(None, vec![300.0, 250.0, 1500.0]));
        assert!(t.contains("| 100000 | 7 | 300.0 |"), "{t}");
        assert!(t.contains("(cold median): met |"), "{t}");
    }

    #[test]
    fn skipped_reopen_says_why_and_shows_no_row() {
        let mut t = String::new();
        reopen_text(
            &mut t,
            &reopen(Some("--reopen-blocks 0 turns it off"), vec![]),
        );
        assert!(t.contains("skipped: --reopen-blocks 0 turns it off"), "{t}");
        assert!(!t.contains("| 100000 |"), "{t}");
    }
}
