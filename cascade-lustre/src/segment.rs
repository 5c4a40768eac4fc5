//! One segment file: creating it, loading it (footer or scan), sealing it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use cascade_core::{Access, Error, ErrorKind, Result};
use parking_lot::Mutex;

use crate::format::{
    self, FOOTER_ENTRY_LEN, PAGE, ParseError, RecordHeader, RecordMeta, SegmentHeader, TRAILER_LEN,
};
use crate::io::{self, DirectReader, with_scratch};
use crate::lustre::{self, Striping};

/// File-name suffix of segment files.
pub const SEGMENT_SUFFIX: &str = ".seg";

/// `<writer>.<number>.seg`; numbers are zero-padded so names sort in write order.
pub fn segment_file_name(writer: &str, number: u64) -> String {
    format!("{writer}.{number:010}{SEGMENT_SUFFIX}")
}

/// Splits a segment file name into writer and number.
pub fn parse_segment_file_name(name: &str) -> Option<(String, u64)> {
    let stem = name.strip_suffix(SEGMENT_SUFFIX)?;
    let (writer, number) = stem.rsplit_once('.')?;
    if writer.is_empty() || number.len() != 10 {
        return None;
    }
    Some((writer.to_string(), number.parse().ok()?))
}

/// A segment file and what the tier knows about it.
pub struct Segment {
    /// File name inside the tier directory.
    pub name: String,
    /// The writer that created it.
    pub writer: String,
    /// Full path.
    pub path: PathBuf,
    /// Open for reading (and writing while active or being sealed).
    pub file: File,
    /// Unique among the segments of this process (the key of per-thread read handles;
    /// names can repeat across directories, addresses after a segment is dropped).
    pub serial: u64,
    /// Random per segment, repeated in every record header.
    pub nonce: u64,
    /// This tier may seal, compact and delete it (its writer, or a writer found dead).
    pub owned: bool,
    /// Bytes of records the index points at.
    pub live: AtomicU64,
    /// End of the record area (where the next record or the footer goes).
    pub end: AtomicU64,
    /// Offset up to which writeback of appended records has been started.
    pub written_back: AtomicU64,
    /// Has a footer; never appended to again.
    pub sealed: AtomicBool,
    /// Deleted by compaction or clear; open handles keep serving reads meanwhile.
    pub retired: AtomicBool,
    /// Every record written to it, in file order (the footer's content).
    pub records: Mutex<Vec<RecordMeta>>,
}

/// What loading found out, for the log and the stats.
#[derive(Debug, Default, Clone, Copy)]
pub struct LoadReport {
    /// The footer was missing or invalid and the records were scanned.
    pub scanned: bool,
    /// Bytes cut off the end (torn tail).
    pub torn_bytes: u64,
    /// Damaged pages skipped between records.
    pub damaged_pages: u64,
}

/// Serials handed out so far.
static SERIALS: AtomicU64 = AtomicU64::new(0);

fn next_serial() -> u64 {
    SERIALS.fetch_add(1, Ordering::Relaxed)
}

fn incompatible(path: &Path, version: u32) -> Error {
    Error::new(
        ErrorKind::Incompatible,
        "segment written by another format version of the file tier; use a matching Cascade build or another directory",
    )
    .with_context("path", path.display())
    .with_context("found_version", version)
    .with_context("supported_version", format::FORMAT_VERSION)
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::io(what.to_string(), e).with_context("path", path.display())
}

impl Segment {
    /// Creates a new, empty segment file (striped on Lustre, with `access`'s mode) and
    /// writes its header page.
    pub fn create(
        dir: &Path,
        writer: &str,
        number: u64,
        direct: bool,
        striping: Option<Striping>,
        access: &Access,
    ) -> Result<Self> {
        let name = segment_file_name(writer, number);
        let path = dir.join(&name);
        if let Some(striping) = striping {
            lustre::create_striped(&path, striping);
        }
        let file = io::open_file(&path, true, direct)
            .and_then(|file| access.restrict_new_file(&file).map(|()| file))
            .map_err(|e| io_error("cannot create a segment file", &path, e))?;
        let nonce = random_nonce();
        let header = SegmentHeader {
            nonce,
            number,
            writer: writer.to_string(),
        };
        let page = header.encode();
        with_scratch(|buf| {
            let target = buf.get(page.len(), false);
            target.copy_from_slice(&page);
            io::write_all_vectored_at(&file, &[buf.as_slice()], 0)
        })
        .map_err(|e| io_error("cannot write a segment header", &path, e))?;
        file.set_len(PAGE)
            .map_err(|e| io_error("cannot size a new segment", &path, e))?;
        Ok(Self {
            name,
            writer: writer.to_string(),
            path,
            file,
            serial: next_serial(),
            nonce,
            owned: true,
            live: AtomicU64::new(0),
            end: AtomicU64::new(PAGE),
            written_back: AtomicU64::new(0),
            sealed: AtomicBool::new(false),
            retired: AtomicBool::new(false),
            records: Mutex::new(Vec::new()),
        })
    }

    /// Opens an existing segment: from its footer when valid, else by scanning its
    /// records. An unsealed segment that this tier `owned`s is then cut at its last valid
    /// record and sealed, so that later opens read its footer.
    ///
    /// `Ok(None)` means the file holds nothing usable (no header, no record).
    pub fn load(
        path: &Path,
        writer: &str,
        direct: bool,
        owned: bool,
    ) -> Result<Option<(Self, LoadReport)>> {
        let file = io::open_file(path, false, direct)
            .map_err(|e| io_error("cannot open a segment file", path, e))?;
        let file_len = file
            .metadata()
            .map_err(|e| io_error("cannot stat a segment file", path, e))?
            .len();
        let reader: &dyn format::ReadAt = if direct { &DirectReader(&file) } else { &file };
        let mut page = vec![0u8; PAGE as usize];
        let n = reader
            .read_at(&mut page, 0)
            .map_err(|e| io_error("cannot read a segment header", path, e))?;
        let nonce = match SegmentHeader::decode(&page[..n]) {
            Ok(header) => Some(header.nonce),
            Err(ParseError::Version(v)) => return Err(incompatible(path, v)),
            Err(ParseError::Garbage) => {
                // The header page is damaged: the first record still names the nonce.
                let mut first = [0u8; format::HEADER_LEN];
                let got = reader.read_at(&mut first, PAGE).unwrap_or(0);
                match RecordHeader::decode(&first[..got], None) {
                    Ok(_) => {
                        tracing::warn!(path = %path.display(), "segment header damaged; recovered from its first record");
                        Some(RecordHeader::nonce_of(&first))
                    }
                    Err(ParseError::Version(v)) => return Err(incompatible(path, v)),
                    Err(ParseError::Garbage) => None,
                }
            }
        };
        let Some(nonce) = nonce else {
            tracing::warn!(path = %path.display(), bytes = file_len, "no valid segment header or first record; file ignored");
            return Ok(None);
        };
        let mut report = LoadReport::default();
        let (records, data_end, sealed) = match read_footer(reader, nonce, file_len) {
            Ok(Some((records, data_end))) => (records, data_end, true),
            Err(ParseError::Version(v)) => return Err(incompatible(path, v)),
            Ok(None) | Err(ParseError::Garbage) => {
                let scan = format::scan_records(reader, nonce)
                    .map_err(|e| io_error("cannot scan a segment", path, e))?;
                if let Some(v) = scan.foreign_version {
                    return Err(incompatible(path, v));
                }
                report.scanned = true;
                report.torn_bytes = scan.torn_bytes;
                report.damaged_pages = scan.damaged_pages;
                if scan.damaged_pages > 0 {
                    tracing::warn!(
                        path = %path.display(),
                        pages = scan.damaged_pages,
                        "damaged pages inside a segment skipped; the records on them are lost"
                    );
                }
                if scan.torn_bytes > 0 && (owned || scan.records.is_empty()) {
                    tracing::warn!(
                        path = %path.display(),
                        at = scan.valid_end,
                        bytes = scan.torn_bytes,
                        "torn tail cut off a segment (a crash during an append or a seal); records before it are kept"
                    );
                }
                (scan.records, scan.valid_end, false)
            }
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let segment = Self {
            name,
            writer: writer.to_string(),
            path: path.to_path_buf(),
            file,
            serial: next_serial(),
            nonce,
            owned,
            live: AtomicU64::new(0),
            end: AtomicU64::new(data_end),
            written_back: AtomicU64::new(data_end),
            sealed: AtomicBool::new(sealed),
            retired: AtomicBool::new(false),
            records: Mutex::new(records),
        };
        if !sealed && owned && !segment.records.lock().is_empty() {
            segment.seal()?;
        }
        Ok(Some((segment, report)))
    }

    /// Writes the footer after the last record and truncates anything beyond it.
    ///
    /// Not fsynced here: [`crate::FileTier::flush`] syncs sealed segments. A footer lost
    /// to a power cut only makes the next open scan the segment.
    pub fn seal(&self) -> Result<()> {
        let data_end = self.end.load(Ordering::Acquire);
        let footer = {
            let records = self.records.lock();
            format::encode_footer(&records, self.nonce, data_end)
        };
        with_scratch(|buf| {
            let target = buf.get(footer.len(), false);
            target.copy_from_slice(&footer);
            io::write_all_vectored_at(&self.file, &[buf.as_slice()], data_end)
        })
        .map_err(|e| io_error("cannot write a segment footer", &self.path, e))?;
        self.file
            .set_len(data_end + footer.len() as u64)
            .map_err(|e| io_error("cannot truncate a sealed segment", &self.path, e))?;
        self.sealed.store(true, Ordering::Release);
        Ok(())
    }

    /// Reads again a segment of another live writer that was being appended to when it
    /// was loaded: its footer when the writer sealed it since, else its records by scan.
    /// Records found past the known end are added to `records` and returned; nothing is
    /// written to the file (it is not ours to cut or seal).
    pub fn catch_up(&self, direct: bool) -> Result<Vec<RecordMeta>> {
        let file_len = self
            .file
            .metadata()
            .map_err(|e| io_error("cannot stat a segment file", &self.path, e))?
            .len();
        let reader: &dyn format::ReadAt = if direct {
            &DirectReader(&self.file)
        } else {
            &self.file
        };
        let (found, data_end, sealed) = match read_footer(reader, self.nonce, file_len) {
            Ok(Some((records, data_end))) => (records, data_end, true),
            Err(ParseError::Version(v)) => return Err(incompatible(&self.path, v)),
            Ok(None) | Err(ParseError::Garbage) => {
                let scan = format::scan_records(reader, self.nonce)
                    .map_err(|e| io_error("cannot scan a segment", &self.path, e))?;
                if let Some(v) = scan.foreign_version {
                    return Err(incompatible(&self.path, v));
                }
                (scan.records, scan.valid_end, false)
            }
        };
        let known_end = self.end.load(Ordering::Acquire);
        let fresh: Vec<RecordMeta> = found
            .into_iter()
            .filter(|r| r.offset >= known_end)
            .collect();
        self.records.lock().extend_from_slice(&fresh);
        self.end.store(data_end.max(known_end), Ordering::Release);
        self.written_back
            .store(data_end.max(known_end), Ordering::Release);
        if sealed {
            self.sealed.store(true, Ordering::Release);
        }
        Ok(fresh)
    }

    /// Bytes of the record area (header page excluded).
    pub fn data_bytes(&self) -> u64 {
        self.end.load(Ordering::Acquire).saturating_sub(PAGE)
    }

    /// Fraction of the record area that no index entry points at.
    pub fn dead_fraction(&self) -> f64 {
        let data = self.data_bytes();
        if data == 0 {
            return 0.0;
        }
        1.0 - self.live.load(Ordering::Acquire) as f64 / data as f64
    }
}

/// The footer's records and data end, `Ok(None)` when the file has no valid footer.
fn read_footer(
    reader: &dyn format::ReadAt,
    nonce: u64,
    file_len: u64,
) -> Result<Option<(Vec<RecordMeta>, u64)>, ParseError> {
    if file_len < 2 * PAGE || file_len % PAGE != 0 {
        return Ok(None);
    }
    let mut trailer_bytes = [0u8; TRAILER_LEN];
    if reader
        .read_at(&mut trailer_bytes, file_len - TRAILER_LEN as u64)
        .ok()
        != Some(TRAILER_LEN)
    {
        return Ok(None);
    }
    let trailer = match format::decode_trailer(&trailer_bytes, nonce, file_len) {
        Ok(t) => t,
        Err(ParseError::Version(v)) => return Err(ParseError::Version(v)),
        Err(ParseError::Garbage) => return Ok(None),
    };
    let need = trailer.count as usize * FOOTER_ENTRY_LEN;
    let mut entries = vec![0u8; need];
    if reader.read_at(&mut entries, trailer.data_end).ok() != Some(need) {
        return Ok(None);
    }
    match format::decode_entries(&entries, &trailer) {
        Ok(records) => Ok(Some((records, trailer.data_end))),
        Err(_) => Ok(None),
    }
}

/// A random 64-bit value: a nonce need only differ between segments, which the clock,
/// the pid and a per-process counter guarantee once mixed.
fn random_nonce() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::BuildHasher;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let salt = COUNTER.fetch_add(1, Ordering::Relaxed);
    RandomState::new().hash_one((now, std::process::id(), salt))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip() {
        let name = segment_file_name("node-1_7", 42);
        assert_eq!(name, "node-1_7.0000000042.seg");
        assert_eq!(
            parse_segment_file_name(&name),
            Some(("node-1_7".into(), 42))
        );
        assert_eq!(parse_segment_file_name("x.seg"), None);
        assert_eq!(parse_segment_file_name("w.12.seg"), None);
    }
}
