//! `kind = "plugin"` through the facade: the C example plugin at either end of the tier
//! order, with blocks demoted across the plugin boundary.
// Helpers outside #[test] fns unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used)]
#![cfg(feature = "plugins")]

use cascade::{BlockId, Cascade, CascadeStore, ErrorKind};

fn plugin_path() -> String {
    cascade_plugin_example_c::library_path()
        .display()
        .to_string()
}

fn block(n: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64 ^ n.wrapping_mul(0x9E37)) as u8)
        .collect()
}

/// Puts 24 blocks of 64 KiB into tiers too small for all of them and checks every byte.
fn fill_and_check(store: &CascadeStore) {
    let len = 64 << 10;
    for n in 0..24u64 {
        store
            .put(BlockId::from_u128(n.into()), &block(n, len))
            .unwrap();
    }
    let mut out = vec![0u8; len];
    for n in 0..24u64 {
        let got = store.get(BlockId::from_u128(n.into()), &mut out).unwrap();
        assert_eq!(got, Some(len), "block {n}");
        assert!(out == block(n, len), "bytes of block {n}");
    }
    for tier in store.tiers() {
        assert!(
            tier.used() <= tier.capacity(),
            "{}: used above capacity",
            tier.name()
        );
    }
}

#[test]
fn plugin_below_a_memory_tier() {
    let store = Cascade::open_toml_str(&format!(
        r#"
        promote_on_read = false
        [[tiers]]
        kind = "memory"
        capacity = "256 KiB"
        [[tiers]]
        kind = "plugin"
        name = "c-table"
        path = "{}"
        [tiers.settings]
        capacity = 8388608
        "#,
        plugin_path()
    ))
    .unwrap();
    assert_eq!(store.tiers()[1].kind(), "plugin");
    assert_eq!(store.tiers()[1].name(), "c-table");
    fill_and_check(&store);
    assert!(
        store.tiers()[1].used() >= 20 * (64 << 10),
        "most blocks were demoted into the plugin"
    );
    assert_eq!(store.tier_of(BlockId::from_u128(0)), Some(1));
    assert_eq!(store.tier_of(BlockId::from_u128(23)), Some(0));
}

#[test]
fn plugin_above_a_memory_tier() {
    let store = Cascade::open_toml_str(&format!(
        r#"
        promote_on_read = false
        [[tiers]]
        kind = "plugin"
        path = "{}"
        capacity = 262144
        [[tiers]]
        kind = "memory"
        capacity = "8 MiB"
        "#,
        plugin_path()
    ))
    .unwrap();
    fill_and_check(&store);
    assert!(store.tiers()[0].used() > 0);
    assert!(
        store.tiers()[1].used() >= 20 * (64 << 10),
        "the plugin demoted its coldest blocks"
    );
    assert_eq!(store.tier_of(BlockId::from_u128(0)), Some(1));
}

#[test]
fn plugin_errors_surface_through_open() {
    let err = Cascade::open_toml_str(&format!(
        "[[tiers]]\nkind = \"plugin\"\npath = \"{}\"\nwobble = 1\n",
        plugin_path()
    ))
    .err()
    .unwrap();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(
        err.to_string().contains("unknown setting `wobble`"),
        "{err}"
    );

    let missing = "[[tiers]]\nkind = \"plugin\"\npath = \"/nonexistent/libx.so\"\n";
    assert_eq!(
        Cascade::open_toml_str(missing).err().unwrap().kind(),
        ErrorKind::Unavailable
    );
    let optional = "[[tiers]]\nkind = \"memory\"\ncapacity = \"1 MiB\"\n\
        [[tiers]]\nkind = \"plugin\"\nrequired = false\npath = \"/nonexistent/libx.so\"\n";
    let store = Cascade::open_toml_str(optional).unwrap();
    assert_eq!(
        store.tiers().len(),
        1,
        "an optional plugin that is absent is skipped"
    );
}
