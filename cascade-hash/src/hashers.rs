//! Content hashers: block ids from bytes, for content-addressed dedup.

use std::sync::Arc;

use cascade_core::config::HasherKind;
use cascade_core::{BlockId, Hasher};
use sha2::Digest;

use crate::batch::hash_batch;

/// SHA-256 truncated to its first 16 bytes: the documented `compute_block_id`.
///
/// sha2 picks its SHA-NI backend at run time where the CPU has the `sha` extension
/// (see [`sha_ni_detected`]); otherwise it falls back to portable code, several times
/// slower.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sha256Hasher;

impl Hasher for Sha256Hasher {
    fn name(&self) -> &str {
        "sha256"
    }

    fn block_id(&self, data: &[u8]) -> BlockId {
        truncate(&sha2::Sha256::digest(data))
    }

    fn block_ids(&self, blocks: &[&[u8]]) -> Vec<BlockId> {
        hash_batch(self, blocks)
    }
}

/// BLAKE3 truncated to its first 16 bytes: faster per core than SHA-256, same id space.
#[derive(Debug, Default, Clone, Copy)]
pub struct Blake3Hasher;

impl Hasher for Blake3Hasher {
    fn name(&self) -> &str {
        "blake3"
    }

    fn block_id(&self, data: &[u8]) -> BlockId {
        truncate(blake3::hash(data).as_bytes())
    }

    fn block_ids(&self, blocks: &[&[u8]]) -> Vec<BlockId> {
        hash_batch(self, blocks)
    }
}

/// Every digest here (SHA-256, BLAKE3, prefix keys) is 32 bytes; an id keeps the first 16.
pub(crate) fn truncate(digest: &[u8]) -> BlockId {
    let mut id = [0u8; BlockId::LEN];
    id.copy_from_slice(&digest[..BlockId::LEN]);
    BlockId::from_bytes(id)
}

/// The documented `compute_block_id`: the first 16 bytes of SHA-256 of `data`, shown
/// (`Display`, [`BlockId::to_hex`]) as 32 lowercase hex characters.
pub fn compute_block_id(data: &[u8]) -> BlockId {
    Sha256Hasher.block_id(data)
}

/// The hasher a config names (`hasher = "sha256" | "blake3"`).
pub fn hasher_for(kind: HasherKind) -> Arc<dyn Hasher> {
    match kind {
        HasherKind::Sha256 => Arc::new(Sha256Hasher),
        HasherKind::Blake3 => Arc::new(Blake3Hasher),
    }
}

/// Whether this CPU has what sha2's SHA-NI backend needs (`sha`, `sse2`, `ssse3`,
/// `sse4.1`), i.e. whether [`Sha256Hasher`] runs on the hardware path. Benchmarks print
/// it beside their figures. Always false off x86.
pub fn sha_ni_detected() -> bool {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        std::is_x86_feature_detected!("sha")
            && std::is_x86_feature_detected!("sse2")
            && std::is_x86_feature_detected!("ssse3")
            && std::is_x86_feature_detected!("sse4.1")
    }
    #[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn million_a() -> Vec<u8> {
        vec![b'a'; 1_000_000]
    }

    // FIPS 180-2 appendix B test vectors.
    const SHA256_EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const SHA256_ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    const SHA256_MILLION_A: &str =
        "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0";
    // BLAKE3 reference values (the BLAKE3 paper / reference implementation b3sum).
    const BLAKE3_EMPTY: &str = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262";
    const BLAKE3_ABC: &str = "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85";
    // Cross-checked against an independent port of the BLAKE3 reference algorithm.
    const BLAKE3_MILLION_A: &str =
        "616f575a1b58d4c9797d4217b9730ae5e6eb319d76edef6549b46f4efe31ff8b";

    #[test]
    fn sha256_known_answers() {
        assert_eq!(hex(&sha2::Sha256::digest(b"")), SHA256_EMPTY);
        assert_eq!(hex(&sha2::Sha256::digest(b"abc")), SHA256_ABC);
        assert_eq!(hex(&sha2::Sha256::digest(million_a())), SHA256_MILLION_A);
    }

    #[test]
    fn blake3_known_answers() {
        assert_eq!(blake3::hash(b"").to_hex().as_str(), BLAKE3_EMPTY);
        assert_eq!(blake3::hash(b"abc").to_hex().as_str(), BLAKE3_ABC);
        assert_eq!(
            blake3::hash(&million_a()).to_hex().as_str(),
            BLAKE3_MILLION_A
        );
    }

    /// The official BLAKE3 test vectors (test_vectors.json) fill the input with
    /// `i % 251`; these lengths cover one chunk, a chunk plus a byte, and a tree of 8.
    #[test]
    fn blake3_official_vectors() {
        let cases = [
            (
                1024,
                "42214739f095a406f3fc83deb889744ac00df831c10daa55189b5d121c855af7",
            ),
            (
                2049,
                "5f4d72f40d7a5f82b15ca2b2e44b1de3c2ef86c426c95c1af0b6879522563030",
            ),
            (
                7169,
                "a003fc7a51754a9b3c7fae0367ab3d782dccf28855a03d435f8cfe74605e7817",
            ),
        ];
        for (len, digest) in cases {
            let input: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            assert_eq!(blake3::hash(&input).to_hex().as_str(), digest, "len {len}");
            assert_eq!(Blake3Hasher.block_id(&input).to_hex(), digest[..32]);
        }
    }

    #[test]
    fn compute_block_id_is_the_first_16_bytes_of_sha256_as_lowercase_hex() {
        let million = million_a();
        let cases: [(&[u8], &str); 3] = [
            (b"", SHA256_EMPTY),
            (b"abc", SHA256_ABC),
            (&million, SHA256_MILLION_A),
        ];
        for (input, digest) in cases {
            let id = compute_block_id(input).to_string();
            assert_eq!(id.len(), 32);
            assert_eq!(id, digest[..32]);
            assert_eq!(Sha256Hasher.block_id(input).to_hex(), digest[..32]);
        }
    }

    #[test]
    fn blake3_block_id_is_the_first_16_bytes_of_blake3() {
        let million = million_a();
        let cases: [(&[u8], &str); 3] = [
            (b"", BLAKE3_EMPTY),
            (b"abc", BLAKE3_ABC),
            (&million, BLAKE3_MILLION_A),
        ];
        for (input, digest) in cases {
            assert_eq!(Blake3Hasher.block_id(input).to_string(), digest[..32]);
        }
    }

    #[test]
    fn hasher_for_follows_the_config() {
        assert_eq!(hasher_for(HasherKind::Sha256).name(), "sha256");
        assert_eq!(hasher_for(HasherKind::Blake3).name(), "blake3");
        let block = b"some kv bytes";
        assert_eq!(
            hasher_for(HasherKind::Sha256).block_id(block),
            compute_block_id(block)
        );
        assert_eq!(
            hasher_for(HasherKind::Blake3).block_id(block),
            Blake3Hasher.block_id(block)
        );
        assert_ne!(Sha256Hasher.block_id(block), Blake3Hasher.block_id(block));
    }
}
