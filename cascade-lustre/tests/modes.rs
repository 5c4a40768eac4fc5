//! What the file tier creates is its owner's only unless `mode` / `group` say otherwise,
//! whatever the umask; a damaged format marker is reported as damaged.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns too

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use cascade_core::config::ByteSize;
use cascade_core::{BlockId, ErrorKind, FileMode, Tier};
use cascade_lustre::{FileTier, FileTierConfig};

/// The most permissive umask, so that any mode left to it would show up as 0666 / 0777.
/// Every test of this binary runs with it.
fn open_umask() {
    // SAFETY: umask only changes this process's file-creation mask.
    unsafe { libc::umask(0) };
}

fn config(dir: &Path) -> FileTierConfig {
    let mut config = FileTierConfig::new(dir);
    config.capacity = ByteSize::mib(16);
    config.segment_size = ByteSize::mib(1);
    config.writer_id = Some("modes".into());
    config.background_compaction = false;
    config
}

/// Fills the tier enough to seal a segment, removes a block (delete log) and compacts.
fn exercise(tier: &FileTier) {
    let block = vec![5u8; 256 << 10];
    for n in 0..6u128 {
        tier.put(BlockId::from_u128(n), &block).unwrap();
    }
    for n in 0..4u128 {
        tier.remove(BlockId::from_u128(n)).unwrap();
    }
    tier.flush().unwrap();
    tier.compact().unwrap();
    tier.flush().unwrap();
}

/// (path, mode, gid, is_dir) of `root` and everything under it.
fn walk(root: &Path) -> Vec<(String, u32, u32, bool)> {
    let mut out = Vec::new();
    let meta = std::fs::metadata(root).unwrap();
    out.push((
        root.display().to_string(),
        meta.permissions().mode() & 0o777,
        meta.gid(),
        meta.is_dir(),
    ));
    if meta.is_dir() {
        for entry in std::fs::read_dir(root).unwrap() {
            out.extend(walk(&entry.unwrap().path()));
        }
    }
    out
}

#[test]
fn everything_created_is_owner_only_by_default() {
    open_umask();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("new/kv");
    let tier = FileTier::open("file0", &config(&dir)).unwrap();
    exercise(&tier);
    drop(tier);
    let entries = walk(&root.path().join("new"));
    let names: Vec<&str> = entries.iter().map(|(p, ..)| p.as_str()).collect();
    assert!(names.iter().any(|n| n.ends_with(".seg")), "{names:?}");
    assert!(names.iter().any(|n| n.ends_with(".del")), "{names:?}");
    assert!(names.iter().any(|n| n.ends_with(".lock")), "{names:?}");
    assert!(
        names
            .iter()
            .any(|n| n.ends_with(cascade_lustre::FORMAT_FILE)),
        "{names:?}"
    );
    for (path, mode, _, is_dir) in entries {
        let want = if is_dir { 0o700 } else { 0o600 };
        assert_eq!(mode, want, "{path} is {mode:04o}, not {want:04o}");
    }
}

#[test]
fn a_configured_mode_and_group_are_applied_exactly() {
    open_umask();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("shared");
    let mut config = config(&dir);
    config.mode = Some(FileMode::new(0o750).unwrap());
    // SAFETY: getegid has no preconditions.
    let gid = unsafe { libc::getegid() };
    config.group = Some(gid.to_string());
    let tier = FileTier::open("file0", &config).unwrap();
    exercise(&tier);
    drop(tier);
    for (path, mode, owner_gid, is_dir) in walk(&dir) {
        let want = if is_dir { 0o750 } else { 0o640 };
        assert_eq!(mode, want, "{path} is {mode:04o}, not {want:04o}");
        assert_eq!(owner_gid, gid, "{path}");
    }
}

#[test]
fn mode_and_group_read_from_toml() {
    let table: toml::Table =
        toml::from_str("path = \"/tmp/x\"\nmode = 0o770\ngroup = \"0\"").unwrap();
    let config: FileTierConfig = serde::Deserialize::deserialize(toml::Value::Table(table))
        .expect("a TOML octal mode and a numeric group");
    let access = config.access().unwrap();
    assert_eq!((access.dir_mode(), access.file_mode()), (0o770, 0o660));
    assert_eq!(access.gid(), Some(0));
    let table: toml::Table = toml::from_str("path = \"/tmp/x\"\nmode = \"rwx\"").unwrap();
    let err = <FileTierConfig as serde::Deserialize>::deserialize(toml::Value::Table(table))
        .expect_err("not octal");
    assert!(err.to_string().contains("mode"), "{err}");
    let mut config = FileTierConfig::new("/tmp/x");
    config.group = Some("no-such-group-for-cascade".into());
    let err = FileTier::open("file0", &config)
        .err()
        .expect("unknown group");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(
        err.to_string().contains("no-such-group-for-cascade"),
        "{err}"
    );
}

#[test]
fn an_existing_open_directory_is_left_as_it_is() {
    open_umask();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("kv");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let tier = FileTier::open("file0", &config(&dir)).unwrap();
    tier.put(BlockId::from_u128(1), b"kv").unwrap();
    drop(tier);
    for (path, mode, _, is_dir) in walk(&dir) {
        // The directory keeps the owner's choice (a warning names it); files are private.
        let want = if is_dir { 0o755 } else { 0o600 };
        assert_eq!(mode, want, "{path} is {mode:04o}, not {want:04o}");
    }
}

#[test]
fn a_damaged_format_marker_says_damaged() {
    let dir = tempfile::tempdir().unwrap();
    drop(FileTier::open("file0", &config(dir.path())).unwrap());
    let marker = dir.path().join(cascade_lustre::FORMAT_FILE);
    let text = std::fs::read_to_string(&marker).unwrap();
    std::fs::write(&marker, &text[..text.len() / 2]).unwrap();
    let err = FileTier::open("file0", &config(dir.path()))
        .err()
        .expect("a truncated marker");
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(err.to_string().contains("damaged"), "{err}");
    assert!(!err.to_string().contains("version;"), "{err}");
    std::fs::write(&marker, "cascade file tier format 99\n").unwrap();
    let err = FileTier::open("file0", &config(dir.path()))
        .err()
        .expect("another version");
    assert_eq!(err.kind(), ErrorKind::Incompatible, "{err}");
}
