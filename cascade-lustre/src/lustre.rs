//! Lustre detection and striping of new segment files.
//!
//! A segment file is striped when it is created, with `lfs setstripe`, which creates the
//! (empty) file with the layout; a layout cannot be changed once data is written. Any
//! failure only costs the layout: the file is then created with the directory default.

use std::path::Path;
use std::process::Command;

/// `statfs.f_type` of a Lustre client mount.
pub const LUSTRE_SUPER_MAGIC: u64 = 0x0BD0_0BD0;

/// Striping to apply to new segment files, present only on Lustre.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Striping {
    /// `lfs setstripe -c`.
    pub count: i64,
    /// `lfs setstripe -S`, bytes.
    pub size: u64,
}

/// Whether `dir` lies on Lustre.
pub fn is_lustre(dir: &Path) -> bool {
    crate::io::fs_magic(dir).is_ok_and(|magic| magic == LUSTRE_SUPER_MAGIC)
}

/// The striping to use in `dir`: `Some` on Lustre; elsewhere `None`, after one log line
/// saying the settings are ignored.
pub fn striping_for(dir: &Path, count: i64, size: u64) -> Option<Striping> {
    if is_lustre(dir) {
        tracing::info!(dir = %dir.display(), count, size, "Lustre detected: new segment files are striped");
        Some(Striping { count, size })
    } else {
        tracing::info!(
            dir = %dir.display(),
            "not a Lustre filesystem: stripe_count and stripe_size are ignored"
        );
        None
    }
}

/// Creates `path` with `striping`; on failure logs why and leaves creation to the caller.
pub fn create_striped(path: &Path, striping: Striping) {
    let result = Command::new("lfs")
        .arg("setstripe")
        .arg("-c")
        .arg(striping.count.to_string())
        .arg("-S")
        .arg(striping.size.to_string())
        .arg(path)
        .output();
    match result {
        Ok(output) if output.status.success() => {}
        Ok(output) => tracing::warn!(
            path = %path.display(),
            stderr = %String::from_utf8_lossy(&output.stderr).trim(),
            "lfs setstripe failed; the segment keeps the directory's default layout"
        ),
        Err(e) => tracing::warn!(
            path = %path.display(),
            error = %e,
            "cannot run lfs; the segment keeps the directory's default layout"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_temp_directory_is_not_lustre() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_lustre(dir.path()));
        assert_eq!(striping_for(dir.path(), 8, 4 << 20), None);
    }
}
