//! Dedup on a synthetic chat workload: conversations that share system prompts and, turn
//! after turn, their own earlier turns.
//!
//! The workload (also described in docs/benchmarks.md): `system_prompts` prompts of
//! `system_prompt_blocks` KV blocks each; `conversations` conversations, conversation `c`
//! using prompt `c % system_prompts`; each has `turns` turns adding `blocks_per_turn`
//! blocks. An engine without prefix reuse stores the KV of the whole context at every
//! turn: turn `t` (1-based) puts the prompt's blocks, every earlier turn's blocks, and the
//! new ones, `system_prompt_blocks + t * blocks_per_turn` blocks. A block's bytes depend
//! only on what it encodes (the prompt and position, or the conversation, turn and
//! position), so ids from `put_content` repeat exactly where the KV repeats.

use std::time::Instant;

use cascade::Result;
use rayon::prelude::*;
use serde::Serialize;

use crate::bench::Bench;
use crate::dataset::{AlignedBuf, fill_block};
use crate::setup;
use crate::stats::{Samples, gbps};

/// The shape of the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Workload {
    /// Distinct system prompts.
    pub system_prompts: usize,
    /// KV blocks of each system prompt.
    pub system_prompt_blocks: usize,
    /// Conversations.
    pub conversations: usize,
    /// Turns per conversation.
    pub turns: usize,
    /// New KV blocks per turn.
    pub blocks_per_turn: usize,
}

/// Which distinct block a put carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlockRef {
    /// Block `index` of system prompt `prompt`.
    System {
        /// The prompt.
        prompt: usize,
        /// Position in the prompt.
        index: usize,
    },
    /// Block `index` added by turn `turn` of conversation `conversation`.
    Turn {
        /// The conversation.
        conversation: usize,
        /// The turn (0-based).
        turn: usize,
        /// Position within the turn.
        index: usize,
    },
}

impl Workload {
    /// The default shape, with conversations scaled to about `--blocks / 128` (at least 4)
    /// so a larger run dedups a larger workload.
    pub fn for_blocks(blocks: usize) -> Self {
        Self {
            system_prompts: 4,
            system_prompt_blocks: 8,
            conversations: (blocks / 128).max(4),
            turns: 4,
            blocks_per_turn: 2,
        }
    }

    /// Every request (one per turn of every conversation) as the blocks it puts, in order.
    pub fn requests(&self) -> Vec<Vec<BlockRef>> {
        let mut requests = Vec::with_capacity(self.conversations * self.turns);
        for conversation in 0..self.conversations {
            let prompt = conversation % self.system_prompts.max(1);
            for turn in 0..self.turns {
                let mut blocks: Vec<BlockRef> = (0..self.system_prompt_blocks)
                    .map(|index| BlockRef::System { prompt, index })
                    .collect();
                for earlier in 0..=turn {
                    blocks.extend((0..self.blocks_per_turn).map(|index| BlockRef::Turn {
                        conversation,
                        turn: earlier,
                        index,
                    }));
                }
                requests.push(blocks);
            }
        }
        requests
    }

    /// Blocks put over all requests:
    /// `conversations * (turns * system_prompt_blocks + blocks_per_turn * turns * (turns + 1) / 2)`.
    pub fn logical_blocks(&self) -> usize {
        self.conversations
            * (self.turns * self.system_prompt_blocks
                + self.blocks_per_turn * self.turns * (self.turns + 1) / 2)
    }

    /// Distinct blocks: `system_prompts * system_prompt_blocks + conversations * turns * blocks_per_turn`
    /// (only prompts that some conversation uses count).
    pub fn unique_blocks(&self) -> usize {
        self.system_prompts.min(self.conversations) * self.system_prompt_blocks
            + self.conversations * self.turns * self.blocks_per_turn
    }

    /// Logical over distinct blocks.
    pub fn expected_ratio(&self) -> f64 {
        self.logical_blocks() as f64 / self.unique_blocks().max(1) as f64
    }

    /// The position of a block among all distinct blocks (its content seed).
    pub fn content_index(&self, block: BlockRef) -> usize {
        match block {
            BlockRef::System { prompt, index } => prompt * self.system_prompt_blocks + index,
            BlockRef::Turn {
                conversation,
                turn,
                index,
            } => {
                self.system_prompts * self.system_prompt_blocks
                    + (conversation * self.turns + turn) * self.blocks_per_turn
                    + index
            }
        }
    }

    /// Distinct content slots (prompts no conversation uses included).
    fn content_slots(&self) -> usize {
        self.system_prompts * self.system_prompt_blocks
            + self.conversations * self.turns * self.blocks_per_turn
    }
}

/// The dedup table.
#[derive(Debug, Clone, Serialize)]
pub struct DedupTable {
    /// The workload's shape.
    pub workload: Workload,
    /// Bytes per block.
    pub block_size: usize,
    /// The content hash the deployment names.
    pub hasher: String,
    /// Requests (turns over all conversations).
    pub requests: usize,
    /// Blocks put.
    pub logical_blocks: usize,
    /// Distinct blocks.
    pub unique_blocks: usize,
    /// Bytes put.
    pub logical_bytes: u64,
    /// Bytes the store holds afterwards.
    pub stored_bytes: u64,
    /// Puts that copied nothing.
    pub dedup_hits: u64,
    /// Bytes those puts did not copy.
    pub bytes_saved: u64,
    /// Logical over stored bytes.
    pub dedup_ratio: f64,
    /// Logical over distinct blocks, from the workload's shape.
    pub expected_ratio: f64,
    /// `put_content` GB/s of logical bytes (hashing included), all threads.
    pub put_gbps: Samples,
    /// Why there are no figures, when there are none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

/// Runs the workload through the deployment (its tiers moved into the run's folder) with
/// `put_content`, a fresh store per repetition.
pub fn run(bench: &Bench, block_size: usize) -> DedupTable {
    let workload = Workload::for_blocks(bench.args.blocks);
    let mut table = DedupTable {
        workload,
        block_size,
        hasher: format!("{:?}", bench.deployment.config.hasher).to_lowercase(),
        requests: workload.conversations * workload.turns,
        logical_blocks: workload.logical_blocks(),
        unique_blocks: workload.unique_blocks(),
        logical_bytes: (workload.logical_blocks() * block_size) as u64,
        stored_bytes: 0,
        dedup_hits: 0,
        bytes_saved: 0,
        dedup_ratio: 0.0,
        expected_ratio: workload.expected_ratio(),
        put_gbps: Samples::default(),
        skipped: None,
    };
    if let Err(e) = measure(bench, &mut table) {
        table.skipped = Some(format!("could not be measured: {e}"));
    }
    table
}

fn measure(bench: &Bench, table: &mut DedupTable) -> Result<()> {
    let workload = table.workload;
    let block_size = table.block_size;
    let mut content = AlignedBuf::new(workload.content_slots() * block_size)?;
    content
        .as_mut_slice()
        .par_chunks_mut(block_size)
        .enumerate()
        .for_each(|(i, block)| fill_block(block, 0xDED0_0000, i as u64));
    let requests: Vec<Vec<&[u8]>> = workload
        .requests()
        .into_iter()
        .map(|blocks| {
            blocks
                .into_iter()
                .map(|b| {
                    let i = workload.content_index(b);
                    &content.as_slice()[i * block_size..(i + 1) * block_size]
                })
                .collect()
        })
        .collect();
    let pool = bench.pools.get(bench.args.threads)?;
    let mut samples = Vec::new();
    for _ in 0..bench.repeat() {
        let dir = bench.run_dir.fresh("dedup")?;
        let mut config = bench.deployment.config.clone();
        config.num_io_threads = 0;
        for (position, tier) in config.tiers.iter_mut().enumerate() {
            let tier_dir = dir.join(tier.display_name(position));
            std::fs::create_dir_all(&tier_dir).map_err(|e| {
                cascade::Error::io("cannot create a tier folder", e)
                    .with_context("path", tier_dir.display())
            })?;
            setup::relocate(tier, &tier_dir, &bench.run_dir);
        }
        let store = setup::open_store(&config)?;
        let start = Instant::now();
        pool.install(|| {
            requests.par_iter().try_for_each(|blocks| {
                blocks
                    .iter()
                    .try_for_each(|b| store.put_content(b).map(|_| ()))
            })
        })?;
        samples.push(gbps(table.logical_bytes, start.elapsed()));
        let stats = store.stats();
        table.stored_bytes = stats.bytes;
        table.dedup_hits = stats.dedup_hits;
        table.bytes_saved = stats.dedup_bytes_saved;
        table.dedup_ratio = table.logical_bytes as f64 / stats.bytes.max(1) as f64;
        drop(store);
        for (position, tier) in config.tiers.iter().enumerate() {
            bench
                .run_dir
                .release(&dir.join(tier.display_name(position)));
        }
        bench.run_dir.release(&dir);
    }
    table.put_gbps = Samples::new(samples);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn counts_match_the_formulas_and_the_requests() {
        let w = Workload {
            system_prompts: 3,
            system_prompt_blocks: 5,
            conversations: 7,
            turns: 4,
            blocks_per_turn: 2,
        };
        let requests = w.requests();
        assert_eq!(requests.len(), 28);
        let logical: usize = requests.iter().map(Vec::len).sum();
        assert_eq!(logical, w.logical_blocks());
        assert_eq!(logical, 7 * (4 * 5 + 2 * 10));
        let distinct: HashSet<BlockRef> = requests.iter().flatten().copied().collect();
        assert_eq!(distinct.len(), w.unique_blocks());
        assert_eq!(w.unique_blocks(), 3 * 5 + 7 * 4 * 2);
        let slots: HashSet<usize> = distinct.iter().map(|b| w.content_index(*b)).collect();
        assert_eq!(
            slots.len(),
            distinct.len(),
            "two distinct blocks share content"
        );
        assert!((w.expected_ratio() - 280.0 / 71.0).abs() < 1e-12);
    }

    #[test]
    fn each_turn_repeats_the_prompt_and_all_earlier_turns() {
        let w = Workload::for_blocks(2048);
        let requests = w.requests();
        let second_turn = &requests[1];
        assert_eq!(
            second_turn.len(),
            w.system_prompt_blocks + 2 * w.blocks_per_turn
        );
        assert_eq!(
            &second_turn[..w.system_prompt_blocks + w.blocks_per_turn],
            &requests[0][..]
        );
        // Conversations with the same prompt share its blocks, others do not.
        let other = &requests[w.turns * w.system_prompts];
        assert_eq!(other[0], requests[0][0]);
        assert_ne!(requests[w.turns][0], requests[0][0]);
        assert_eq!(Workload::for_blocks(2048).expected_ratio(), 832.0 / 160.0);
        assert_eq!(Workload::for_blocks(1024).expected_ratio(), 416.0 / 96.0);
    }
}
