//! Who may read what a tier writes.
//!
//! Cached KV blocks can give back the prompts they were computed from, so every
//! directory and file a tier creates is its owner's only (0700 / 0600), whatever the
//! process umask, unless the deployment asks for more with a tier's `mode` (a group
//! sharing one file tier on purpose) and `group`. Opening an existing directory or file
//! that grants more than that logs a warning naming it; it is never changed behind the
//! owner's back.

use std::fmt;
use std::fs::{File, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Error, ErrorKind, Result};

/// Permission bits written as a TOML octal integer (`0o770`) or a string of octal digits
/// (`"0770"`, `"770"`, `"0o770"`). Only the nine `rwx` bits are accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMode(u32);

impl FileMode {
    /// The mode `bits`, refused above `0o777`.
    pub fn new(bits: u32) -> Result<Self> {
        if bits > 0o777 {
            return Err(Error::config(format!(
                "must be permission bits like \"0770\" (octal, at most 0777), got {bits:#o}"
            )));
        }
        Ok(Self(bits))
    }

    /// The permission bits.
    pub fn bits(self) -> u32 {
        self.0
    }
}

impl fmt::Display for FileMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl std::str::FromStr for FileMode {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let trimmed = text.trim();
        let digits = trimmed.strip_prefix("0o").unwrap_or(trimmed);
        let bits = u32::from_str_radix(digits, 8).map_err(|_| {
            Error::config(format!(
                "must be permission bits in octal like \"0770\", got {text:?}"
            ))
        })?;
        Self::new(bits)
    }
}

impl Serialize for FileMode {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for FileMode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Text(String),
        }
        let parsed = match Raw::deserialize(deserializer).map_err(|_| {
            serde::de::Error::custom(
                "must be permission bits like \"0770\" or a TOML octal number like 0o770",
            )
        })? {
            Raw::Int(n) => u32::try_from(n)
                .map_err(|_| {
                    Error::config(format!("must be permission bits like \"0770\", got {n}"))
                })
                .and_then(FileMode::new),
            Raw::Text(text) => text.parse(),
        };
        parsed.map_err(|e| serde::de::Error::custom(e.message()))
    }
}

/// The permissions a tier gives what it creates: directories, and files (no execute
/// bits), optionally handed to a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    dir_mode: u32,
    file_mode: u32,
    gid: Option<u32>,
}

impl Default for Access {
    fn default() -> Self {
        Self::PRIVATE
    }
}

impl Access {
    /// Owner only: directories 0700, files 0600, the owner's primary group.
    pub const PRIVATE: Access = Access {
        dir_mode: 0o700,
        file_mode: 0o600,
        gid: None,
    };

    /// From a tier's `mode` and `group` settings. The owner always keeps read and
    /// write; a directory also gets the execute (search) bit of every class that may
    /// read or write, and files never get execute bits, so `mode = "0770"` and
    /// `mode = "0660"` both mean directories 0770 and files 0660.
    ///
    /// `group` is a group name or a numeric gid; errors ([`ErrorKind::Config`]) name an
    /// unknown group.
    pub fn new(mode: Option<FileMode>, group: Option<&str>) -> Result<Self> {
        let bits = mode.map_or(0o600, FileMode::bits) | 0o600;
        let file_mode = bits & 0o666;
        let mut dir_mode = bits;
        for (read_write, exec) in [(0o600, 0o100), (0o060, 0o010), (0o006, 0o001)] {
            if bits & read_write != 0 {
                dir_mode |= exec;
            }
        }
        let gid = group.map(resolve_group).transpose()?;
        Ok(Self {
            dir_mode,
            file_mode,
            gid,
        })
    }

    /// Mode of directories this creates.
    pub fn dir_mode(&self) -> u32 {
        self.dir_mode
    }

    /// Mode of files this creates.
    pub fn file_mode(&self) -> u32 {
        self.file_mode
    }

    /// The group given to what this creates, when one is configured.
    pub fn gid(&self) -> Option<u32> {
        self.gid
    }

    /// Creates `dir` and any missing parents with [`Access::dir_mode`] (exactly, not
    /// reduced by the umask) and the configured group. An existing `dir` is left as it
    /// is, with a warning when it grants more than this access allows.
    pub fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        if dir.is_dir() {
            self.warn_if_exposed(dir, "directory");
            return Ok(());
        }
        let mut missing = Vec::new();
        let mut at = Some(dir);
        while let Some(path) = at {
            if path.as_os_str().is_empty() || path.exists() {
                break;
            }
            missing.push(path);
            at = path.parent();
        }
        for path in missing.into_iter().rev() {
            match std::fs::DirBuilder::new().mode(self.dir_mode).create(path) {
                Ok(()) => self.restrict_path(path, self.dir_mode)?,
                // Another process created it meanwhile: theirs, left as it is.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Gives a file this call just created [`Access::file_mode`] and the configured group
    /// (the mode passed to `open` is reduced by the umask; this is not).
    pub fn restrict_new_file(&self, file: &File) -> io::Result<()> {
        file.set_permissions(Permissions::from_mode(self.file_mode))?;
        if let Some(gid) = self.gid {
            std::os::unix::fs::fchown(file, None, Some(gid))?;
        }
        Ok(())
    }

    /// Writes `bytes` to a new file at `path` (replacing one there) with this access.
    pub fn write_new_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        use std::io::Write as _;
        let mut file = self.create_file(path)?;
        file.write_all(bytes)?;
        file.sync_all()
    }

    /// Creates (or truncates) `path` for writing with this access.
    pub fn create_file(&self, path: &Path) -> io::Result<File> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(self.file_mode)
            .open(path)?;
        self.restrict_new_file(&file)?;
        Ok(file)
    }

    fn restrict_path(&self, path: &Path, mode: u32) -> io::Result<()> {
        std::fs::set_permissions(path, Permissions::from_mode(mode))?;
        if let Some(gid) = self.gid {
            std::os::unix::fs::chown(path, None, Some(gid))?;
        }
        Ok(())
    }

    /// Whether permission bits `mode` grant others or the group more than this access.
    pub fn exposes(&self, mode: u32, is_dir: bool) -> bool {
        let allowed = if is_dir {
            self.dir_mode
        } else {
            self.file_mode
        };
        // Read or write for the group or others beyond what was configured.
        mode & 0o066 & !allowed != 0
    }

    /// Logs a warning naming `path` when it exists and grants the group or others more
    /// than this access; `what` says what it is ("directory", "shm pool").
    pub fn warn_if_exposed(&self, path: &Path, what: &str) {
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        let mode = meta.mode() & 0o777;
        if self.exposes(mode, meta.is_dir()) {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{mode:04o}"),
                allowed = format!("{:04o}", if meta.is_dir() { self.dir_mode } else { self.file_mode }),
                "the {what} is readable or writable by other users: cached KV blocks can reveal \
                 prompts; restrict it (chmod) or set the tier's `mode` to say it is shared on purpose"
            );
        }
    }
}

/// A group name or numeric gid to a gid.
fn resolve_group(group: &str) -> Result<u32> {
    let group = group.trim();
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    let unknown = || {
        Error::new(ErrorKind::Config, "group: no such group on this machine")
            .with_context("group", group)
    };
    let name = std::ffi::CString::new(group).map_err(|_| unknown())?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: all-zero is a valid `group` value, overwritten by getgrnam_r.
    let mut entry: libc::group = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call: `name` is NUL-terminated, `entry` and
    // `result` are writable, `buf` is writable for the length passed.
    let rc = unsafe {
        libc::getgrnam_r(
            name.as_ptr(),
            &mut entry,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return Err(unknown());
    }
    Ok(entry.gr_gid)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn mode_of(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().mode() & 0o777
    }

    #[test]
    fn modes_parse_from_octal_text_and_integers() {
        assert_eq!("0770".parse::<FileMode>().unwrap().bits(), 0o770);
        assert_eq!("0o750".parse::<FileMode>().unwrap().bits(), 0o750);
        assert!("0800".parse::<FileMode>().is_err());
        assert!("7777".parse::<FileMode>().is_err());
        let table: toml::Table = toml::from_str("a = 0o770\nb = \"660\"\nc = -1").unwrap();
        let a: FileMode = FileMode::deserialize(table["a"].clone()).unwrap();
        let b: FileMode = FileMode::deserialize(table["b"].clone()).unwrap();
        assert_eq!((a.bits(), b.bits()), (0o770, 0o660));
        let err = FileMode::deserialize(table["c"].clone()).unwrap_err();
        assert!(err.to_string().contains("got -1"), "{err}");
    }

    #[test]
    fn shared_modes_give_directories_search_and_files_no_execute() {
        let private = Access::new(None, None).unwrap();
        assert_eq!((private.dir_mode(), private.file_mode()), (0o700, 0o600));
        let group = Access::new(Some(FileMode::new(0o660).unwrap()), None).unwrap();
        assert_eq!((group.dir_mode(), group.file_mode()), (0o770, 0o660));
        let odd = Access::new(Some(FileMode::new(0o040).unwrap()), None).unwrap();
        assert_eq!((odd.dir_mode(), odd.file_mode()), (0o750, 0o640));
        assert!(private.exposes(0o755, true));
        assert!(!private.exposes(0o700, true));
        assert!(!group.exposes(0o770, true));
        assert!(group.exposes(0o664, false));
    }

    #[test]
    fn created_paths_have_the_exact_mode_whatever_the_umask() {
        let root = tempfile::tempdir().unwrap();
        // SAFETY: umask only changes this process's file-creation mask.
        let old = unsafe { libc::umask(0o002) };
        let access = Access::new(Some(FileMode::new(0o750).unwrap()), None).unwrap();
        let dir = root.path().join("a/b");
        let made = access.create_dir_all(&dir);
        let file = dir.join("f");
        let written = access.write_new_file(&file, b"x");
        // SAFETY: as above, restoring the mask.
        unsafe { libc::umask(old) };
        made.unwrap();
        written.unwrap();
        assert_eq!(mode_of(&root.path().join("a")), 0o750);
        assert_eq!(mode_of(&dir), 0o750);
        assert_eq!(mode_of(&file), 0o640);
        let private = tempfile::tempdir().unwrap();
        let dir = private.path().join("p");
        Access::PRIVATE.create_dir_all(&dir).unwrap();
        assert_eq!(mode_of(&dir), 0o700);
    }

    #[test]
    fn groups_resolve_by_name_or_number() {
        assert_eq!(resolve_group("12345").unwrap(), 12345);
        assert_eq!(resolve_group("root").unwrap(), 0);
        let err = resolve_group("no-such-group-cascade").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("no-such-group-cascade"), "{err}");
    }
}
