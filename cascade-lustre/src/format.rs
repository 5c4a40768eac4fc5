//! The on-disk layout of segment files and their parsing, free of any I/O.
//!
//! A segment file is a sequence of 4 KiB pages:
//!
//! ```text
//! page 0            segment header: magic, format version, nonce, writer, number
//! page 1 ..         records: 64-byte record header, payload, zeros up to the next page
//! (sealed only)     footer: one 48-byte entry per record, zeros, 64-byte trailer at the
//!                   very end of the file
//! ```
//!
//! Every record header carries the segment's random nonce, so a payload that happens to
//! contain a record of another segment is never mistaken for one of this segment while
//! the parser looks for the next header after damage. All integers are little-endian.

use cascade_core::BlockId;
use cascade_hash::checksum;

/// Alignment of every record, footer and direct I/O.
pub const PAGE: u64 = 4096;
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Length of a record header.
pub const HEADER_LEN: usize = 64;
/// Length of one footer entry.
pub const FOOTER_ENTRY_LEN: usize = 48;
/// Length of the footer trailer.
pub const TRAILER_LEN: usize = 64;
/// Longest writer id kept in a segment header.
pub const MAX_WRITER_LEN: usize = 200;

const RECORD_MAGIC: [u8; 4] = *b"CSRC";
const SEGMENT_MAGIC: [u8; 8] = *b"CASCSEG\0";
const FOOTER_MAGIC: [u8; 8] = *b"CASCFTR\0";
const RECORD_KIND_DATA: u16 = 1;

/// `n` rounded up to a whole number of pages.
pub fn round_up(n: u64) -> u64 {
    n.div_ceil(PAGE) * PAGE
}

/// Bytes a record of a `len`-byte payload occupies in its segment.
pub fn record_span(len: u64) -> u64 {
    round_up(HEADER_LEN as u64 + len)
}

/// Why bytes did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Not a valid structure (damaged, torn, or never written).
    Garbage,
    /// A valid structure of another format version.
    Version(u32),
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    let mut word = [0u8; 2];
    word.copy_from_slice(&bytes[at..at + 2]);
    u16::from_le_bytes(word)
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

fn id_at(bytes: &[u8], at: usize) -> BlockId {
    let mut id = [0u8; 16];
    id.copy_from_slice(&bytes[at..at + 16]);
    BlockId::from_bytes(id)
}

/// The header in front of every record's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// The block.
    pub id: BlockId,
    /// Write order: the highest sequence of an id wins when a directory is reopened.
    pub seq: u64,
    /// Payload length in bytes.
    pub len: u64,
    /// xxh3-64 of the payload.
    pub checksum: u64,
}

impl RecordHeader {
    /// The 64 header bytes for a record of the segment with `nonce`.
    pub fn encode(&self, nonce: u64) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(&RECORD_MAGIC);
        out[4..6].copy_from_slice(&(FORMAT_VERSION as u16).to_le_bytes());
        out[6..8].copy_from_slice(&RECORD_KIND_DATA.to_le_bytes());
        out[8..16].copy_from_slice(&nonce.to_le_bytes());
        out[16..32].copy_from_slice(self.id.as_bytes());
        out[32..40].copy_from_slice(&self.seq.to_le_bytes());
        out[40..48].copy_from_slice(&self.len.to_le_bytes());
        out[48..56].copy_from_slice(&self.checksum.to_le_bytes());
        let sum = checksum(&out[..56]);
        out[56..64].copy_from_slice(&sum.to_le_bytes());
        out
    }

    /// Parses a record header; `nonce` of `None` accepts any segment (used only to
    /// recover the nonce of a segment whose header page is damaged).
    pub fn decode(bytes: &[u8], nonce: Option<u64>) -> Result<Self, ParseError> {
        if bytes.len() < HEADER_LEN || bytes[0..4] != RECORD_MAGIC {
            return Err(ParseError::Garbage);
        }
        if checksum(&bytes[..56]) != u64_at(bytes, 56) {
            return Err(ParseError::Garbage);
        }
        let version = u32::from(u16_at(bytes, 4));
        if version != FORMAT_VERSION {
            return Err(ParseError::Version(version));
        }
        if u16_at(bytes, 6) != RECORD_KIND_DATA {
            return Err(ParseError::Garbage);
        }
        if nonce.is_some_and(|n| n != u64_at(bytes, 8)) {
            return Err(ParseError::Garbage);
        }
        Ok(Self {
            id: id_at(bytes, 16),
            seq: u64_at(bytes, 32),
            len: u64_at(bytes, 40),
            checksum: u64_at(bytes, 48),
        })
    }

    /// The segment nonce stored in a header that [`RecordHeader::decode`] accepted.
    pub fn nonce_of(bytes: &[u8]) -> u64 {
        u64_at(bytes, 8)
    }
}

/// Page 0 of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Random per segment; every record header repeats it.
    pub nonce: u64,
    /// The writer's sequence number of this segment.
    pub number: u64,
    /// The writer that created the segment.
    pub writer: String,
}

impl SegmentHeader {
    /// The header page.
    pub fn encode(&self) -> Vec<u8> {
        let mut page = vec![0u8; PAGE as usize];
        page[0..8].copy_from_slice(&SEGMENT_MAGIC);
        page[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        page[16..24].copy_from_slice(&self.nonce.to_le_bytes());
        page[24..32].copy_from_slice(&self.number.to_le_bytes());
        let writer = &self.writer.as_bytes()[..self.writer.len().min(MAX_WRITER_LEN)];
        page[32..34].copy_from_slice(&(writer.len() as u16).to_le_bytes());
        page[34..34 + writer.len()].copy_from_slice(writer);
        let end = PAGE as usize - 8;
        let sum = checksum(&page[..end]);
        page[end..].copy_from_slice(&sum.to_le_bytes());
        page
    }

    /// Parses page 0.
    pub fn decode(page: &[u8]) -> Result<Self, ParseError> {
        let end = PAGE as usize - 8;
        if page.len() < PAGE as usize || page[0..8] != SEGMENT_MAGIC {
            return Err(ParseError::Garbage);
        }
        if checksum(&page[..end]) != u64_at(page, end) {
            return Err(ParseError::Garbage);
        }
        let version = u32_at(page, 8);
        if version != FORMAT_VERSION {
            return Err(ParseError::Version(version));
        }
        let writer_len = usize::from(u16_at(page, 32)).min(MAX_WRITER_LEN);
        Ok(Self {
            nonce: u64_at(page, 16),
            number: u64_at(page, 24),
            writer: String::from_utf8_lossy(&page[34..34 + writer_len]).into_owned(),
        })
    }
}

/// One record as the footer (or a scan) lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMeta {
    /// The block.
    pub id: BlockId,
    /// Write order.
    pub seq: u64,
    /// Offset of the record header in the segment.
    pub offset: u64,
    /// Payload length.
    pub len: u64,
    /// xxh3-64 of the payload.
    pub checksum: u64,
}

impl RecordMeta {
    /// One past the record's last page.
    pub fn end(&self) -> u64 {
        self.offset + record_span(self.len)
    }
}

/// Bytes the footer of `count` records occupies.
pub fn footer_span(count: usize) -> u64 {
    round_up((count * FOOTER_ENTRY_LEN + TRAILER_LEN) as u64)
}

/// The footer of a segment whose data ends at `data_end`: entries, zeros, trailer.
pub fn encode_footer(records: &[RecordMeta], nonce: u64, data_end: u64) -> Vec<u8> {
    let span = footer_span(records.len()) as usize;
    let mut out = vec![0u8; span];
    for (entry, rec) in out.chunks_exact_mut(FOOTER_ENTRY_LEN).zip(records) {
        entry[0..16].copy_from_slice(rec.id.as_bytes());
        entry[16..24].copy_from_slice(&rec.seq.to_le_bytes());
        entry[24..32].copy_from_slice(&rec.offset.to_le_bytes());
        entry[32..40].copy_from_slice(&rec.len.to_le_bytes());
        entry[40..48].copy_from_slice(&rec.checksum.to_le_bytes());
    }
    let entries_sum = checksum(&out[..records.len() * FOOTER_ENTRY_LEN]);
    let t = span - TRAILER_LEN;
    out[t..t + 8].copy_from_slice(&FOOTER_MAGIC);
    out[t + 8..t + 12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[t + 16..t + 24].copy_from_slice(&nonce.to_le_bytes());
    out[t + 24..t + 32].copy_from_slice(&(records.len() as u64).to_le_bytes());
    out[t + 32..t + 40].copy_from_slice(&data_end.to_le_bytes());
    out[t + 40..t + 48].copy_from_slice(&entries_sum.to_le_bytes());
    out[t + 48..t + 56].copy_from_slice(&((span as u64) + data_end).to_le_bytes());
    let sum = checksum(&out[t..t + 56]);
    out[t + 56..t + 64].copy_from_slice(&sum.to_le_bytes());
    out
}

/// What a valid trailer says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    /// Number of footer entries.
    pub count: u64,
    /// Where the records end and the footer starts.
    pub data_end: u64,
    /// xxh3-64 of the entries.
    pub entries_checksum: u64,
}

/// Parses the last 64 bytes of a file of `file_len` bytes as a trailer.
pub fn decode_trailer(bytes: &[u8], nonce: u64, file_len: u64) -> Result<Trailer, ParseError> {
    if bytes.len() < TRAILER_LEN || bytes[0..8] != FOOTER_MAGIC {
        return Err(ParseError::Garbage);
    }
    if checksum(&bytes[..56]) != u64_at(bytes, 56) {
        return Err(ParseError::Garbage);
    }
    let version = u32_at(bytes, 8);
    if version != FORMAT_VERSION {
        return Err(ParseError::Version(version));
    }
    let count = u64_at(bytes, 24);
    let data_end = u64_at(bytes, 32);
    let file_end = u64_at(bytes, 48);
    let fits = usize::try_from(count)
        .ok()
        .and_then(|c| c.checked_mul(FOOTER_ENTRY_LEN))
        .is_some_and(|n| (n as u64) < file_len);
    if u64_at(bytes, 16) != nonce
        || file_end != file_len
        || !fits
        || data_end < PAGE
        || data_end % PAGE != 0
        || data_end.checked_add(footer_span(count as usize)) != Some(file_len)
    {
        return Err(ParseError::Garbage);
    }
    Ok(Trailer {
        count,
        data_end,
        entries_checksum: u64_at(bytes, 40),
    })
}

/// Parses the footer entries that `trailer` describes; every record must lie inside the
/// data area on its own pages.
pub fn decode_entries(bytes: &[u8], trailer: &Trailer) -> Result<Vec<RecordMeta>, ParseError> {
    let count = trailer.count as usize;
    let need = count * FOOTER_ENTRY_LEN;
    if bytes.len() < need || checksum(&bytes[..need]) != trailer.entries_checksum {
        return Err(ParseError::Garbage);
    }
    let mut records = Vec::with_capacity(count);
    let mut previous_end = PAGE;
    for entry in bytes[..need].chunks_exact(FOOTER_ENTRY_LEN) {
        let rec = RecordMeta {
            id: id_at(entry, 0),
            seq: u64_at(entry, 16),
            offset: u64_at(entry, 24),
            len: u64_at(entry, 32),
            checksum: u64_at(entry, 40),
        };
        let in_bounds = rec.offset >= previous_end
            && rec.offset % PAGE == 0
            && rec.len <= trailer.data_end
            && rec
                .offset
                .checked_add(record_span(rec.len))
                .is_some_and(|e| e <= trailer.data_end);
        if !in_bounds {
            return Err(ParseError::Garbage);
        }
        previous_end = rec.end();
        records.push(rec);
    }
    Ok(records)
}

/// Random access to a segment's bytes (a file, or memory in tests).
pub trait ReadAt {
    /// Reads up to `buf.len()` bytes at `offset`; fewer only at the end of the data.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize>;
    /// Length of the data.
    fn size(&self) -> std::io::Result<u64>;
}

impl ReadAt for [u8] {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(<[u8]>::len(self));
        let n = buf.len().min(<[u8]>::len(self) - start);
        buf[..n].copy_from_slice(&self[start..start + n]);
        Ok(n)
    }

    fn size(&self) -> std::io::Result<u64> {
        Ok(<[u8]>::len(self) as u64)
    }
}

/// What a scan of a segment's record area found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanResult {
    /// Valid records in file order.
    pub records: Vec<RecordMeta>,
    /// End of the last valid record (where a writer may append, or a footer go).
    pub valid_end: u64,
    /// Pages between valid records that held no valid header (damage inside the file).
    pub damaged_pages: u64,
    /// Bytes after `valid_end` that were cut off (a torn tail or an unfinished footer).
    pub torn_bytes: u64,
    /// A record of another format version was found.
    pub foreign_version: Option<u32>,
}

/// Walks the records from page 1 to the end, skipping page by page over damage.
///
/// Headers are checked (magic, checksum, nonce); payload checksums are left to reads.
pub fn scan_records<R: ReadAt + ?Sized>(source: &R, nonce: u64) -> std::io::Result<ScanResult> {
    let file_len = source.size()?;
    let mut result = ScanResult {
        valid_end: PAGE.min(file_len),
        ..ScanResult::default()
    };
    let mut offset = PAGE;
    let mut header = [0u8; HEADER_LEN];
    let mut pending_damage = 0u64;
    while offset + HEADER_LEN as u64 <= file_len {
        let n = source.read_at(&mut header, offset)?;
        if n < HEADER_LEN {
            break;
        }
        match RecordHeader::decode(&header, Some(nonce)) {
            Ok(h)
                if offset
                    .checked_add(record_span(h.len))
                    .is_some_and(|e| e <= file_len) =>
            {
                result.records.push(RecordMeta {
                    id: h.id,
                    seq: h.seq,
                    offset,
                    len: h.len,
                    checksum: h.checksum,
                });
                result.damaged_pages += pending_damage;
                pending_damage = 0;
                offset += record_span(h.len);
                result.valid_end = offset;
            }
            Err(ParseError::Version(v)) => {
                result.foreign_version = Some(v);
                break;
            }
            // A header whose payload runs past the end, or no header: step one page.
            _ => {
                pending_damage += 1;
                offset += PAGE;
            }
        }
    }
    result.torn_bytes = file_len.saturating_sub(result.valid_end);
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(n: u64, offset: u64, len: u64) -> RecordMeta {
        RecordMeta {
            id: BlockId::from_u128(u128::from(n)),
            seq: n,
            offset,
            len,
            checksum: n * 7,
        }
    }

    #[test]
    fn record_header_round_trips_and_rejects_other_nonces() {
        let header = RecordHeader {
            id: BlockId::from_u128(42),
            seq: 9,
            len: 131_072,
            checksum: 77,
        };
        let bytes = header.encode(5);
        assert_eq!(RecordHeader::decode(&bytes, Some(5)), Ok(header));
        assert_eq!(RecordHeader::decode(&bytes, None), Ok(header));
        assert_eq!(
            RecordHeader::decode(&bytes, Some(6)),
            Err(ParseError::Garbage)
        );
        let mut flipped = bytes;
        flipped[20] ^= 1;
        assert_eq!(
            RecordHeader::decode(&flipped, Some(5)),
            Err(ParseError::Garbage)
        );
    }

    #[test]
    fn other_versions_are_reported_as_such() {
        let mut page = SegmentHeader {
            nonce: 1,
            number: 2,
            writer: "w".into(),
        }
        .encode();
        page[8..12].copy_from_slice(&7u32.to_le_bytes());
        let end = PAGE as usize - 8;
        let sum = checksum(&page[..end]);
        page[end..].copy_from_slice(&sum.to_le_bytes());
        assert_eq!(SegmentHeader::decode(&page), Err(ParseError::Version(7)));
    }

    #[test]
    fn footer_round_trips() {
        let records = vec![
            meta(1, PAGE, 10),
            meta(2, 2 * PAGE, 5000),
            meta(3, 4 * PAGE, 1),
        ];
        let data_end = 5 * PAGE;
        let footer = encode_footer(&records, 11, data_end);
        let file_len = data_end + footer.len() as u64;
        let trailer = decode_trailer(&footer[footer.len() - TRAILER_LEN..], 11, file_len);
        let trailer = trailer.expect("valid trailer");
        assert_eq!(trailer.data_end, data_end);
        assert_eq!(decode_entries(&footer, &trailer), Ok(records));
        assert!(decode_trailer(&footer[footer.len() - TRAILER_LEN..], 12, file_len).is_err());
        assert!(
            decode_trailer(&footer[footer.len() - TRAILER_LEN..], 11, file_len + PAGE).is_err()
        );
    }

    #[test]
    fn overlapping_footer_entries_are_rejected() {
        let records = vec![meta(1, PAGE, 5000), meta(2, 2 * PAGE, 10)];
        let footer = encode_footer(&records, 1, 4 * PAGE);
        let file_len = 4 * PAGE + footer.len() as u64;
        let trailer = decode_trailer(&footer[footer.len() - TRAILER_LEN..], 1, file_len);
        let trailer = trailer.expect("the trailer itself is valid");
        assert_eq!(decode_entries(&footer, &trailer), Err(ParseError::Garbage));
    }
}
