//! Maps the `kind` of each `[[tiers]]` entry to the tier types compiled into this build.
//!
//! Each tier crate implements [`TierKind`] once (its kind and aliases, its typed
//! settings, its constructor); [`TierRegistry::builtin`] registers the kinds whose cargo
//! features are on, and nothing here knows a tier's settings or constructor.

use std::collections::BTreeMap;
use std::sync::Arc;

use cascade_core::kind::open_entry;
use cascade_core::{Error, MemoryTier, Result, Tier, TierConfig, TierKind};

/// Builds one tier from its config entry and its position in the order.
pub type TierFactory =
    fn(name: String, position: usize, config: &TierConfig) -> Result<Arc<dyn Tier>>;

/// The kinds a build knows.
#[derive(Clone, Default)]
pub struct TierRegistry {
    factories: BTreeMap<String, TierFactory>,
}

impl TierRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every kind compiled into this build: `memory` always; `shm`, `file` (alias
    /// `lustre`), `gpu` and `plugin` when their cargo features are on.
    pub fn builtin() -> Self {
        let mut registry = Self::new();
        registry.register_kind::<MemoryTier>();
        #[cfg(feature = "plugins")]
        registry.register_kind::<cascade_core::plugin::PluginTier>();
        #[cfg(feature = "shm")]
        registry.register_kind::<cascade_shm::ShmTier>();
        #[cfg(feature = "gpu")]
        registry.register_kind::<cascade_gpu::GpuTier>();
        #[cfg(feature = "lustre")]
        registry.register_kind::<cascade_lustre::FileTier>();
        registry
    }

    /// Adds (or replaces) the kind `K` under its name and every alias.
    pub fn register_kind<K: TierKind>(&mut self) {
        for kind in std::iter::once(K::KIND).chain(K::ALIASES.iter().copied()) {
            self.register(kind, open_entry::<K>);
        }
    }

    /// Adds (or replaces) a kind built by a function of its own (an in-process kind
    /// without a type of its own, a test double).
    pub fn register(&mut self, kind: &str, factory: TierFactory) {
        self.factories.insert(kind.to_string(), factory);
    }

    /// The kinds known, sorted.
    pub fn kinds(&self) -> Vec<&str> {
        self.factories.keys().map(String::as_str).collect()
    }

    /// Builds the tier at `position`.
    pub fn open(&self, position: usize, config: &TierConfig) -> Result<Arc<dyn Tier>> {
        let factory = self.factories.get(config.kind.as_str()).ok_or_else(|| {
            Error::config(format!(
                "tiers[{position}].kind: unknown tier kind {:?}; this build knows: {}",
                config.kind,
                self.kinds().join(", ")
            ))
        })?;
        factory(config.display_name(position), position, config)
    }
}

#[cfg(test)]
mod kind_tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn each_kind_builds_a_tier_that_reports_its_kind_and_aliases_build_the_same() {
        let registry = TierRegistry::builtin();
        let mut want = vec!["memory"];
        if cfg!(feature = "plugins") {
            want.push("plugin");
        }
        if cfg!(feature = "shm") {
            want.push("shm");
        }
        if cfg!(feature = "gpu") {
            want.push("gpu");
        }
        if cfg!(feature = "lustre") {
            want.extend(["file", "lustre"]);
        }
        want.sort_unstable();
        assert_eq!(registry.kinds(), want);
        let memory = registry
            .open(0, &TierConfig::new("memory").with("capacity", "1 MiB"))
            .unwrap();
        assert_eq!(memory.kind(), "memory");
        assert_eq!(memory.capacity(), 1 << 20);
        #[cfg(feature = "lustre")]
        {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().display().to_string();
            let alias = TierConfig::new("lustre")
                .with("path", path.as_str())
                .with("capacity", "4 MiB");
            let tier = registry.open(3, &alias).unwrap();
            assert_eq!(tier.kind(), "file", "the alias builds the file tier");
        }
    }

    #[test]
    fn settings_errors_name_the_entry_and_the_key() {
        let registry = TierRegistry::builtin();
        let bad = TierConfig::new("memory").with("capacty", "1 MiB");
        let err = registry.open(2, &bad).err().unwrap();
        assert_eq!(err.kind(), cascade_core::ErrorKind::Config);
        let text = err.to_string();
        assert!(
            text.contains("tiers[2]") && text.contains("capacty"),
            "{text}"
        );
    }
}

#[cfg(all(test, feature = "shm"))]
mod tests {
    use super::*;

    #[test]
    fn shm_kind_opens_from_toml_and_keeps_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("facade.pool");
        let text = format!(
            "[[tiers]]\nkind = \"shm\"\ncapacity = \"4 MiB\"\npath = {:?}\n",
            path.display().to_string()
        );
        let config = cascade_core::CascadeConfig::from_toml_str(&text).unwrap();
        let registry = TierRegistry::builtin();
        assert!(registry.kinds().contains(&"shm"));
        let id = cascade_core::BlockId::from_u128(42);
        {
            let tier = registry.open(0, &config.tiers[0]).unwrap();
            assert_eq!(tier.kind(), "shm");
            tier.put(id, b"kv").unwrap();
        }
        let tier = registry.open(0, &config.tiers[0]).unwrap();
        let mut out = [0u8; 2];
        assert_eq!(tier.get(id, &mut out).unwrap(), 2);
        assert_eq!(&out, b"kv");
        let bad = cascade_core::TierConfig::new("shm").with("capacty", "4 MiB");
        let err = registry.open(0, &bad).err().unwrap();
        assert!(err.to_string().contains("capacty"), "{err}");
    }
}

#[cfg(all(test, feature = "gpu"))]
mod gpu_tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use cascade_core::ErrorKind;

    const GPU_OVER_MEMORY: &str = r#"
        [[tiers]]
        kind = "gpu"
        capacity = "64 MiB"
        streams = 2
        required = REQUIRED

        [[tiers]]
        kind = "memory"
        capacity = "16 MiB"
    "#;

    #[test]
    fn gpu_kind_is_registered_and_typed_when_absent() {
        assert!(super::TierRegistry::builtin().kinds().contains(&"gpu"));
        if cascade_gpu::driver_present() {
            eprintln!(
                "skipped: a CUDA driver is present; the no-driver path is not reachable here"
            );
            return;
        }
        let required = GPU_OVER_MEMORY.replace("REQUIRED", "true");
        let err = crate::Cascade::open_toml_str(&required).expect_err("no GPU here");
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
        let optional = GPU_OVER_MEMORY.replace("REQUIRED", "false");
        let store =
            crate::Cascade::open_toml_str(&optional).expect("an optional GPU tier is skipped");
        assert_eq!(store.tiers().len(), 1);
        assert_eq!(store.tiers()[0].kind(), "memory");
    }
}
