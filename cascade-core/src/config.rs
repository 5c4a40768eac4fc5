//! Typed configuration of a store and its tiers, read from TOML.
//!
//! Every field has a default, written in its doc comment. Values are checked once, when
//! the store opens; a bad value is a [`crate::ErrorKind::Config`] error naming the field.

use std::fmt;
use std::str::FromStr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Error, Result};

/// A byte count written as an integer (`1073741824`) or with a unit (`"1 GiB"`,
/// `"512MiB"`, `"128KiB"`, `"2MB"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// `n` bytes.
    pub const fn b(n: u64) -> Self {
        Self(n)
    }
    /// `n` KiB.
    pub const fn kib(n: u64) -> Self {
        Self(n << 10)
    }
    /// `n` MiB.
    pub const fn mib(n: u64) -> Self {
        Self(n << 20)
    }
    /// `n` GiB.
    pub const fn gib(n: u64) -> Self {
        Self(n << 30)
    }
    /// The count of bytes.
    pub const fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", bytesize::ByteSize(self.0).display().iec())
    }
}

/// The text every malformed size gets, after the name of its field.
fn size_expected(got: impl fmt::Display) -> String {
    format!("must be a size like 64 GiB or a number of bytes, got {got}")
}

impl FromStr for ByteSize {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let trimmed = text.trim();
        if let Ok(n) = trimmed.parse::<u64>() {
            return Ok(Self(n));
        }
        trimmed
            .parse::<bytesize::ByteSize>()
            .map(|b| Self(b.as_u64()))
            .map_err(|_| Error::config(size_expected(format_args!("{text:?}"))))
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ByteSize;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size like 64 GiB or a number of bytes")
            }

            fn visit_u64<E: serde::de::Error>(self, n: u64) -> std::result::Result<ByteSize, E> {
                Ok(ByteSize(n))
            }

            fn visit_i64<E: serde::de::Error>(self, n: i64) -> std::result::Result<ByteSize, E> {
                u64::try_from(n)
                    .map(ByteSize)
                    .map_err(|_| E::custom(size_expected(n)))
            }

            fn visit_f64<E: serde::de::Error>(self, n: f64) -> std::result::Result<ByteSize, E> {
                Err(E::custom(size_expected(n)))
            }

            fn visit_str<E: serde::de::Error>(
                self,
                text: &str,
            ) -> std::result::Result<ByteSize, E> {
                text.parse().map_err(|e: Error| E::custom(e.message()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Which hash names blocks by content. Speeds measured on the 2 vCPU AMD EPYC
/// development machine, 2026-11-26, one block per thread (docs/benchmarks.md,
/// "Hashing (cascade-hash)").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HasherKind {
    /// SHA-256, first 16 bytes: the documented `compute_block_id`, so ids match the
    /// original system's. About 2.0 GB/s per core (SHA-NI): hashing a 128 KiB block
    /// costs about 65 us.
    #[default]
    Sha256,
    /// BLAKE3, first 16 bytes: 8.5 to 9.3 GB/s per core (AVX-512), 4.2 to 4.5 times
    /// faster than SHA-256; ids differ from the documented `compute_block_id`.
    Blake3,
}

/// When a put's block reaches persistent storage.
///
/// What survives a crash of the process (kill -9, or a panic that aborts):
/// - `write_back`: blocks whose place at the crash was a persistent tier (shm, file) and
///   whose tier had committed them (shm commits before the put returns unless
///   `background_commit`; the file tier after its flush or segment seal). Blocks held
///   by the GPU or memory tier are lost.
/// - `write_through`: in addition, every block put before the last
///   [`crate::CascadeStore::flush`] that returned `Ok`, wherever it was placed: its
///   copy in the first persistent tier below its place was written and made durable.
///   Blocks put after that flush may or may not be back.
///
/// A machine crash (power loss) keeps only what the persistent tiers made durable:
/// files after flush; `/dev/shm` never survives a reboot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WritePolicy {
    /// A block lives in the fastest tier that takes it and moves down under pressure.
    #[default]
    WriteBack,
    /// A put placed in a non-persistent tier is also written, in the background, to the
    /// first persistent tier below it; `flush()` waits for those writes.
    WriteThrough,
}

/// The whole deployment: store policy and the tiers, fastest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CascadeConfig {
    /// A put of an id already stored copies nothing and is counted as a dedup hit.
    /// When false, such a put replaces the stored block. Default: true.
    pub dedup: bool,
    /// A get of a block found below the fastest tier copies it into the fastest tier
    /// (demoting colder blocks to make room) so the next read is served from there.
    /// Default: true.
    pub promote_on_read: bool,
    /// Hash for content-addressed ids (`put_content`, `compute_block_id`):
    /// `"sha256"` or `"blake3"`. Default: `"sha256"`.
    pub hasher: HasherKind,
    /// Threads for batch calls; 0 uses one per core. Default: 0.
    pub num_io_threads: usize,
    /// Prefetches (`CascadeStore::prefetch`) that move blocks at once, each on its own
    /// background thread (started on the first prefetch); later ones wait in order.
    /// Must be at least 1. Default: 2.
    pub max_prefetches: usize,
    /// `"write_back"` or `"write_through"` (see [`WritePolicy`] for what survives a
    /// crash under each). Default: `"write_back"`.
    pub write_policy: WritePolicy,
    /// Address (`"127.0.0.1:9464"`) on which the store serves its metrics in the
    /// Prometheus text format at `/metrics`, over plain HTTP, for as long as it is open
    /// (see docs/operations.md). Bind it to loopback or a private interface: the figures
    /// name the tiers. Default: none (off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,
    /// The tiers, fastest first. Default: one `memory` tier of 1 GiB.
    pub tiers: Vec<TierConfig>,
}

impl Default for CascadeConfig {
    fn default() -> Self {
        Self {
            dedup: true,
            promote_on_read: true,
            hasher: HasherKind::Sha256,
            num_io_threads: 0,
            max_prefetches: 2,
            write_policy: WritePolicy::WriteBack,
            metrics_listen: None,
            tiers: vec![TierConfig::new("memory").with("capacity", "1 GiB")],
        }
    }
}

impl CascadeConfig {
    /// Parses a TOML document.
    pub fn from_toml_str(text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| Error::config(format!("invalid config: {e}")))
    }

    /// Reads and parses a TOML file.
    pub fn from_toml_file(path: impl AsRef<std::path::Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::new(crate::ErrorKind::Config, "cannot read config file")
                .with_context("path", path.display())
                .with_source(e)
        })?;
        Self::from_toml_str(&text).map_err(|e| e.with_context("path", path.display()))
    }

    /// Renders the config as TOML.
    pub fn to_toml_string(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| Error::config(format!("cannot render config: {e}")))
    }

    /// Checks store-wide values; each tier checks its own settings when it opens.
    pub fn validate(&self) -> Result<()> {
        if self.tiers.is_empty() {
            return Err(Error::config(
                "tiers: at least one [[tiers]] entry is required",
            ));
        }
        if self.max_prefetches == 0 {
            return Err(Error::config("max_prefetches: must be at least 1"));
        }
        let mut names = std::collections::HashSet::new();
        for (position, tier) in self.tiers.iter().enumerate() {
            if tier.kind.trim().is_empty() {
                return Err(Error::config(format!(
                    "tiers[{position}].kind: must not be empty"
                )));
            }
            let name = tier.display_name(position);
            if !names.insert(name.clone()) {
                return Err(Error::config(format!(
                    "tiers[{position}].name: {name:?} is used by two tiers"
                )));
            }
        }
        Ok(())
    }
}

/// One `[[tiers]]` entry: a kind, an optional name, and the kind's own settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TierConfig {
    /// Which implementation: `"memory"`, `"shm"`, `"file"`, `"gpu"`, `"plugin"`, ...
    pub kind: String,
    /// Instance name shown in stats and errors. Default: `"<kind><position>"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// When false, a tier that is unavailable on this machine (no GPU, no driver) is
    /// skipped with a warning instead of failing the open. Default: true.
    #[serde(default = "default_true")]
    pub required: bool,
    /// The kind's own settings (`capacity`, `path`, ...), checked by the tier.
    #[serde(flatten)]
    pub settings: toml::Table,
}

fn default_true() -> bool {
    true
}

impl TierConfig {
    /// A tier of `kind` with no settings.
    pub fn new(kind: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            name: None,
            required: true,
            settings: toml::Table::new(),
        }
    }

    /// Adds one setting.
    #[must_use]
    pub fn with(mut self, key: &str, value: impl Into<toml::Value>) -> Self {
        self.settings.insert(key.to_string(), value.into());
        self
    }

    /// Sets the instance name.
    #[must_use]
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The name, or `"<kind><position>"` when none was given.
    pub fn display_name(&self, position: usize) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("{}{position}", self.kind))
    }

    /// Deserializes the kind-specific settings into `T`, naming the tier and the
    /// setting on error (`tiers[0] (shm "shm0"): capacity must be a size like ...`).
    pub fn parse_settings<T: DeserializeOwned>(&self, position: usize) -> Result<T> {
        serde_path_to_error::deserialize(toml::Value::Table(self.settings.clone())).map_err(|e| {
            let path = e.path().to_string();
            // The bare message: toml's Display appends the key, which `path` already gives.
            let inner = e.into_inner().message().to_string();
            let what = match path.as_str() {
                "" | "." => inner,
                // Messages of the form "must be ..." are written to follow the field name.
                _ if inner.starts_with("must ") => format!("{path} {inner}"),
                _ => format!("{path}: {inner}"),
            };
            Error::config(format!(
                "tiers[{position}] ({} {:?}): {what}",
                self.kind,
                self.display_name(position)
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_parse_with_units() {
        for (text, want) in [
            ("4096", 4096),
            ("128KiB", 128 << 10),
            ("1 GiB", 1 << 30),
            ("2MiB", 2 << 20),
        ] {
            assert_eq!(
                text.parse::<ByteSize>().ok(),
                Some(ByteSize(want)),
                "{text}"
            );
        }
        assert!("lots".parse::<ByteSize>().is_err());
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Sized {
        capacity: ByteSize,
    }

    #[test]
    fn malformed_sizes_name_the_setting_and_the_value() {
        for (value, got) in [
            (toml::Value::Integer(-1), "got -1"),
            (toml::Value::String("lots".into()), "got \"lots\""),
            (toml::Value::Float(1.5), "got 1.5"),
        ] {
            let tier = TierConfig::new("memory").with("capacity", value);
            let err = tier.parse_settings::<Sized>(0).expect_err("malformed");
            assert_eq!(err.kind(), crate::ErrorKind::Config);
            let text = err.to_string();
            assert!(
                text.contains(&format!(
                    "capacity must be a size like 64 GiB or a number of bytes, {got}"
                )),
                "{text}"
            );
            assert!(text.contains("tiers[0] (memory \"memory0\")"), "{text}");
        }
        let tier = TierConfig::new("memory").with("capacity", true);
        let text = tier
            .parse_settings::<Sized>(0)
            .expect_err("a bool")
            .to_string();
        assert!(text.contains("capacity: invalid type"), "{text}");
        let parsed: Sized = TierConfig::new("memory")
            .with("capacity", "64 GiB")
            .parse_settings(0)
            .expect("a size with a unit");
        assert_eq!(parsed.capacity, ByteSize::gib(64));
    }

    #[test]
    fn toml_with_tiers_parses() {
        let config = CascadeConfig::from_toml_str(
            r#"
            dedup = false
            hasher = "blake3"
            [[tiers]]
            kind = "memory"
            capacity = "64MiB"
            [[tiers]]
            kind = "file"
            name = "scratch"
            path = "/tmp/x"
            "#,
        );
        let config = config.expect("valid config");
        assert!(!config.dedup);
        assert_eq!(config.hasher, HasherKind::Blake3);
        assert_eq!(config.tiers.len(), 2);
        assert_eq!(config.tiers[1].display_name(1), "scratch");
        assert_eq!(config.tiers[0].display_name(0), "memory0");
        assert!(config.validate().is_ok());
        assert_eq!(config.write_policy, WritePolicy::WriteBack);
    }

    #[test]
    fn write_policy_parses_and_rejects_unknown_values() {
        let config = CascadeConfig::from_toml_str(r#"write_policy = "write_through""#);
        assert_eq!(
            config.map(|c| c.write_policy).ok(),
            Some(WritePolicy::WriteThrough)
        );
        let err = CascadeConfig::from_toml_str(r#"write_policy = "sometimes""#).err();
        let text = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains("write_through"), "{text}");
    }

    #[test]
    fn unknown_top_level_field_is_rejected_by_name() {
        let err = CascadeConfig::from_toml_str("dedupe = true").err();
        let text = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains("dedupe"), "{text}");
    }

    #[test]
    fn empty_tier_list_and_duplicate_names_are_errors() {
        let empty = CascadeConfig {
            tiers: vec![],
            ..CascadeConfig::default()
        };
        assert!(empty.validate().is_err());
        let twice = CascadeConfig {
            tiers: vec![
                TierConfig::new("memory").named("a"),
                TierConfig::new("memory").named("a"),
            ],
            ..CascadeConfig::default()
        };
        assert!(twice.validate().is_err());
    }
}
