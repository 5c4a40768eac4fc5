//! Prefix keys against a real store: `CascadeStore::lookup_prefix` counts the leading
//! stored keys, stopping at the first hole, which is what an engine loads before prefill.

use std::sync::Arc;

use cascade_core::store::StorePolicy;
use cascade_core::{BlockId, CascadeStore, MemoryTier, MemoryTierConfig, PutOutcome, Tier};
use cascade_hash::{PrefixNamespace, Token, compute_block_id, hasher_for, prefix_keys};

const BLOCK_TOKENS: usize = 16;
const KV_BYTES: usize = 4096;

fn store() -> CascadeStore {
    let tier = MemoryTier::open("mem", &MemoryTierConfig::default()).expect("memory tier opens");
    CascadeStore::new(
        vec![Arc::new(tier) as Arc<dyn Tier>],
        StorePolicy::default(),
    )
    .expect("store opens")
}

fn prompt(len: usize, seed: u32) -> Vec<Token> {
    (0..len as u32)
        .map(|i| (i * 7919 + seed) % 128_256)
        .collect()
}

fn kv_for(key: &BlockId) -> Vec<u8> {
    key.as_bytes()
        .iter()
        .copied()
        .cycle()
        .take(KV_BYTES)
        .collect()
}

fn namespace() -> Vec<u8> {
    PrefixNamespace::new("test-model")
        .dtype("bf16")
        .layout("nhd-16")
        .to_bytes()
}

#[test]
fn lookup_prefix_counts_leading_keys_up_to_the_first_hole() {
    let store = store();
    let keys = prefix_keys(&namespace(), &prompt(8 * BLOCK_TOKENS + 3, 1), BLOCK_TOKENS).unwrap();
    assert_eq!(keys.len(), 8);
    assert_eq!(store.lookup_prefix(&keys), 0);
    assert_eq!(store.lookup_prefix(&[]), 0);

    // Blocks 0, 1, 2, 4, 5 stored; 3 is a hole.
    for i in [0, 1, 2, 4, 5] {
        store.put(keys[i], &kv_for(&keys[i])).unwrap();
    }
    assert_eq!(store.lookup_prefix(&keys), 3);

    // Fill the hole: the run extends to the next hole (6).
    store.put(keys[3], &kv_for(&keys[3])).unwrap();
    assert_eq!(store.lookup_prefix(&keys), 6);

    // A hole at the very start hides everything after it.
    assert!(store.remove(keys[0]).unwrap());
    assert_eq!(store.lookup_prefix(&keys), 0);
    assert_eq!(store.lookup_prefix(&keys[1..]), 5);

    // What lookup_prefix promises is loadable really is, byte for byte.
    let mut out = vec![0u8; KV_BYTES];
    for key in &keys[1..6] {
        assert_eq!(store.get(*key, &mut out).unwrap(), Some(KV_BYTES));
        assert_eq!(out, kv_for(key));
    }
}

#[test]
fn a_diverging_prompt_reuses_only_the_shared_prefix() {
    let store = store();
    let ns = namespace();
    let first = prompt(6 * BLOCK_TOKENS, 3);
    for key in prefix_keys(&ns, &first, BLOCK_TOKENS).unwrap() {
        store.put(key, &kv_for(&key)).unwrap();
    }
    // Same first 4 blocks and 5 tokens, then different tokens.
    let mut second = first.clone();
    for token in &mut second[4 * BLOCK_TOKENS + 5..] {
        *token = token.wrapping_add(1);
    }
    let second_keys = prefix_keys(&ns, &second, BLOCK_TOKENS).unwrap();
    assert_eq!(store.lookup_prefix(&second_keys), 4);

    // Another namespace (another model, another shard) finds nothing.
    let other = PrefixNamespace::new("test-model")
        .dtype("bf16")
        .layout("nhd-16")
        .salt("tenant-b");
    let other_keys = prefix_keys(&other.to_bytes(), &first, BLOCK_TOKENS).unwrap();
    assert_eq!(store.lookup_prefix(&other_keys), 0);
}

#[test]
fn put_content_uses_the_configured_hasher_and_dedups() {
    let store = store().with_hasher(hasher_for(cascade_core::config::HasherKind::Sha256));
    let block = vec![42u8; 128 * 1024];
    let (id, outcome) = store.put_content(&block).unwrap();
    assert_eq!(id, compute_block_id(&block));
    assert_eq!(outcome, PutOutcome::Stored);
    let (again, outcome) = store.put_content(&block).unwrap();
    assert_eq!((again, outcome), (id, PutOutcome::Deduplicated));
    let mut out = vec![0u8; block.len()];
    assert_eq!(store.get(id, &mut out).unwrap(), Some(block.len()));
    assert_eq!(out, block);
}
