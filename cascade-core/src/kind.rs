//! [`TierKind`]: what a tier crate implements once so that a registry can build its tiers
//! from `[[tiers]]` entries: the `kind` string, the typed settings, the constructor.

use serde::de::DeserializeOwned;

use crate::{Result, Tier, TierConfig};

/// A tier type a registry can build by name.
///
/// ```ignore
/// impl TierKind for ShmTier {
///     const KIND: &'static str = "shm";
///     type Config = ShmTierConfig;
///     fn open_kind(name: String, config: &ShmTierConfig) -> Result<Self> {
///         ShmTier::open(name, config)
///     }
/// }
/// ```
///
/// The facade's `TierRegistry::register_kind::<ShmTier>()` then maps `kind = "shm"` (and
/// every alias) to "read the entry's settings into `ShmTierConfig`, then `open_kind`".
pub trait TierKind: Tier + Sized + 'static {
    /// The `kind` string of `[[tiers]]` entries, also what [`Tier::kind`] returns.
    const KIND: &'static str;
    /// Other `kind` strings that mean the same (`lustre` for `file`). Default: none.
    const ALIASES: &'static [&'static str] = &[];
    /// The typed settings, read from the entry once, before the tier opens.
    type Config: KindConfig;

    /// Builds the tier named `name` (unique within the store) from its settings.
    fn open_kind(name: String, config: &Self::Config) -> Result<Self>;
}

/// Settings a [`TierKind`] reads from its `[[tiers]]` entry.
///
/// Every serde type gets this by deserialising the entry's settings table
/// ([`TierConfig::parse_settings`], whose errors name the entry and the key); a kind
/// whose entry has another shape (the plugin kind: a library path beside the plugin's
/// own settings) implements it by hand.
pub trait KindConfig: Sized {
    /// Reads the settings of the entry at `position` of the tier list.
    fn from_entry(position: usize, entry: &TierConfig) -> Result<Self>;
}

impl<T: DeserializeOwned> KindConfig for T {
    fn from_entry(position: usize, entry: &TierConfig) -> Result<Self> {
        entry.parse_settings(position)
    }
}

/// Reads `entry`'s settings for `K` and opens the tier: the one constructor every
/// registered kind shares.
pub fn open_entry<K: TierKind>(
    name: String,
    position: usize,
    entry: &TierConfig,
) -> Result<std::sync::Arc<dyn Tier>> {
    let config = K::Config::from_entry(position, entry)?;
    Ok(std::sync::Arc::new(K::open_kind(name, &config)?))
}
