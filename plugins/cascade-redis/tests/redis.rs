//! The Redis plugin loaded from its cdylib and run against a real redis-server on
//! loopback: conformance, a shared tier seen by two nodes, checksums, and its place in a
//! store above and below a memory tier.
// Helpers outside #[test] fns unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use cascade::{BlockId, Cascade, CascadeStore, ErrorKind, Tier};
use cascade_core::plugin::{PluginLibrary, PluginTier};
use common::RedisServer;

fn library() -> Arc<PluginLibrary> {
    let path = cascade_redis::built_library()
        .expect("cargo builds the cdylib before this package's tests");
    PluginLibrary::load(path).unwrap()
}

fn tier(server: &RedisServer, prefix: &str, capacity: &str) -> cascade::Result<PluginTier> {
    library().create(
        prefix,
        &format!(
            "url = \"{}\"\nprefix = \"{prefix}\"\ncapacity = \"{capacity}\"\n",
            server.url()
        ),
    )
}

/// A node that asks the server for `used` on every call, so it sees other nodes' writes
/// at once.
fn fresh_node(server: &RedisServer, prefix: &str, capacity: &str) -> PluginTier {
    library()
        .create(
            prefix,
            &format!(
                "url = \"{}\"\nprefix = \"{prefix}\"\ncapacity = \"{capacity}\"\nused_refresh_ms = 0\n",
                server.url()
            ),
        )
        .unwrap()
}

fn plugin_path() -> String {
    cascade_redis::built_library()
        .unwrap()
        .display()
        .to_string()
}

/// A private server per test; the peer is another node on the same server and prefix.
fn kit_subject() -> Option<cascade_core::conformance::Subject> {
    let server = Arc::new(RedisServer::start()?);
    let (first, second) = (Arc::clone(&server), Arc::clone(&server));
    Some(
        cascade_core::conformance::Subject::new(move || {
            Ok(Arc::new(tier(&first, "kit", "8 MiB")?) as Arc<dyn Tier>)
        })
        .with_peer(move || Ok(Arc::new(tier(&second, "kit", "8 MiB")?) as Arc<dyn Tier>))
        .keeping(server),
    )
}

cascade_core::conformance_tests!(mod redis_kit, kit_subject);

#[test]
fn two_nodes_share_blocks_and_capacity() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let a = fresh_node(&server, "shared", "64 KiB");
    let b = fresh_node(&server, "shared", "64 KiB");
    a.clear().unwrap();
    a.put(BlockId::from_u128(1), &[1u8; 40 << 10]).unwrap();
    assert_eq!(b.len_of(BlockId::from_u128(1)), Some(40 << 10));
    assert_eq!(b.used(), 40 << 10);
    let err = b.put(BlockId::from_u128(2), &[2u8; 30 << 10]).unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::TierFull,
        "the capacity is shared: {err}"
    );
    let mut out = vec![0u8; 40 << 10];
    assert_eq!(b.get(BlockId::from_u128(1), &mut out).unwrap(), 40 << 10);
    assert!(out.iter().all(|&x| x == 1));
    assert!(b.remove(BlockId::from_u128(1)).unwrap());
    assert_eq!(a.used(), 0);
    let other = tier(&server, "other", "64 KiB").unwrap();
    other.put(BlockId::from_u128(1), &[3u8; 10]).unwrap();
    assert!(
        !a.contains(BlockId::from_u128(1)),
        "prefixes are separate tiers"
    );
}

#[test]
fn used_is_cached_between_refreshes_and_kept_current_by_own_writes() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let cached = library()
        .create(
            "cached",
            &format!(
                "url = \"{}\"\nprefix = \"c\"\ncapacity = \"1 MiB\"\nused_refresh_ms = 3600000\n",
                server.url()
            ),
        )
        .unwrap();
    cached.clear().unwrap();
    cached.put(BlockId::from_u128(1), &[1u8; 1000]).unwrap();
    assert_eq!(cached.used(), 1000, "own puts update the figure");
    let other = fresh_node(&server, "c", "1 MiB");
    other.put(BlockId::from_u128(2), &[2u8; 500]).unwrap();
    assert_eq!(other.used(), 1500);
    assert_eq!(
        cached.used(),
        1000,
        "another node's put is seen after the refresh interval"
    );
    assert!(cached.remove(BlockId::from_u128(1)).unwrap());
    assert_eq!(cached.used(), 500, "own removes return the server's figure");
}

#[test]
fn a_tampered_block_is_corrupt_and_dropped() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let t = tier(&server, "tamper", "1 MiB").unwrap();
    let id = BlockId::from_u128(77);
    t.put(id, &[9u8; 4096]).unwrap();
    let mut conn = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let key = format!("{{tamper}}:b:{}", id.to_hex());
    let mut value: Vec<u8> = redis::cmd("GET").arg(&key).query(&mut conn).unwrap();
    value[100] ^= 0xFF;
    let () = redis::cmd("SET")
        .arg(&key)
        .arg(value)
        .query(&mut conn)
        .unwrap();
    let err = t.get(id, &mut vec![0u8; 4096]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(!t.contains(id), "a corrupt block is dropped");
    assert_eq!(t.used(), 0);
}

#[test]
fn a_block_the_server_evicted_is_forgotten_on_read() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let t = fresh_node(&server, "evict", "1 MiB");
    let id = BlockId::from_u128(5);
    t.put(id, &[5u8; 3000]).unwrap();
    let mut conn = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let () = redis::cmd("DEL")
        .arg(format!("{{evict}}:b:{}", id.to_hex()))
        .query(&mut conn)
        .unwrap();
    let err = t.get(id, &mut vec![0u8; 3000]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(!t.contains(id));
    assert_eq!(
        t.used(),
        0,
        "the evicted block's bytes are no longer counted"
    );
}

#[test]
fn full_puts_leave_no_temporary_keys_and_a_flushed_script_is_reloaded() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let t = tier(&server, "tmp", "8 KiB").unwrap();
    t.put(BlockId::from_u128(1), &[1u8; 6000]).unwrap();
    let err = t.put(BlockId::from_u128(2), &[2u8; 6000]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TierFull, "{err}");
    let mut conn = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let temps: Vec<String> = redis::cmd("KEYS")
        .arg("{tmp}:tmp:*")
        .query(&mut conn)
        .unwrap();
    assert!(temps.is_empty(), "temporary keys left behind: {temps:?}");
    let block_ttl: i64 = redis::cmd("PTTL")
        .arg(format!("{{tmp}}:b:{}", BlockId::from_u128(1).to_hex()))
        .query(&mut conn)
        .unwrap();
    assert_eq!(block_ttl, -1, "a committed block does not expire");
    let () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut conn).unwrap();
    t.put(BlockId::from_u128(1), &[3u8; 7000]).unwrap();
    let mut out = vec![0u8; 7000];
    assert_eq!(t.get(BlockId::from_u128(1), &mut out).unwrap(), 7000);
    assert!(out.iter().all(|&x| x == 3));
    assert_eq!(t.used(), 7000);
}

#[test]
fn unreachable_server_and_bad_settings_are_typed() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = library()
        .create(
            "down",
            &format!("url = \"redis://127.0.0.1:{port}\"\nconnect_timeout_secs = 1\n"),
        )
        .err()
        .unwrap();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains("cannot connect to redis"), "{err}");
    let err = library()
        .create("bad", "capacity = \"lots\"")
        .err()
        .unwrap();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    let err = library().create("bad", "url = \"http://x\"").err().unwrap();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
}

fn store(config: &str) -> CascadeStore {
    Cascade::open_toml_str(config).unwrap()
}

fn fill_and_check(store: &CascadeStore) {
    let len = 64 << 10;
    let block = |n: u64| -> Vec<u8> { (0..len).map(|i| (i as u64 * 7 + n) as u8).collect() };
    for n in 0..24u64 {
        store.put(BlockId::from_u128(n.into()), &block(n)).unwrap();
    }
    let mut out = vec![0u8; len];
    for n in 0..24u64 {
        assert_eq!(
            store.get(BlockId::from_u128(n.into()), &mut out).unwrap(),
            Some(len)
        );
        assert!(out == block(n), "bytes of block {n}");
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
fn redis_below_a_memory_tier() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let store = store(&format!(
        "promote_on_read = false\n\
         [[tiers]]\nkind = \"memory\"\ncapacity = \"256 KiB\"\n\
         [[tiers]]\nkind = \"plugin\"\nname = \"redis\"\npath = \"{}\"\n\
         [tiers.settings]\nurl = \"{}\"\nprefix = \"below\"\ncapacity = \"8 MiB\"\n",
        plugin_path(),
        server.url()
    ));
    fill_and_check(&store);
    assert_eq!(
        store.tier_of(BlockId::from_u128(0)),
        Some(1),
        "the coldest block went down to redis"
    );
    assert!(store.tiers()[1].used() >= 20 * (64 << 10));
}

#[test]
fn redis_above_a_memory_tier_and_blocks_survive_a_restart() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let config = format!(
        "promote_on_read = false\n\
         [[tiers]]\nkind = \"plugin\"\npath = \"{}\"\nurl = \"{}\"\nprefix = \"above\"\ncapacity = \"256 KiB\"\n\
         [[tiers]]\nkind = \"memory\"\ncapacity = \"8 MiB\"\n",
        plugin_path(),
        server.url()
    );
    let first = store(&config);
    first.clear().unwrap();
    fill_and_check(&first);
    assert_eq!(
        first.tier_of(BlockId::from_u128(0)),
        Some(1),
        "redis demoted its coldest blocks"
    );
    let newest = BlockId::from_u128(23);
    assert_eq!(first.tier_of(newest), Some(0));
    drop(first);
    // A new process (here: a new store) finds what the shared tier holds.
    let second = store(&config);
    assert_eq!(second.tier_of(newest), Some(0));
    let mut out = vec![0u8; 64 << 10];
    assert_eq!(second.get(newest, &mut out).unwrap(), Some(64 << 10));
}

/// Two stores (two nodes) over one Redis prefix: each sees what the other stored after a
/// refresh, a replace with bytes of the same length is seen as new bytes, and a removal
/// on one leaves the other without the block.
#[test]
fn two_stores_sharing_one_redis_see_each_others_blocks_after_refresh() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let config = format!(
        "dedup = false\n\
         [[tiers]]\nkind = \"plugin\"\nname = \"redis\"\npath = \"{}\"\n\
         [tiers.settings]\nurl = \"{}\"\nprefix = \"two-stores\"\ncapacity = \"8 MiB\"\n",
        plugin_path(),
        server.url()
    );
    let a = store(&config);
    let b = store(&config);
    assert!(
        a.tiers()[0].capability().refresh,
        "the plugin's refresh slot is used"
    );
    let id = BlockId::from_u128(7);
    let mut out = vec![0u8; 4096];
    a.put(id, &[1u8; 4096]).unwrap();
    assert!(!b.contains(id), "b's index has not looked yet");
    let report = b.refresh().unwrap();
    assert_eq!((report.added, report.removed), (1, 0), "{report:?}");
    assert_eq!(b.get(id, &mut out).unwrap(), Some(4096));
    assert!(out.iter().all(|&x| x == 1));
    assert_eq!(
        a.refresh().unwrap().added,
        0,
        "a's own put is not news to a"
    );

    b.put(id, &[2u8; 4096]).unwrap();
    let report = a.refresh().unwrap();
    assert_eq!(
        report.tiers[0].replaced, 0,
        "same length: the index entry stands"
    );
    assert_eq!(a.get(id, &mut out).unwrap(), Some(4096));
    assert!(out.iter().all(|&x| x == 2), "a reads b's new bytes");

    assert!(a.remove(id).unwrap());
    let report = b.refresh().unwrap();
    assert_eq!(report.removed, 1, "{report:?}");
    assert!(!b.contains(id));
    assert_eq!(b.get(id, &mut out).unwrap(), None);
}
