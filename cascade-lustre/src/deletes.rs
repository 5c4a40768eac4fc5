//! The delete log: one per writer, `<writer>.del`, so removed blocks stay removed.
//!
//! Each entry says "every record of this id with a sequence up to this one is dead".
//! Records keep their sequence when compaction copies them, so one entry kills every
//! copy. An entry is needed while a record it kills is still on disk; the log is
//! rewritten without the others when a tier opens.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use cascade_core::{Access, BlockId, Error, ErrorKind, Result};
use cascade_hash::checksum;

use crate::format::FORMAT_VERSION;

/// File-name suffix of delete logs.
pub const DELETE_SUFFIX: &str = ".del";
/// Suffix of a delete log being rewritten (renamed over the log when complete).
pub const DELETE_TMP_SUFFIX: &str = ".del.tmp";
const MAGIC: [u8; 8] = *b"CASCDEL\0";
const HEADER_LEN: usize = 16;
const ENTRY_LEN: usize = 32;

/// A kill: records of `id` with `seq <= seq` are dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kill {
    /// The block.
    pub id: BlockId,
    /// Highest sequence killed.
    pub seq: u64,
}

/// Every kill of some set of delete logs, merged: the rules of which record a log
/// removes, in one place for open (recovery) and refresh.
#[derive(Debug, Default, Clone)]
pub struct Kills(HashMap<BlockId, u64>);

impl Kills {
    /// Adds kills; for an id killed twice the higher sequence counts (it covers both).
    pub fn extend(&mut self, kills: impl IntoIterator<Item = Kill>) {
        for kill in kills {
            let seq = self.0.entry(kill.id).or_insert(0);
            *seq = (*seq).max(kill.seq);
        }
    }

    /// Whether the record of `id` with sequence `seq` is dead: some kill of `id` has a
    /// sequence at least `seq`. Compaction copies keep their sequence, so one kill
    /// covers every copy.
    pub fn kills(&self, id: BlockId, seq: u64) -> bool {
        self.0.get(&id).is_some_and(|&killed| killed >= seq)
    }

    /// The highest sequence killed (0 for none): a writer's next sequence must pass it.
    pub fn highest_seq(&self) -> u64 {
        self.0.values().copied().max().unwrap_or(0)
    }

    /// The kills still needed: those that hide a record still on disk, given the oldest
    /// sequence on disk of each id. A kill below every copy has nothing left to hide.
    pub fn still_hiding(&self, oldest_on_disk: &HashMap<BlockId, u64>) -> Vec<Kill> {
        self.0
            .iter()
            .filter(|(id, seq)| oldest_on_disk.get(id).is_some_and(|oldest| oldest <= seq))
            .map(|(id, seq)| Kill { id: *id, seq: *seq })
            .collect()
    }

    /// How many ids are killed.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Each killed id with the highest sequence killed.
    pub fn iter(&self) -> impl Iterator<Item = (BlockId, u64)> + '_ {
        self.0.iter().map(|(id, seq)| (*id, *seq))
    }
}

fn header() -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    out[..8].copy_from_slice(&MAGIC);
    out[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out
}

fn encode(kill: Kill) -> [u8; ENTRY_LEN] {
    let mut out = [0u8; ENTRY_LEN];
    out[..16].copy_from_slice(kill.id.as_bytes());
    out[16..24].copy_from_slice(&kill.seq.to_le_bytes());
    let sum = checksum(&out[..24]);
    out[24..].copy_from_slice(&sum.to_le_bytes());
    out
}

/// Parses a whole delete log; returns the entries and the length of its valid prefix
/// (header plus whole entries). Damaged entries are skipped.
pub fn parse(bytes: &[u8], path: &Path) -> Result<(Vec<Kill>, u64)> {
    if bytes.len() < HEADER_LEN || bytes[..8] != MAGIC {
        tracing::warn!(path = %path.display(), "delete log without a valid header ignored");
        return Ok((Vec::new(), 0));
    }
    let mut version = [0u8; 4];
    version.copy_from_slice(&bytes[8..12]);
    let version = u32::from_le_bytes(version);
    if version != FORMAT_VERSION {
        return Err(Error::new(
            ErrorKind::Incompatible,
            "delete log of another format version",
        )
        .with_context("path", path.display())
        .with_context("found_version", version)
        .with_context("supported_version", FORMAT_VERSION));
    }
    let body = &bytes[HEADER_LEN..];
    let whole = body.len() / ENTRY_LEN * ENTRY_LEN;
    let mut kills = Vec::with_capacity(whole / ENTRY_LEN);
    let mut damaged = 0usize;
    for entry in body[..whole].chunks_exact(ENTRY_LEN) {
        let mut sum = [0u8; 8];
        sum.copy_from_slice(&entry[24..]);
        if checksum(&entry[..24]) != u64::from_le_bytes(sum) {
            damaged += 1;
            continue;
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&entry[..16]);
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&entry[16..24]);
        kills.push(Kill {
            id: BlockId::from_bytes(id),
            seq: u64::from_le_bytes(seq),
        });
    }
    if damaged > 0 {
        tracing::warn!(path = %path.display(), entries = damaged, "damaged delete-log entries skipped");
    }
    if whole < body.len() {
        tracing::warn!(path = %path.display(), bytes = body.len() - whole, "torn delete-log tail ignored");
    }
    Ok((kills, (HEADER_LEN + whole) as u64))
}

/// Reads the entries of the log at `path`.
pub fn read(path: &Path) -> Result<(Vec<Kill>, u64)> {
    let bytes = std::fs::read(path).map_err(|e| {
        Error::io("cannot read a delete log", e).with_context("path", path.display())
    })?;
    parse(&bytes, path)
}

/// This writer's open delete log.
pub struct DeleteLog {
    path: PathBuf,
    file: File,
    access: Access,
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::io(what.to_string(), e).with_context("path", path.display())
}

impl DeleteLog {
    /// Writes `kills` to a fresh log at `path` (through a temporary file, fsynced and
    /// renamed, so a crash leaves either the old or the new log) and opens it.
    pub fn create(path: &Path, kills: &[Kill], access: &Access) -> Result<Self> {
        let tmp = path.with_extension(&DELETE_TMP_SUFFIX[1..]);
        let mut bytes = Vec::with_capacity(HEADER_LEN + kills.len() * ENTRY_LEN);
        bytes.extend_from_slice(&header());
        for kill in kills {
            bytes.extend_from_slice(&encode(*kill));
        }
        {
            let mut file = access
                .create_file(&tmp)
                .map_err(|e| io_error("cannot create a delete log", &tmp, e))?;
            file.write_all(&bytes)
                .map_err(|e| io_error("cannot write a delete log", &tmp, e))?;
            file.sync_all()
                .map_err(|e| io_error("cannot sync a delete log", &tmp, e))?;
        }
        std::fs::rename(&tmp, path)
            .map_err(|e| io_error("cannot install a delete log", path, e))?;
        Self::open_append(path, access)
    }

    /// Opens an existing, already validated log for appending; a rewrite by
    /// [`DeleteLog::reset`] creates it with `access`.
    pub fn open_append(path: &Path, access: &Access) -> Result<Self> {
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| io_error("cannot open a delete log", path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            access: *access,
        })
    }

    /// Appends one entry; it survives a kill -9 once this returns, a power cut after
    /// [`DeleteLog::sync`].
    pub fn append(&mut self, kill: Kill) -> Result<()> {
        self.file
            .write_all(&encode(kill))
            .map_err(|e| io_error("cannot append to the delete log", &self.path, e))
    }

    /// fsync.
    pub fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| io_error("cannot sync the delete log", &self.path, e))
    }

    /// Forgets every entry (after every segment was deleted).
    pub fn reset(&mut self) -> Result<()> {
        *self = Self::create(&self.path.clone(), &[], &{ self.access })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_survive_reopen_and_a_torn_tail_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.del");
        let first = Kill {
            id: BlockId::from_u128(1),
            seq: 5,
        };
        let mut log = DeleteLog::create(&path, &[first], &Access::PRIVATE).unwrap();
        let second = Kill {
            id: BlockId::from_u128(2),
            seq: 9,
        };
        log.append(second).unwrap();
        drop(log);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&[7u8; 11]);
        bytes[HEADER_LEN + 3] ^= 0x40;
        let (kills, valid) = parse(&bytes, &path).unwrap();
        assert_eq!(kills, vec![second], "the damaged first entry is skipped");
        assert_eq!(valid, (HEADER_LEN + 2 * ENTRY_LEN) as u64);
    }
}
