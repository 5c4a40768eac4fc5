//! The pool file's layout: a header page, the slot table, then the data region.
//!
//! ```text
//! [0, 4096)                      header (written once, when the pool is created)
//! [4096, 4096 + 64 * slots)      slot table, one 64-byte record per block
//! [data_offset, + capacity)      data region, carved by the extent allocator
//! ```
//!
//! The header never changes after creation and carries its own checksum, so a damaged
//! header is recognised. Every number is little-endian.

use cascade_core::{Error, ErrorKind, Result};

/// Identifies a Cascade shm pool.
pub const MAGIC: [u8; 8] = *b"CASCSHM\0";
/// The format this build reads and writes; any other is refused.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes reserved for the header.
pub const HEADER_LEN: u64 = 4096;
/// Bytes of one slot record.
pub const SLOT_LEN: u64 = 64;
/// Every block starts on a page boundary, so the GPU tier and direct I/O can address it.
pub const ALIGNMENT: u64 = 4096;

/// Byte offset of the header checksum; the checksum covers everything before it.
const CHECKSUM_AT: usize = 72;

/// Where everything lies in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Number of slot records.
    pub slot_count: u64,
    /// Offset of the slot table.
    pub slot_table_offset: u64,
    /// Offset of the data region (page aligned).
    pub data_offset: u64,
    /// Length of the data region: the tier's capacity.
    pub data_len: u64,
}

impl Layout {
    /// The layout of a new pool.
    pub fn new(capacity: u64, slot_count: u64) -> Result<Self> {
        let capacity = capacity - capacity % ALIGNMENT;
        if capacity == 0 {
            return Err(Error::config(format!(
                "capacity must be at least {ALIGNMENT} bytes"
            )));
        }
        if slot_count == 0 || slot_count > u64::from(u32::MAX) {
            return Err(Error::config(format!(
                "max_blocks must be between 1 and {}",
                u32::MAX
            )));
        }
        let table = slot_count * SLOT_LEN;
        let data_offset = (HEADER_LEN + table).div_ceil(ALIGNMENT) * ALIGNMENT;
        let layout = Self {
            slot_count,
            slot_table_offset: HEADER_LEN,
            data_offset,
            data_len: capacity,
        };
        layout
            .file_len_checked()
            .ok_or_else(|| Error::config("capacity too large"))?;
        Ok(layout)
    }

    fn file_len_checked(&self) -> Option<u64> {
        let len = self.data_offset.checked_add(self.data_len)?;
        usize::try_from(len).ok()?;
        Some(len)
    }

    /// Total bytes of the file.
    pub fn file_len(&self) -> u64 {
        self.data_offset + self.data_len
    }

    /// The header page of a pool with this layout.
    pub fn encode(&self) -> [u8; HEADER_LEN as usize] {
        let mut page = [0u8; HEADER_LEN as usize];
        page[0..8].copy_from_slice(&MAGIC);
        page[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        page[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
        let words = [
            self.slot_count,
            SLOT_LEN,
            self.slot_table_offset,
            self.data_offset,
            self.data_len,
            ALIGNMENT,
            0, // reserved
        ];
        for (i, word) in words.iter().enumerate() {
            page[16 + 8 * i..24 + 8 * i].copy_from_slice(&word.to_le_bytes());
        }
        let checksum = cascade_hash::checksum(&page[..CHECKSUM_AT]);
        page[CHECKSUM_AT..CHECKSUM_AT + 8].copy_from_slice(&checksum.to_le_bytes());
        page
    }

    /// Reads and checks a header page from a file of `file_len` bytes.
    ///
    /// Another magic or format version is [`ErrorKind::Incompatible`]; a header whose
    /// checksum or numbers do not add up is [`ErrorKind::Corrupt`].
    pub fn decode(page: &[u8], file_len: u64) -> Result<Self> {
        if page.len() < CHECKSUM_AT + 8 {
            return Err(Error::new(
                ErrorKind::Corrupt,
                "file too short to hold a shm pool header",
            ));
        }
        if page[0..8] != MAGIC {
            return Err(Error::new(
                ErrorKind::Incompatible,
                "file is not a Cascade shm pool (unknown magic); refusing to overwrite it",
            ));
        }
        let version = u32::from_le_bytes(array(&page[8..12]));
        if version != FORMAT_VERSION {
            return Err(Error::new(
                ErrorKind::Incompatible,
                "shm pool was written by another format version; move or delete it, or point `path` elsewhere",
            )
            .with_context("file_version", version)
            .with_context("supported_version", FORMAT_VERSION));
        }
        let stored = u64::from_le_bytes(array(&page[CHECKSUM_AT..CHECKSUM_AT + 8]));
        if stored != cascade_hash::checksum(&page[..CHECKSUM_AT]) {
            return Err(Error::new(
                ErrorKind::Corrupt,
                "shm pool header is damaged (checksum mismatch)",
            ));
        }
        let word = |i: usize| u64::from_le_bytes(array(&page[16 + 8 * i..24 + 8 * i]));
        let layout = Self {
            slot_count: word(0),
            slot_table_offset: word(2),
            data_offset: word(3),
            data_len: word(4),
        };
        let consistent = u32::from_le_bytes(array(&page[12..16])) as u64 == HEADER_LEN
            && word(1) == SLOT_LEN
            && word(5) == ALIGNMENT
            && layout.slot_table_offset == HEADER_LEN
            && Self::new(layout.data_len, layout.slot_count).ok() == Some(layout)
            && layout.file_len_checked() == Some(file_len);
        if !consistent {
            return Err(Error::new(
                ErrorKind::Corrupt,
                "shm pool header does not match the file (layout or length)",
            )
            .with_context("file_bytes", file_len));
        }
        Ok(layout)
    }
}

fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[..N]);
    out
}

/// A slot record as read from the table. Word 0 is the commit word (0: empty, else
/// the block's sequence number); it is stored last with release ordering, after the
/// payload and the other words, so a committed record always describes complete bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotRecord {
    /// Sequence number of the put; a higher one wins when two records share an id.
    pub seq: u64,
    /// The block id as a u128.
    pub id: u128,
    /// Offset of the block in the data region.
    pub offset: u64,
    /// Length of the block in bytes.
    pub len: u64,
    /// xxh3-64 of the block's bytes.
    pub checksum: u64,
}

impl SlotRecord {
    /// Checksum over every other word, stored in word 6: a torn or stray record fails it.
    pub fn record_check(&self) -> u64 {
        let mut bytes = [0u8; 48];
        bytes[0..8].copy_from_slice(&self.seq.to_le_bytes());
        bytes[8..24].copy_from_slice(&self.id.to_le_bytes());
        bytes[24..32].copy_from_slice(&self.offset.to_le_bytes());
        bytes[32..40].copy_from_slice(&self.len.to_le_bytes());
        bytes[40..48].copy_from_slice(&self.checksum.to_le_bytes());
        cascade_hash::checksum(&bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let layout = Layout::new(8 << 20, 1024).unwrap();
        assert_eq!(layout.data_offset % ALIGNMENT, 0);
        assert!(layout.data_offset >= HEADER_LEN + 1024 * SLOT_LEN);
        let page = layout.encode();
        assert_eq!(Layout::decode(&page, layout.file_len()).unwrap(), layout);
    }

    #[test]
    fn damaged_or_foreign_headers_are_refused_by_kind() {
        let layout = Layout::new(8 << 20, 1024).unwrap();
        let len = layout.file_len();
        let mut flipped = layout.encode();
        flipped[40] ^= 1;
        assert_eq!(
            Layout::decode(&flipped, len).unwrap_err().kind(),
            ErrorKind::Corrupt
        );
        let mut version = layout.encode();
        version[8] = 9;
        assert_eq!(
            Layout::decode(&version, len).unwrap_err().kind(),
            ErrorKind::Incompatible
        );
        let mut magic = layout.encode();
        magic[0] = b'X';
        assert_eq!(
            Layout::decode(&magic, len).unwrap_err().kind(),
            ErrorKind::Incompatible
        );
        let page = layout.encode();
        assert_eq!(
            Layout::decode(&page, len + 4096).unwrap_err().kind(),
            ErrorKind::Corrupt
        );
        assert_eq!(
            Layout::decode(&page[..40], len).unwrap_err().kind(),
            ErrorKind::Corrupt
        );
    }

    #[test]
    fn record_check_covers_every_word() {
        let record = SlotRecord {
            seq: 1,
            id: 2,
            offset: 4096,
            len: 5,
            checksum: 6,
        };
        let base = record.record_check();
        assert_ne!(base, SlotRecord { seq: 2, ..record }.record_check());
        assert_ne!(base, SlotRecord { id: 3, ..record }.record_check());
        assert_ne!(
            base,
            SlotRecord {
                offset: 0,
                ..record
            }
            .record_check()
        );
        assert_ne!(base, SlotRecord { len: 4, ..record }.record_check());
        assert_ne!(
            base,
            SlotRecord {
                checksum: 7,
                ..record
            }
            .record_check()
        );
    }
}
