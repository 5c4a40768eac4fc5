//! Opening the deployment a command works on, keeping typed handles on its file tiers
//! (their verification, compaction and write times are the file tier's own API).

use std::path::Path;
use std::sync::Arc;

use cascade::lustre::{FileTier, FileTierConfig};
use cascade::{
    Cascade, CascadeConfig, CascadeStore, ErrorKind, Result, StorePolicy, Tier, TierRegistry,
};

/// An open deployment.
pub struct Deployment {
    /// Where it came from (a path, or the embedded default).
    pub source: String,
    /// The store over the tiers that opened.
    pub store: Arc<CascadeStore>,
    /// The file tiers, by their position in the store.
    pub file_tiers: Vec<(usize, Arc<FileTier>)>,
    /// The configured tiers this machine lacks (`required = false`), with the reason.
    pub skipped: Vec<(String, String)>,
}

fn is_file_kind(kind: &str) -> bool {
    kind == cascade::lustre::KIND || kind == cascade::lustre::ALIAS
}

impl Deployment {
    /// Opens the deployment at `path`, or the embedded default one, as
    /// [`Cascade::open`] would; a deployment that does not open is the error.
    pub fn open(path: Option<&Path>) -> Result<Self> {
        let (config, source) = match path {
            Some(path) => (
                CascadeConfig::from_toml_file(path)?,
                path.display().to_string(),
            ),
            None => (
                Cascade::default_config()?,
                "embedded default deployment (cascade.toml)".to_string(),
            ),
        };
        config
            .validate()
            .map_err(|e| e.with_context("deployment", &source))?;
        let registry = TierRegistry::builtin();
        let mut tiers: Vec<Arc<dyn Tier>> = Vec::new();
        let mut file_tiers = Vec::new();
        let mut skipped = Vec::new();
        for (position, tier) in config.tiers.iter().enumerate() {
            let name = tier.display_name(position);
            let opened: Result<Arc<dyn Tier>> = if is_file_kind(&tier.kind) {
                tier.parse_settings::<FileTierConfig>(position)
                    .and_then(|settings| FileTier::open(name.clone(), &settings))
                    .map(|file| {
                        let file = Arc::new(file);
                        file_tiers.push((tiers.len(), Arc::clone(&file)));
                        file as Arc<dyn Tier>
                    })
            } else {
                registry.open(position, tier)
            };
            match opened {
                Ok(opened) => tiers.push(opened),
                Err(e) if e.kind() == ErrorKind::Unavailable && !tier.required => {
                    skipped.push((name, e.to_string()));
                }
                Err(e) => return Err(e.with_context("deployment", &source)),
            }
        }
        if tiers.is_empty() {
            return Err(cascade::Error::new(
                ErrorKind::Unavailable,
                "none of the configured tiers is available on this machine",
            )
            .with_context("deployment", &source));
        }
        let store = CascadeStore::new(tiers, StorePolicy::from(&config))
            .map_err(|e| e.with_context("deployment", &source))?
            .with_hasher(cascade::hash::hasher_for(config.hasher));
        Ok(Self {
            source,
            store: Arc::new(store),
            file_tiers,
            skipped,
        })
    }

    /// The position of the tier named `tier` (or numbered, fastest first from 0).
    pub fn tier_position(&self, tier: &str) -> Result<usize> {
        let tiers = self.store.tiers();
        if let Some(position) = tiers.iter().position(|t| t.name() == tier) {
            return Ok(position);
        }
        match tier.parse::<usize>() {
            Ok(position) if position < tiers.len() => Ok(position),
            _ => Err(cascade::Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "no tier {tier:?} in this deployment; its tiers are: {}",
                    tiers
                        .iter()
                        .map(|t| t.name().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    }

    /// The file tier at `position`, when it is one.
    pub fn file_tier(&self, position: usize) -> Option<&Arc<FileTier>> {
        self.file_tiers
            .iter()
            .find(|(p, _)| *p == position)
            .map(|(_, t)| t)
    }
}
