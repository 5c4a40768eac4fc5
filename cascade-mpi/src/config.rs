//! One config for every rank: `{rank}` in a tier's settings becomes the rank's number, so
//! node-local storage (a shm pool, a scratch directory) gets a path of its own per rank,
//! while a path without it (a shared file tier on the parallel file system) is shared.

use cascade_core::CascadeConfig;

/// The placeholder replaced by the rank's number in every string setting.
pub const RANK_PLACEHOLDER: &str = "{rank}";

/// `config` as rank `rank` opens it: `{rank}` replaced in every tier's string settings,
/// and a shm tier without a `path` given `/dev/shm/cascade-<uid>-<name>-rank<rank>.pool`
/// (its single-process default would make ranks on one node collide on one pool).
pub fn for_rank(config: &CascadeConfig, rank: usize) -> CascadeConfig {
    let mut config = config.clone();
    let text = rank.to_string();
    for (position, tier) in config.tiers.iter_mut().enumerate() {
        for (_, value) in tier.settings.iter_mut() {
            substitute(value, &text);
        }
        if tier.kind == "shm" && !tier.settings.contains_key("path") {
            let name: String = tier
                .display_name(position)
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "._-".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            // SAFETY: getuid has no preconditions and cannot fail.
            let uid = unsafe { libc::getuid() };
            tier.settings.insert(
                "path".to_string(),
                format!("/dev/shm/cascade-{uid}-{name}-rank{rank}.pool").into(),
            );
        }
    }
    config
}

fn substitute(value: &mut toml::Value, rank: &str) {
    match value {
        toml::Value::String(s) if s.contains(RANK_PLACEHOLDER) => {
            *s = s.replace(RANK_PLACEHOLDER, rank);
        }
        toml::Value::Array(items) => items.iter_mut().for_each(|v| substitute(v, rank)),
        toml::Value::Table(table) => table.iter_mut().for_each(|(_, v)| substitute(v, rank)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cascade_core::TierConfig;

    #[test]
    fn rank_placeholders_are_replaced_and_shm_pools_get_a_path_per_rank() {
        let config = CascadeConfig {
            tiers: vec![
                TierConfig::new("shm").named("shm"),
                TierConfig::new("file").with("path", "/scratch/job/{rank}/file"),
                TierConfig::new("file")
                    .named("shared")
                    .with("path", "/lustre/cascade"),
            ],
            ..CascadeConfig::default()
        };
        let three = for_rank(&config, 3);
        let path = |i: usize| three.tiers[i].settings["path"].as_str().map(str::to_string);
        assert!(
            path(0).is_some_and(|p| p.ends_with("-shm-rank3.pool")),
            "{:?}",
            path(0)
        );
        assert_eq!(path(1).as_deref(), Some("/scratch/job/3/file"));
        assert_eq!(path(2).as_deref(), Some("/lustre/cascade"));
        assert_ne!(
            for_rank(&config, 4).tiers[0].settings["path"],
            three.tiers[0].settings["path"]
        );
    }
}
