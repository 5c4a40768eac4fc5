//! The tier directory's files other than segments: the format marker, the listing of
//! segments, delete logs, writer locks and crash leftovers by writer, and the writer
//! locks themselves (one live tier per writer id).

use std::collections::{BTreeMap, HashSet};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use cascade_core::{Access, Error, ErrorKind, Result};

use crate::config::FileTierConfig;
use crate::deletes::{DELETE_SUFFIX, DELETE_TMP_SUFFIX};
use crate::format::FORMAT_VERSION;
use crate::io;
use crate::segment::parse_segment_file_name;

/// Name of the file that marks a directory as a file tier and records its format.
pub const FORMAT_FILE: &str = "CASCADE-FILE-TIER";
pub(crate) const LOCK_SUFFIX: &str = ".lock";

pub(crate) fn io_error(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::io(what.to_string(), e).with_context("path", path.display())
}

/// Creates the format marker, or checks the one present.
pub(crate) fn check_format(dir: &Path, access: &Access) -> Result<()> {
    let path = dir.join(FORMAT_FILE);
    let prefix = "cascade file tier format ";
    match std::fs::read(&path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let version = text
                .trim()
                .strip_prefix(prefix)
                .and_then(|v| v.parse::<u32>().ok());
            match version {
                Some(FORMAT_VERSION) => Ok(()),
                Some(found) => Err(Error::new(
                    ErrorKind::Incompatible,
                    "directory holds a file tier of another format version; use a matching Cascade build or another path",
                )
                .with_context("path", dir.display())
                .with_context("found_version", found)
                .with_context("supported_version", FORMAT_VERSION)),
                // Truncated, overwritten or never a marker: not a version this build lacks.
                None => Err(Error::new(
                    ErrorKind::Corrupt,
                    format!(
                        "the file tier's format marker is damaged (it should read \"{prefix}{FORMAT_VERSION}\"); \
                         if the directory is a file tier, restore the marker with that line, else use another path"
                    ),
                )
                .with_context("path", path.display())
                .with_context("found", format!("{:?}", text.chars().take(64).collect::<String>()))),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let tmp = dir.join(format!("{FORMAT_FILE}.tmp.{}", std::process::id()));
            let marker = format!("{prefix}{FORMAT_VERSION}\n");
            access
                .write_new_file(&tmp, marker.as_bytes())
                .map_err(|e| io_error("cannot write the format marker", &tmp, e))?;
            if let Err(e) = std::fs::rename(&tmp, &path) {
                // Another process initialising the directory at the same moment may have
                // installed the marker and cleared our temporary file as a leftover.
                let installed = std::fs::read_to_string(&path).is_ok_and(|t| t == marker);
                if !installed {
                    return Err(io_error("cannot install the format marker", &path, e));
                }
            }
            io::sync_dir(dir).map_err(|e| io_error("fsync of the tier directory failed", dir, e))
        }
        Err(e) => Err(io_error("cannot read the format marker", &path, e)),
    }
}

/// The files of a tier directory, by writer.
#[derive(Default)]
pub(crate) struct Listing {
    pub(crate) segments: BTreeMap<String, Vec<(u64, PathBuf)>>,
    pub(crate) deletes: BTreeMap<String, PathBuf>,
    pub(crate) locks: HashSet<String>,
    /// Temporary files a crash left between write and rename: a writer's delete log
    /// being rewritten (with the writer), or a format marker being installed (`None`).
    pub(crate) leftovers: Vec<(Option<String>, PathBuf)>,
}

pub(crate) fn list(dir: &Path) -> Result<Listing> {
    let mut listing = Listing::default();
    let entries =
        std::fs::read_dir(dir).map_err(|e| io_error("cannot list the tier directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_error("cannot list the tier directory", dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some((writer, number)) = parse_segment_file_name(&name) {
            listing
                .segments
                .entry(writer)
                .or_default()
                .push((number, entry.path()));
        } else if let Some(writer) = name.strip_suffix(DELETE_SUFFIX) {
            listing.deletes.insert(writer.to_string(), entry.path());
        } else if let Some(writer) = name.strip_suffix(LOCK_SUFFIX) {
            listing.locks.insert(writer.to_string());
        } else if let Some(writer) = name.strip_suffix(DELETE_TMP_SUFFIX) {
            listing
                .leftovers
                .push((Some(writer.to_string()), entry.path()));
        } else if name.starts_with(&format!("{FORMAT_FILE}.tmp.")) {
            listing.leftovers.push((None, entry.path()));
        }
    }
    Ok(listing)
}

/// Opens (creating, with `access`) `<writer>.lock` and takes its flock; `None` when
/// another live tier holds it.
pub(crate) fn lock_writer(dir: &Path, writer: &str, access: &Access) -> Result<Option<File>> {
    let path = dir.join(format!("{writer}{LOCK_SUFFIX}"));
    let created = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .and_then(|file| access.restrict_new_file(&file).map(|()| file));
    let file = match created {
        Ok(file) => Ok(file),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            OpenOptions::new().read(true).write(true).open(&path)
        }
        Err(e) => Err(e),
    }
    .map_err(|e| io_error("cannot open a writer lock", &path, e))?;
    match io::try_lock(&file) {
        Ok(true) => Ok(Some(file)),
        Ok(false) => Ok(None),
        Err(e) => Err(io_error("cannot lock a writer lock", &path, e)),
    }
}

/// Locks this tier's writer id. A defaulted id (`<host>-<pid>`) that another tier of
/// this process already holds on the same directory gets a suffix (`-1`, `-2`, ...), so
/// one process may open a directory more than once; a configured id is never changed.
pub(crate) fn take_writer(
    dir: &Path,
    config: &FileTierConfig,
    access: &Access,
) -> Result<(String, File)> {
    let base = config.effective_writer_id();
    let tries = if config.writer_id.is_some() { 1 } else { 64 };
    for attempt in 0..tries {
        let writer_id = if attempt == 0 {
            base.clone()
        } else {
            format!("{base}-{attempt}")
        };
        if let Some(lock) = lock_writer(dir, &writer_id, access)? {
            return Ok((writer_id, lock));
        }
    }
    Err(Error::new(
        ErrorKind::Busy,
        "another live tier uses this writer id on this directory",
    )
    .with_context("path", dir.display())
    .with_context("writer_id", base))
}
