//! The `[[tiers]]` entry of `kind = "plugin"`: a library path and the plugin's settings.

use std::path::PathBuf;

use super::loader::{PluginLibrary, PluginTier};
use crate::{Error, Result, TierConfig};

/// Settings of a `plugin` tier.
///
/// ```toml
/// [[tiers]]
/// kind = "plugin"
/// path = "/opt/cascade/plugins/libcascade_redis.so"
/// [tiers.settings]          # handed to the plugin as TOML text
/// url = "redis://127.0.0.1:6379"
/// capacity = "4 GiB"
/// ```
///
/// Keys other than `kind`, `name`, `required`, `path` and `settings` are handed to the
/// plugin too, as if written under `[tiers.settings]`.
#[derive(Debug, Clone)]
pub struct PluginTierConfig {
    /// The shared library to load. Required; relative paths are taken from the current
    /// directory, never searched for.
    pub path: PathBuf,
    /// The plugin's own settings. Default: empty.
    pub settings: toml::Table,
}

impl PluginTierConfig {
    /// Reads the plugin entry at `position` of the tier list.
    pub fn from_tier_config(position: usize, config: &TierConfig) -> Result<Self> {
        let at = |field: &str| format!("tiers[{position}].{field}");
        let mut rest = config.settings.clone();
        let path = match rest.remove("path") {
            Some(toml::Value::String(path)) if !path.trim().is_empty() => PathBuf::from(path),
            Some(_) => {
                return Err(Error::config(format!(
                    "{}: must be a non-empty string",
                    at("path")
                )));
            }
            None => {
                return Err(Error::config(format!(
                    "{}: required for kind = \"plugin\" (the shared library to load)",
                    at("path")
                )));
            }
        };
        let mut settings = match rest.remove("settings") {
            Some(toml::Value::Table(table)) => table,
            Some(_) => {
                return Err(Error::config(format!(
                    "{}: must be a table",
                    at("settings")
                )));
            }
            None => toml::Table::new(),
        };
        for (key, value) in rest {
            if settings.contains_key(&key) {
                return Err(Error::config(format!(
                    "{}: given both beside `path` and under [tiers.settings]",
                    at(&key)
                )));
            }
            settings.insert(key, value);
        }
        Ok(Self { path, settings })
    }

    /// The settings as the TOML text the plugin's `create` receives.
    pub fn settings_text(&self) -> Result<String> {
        toml::to_string(&self.settings)
            .map_err(|e| Error::config(format!("cannot render plugin settings: {e}")))
    }
}

impl crate::KindConfig for PluginTierConfig {
    fn from_entry(position: usize, entry: &TierConfig) -> Result<Self> {
        Self::from_tier_config(position, entry)
    }
}

/// `kind = "plugin"`: loads the library named by `path` (and only that file) and hands
/// the entry's other settings to the plugin as TOML text.
impl crate::TierKind for PluginTier {
    const KIND: &'static str = super::KIND;
    type Config = PluginTierConfig;

    fn open_kind(name: String, plugin: &PluginTierConfig) -> Result<Self> {
        let library =
            PluginLibrary::load(&plugin.path).map_err(|e| e.with_context("tier", &name))?;
        library.create(name, &plugin.settings_text()?)
    }
}

/// Loads the library named by a `kind = "plugin"` entry and creates the tier.
pub fn open_tier(name: String, position: usize, config: &TierConfig) -> Result<PluginTier> {
    let plugin = PluginTierConfig::from_tier_config(position, config)?;
    <PluginTier as crate::TierKind>::open_kind(name, &plugin)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(text: &str) -> TierConfig {
        crate::CascadeConfig::from_toml_str(text)
            .expect("valid toml")
            .tiers
            .remove(0)
    }

    #[test]
    fn settings_table_and_loose_keys_merge() {
        let config = entry(
            r#"
            [[tiers]]
            kind = "plugin"
            path = "/x/libfoo.so"
            capacity = 4096
            [tiers.settings]
            url = "redis://127.0.0.1:1"
            "#,
        );
        let plugin = PluginTierConfig::from_tier_config(0, &config).unwrap();
        assert_eq!(plugin.path, PathBuf::from("/x/libfoo.so"));
        let text = plugin.settings_text().unwrap();
        let back: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(
            back.get("capacity").and_then(toml::Value::as_integer),
            Some(4096)
        );
        assert_eq!(
            back.get("url").and_then(toml::Value::as_str),
            Some("redis://127.0.0.1:1")
        );
        assert!(!back.contains_key("path"));
    }

    #[test]
    fn missing_path_and_duplicate_keys_are_config_errors() {
        let err = PluginTierConfig::from_tier_config(2, &entry("[[tiers]]\nkind = \"plugin\"\n"))
            .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Config);
        assert!(err.to_string().contains("tiers[2].path"), "{err}");
        let twice =
            entry("[[tiers]]\nkind = \"plugin\"\npath = \"/x\"\na = 1\n[tiers.settings]\na = 2\n");
        let err = PluginTierConfig::from_tier_config(0, &twice).unwrap_err();
        assert!(err.to_string().contains("tiers[0].a"), "{err}");
    }

    #[test]
    fn missing_library_is_unavailable() {
        let config = entry("[[tiers]]\nkind = \"plugin\"\npath = \"/nonexistent/libnothing.so\"\n");
        let err = open_tier("p0".into(), 0, &config).err().unwrap();
        assert_eq!(err.kind(), crate::ErrorKind::Unavailable, "{err}");
        assert!(
            err.to_string().contains("/nonexistent/libnothing.so"),
            "{err}"
        );
    }
}
