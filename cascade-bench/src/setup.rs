//! The deployment under test, the per-kind tier configs the tables build from it, and the
//! run's data folder.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use cascade::{CascadeConfig, CascadeStore, Error, ErrorKind, Result, TierConfig, TierRegistry};

/// The deployment `--config` names, or the embedded default.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// The parsed config.
    pub config: CascadeConfig,
    /// Where it came from (a path, or "embedded default (cascade.toml)").
    pub source: String,
}

/// Whether `kind` names the file tier (its registry alias is `lustre`).
pub fn is_file_kind(kind: &str) -> bool {
    kind == "file" || kind == "lustre"
}

impl Deployment {
    /// Reads `path`, or the embedded default deployment.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        match path {
            Some(path) => Ok(Self {
                config: CascadeConfig::from_toml_file(path)?,
                source: path.display().to_string(),
            }),
            None => Ok(Self {
                config: cascade::Cascade::default_config()?,
                source: "embedded default deployment (cascade.toml)".into(),
            }),
        }
    }

    /// Opens every tier of the deployment once, with its own settings but its data moved
    /// into the run (and a small capacity, so a large pool is not allocated for this),
    /// so that a deployment that does not open fails the run with its error instead of
    /// turning into "skipped" rows. Returns the tiers this machine lacks (a GPU tier
    /// without a GPU, a `required = false` tier unavailable here), with the reason.
    ///
    /// Errors: the first tier's error other than those, naming the tier and the file.
    pub fn check(&self, run: &RunDir) -> Result<Vec<(String, String)>> {
        const CHECK_CAPACITY: u64 = 16 << 20;
        let registry = TierRegistry::builtin();
        let mut lacking = Vec::new();
        for (position, tier) in self.config.tiers.iter().enumerate() {
            let name = tier.display_name(position);
            let fail = |e: Error| e.with_context("deployment", &self.source);
            // Checked as written before it is replaced by the small one below.
            tier.parse_settings::<CapacitySetting>(position)
                .map_err(fail)?;
            let dir = run.fresh(&format!("check-{position}"))?;
            let mut small = tier.clone();
            let configured = small
                .settings
                .get("capacity")
                .and_then(|v| v.clone().try_into::<cascade::ByteSize>().ok())
                .map_or(CHECK_CAPACITY, |c| c.as_u64());
            small.settings.insert(
                "capacity".into(),
                toml::Value::Integer(i64::try_from(configured.min(CHECK_CAPACITY)).unwrap_or(0)),
            );
            relocate(&mut small, &dir, run);
            let opened = registry.open(position, &small);
            run.release(&dir);
            match opened {
                Ok(_) => {}
                Err(e)
                    if e.kind() == ErrorKind::Unavailable
                        && (tier.kind == "gpu" || !tier.required) =>
                {
                    lacking.push((name, e.to_string()));
                }
                Err(e) => return Err(fail(e)),
            }
        }
        Ok(lacking)
    }

    /// The first tier of `kind` in the deployment.
    pub fn tier_of_kind(&self, kind: &str) -> Option<&TierConfig> {
        self.config
            .tiers
            .iter()
            .find(|t| t.kind == kind || (is_file_kind(kind) && is_file_kind(&t.kind)))
    }

    /// Where the deployment's file tier keeps its data, when it has one.
    pub fn file_tier_dir(&self) -> Option<PathBuf> {
        let tier = self.tier_of_kind("file")?;
        tier.settings.get("path")?.as_str().map(PathBuf::from)
    }

    /// The kind of the deployment's fastest tier.
    pub fn first_kind(&self) -> Option<&str> {
        self.config.tiers.first().map(|t| t.kind.as_str())
    }

    /// A store config over `tiers` with the deployment's policy, except that batch calls
    /// run on the caller's thread pool (the tables choose the thread count).
    pub fn store_config(&self, tiers: Vec<TierConfig>, promote_on_read: bool) -> CascadeConfig {
        CascadeConfig {
            dedup: self.config.dedup,
            promote_on_read,
            hasher: self.config.hasher,
            num_io_threads: 0,
            max_prefetches: self.config.max_prefetches,
            write_policy: self.config.write_policy,
            // The run's many stores never serve metrics (they would compete for the port).
            metrics_listen: None,
            tiers,
        }
    }

    /// The config of one tier of `kind` for a table: the deployment's own settings for that
    /// kind when it has one, with `capacity` set to `capacity` and its data moved into
    /// the run: a file tier's folder to `dir`, an shm pool to a pool file of the run
    /// (removed by [`RunDir::release`]).
    pub fn bench_tier(&self, kind: &str, capacity: u64, dir: &Path, run: &RunDir) -> TierConfig {
        let mut tier = self
            .tier_of_kind(kind)
            .cloned()
            .unwrap_or_else(|| TierConfig::new(kind));
        tier.required = true;
        tier.name = Some(kind.to_string());
        tier.settings.insert(
            "capacity".into(),
            toml::Value::Integer(i64::try_from(capacity).unwrap_or(i64::MAX)),
        );
        relocate(&mut tier, dir, run);
        tier
    }
}

/// A tier's `capacity`, the one setting every kind shares, parsed as the tier would.
#[derive(serde::Deserialize)]
struct CapacitySetting {
    #[serde(default)]
    #[allow(dead_code)] // parsed only for its error
    capacity: Option<cascade::ByteSize>,
}

/// Points a tier's data at the run: an shm pool to a pool file named after `dir` (in the
/// folder the deployment chose for its pool, default `/dev/shm`), a file tier's folder to
/// `dir`. Other kinds are left as configured: `memory` and `gpu` keep nothing on disk,
/// and a plugin's `path` names its library, not its data.
pub fn relocate(tier: &mut TierConfig, dir: &Path, run: &RunDir) {
    if tier.kind == "shm" {
        let configured = tier
            .settings
            .get("path")
            .and_then(|v| v.as_str())
            .map(PathBuf::from);
        let pool = run.shm_pool(configured.as_deref(), dir);
        tier.settings.insert(
            "path".into(),
            toml::Value::String(pool.display().to_string()),
        );
    } else if is_file_kind(&tier.kind) {
        tier.settings.insert(
            "path".into(),
            toml::Value::String(dir.display().to_string()),
        );
    }
}

/// Why `kind` cannot be measured by this build, if it cannot.
pub fn not_compiled_reason(kind: &str) -> Option<String> {
    let registry = TierRegistry::builtin();
    let kinds = registry.kinds();
    if kinds.contains(&kind) || (is_file_kind(kind) && kinds.iter().any(|k| is_file_kind(k))) {
        return None;
    }
    Some(format!(
        "kind {kind:?} is not in this build (it knows: {}); build with its cargo feature once the tier has landed",
        kinds.join(", ")
    ))
}

/// Bytes to give a tier that must hold `bytes` in `blocks` blocks: the data plus room for
/// per-block rounding and headers, in whole MiB.
pub fn capacity_for(bytes: u64, blocks: usize) -> u64 {
    let want = bytes + bytes / 8 + blocks as u64 * 8192 + (16 << 20);
    want.div_ceil(1 << 20) << 20
}

/// Opens a store through the facade, as a deployment would.
pub fn open_store(config: &CascadeConfig) -> Result<CascadeStore> {
    cascade::Cascade::open(config)
}

/// The run's data folder: every file the run writes lives under it, in a fresh folder per
/// repetition, and it is removed when the run ends (unless kept).
#[derive(Debug)]
pub struct RunDir {
    root: PathBuf,
    keep: bool,
    next: AtomicUsize,
    pool_dirs: Mutex<BTreeSet<PathBuf>>,
}

impl RunDir {
    /// Creates `<parent>/cascade-bench-<pid>-<seconds>`.
    pub fn create(parent: &Path, keep: bool) -> Result<Self> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let root = parent.join(format!("cascade-bench-{}-{stamp}", std::process::id()));
        std::fs::create_dir_all(&root).map_err(|e| {
            Error::io("cannot create the benchmark data folder", e)
                .with_context("path", root.display())
        })?;
        Ok(Self {
            root,
            keep,
            next: AtomicUsize::new(0),
            pool_dirs: Mutex::new(BTreeSet::new()),
        })
    }

    /// The root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A new, empty folder named after `label`. A fresh folder per repetition: this ext4
    /// will not reuse an inode freed in the last 5 to 35 s, so a repetition that reused a
    /// just-emptied folder would pay about 0.5 ms per file create.
    pub fn fresh(&self, label: &str) -> Result<PathBuf> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let dir = self.root.join(format!("{label}-{n}"));
        std::fs::create_dir_all(&dir).map_err(|e| {
            Error::io("cannot create a benchmark folder", e).with_context("path", dir.display())
        })?;
        Ok(dir)
    }

    fn pool_prefix() -> String {
        format!("cascade-bench-{}-", std::process::id())
    }

    /// The shm pool file that belongs with `dir`: in `configured`'s folder (default
    /// `/dev/shm`), named after the process and `dir`, so pools of this run never meet a
    /// deployment's pool or another run's.
    pub fn shm_pool(&self, configured: Option<&Path>, dir: &Path) -> PathBuf {
        let folder = configured
            .and_then(Path::parent)
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("/dev/shm"), Path::to_path_buf);
        if let Ok(mut dirs) = self.pool_dirs.lock() {
            dirs.insert(folder.clone());
        }
        self.pool_file(&folder, dir)
    }

    /// The pool file of `dir` in `folder`: the one name [`RunDir::release`] removes.
    fn pool_file(&self, folder: &Path, dir: &Path) -> PathBuf {
        folder.join(format!("{}{}.pool", Self::pool_prefix(), self.label(dir)))
    }

    /// The folders pools of this run were placed in.
    fn pool_folders(&self) -> Vec<PathBuf> {
        self.pool_dirs
            .lock()
            .map(|d| d.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// `dir` relative to the root, its components joined by `-`: unique within the run.
    fn label(&self, dir: &Path) -> String {
        let relative = dir.strip_prefix(&self.root).unwrap_or(dir);
        let parts: Vec<String> = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .filter(|c| c != "/")
            .collect();
        if parts.is_empty() {
            "pool".into()
        } else {
            parts.join("-")
        }
    }

    /// Frees what a finished repetition in `dir` used: its shm pool file (which holds
    /// memory for as long as it exists) and the folder itself when it holds only a few
    /// files (see [`RunDir::fresh`] for why large folders wait for the end).
    pub fn release(&self, dir: &Path) {
        for folder in self.pool_folders() {
            let _ = std::fs::remove_file(self.pool_file(&folder, dir));
        }
        remove_small_dir(dir);
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        for folder in self.pool_folders() {
            let Ok(entries) = std::fs::read_dir(&folder) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with(&Self::pool_prefix())
                {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.root) {
            tracing::warn!(path = %self.root.display(), error = %e, "could not remove the benchmark data folder");
        }
    }
}

/// Removes a folder that holds only a few files (a file tier's segments). Folders of
/// thousands of files are left for the end of the run (see [`RunDir::fresh`]).
fn remove_small_dir(dir: &Path) {
    let few = std::fs::read_dir(dir)
        .map(|entries| entries.take(100).count() < 100)
        .unwrap_or(false);
    if few {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Writes back and drops from the page cache every file under `dir`, so the next read
/// comes from the disk (`posix_fadvise(DONTNEED)` only drops clean pages, hence the sync).
/// Returns the number of files dropped.
pub fn drop_page_cache(dir: &Path) -> Result<usize> {
    let mut dropped = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        let entries = std::fs::read_dir(&folder).map_err(|e| {
            Error::io("cannot list a folder to drop its cache", e)
                .with_context("path", folder.display())
        })?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("cannot list a folder", e))?;
            let kind = entry
                .file_type()
                .map_err(|e| Error::io("cannot stat a file", e))?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                drop_file_cache(&entry.path())?;
                dropped += 1;
            }
        }
    }
    Ok(dropped)
}

/// Writes back every file system's dirty pages (`sync(2)`), so that the writeback of one
/// timed phase does not slow the next.
pub fn sync_everything() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

/// Syncs one file and drops its cached pages.
pub fn drop_file_cache(path: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path).map_err(|e| {
        Error::io("cannot open a file to drop its cache", e).with_context("path", path.display())
    })?;
    file.sync_data()
        .map_err(|e| Error::io("cannot sync a file", e).with_context("path", path.display()))?;
    // SAFETY: plain syscall on a descriptor we own; it only advises the kernel.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        return Err(Error::new(ErrorKind::Io, "posix_fadvise(DONTNEED) failed")
            .with_context("path", path.display())
            .with_context("errno", rc));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_tier_overrides_capacity_and_moves_file_data() {
        let deployment = Deployment {
            config: CascadeConfig::from_toml_str(
                r#"
                [[tiers]]
                kind = "memory"
                capacity = "1 GiB"
                [[tiers]]
                kind = "file"
                path = "/real/data"
                capacity = "10 GiB"
                "#,
            )
            .expect("config"),
            source: "test".into(),
        };
        assert_eq!(
            deployment.file_tier_dir(),
            Some(PathBuf::from("/real/data"))
        );
        let parent = tempfile::tempdir().expect("tempdir");
        let run = RunDir::create(parent.path(), false).expect("run dir");
        let file = deployment.bench_tier("file", 4096, Path::new("/tmp/x"), &run);
        assert_eq!(
            file.settings.get("path").and_then(|v| v.as_str()),
            Some("/tmp/x")
        );
        assert_eq!(
            file.settings.get("capacity").and_then(|v| v.as_integer()),
            Some(4096)
        );
        let fresh = deployment.bench_tier("gpu", 1 << 20, Path::new("/tmp/y"), &run);
        assert_eq!(fresh.kind, "gpu");
        assert!(fresh.settings.get("path").is_none());
        let shm =
            deployment.bench_tier("shm", 1 << 20, &run.root().join("rep-3").join("shm0"), &run);
        let pool = shm
            .settings
            .get("path")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        assert!(
            pool.starts_with("/dev/shm/cascade-bench-") && pool.ends_with("-rep-3-shm0.pool"),
            "{pool}"
        );
        assert!(capacity_for(1 << 30, 8192) > 1 << 30);
    }

    #[test]
    fn memory_is_always_compiled_and_unknown_kinds_are_not() {
        assert!(not_compiled_reason("memory").is_none());
        let reason = not_compiled_reason("tape").unwrap_or_default();
        assert!(reason.contains("memory"), "{reason}");
    }

    #[test]
    fn run_dir_hands_out_fresh_folders_and_cleans_up() {
        let parent = tempfile::tempdir().expect("tempdir");
        let root;
        {
            let run = RunDir::create(parent.path(), false).expect("run dir");
            let a = run.fresh("rep").expect("a");
            let b = run.fresh("rep").expect("b");
            assert_ne!(a, b);
            std::fs::write(a.join("f"), b"x").expect("write");
            assert_eq!(drop_page_cache(run.root()).expect("drop"), 1);
            root = run.root().to_path_buf();
        }
        assert!(!root.exists());
    }
}
