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
