//! Token-prefix keys: block ids an engine can compute before the KV exists.
//!
//! Key `i` is BLAKE3 (derive-key mode, context [`PREFIX_KEY_CONTEXT`]) of
//!
//! ```text
//! namespace length (u64 LE) | namespace bytes
//! | 0x00                          for the first block
//! | 0x01 | previous key (16 bytes) for every later block
//! | token count (u64 LE) | each token (u32 LE)
//! ```
//!
//! truncated to 16 bytes. Every field is length-prefixed or fixed-size, so two different
//! (namespace, previous key, tokens) triples never encode to the same bytes. Chaining
//! makes key `i` stand for the whole prefix up to block `i`: one changed token changes
//! its block's key and every later one. The derive-key context keeps these keys apart
//! from content ids, which hash raw bytes.
//!
//! BLAKE3 rather than SHA-256: keys are computed on the request path, before prefill,
//! for every block of every prompt, and BLAKE3 is several times faster per core here
//! (docs/benchmarks.md, "Hashing (cascade-hash)") while still collision resistant, which
//! matters because a collision would serve another prompt's KV.

use cascade_core::{BlockId, Error, ErrorKind, Result};

use crate::hashers::truncate;

/// A token id as inference engines hand them over (vLLM, SGLang, TensorRT-LLM and
/// Hugging Face tokenizers all use ids below 2^32). Encoded as 4 little-endian bytes.
pub type Token = u32;

/// The BLAKE3 derive-key context of prefix keys. Changing it (or the encoding above)
/// changes every key, so caches persisted under the old keys would no longer be found.
pub const PREFIX_KEY_CONTEXT: &str = "cascade 2026-11-26 token-prefix key v1";

/// Computes prefix keys under one namespace; holds the namespace already absorbed so
/// that each key costs one hash of its block's tokens.
#[derive(Clone)]
pub struct PrefixKeyer {
    absorbed: blake3::Hasher,
}

impl PrefixKeyer {
    /// A keyer for `namespace` (any bytes; see [`PrefixNamespace`] for a standard form).
    pub fn new(namespace: &[u8]) -> Self {
        let mut absorbed = blake3::Hasher::new_derive_key(PREFIX_KEY_CONTEXT);
        absorbed.update(&(namespace.len() as u64).to_le_bytes());
        absorbed.update(namespace);
        Self { absorbed }
    }

    /// The key of the block holding `tokens`, whose predecessor has key `parent`
    /// (`None` for the first block of a sequence). Engines extending a sequence during
    /// decode call this with the last full block's key.
    pub fn key(&self, parent: Option<BlockId>, tokens: &[Token]) -> BlockId {
        let mut scratch = Vec::with_capacity(tokens.len() * 4);
        self.key_into(parent, tokens, &mut scratch)
    }

    fn key_into(
        &self,
        parent: Option<BlockId>,
        tokens: &[Token],
        scratch: &mut Vec<u8>,
    ) -> BlockId {
        let mut hasher = self.absorbed.clone();
        match parent {
            None => hasher.update(&[0]),
            Some(parent) => hasher.update(&[1]).update(parent.as_bytes()),
        };
        scratch.clear();
        scratch.extend_from_slice(&(tokens.len() as u64).to_le_bytes());
        scratch.extend(tokens.iter().flat_map(|t| t.to_le_bytes()));
        hasher.update(scratch);
        truncate(hasher.finalize().as_bytes())
    }

    /// One key per full block of `block_tokens` tokens, chained from the first block.
    /// A trailing partial block has no key: its KV is still growing.
    ///
    /// Errors: [`ErrorKind::InvalidInput`] when `block_tokens` is 0.
    pub fn keys(&self, tokens: &[Token], block_tokens: usize) -> Result<Vec<BlockId>> {
        if block_tokens == 0 {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "block_tokens must be at least 1",
            ));
        }
        let mut keys: Vec<BlockId> = Vec::with_capacity(tokens.len() / block_tokens);
        let mut scratch = Vec::with_capacity(8 + block_tokens * 4);
        for block in tokens.chunks_exact(block_tokens) {
            let key = self.key_into(keys.last().copied(), block, &mut scratch);
            keys.push(key);
        }
        Ok(keys)
    }
}

impl std::fmt::Debug for PrefixKeyer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrefixKeyer").finish_non_exhaustive()
    }
}

/// The prefix keys of `tokens` in `namespace`: one per full block of `block_tokens`
/// tokens, key `i` = hash(namespace, key `i-1`, tokens of block `i`) (encoding in the
/// module docs). Pass them to `CascadeStore::lookup_prefix` to learn how many leading
/// blocks are cached.
///
/// Errors: [`ErrorKind::InvalidInput`] when `block_tokens` is 0.
pub fn prefix_keys(
    namespace: &[u8],
    tokens: &[Token],
    block_tokens: usize,
) -> Result<Vec<BlockId>> {
    PrefixKeyer::new(namespace).keys(tokens, block_tokens)
}

/// One step of the chain: the key of the block `tokens` after the block keyed `parent`
/// (`None` for the first block). `prefix_keys` is this applied block by block.
pub fn prefix_key(namespace: &[u8], parent: Option<BlockId>, tokens: &[Token]) -> BlockId {
    PrefixKeyer::new(namespace).key(parent, tokens)
}

/// What makes KV for the same tokens differ, turned into namespace bytes: the model,
/// the KV dtype, the cache layout, the tensor-parallel shard, and any extra salt (a
/// LoRA adapter, a multimodal input hash, a tenant).
///
/// ```
/// use cascade_hash::{PrefixNamespace, prefix_keys};
/// let ns = PrefixNamespace::new("meta-llama/Llama-3.1-8B")
///     .dtype("bf16")
///     .layout("nhd-16")
///     .tensor_parallel(1, 4)?
///     .to_bytes();
/// let keys = prefix_keys(&ns, &[128000, 791, 4062, 14198], 2)?;
/// assert_eq!(keys.len(), 2);
/// # Ok::<(), cascade_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixNamespace {
    model: String,
    dtype: String,
    layout: String,
    tp_rank: u32,
    tp_size: u32,
    salt: Vec<u8>,
}

/// Leads the namespace encoding so a future layout of fields cannot collide with this one.
const NAMESPACE_VERSION: &[u8] = b"cascade-ns-v1";

impl PrefixNamespace {
    /// A namespace for `model` (a name or a checkpoint hash). Default: empty dtype and
    /// layout, tensor-parallel rank 0 of 1, no salt.
    pub fn new(model: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            dtype: String::new(),
            layout: String::new(),
            tp_rank: 0,
            tp_size: 1,
            salt: Vec::new(),
        }
    }

    /// The KV-cache element type (`"bf16"`, `"fp8_e4m3"`, ...).
    #[must_use]
    pub fn dtype(mut self, dtype: impl Into<String>) -> Self {
        self.dtype = dtype.into();
        self
    }

    /// The block layout (e.g. `"nhd-16"`: heads-last, 16 tokens per block).
    #[must_use]
    pub fn layout(mut self, layout: impl Into<String>) -> Self {
        self.layout = layout.into();
        self
    }

    /// This shard's tensor-parallel `rank` out of `size` ranks (each rank holds other
    /// heads, so other KV bytes).
    ///
    /// Errors: [`ErrorKind::InvalidInput`] when `size` is 0 or `rank >= size`.
    pub fn tensor_parallel(mut self, rank: u32, size: u32) -> Result<Self> {
        if rank >= size {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "tensor-parallel rank must be below the number of ranks",
            )
            .with_context("rank", rank)
            .with_context("size", size));
        }
        self.tp_rank = rank;
        self.tp_size = size;
        Ok(self)
    }

    /// Extra bytes that must separate caches (adapter id, image hash, tenant).
    #[must_use]
    pub fn salt(mut self, salt: impl AsRef<[u8]>) -> Self {
        self.salt = salt.as_ref().to_vec();
        self
    }

    /// The namespace bytes for [`prefix_keys`]: a version tag, then each field
    /// length-prefixed (u64 LE) or fixed-size (u32 LE), in a fixed order.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            64 + self.model.len() + self.dtype.len() + self.layout.len() + self.salt.len(),
        );
        for field in [
            NAMESPACE_VERSION,
            self.model.as_bytes(),
            self.dtype.as_bytes(),
            self.layout.as_bytes(),
        ] {
            push_field(&mut out, field);
        }
        out.extend_from_slice(&self.tp_rank.to_le_bytes());
        out.extend_from_slice(&self.tp_size.to_le_bytes());
        push_field(&mut out, &self.salt);
        out
    }
}

fn push_field(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(&(field.len() as u64).to_le_bytes());
    out.extend_from_slice(field);
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: &[u8] = b"llama-3.1-8b/bf16/tp0of1";

    fn tokens(count: usize) -> Vec<Token> {
        (0..count as u32)
            .map(|i| i.wrapping_mul(2_654_435_761) % 128_256)
            .collect()
    }

    #[test]
    fn same_input_same_keys_and_one_key_per_full_block() {
        let input = tokens(10 * 16 + 5);
        let keys = prefix_keys(NS, &input, 16).unwrap();
        assert_eq!(keys.len(), 10);
        assert_eq!(prefix_keys(NS, &input, 16).unwrap(), keys);
        let mut unique = keys.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), keys.len(), "keys of different blocks collide");
    }

    #[test]
    fn a_changed_token_changes_its_block_and_every_later_key_only() {
        let block = 8;
        let input = tokens(6 * block + 3);
        let base = prefix_keys(NS, &input, block).unwrap();
        for position in 0..input.len() {
            let mut changed = input.clone();
            changed[position] ^= 1;
            let keys = prefix_keys(NS, &changed, block).unwrap();
            assert_eq!(keys.len(), base.len());
            let first_changed = position / block;
            for (i, (old, new)) in base.iter().zip(&keys).enumerate() {
                if i < first_changed {
                    assert_eq!(old, new, "token {position} changed earlier key {i}");
                } else {
                    assert_ne!(old, new, "token {position} left key {i} unchanged");
                }
            }
        }
    }

    #[test]
    fn namespaces_separate_keys() {
        let input = tokens(64);
        let a = prefix_keys(b"model-a", &input, 16).unwrap();
        let b = prefix_keys(b"model-b", &input, 16).unwrap();
        let empty = prefix_keys(b"", &input, 16).unwrap();
        for i in 0..a.len() {
            assert_ne!(a[i], b[i]);
            assert_ne!(a[i], empty[i]);
        }
    }

    #[test]
    fn empty_input_and_partial_blocks_give_no_keys() {
        assert!(prefix_keys(NS, &[], 16).unwrap().is_empty());
        assert!(prefix_keys(NS, &tokens(15), 16).unwrap().is_empty());
        let with_tail = prefix_keys(NS, &tokens(16 + 15), 16).unwrap();
        assert_eq!(with_tail, prefix_keys(NS, &tokens(16), 16).unwrap());
    }

    #[test]
    fn zero_block_size_is_invalid_input() {
        let err = prefix_keys(NS, &tokens(4), 0).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
    }

    #[test]
    fn chain_of_single_steps_equals_prefix_keys() {
        let input = tokens(5 * 4);
        let keys = prefix_keys(NS, &input, 4).unwrap();
        let mut parent = None;
        for (block, key) in input.chunks_exact(4).zip(&keys) {
            let step = prefix_key(NS, parent, block);
            assert_eq!(&step, key);
            parent = Some(step);
        }
    }

    #[test]
    fn the_encoding_is_length_prefixed_and_unambiguous() {
        // Namespace bytes that end like a token must not merge into the token stream.
        let shifted = prefix_key(b"x\x01\x00\x00\x00", None, &[2]);
        assert_ne!(shifted, prefix_key(b"x", None, &[1, 2]));
        // The first block and a block whose parent is the all-zero id differ.
        assert_ne!(
            prefix_key(NS, None, &[7]),
            prefix_key(NS, Some(BlockId::default()), &[7])
        );
        // Prefix keys live apart from content ids of the same bytes.
        let raw: Vec<u8> = [7u32].iter().flat_map(|t| t.to_le_bytes()).collect();
        assert_ne!(prefix_key(b"", None, &[7]), crate::compute_block_id(&raw));
    }

    /// Freezes the encoding: keys persist with the blocks in persistent tiers, so a
    /// change here would make every cache written before it unreachable.
    #[test]
    fn known_answer_for_the_documented_encoding() {
        let ns = b"ns";
        let toks: [Token; 2] = [1, 0x0102_0304];
        let mut by_hand = blake3::Hasher::new_derive_key(PREFIX_KEY_CONTEXT);
        by_hand.update(&2u64.to_le_bytes()).update(ns).update(&[0]);
        by_hand
            .update(&2u64.to_le_bytes())
            .update(&[1, 0, 0, 0, 4, 3, 2, 1]);
        let first = BlockId::from_digest_prefix(by_hand.finalize().as_bytes()).unwrap();
        let keys = prefix_keys(ns, &toks, 2).unwrap();
        assert_eq!(keys, vec![first]);
        assert_eq!(keys[0].to_hex(), FROZEN_FIRST_KEY);

        let mut by_hand = blake3::Hasher::new_derive_key(PREFIX_KEY_CONTEXT);
        by_hand
            .update(&2u64.to_le_bytes())
            .update(ns)
            .update(&[1])
            .update(first.as_bytes());
        by_hand.update(&1u64.to_le_bytes()).update(&[9, 0, 0, 0]);
        let second = BlockId::from_digest_prefix(by_hand.finalize().as_bytes()).unwrap();
        assert_eq!(prefix_key(ns, Some(first), &[9]), second);
    }

    // Cross-checked against an independent implementation of BLAKE3's derive-key mode.
    const FROZEN_FIRST_KEY: &str = "b1bf16775d379b56e0e0cff760b9152e";

    #[test]
    fn namespace_builder_separates_every_field() {
        let base = PrefixNamespace::new("llama").dtype("bf16").layout("nhd-16");
        let variants = [
            base.clone(),
            PrefixNamespace::new("llama2")
                .dtype("bf16")
                .layout("nhd-16"),
            base.clone().dtype("fp8"),
            base.clone().layout("hnd-16"),
            base.clone().tensor_parallel(1, 2).unwrap(),
            base.clone().tensor_parallel(0, 2).unwrap(),
            base.clone().salt(b"lora-7"),
            // Same characters, moved across a field boundary.
            PrefixNamespace::new("llamab").dtype("f16").layout("nhd-16"),
        ];
        let encoded: Vec<Vec<u8>> = variants.iter().map(PrefixNamespace::to_bytes).collect();
        for i in 0..encoded.len() {
            for j in i + 1..encoded.len() {
                assert_ne!(encoded[i], encoded[j], "variants {i} and {j} collide");
            }
        }
        assert_eq!(base.to_bytes(), base.clone().to_bytes());
    }

    #[test]
    fn bad_tensor_parallel_shape_is_invalid_input() {
        for (rank, size) in [(0, 0), (2, 2), (5, 4)] {
            let err = PrefixNamespace::new("m")
                .tensor_parallel(rank, size)
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput);
        }
    }
}
