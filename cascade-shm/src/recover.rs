//! Rebuilding the tier's state from a pool written by an earlier process.

use std::collections::HashMap;

use cascade_core::Extent;
use rayon::prelude::*;

use crate::layout::{ALIGNMENT, Layout, SlotRecord};
use crate::slots::{SlotState, SlotTable};

/// A block found in the pool, verified.
#[derive(Debug, Clone, Copy)]
pub struct Found {
    /// Its slot.
    pub slot: usize,
    /// Its record.
    pub record: SlotRecord,
    /// The extent it occupies (length rounded to the alignment).
    pub extent: Extent,
}

/// What recovery found.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Blocks kept.
    pub blocks: Vec<Found>,
    /// Slots retracted: damaged records, bytes failing their checksum, extents out of
    /// bounds or overlapping, and older copies of a replaced id.
    pub dropped: usize,
    /// Highest sequence number seen.
    pub max_seq: u64,
}

/// Scans every slot in parallel, verifies each committed block's checksum, and
/// retracts what cannot be trusted.
///
/// `data` is the data region: `layout.data_len` bytes, mapped and not written by
/// anyone while this runs.
pub fn recover(table: &SlotTable, data: &[u8], layout: &Layout) -> Recovered {
    let scanned: Vec<(usize, Option<Found>, u64)> = (0..table.len())
        .into_par_iter()
        .with_min_len(256)
        .filter_map(|slot| match table.read(slot) {
            SlotState::Empty => None,
            SlotState::Damaged => Some((slot, None, 0)),
            SlotState::Committed(record) => {
                Some((slot, verify(record, slot, data, layout), record.seq))
            }
        })
        .collect();

    let mut result = Recovered::default();
    let mut bad = Vec::new();
    let mut newest: HashMap<u128, Found> = HashMap::with_capacity(scanned.len());
    for (slot, found, seq) in scanned {
        result.max_seq = result.max_seq.max(seq);
        let Some(found) = found else {
            bad.push(slot);
            continue;
        };
        // A put that replaced an id and died before retracting the old record leaves
        // two; the higher sequence number is the newer one.
        match newest.get(&found.record.id) {
            Some(kept) if kept.record.seq >= found.record.seq => bad.push(slot),
            _ => {
                if let Some(older) = newest.insert(found.record.id, found) {
                    bad.push(older.slot);
                }
            }
        }
    }
    let mut blocks: Vec<Found> = newest.into_values().collect();
    blocks.sort_by_key(|f| f.extent.offset);
    // Extents of live blocks never overlap; if damage made two claim the same bytes,
    // trust neither's neighbour blindly: keep the first, drop the one that overlaps it.
    let mut end = 0;
    blocks.retain(|f| {
        if f.extent.offset < end {
            bad.push(f.slot);
            false
        } else {
            end = f.extent.end();
            true
        }
    });
    for &slot in &bad {
        table.retract(slot);
    }
    result.dropped = bad.len();
    result.blocks = blocks;
    result
}

fn verify(record: SlotRecord, slot: usize, data: &[u8], layout: &Layout) -> Option<Found> {
    let rounded = record.len.max(1).div_ceil(ALIGNMENT) * ALIGNMENT;
    let in_bounds = record.offset % ALIGNMENT == 0
        && record
            .offset
            .checked_add(rounded)
            .is_some_and(|end| end <= layout.data_len);
    if !in_bounds {
        return None;
    }
    let start = record.offset as usize;
    let bytes = &data[start..start + record.len as usize];
    (cascade_hash::checksum(bytes) == record.checksum).then_some(Found {
        slot,
        record,
        extent: Extent {
            offset: record.offset,
            len: rounded,
        },
    })
}
