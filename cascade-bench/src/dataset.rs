//! The blocks a run writes and the buffer it reads them back into.
//!
//! Both live in page-aligned anonymous memory allocated once per run, kept for the whole
//! run and touched before any timing: on this VM, memory left free for about 2 s is
//! handed back to the host and costs 0.4 to 0.5 GB/s to touch again, so nothing is
//! allocated or freed inside a timed loop.
//! Page alignment also lets the O_DIRECT limit write straight from the source.

use cascade::{BlockId, Error, ErrorKind, Result};
use memmap2::MmapMut;
use rayon::prelude::*;

/// Alignment O_DIRECT needs for buffers, offsets and lengths.
pub const DIRECT_ALIGN: usize = 4096;

/// A page-aligned buffer of anonymous memory.
pub struct AlignedBuf {
    map: MmapMut,
    len: usize,
}

impl AlignedBuf {
    /// `len` usable bytes; the mapping is rounded up to whole pages (at least one).
    pub fn new(len: usize) -> Result<Self> {
        let mapped = len.max(1).div_ceil(DIRECT_ALIGN) * DIRECT_ALIGN;
        let map = MmapMut::map_anon(mapped).map_err(|e| {
            Error::io("cannot allocate a benchmark buffer", e).with_context("bytes", mapped)
        })?;
        Ok(Self { map, len })
    }

    /// The usable bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.map[..self.len]
    }

    /// The usable bytes, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.map[..self.len]
    }

    /// The whole page-rounded mapping (for O_DIRECT transfers).
    pub fn aligned(&self) -> &[u8] {
        &self.map[..]
    }

    /// The whole page-rounded mapping, writable.
    pub fn aligned_mut(&mut self) -> &mut [u8] {
        &mut self.map[..]
    }

    /// Writes every page so that timed code never takes a first-touch fault.
    pub fn touch(&mut self) {
        self.map
            .par_chunks_mut(1 << 20)
            .for_each(|chunk| chunk.iter_mut().step_by(DIRECT_ALIGN).for_each(|b| *b = 0));
    }
}

/// Fills `out` with bytes that differ per `(seed, block)`, so no two blocks share content.
pub fn fill_block(out: &mut [u8], seed: u64, block: u64) {
    let mut state = seed ^ block.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut words = out.chunks_exact_mut(8);
    for word in &mut words {
        word.copy_from_slice(&splitmix64(&mut state).to_le_bytes());
    }
    let tail = words.into_remainder();
    let last = splitmix64(&mut state).to_le_bytes();
    tail.copy_from_slice(&last[..tail.len()]);
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `blocks` blocks of `block_size` bytes with distinct ids and contents, and a read-back
/// buffer of the same size.
pub struct Dataset {
    block_size: usize,
    ids: Vec<BlockId>,
    src: AlignedBuf,
    dst: AlignedBuf,
}

impl Dataset {
    /// Allocates, fills and warms both buffers.
    pub fn new(blocks: usize, block_size: usize, seed: u64) -> Result<Self> {
        let total = blocks.checked_mul(block_size).ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidInput,
                "blocks x size overflows the address space",
            )
        })?;
        let mut src = AlignedBuf::new(total)?;
        let mut dst = AlignedBuf::new(total)?;
        src.as_mut_slice()
            .par_chunks_mut(block_size)
            .enumerate()
            .for_each(|(i, block)| fill_block(block, seed, i as u64));
        dst.touch();
        let ids = (0..blocks)
            .map(|i| BlockId::from_u128(((seed as u128) << 64) | i as u128))
            .collect();
        Ok(Self {
            block_size,
            ids,
            src,
            dst,
        })
    }

    /// Number of blocks.
    pub fn blocks(&self) -> usize {
        self.ids.len()
    }

    /// Bytes per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Bytes of one pass over every block.
    pub fn total_bytes(&self) -> u64 {
        (self.ids.len() * self.block_size) as u64
    }

    /// The block ids, in order.
    pub fn ids(&self) -> &[BlockId] {
        &self.ids
    }

    /// The source bytes of block `i`.
    pub fn block(&self, i: usize) -> &[u8] {
        &self.src.as_slice()[i * self.block_size..(i + 1) * self.block_size]
    }

    /// The source buffer.
    pub fn source(&self) -> &AlignedBuf {
        &self.src
    }

    /// Source and read-back buffers together (for copies between them).
    pub fn buffers_mut(&mut self) -> (&AlignedBuf, &mut AlignedBuf) {
        (&self.src, &mut self.dst)
    }

    /// `(id, bytes)` for every block: the argument of `put_batch`.
    pub fn items(&self) -> Vec<(BlockId, &[u8])> {
        self.ids
            .iter()
            .copied()
            .zip(self.src.as_slice().chunks(self.block_size))
            .collect()
    }

    /// `(id, out)` for every block over the read-back buffer: the argument of `get_batch`.
    pub fn targets(&mut self) -> Vec<(BlockId, &mut [u8])> {
        self.ids
            .iter()
            .copied()
            .zip(self.dst.as_mut_slice().chunks_mut(self.block_size))
            .collect()
    }

    /// The read-back bytes of block `i`.
    pub fn read_back(&self, i: usize) -> &[u8] {
        &self.dst.as_slice()[i * self.block_size..(i + 1) * self.block_size]
    }

    /// The read-back buffer, writable (peers copy into it).
    pub fn read_back_mut(&mut self) -> &mut [u8] {
        self.dst.as_mut_slice()
    }

    /// Zeroes the read-back buffer (untimed) so a read that copies nothing cannot pass
    /// [`Dataset::verify`]; it also keeps the pages warm.
    pub fn reset_read_back(&mut self) {
        self.dst
            .as_mut_slice()
            .par_chunks_mut(1 << 20)
            .for_each(|chunk| chunk.fill(0));
    }

    /// Checks that the read-back buffer holds exactly the source bytes.
    pub fn verify(&self, what: &str) -> Result<()> {
        let bad = self
            .src
            .as_slice()
            .par_chunks(self.block_size)
            .zip(self.dst.as_slice().par_chunks(self.block_size))
            .position_any(|(a, b)| a != b);
        match bad {
            None => Ok(()),
            Some(i) => Err(Error::new(
                ErrorKind::Corrupt,
                "bytes read back differ from bytes written",
            )
            .with_context("what", what)
            .with_context("block", i)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_distinct_and_read_back_starts_zeroed() {
        let mut ds = Dataset::new(8, 1000, 7).expect("dataset");
        assert_eq!(ds.total_bytes(), 8000);
        assert_ne!(ds.block(0), ds.block(1));
        assert_eq!(ds.items().len(), 8);
        ds.reset_read_back();
        assert!(ds.verify("empty").is_err());
        let copies: Vec<Vec<u8>> = (0..8).map(|i| ds.block(i).to_vec()).collect();
        for ((_, out), bytes) in ds.targets().into_iter().zip(&copies) {
            out.copy_from_slice(bytes);
        }
        assert!(ds.verify("copied").is_ok());
        assert_eq!(ds.read_back(3), ds.block(3));
    }

    #[test]
    fn aligned_buffers_are_page_aligned() {
        let buf = AlignedBuf::new(5000).expect("buffer");
        assert_eq!(buf.as_slice().len(), 5000);
        assert_eq!(buf.aligned().len(), 8192);
        assert_eq!(buf.aligned().as_ptr() as usize % DIRECT_ALIGN, 0);
    }
}
