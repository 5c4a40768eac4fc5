//! Opening stores from configuration: the registry, defaults and config errors.

use cascade::{Cascade, CascadeConfig, ErrorKind, TierConfig, TierRegistry};

#[test]
fn the_embedded_default_deployment_opens_and_round_trips() {
    // The embedded deployment as shipped, with its paths moved into a scratch directory so
    // the test neither needs nor disturbs a pool another process may hold.
    let scratch = if std::path::Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm")
    } else {
        tempfile::tempdir()
    }
    .expect("tempdir");
    let mut config = Cascade::default_config().expect("embedded config parses");
    for tier in &mut config.tiers {
        if tier.settings.contains_key("path") || tier.kind == "shm" {
            let path = scratch.path().join(tier.display_name(0));
            tier.settings
                .insert("path".into(), path.display().to_string().into());
        }
    }
    let store = Cascade::open(&config).expect("default deployment");
    let block = vec![42u8; 4096];
    let id = cascade::compute_block_id(&block);
    store.put(id, &block).expect("put");
    let mut out = vec![0u8; 4096];
    assert_eq!(store.get(id, &mut out).expect("get"), Some(4096));
    assert_eq!(out, block);
    store.flush().expect("flush");
    drop(store);

    // Both tiers are persistent: a new process (here, a new store) finds the block.
    let reopened = Cascade::open(&config).expect("reopen");
    out.fill(0);
    assert_eq!(
        reopened.get(id, &mut out).expect("get after reopen"),
        Some(4096)
    );
    assert_eq!(out, block);
}

#[test]
fn unknown_kind_names_it_and_lists_known_kinds() {
    let err = Cascade::open_toml_str("[[tiers]]\nkind = \"tape\"\n").expect_err("unknown kind");
    assert_eq!(err.kind(), ErrorKind::Config);
    let text = err.to_string();
    assert!(text.contains("\"tape\""), "{text}");
    for kind in TierRegistry::builtin().kinds() {
        assert!(text.contains(kind), "{text} should list {kind}");
    }
}

#[test]
fn bad_values_are_config_errors_naming_the_field() {
    let zero = Cascade::open_toml_str("[[tiers]]\nkind = \"memory\"\ncapacity = 0\n")
        .expect_err("zero capacity");
    assert_eq!(zero.kind(), ErrorKind::Config);
    assert!(zero.to_string().contains("capacity"), "{zero}");

    let typo = Cascade::open_toml_str("[[tiers]]\nkind = \"memory\"\ncapacty = 10\n")
        .expect_err("unknown field");
    assert_eq!(typo.kind(), ErrorKind::Config);
    assert!(typo.to_string().contains("capacty"), "{typo}");

    let empty = Cascade::open_toml_str("dedup = true\ntiers = []\n").expect_err("no tiers");
    assert!(empty.to_string().contains("tiers"), "{empty}");

    let garbled = Cascade::open_toml_str("[[tiers]\nkind=").expect_err("bad toml");
    assert_eq!(garbled.kind(), ErrorKind::Config);

    let missing = Cascade::open_toml_file("/nonexistent/cascade.toml").expect_err("missing file");
    assert!(
        missing.to_string().contains("/nonexistent/cascade.toml"),
        "{missing}"
    );
}

#[test]
fn typed_config_and_toml_agree() {
    let config = CascadeConfig {
        tiers: vec![
            TierConfig::new("memory")
                .named("hot")
                .with("capacity", "1 MiB"),
            TierConfig::new("memory")
                .named("warm")
                .with("capacity", "4 MiB"),
        ],
        ..CascadeConfig::default()
    };
    let text = config.to_toml_string().expect("render");
    let store = Cascade::open_toml_str(&text).expect("open rendered config");
    let stats = store.stats();
    assert_eq!(stats.tiers.len(), 2);
    assert_eq!(stats.tiers[0].name, "hot");
    assert_eq!(stats.tiers[1].capacity_bytes, 4 << 20);
}

#[test]
fn content_ids_use_the_configured_hasher() {
    let sha = Cascade::open_toml_str(
        "hasher = \"sha256\"\n[[tiers]]\nkind = \"memory\"\ncapacity = \"1MiB\"\n",
    )
    .expect("sha");
    let blake = Cascade::open_toml_str(
        "hasher = \"blake3\"\n[[tiers]]\nkind = \"memory\"\ncapacity = \"1MiB\"\n",
    )
    .expect("blake");
    let data = b"the same block";
    let (a, _) = sha.put_content(data).expect("put");
    let (b, _) = blake.put_content(data).expect("put");
    assert_eq!(a, cascade::compute_block_id(data));
    assert_ne!(a, b);
    assert_eq!(
        sha.put_content(data).expect("again").1,
        cascade::PutOutcome::Deduplicated
    );
}

#[test]
fn an_optional_unavailable_tier_is_skipped_but_a_required_one_fails() {
    fn unavailable(
        _: String,
        _: usize,
        _: &TierConfig,
    ) -> cascade::Result<std::sync::Arc<dyn cascade::Tier>> {
        Err(cascade::Error::new(
            ErrorKind::Unavailable,
            "no such device here",
        ))
    }
    let mut registry = TierRegistry::builtin();
    registry.register("phantom", unavailable);
    let mut config = CascadeConfig {
        tiers: vec![
            TierConfig::new("phantom"),
            TierConfig::new("memory").with("capacity", "1MiB"),
        ],
        ..CascadeConfig::default()
    };
    let err = Cascade::open_with_registry(&config, &registry).expect_err("required by default");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    config.tiers[0].required = false;
    let store = Cascade::open_with_registry(&config, &registry).expect("skipped");
    assert_eq!(store.tiers().len(), 1);
}
