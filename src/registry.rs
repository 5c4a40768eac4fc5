//! Maps the `kind` of each `[[tiers]]` entry to the constructors compiled into this build.

use std::collections::BTreeMap;
use std::sync::Arc;

use cascade_core::{Error, MemoryTier, MemoryTierConfig, Result, Tier, TierConfig};

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
        registry.register(cascade_core::memory::KIND, open_memory);
        #[cfg(feature = "plugins")]
        registry.register(cascade_core::plugin::KIND, open_plugin);
        #[cfg(feature = "shm")]
        registry.register(cascade_shm::KIND, open_shm);
        #[cfg(feature = "gpu")]
        registry.register(cascade_gpu::KIND, open_gpu);
        #[cfg(feature = "lustre")]
        {
            registry.register(cascade_lustre::KIND, open_file);
            registry.register(cascade_lustre::ALIAS, open_file);
        }
        registry
    }

    /// Adds (or replaces) a kind.
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

fn open_memory(name: String, position: usize, config: &TierConfig) -> Result<Arc<dyn Tier>> {
    let settings: MemoryTierConfig = config.parse_settings(position)?;
    Ok(Arc::new(MemoryTier::open(name, &settings)?))
}

/// `kind = "plugin"`: loads the library named by `path` (and only that file) and hands
/// the entry's other settings to the plugin as TOML text.
#[cfg(feature = "plugins")]
fn open_plugin(name: String, position: usize, config: &TierConfig) -> Result<Arc<dyn Tier>> {
    Ok(Arc::new(cascade_core::plugin::open_tier(
        name, position, config,
    )?))
}

#[cfg(feature = "shm")]
fn open_shm(name: String, position: usize, config: &TierConfig) -> Result<Arc<dyn Tier>> {
    let settings: cascade_shm::ShmTierConfig = config.parse_settings(position)?;
    Ok(Arc::new(cascade_shm::ShmTier::open(name, &settings)?))
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

#[cfg(feature = "lustre")]
fn open_file(name: String, position: usize, config: &TierConfig) -> Result<Arc<dyn Tier>> {
    let settings: cascade_lustre::FileTierConfig = config.parse_settings(position)?;
    Ok(Arc::new(cascade_lustre::FileTier::open(name, &settings)?))
}

#[cfg(feature = "gpu")]
fn open_gpu(name: String, position: usize, config: &TierConfig) -> Result<Arc<dyn Tier>> {
    let settings: cascade_gpu::GpuTierConfig = config.parse_settings(position)?;
    Ok(Arc::new(cascade_gpu::GpuTier::open(name, &settings)?))
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
