//! 128-bit block identifiers.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, ErrorKind};

/// A 128-bit block identifier.
///
/// Shown and parsed as 32 lowercase hex characters: the format of the documented
/// `compute_block_id`, which keeps the first 16 bytes of a SHA-256 digest. Ids made from
/// token prefixes use the same space.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(transparent)]
pub struct BlockId(pub [u8; 16]);

impl BlockId {
    /// Number of bytes in an id.
    pub const LEN: usize = 16;

    /// Wraps 16 raw bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// Takes the first 16 bytes of a longer digest (e.g. SHA-256 or BLAKE3 output).
    ///
    /// Returns `None` when `digest` is shorter than 16 bytes.
    pub fn from_digest_prefix(digest: &[u8]) -> Option<Self> {
        let head: [u8; 16] = digest.get(..16)?.try_into().ok()?;
        Some(Self(head))
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// The id as one little-endian integer; used to spread ids over shards.
    pub fn as_u128(&self) -> u128 {
        u128::from_le_bytes(self.0)
    }

    /// Builds an id from an integer (handy for tests and synthetic workloads).
    pub fn from_u128(value: u128) -> Self {
        Self(value.to_le_bytes())
    }

    /// Renders the 32-character lowercase hex form.
    pub fn to_hex(&self) -> String {
        self.to_string()
    }

    /// Parses the 32-character hex form (either case).
    pub fn parse_hex(text: &str) -> Result<Self, Error> {
        text.parse()
    }
}

impl fmt::Display for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlockId({self})")
    }
}

impl FromStr for BlockId {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || {
            Error::new(
                ErrorKind::InvalidInput,
                format!("block id must be 32 hex characters, got {text:?}"),
            )
        };
        let raw = text.as_bytes();
        if raw.len() != 32 {
            return Err(invalid());
        }
        let mut out = [0u8; 16];
        for (slot, pair) in out.iter_mut().zip(raw.chunks_exact(2)) {
            let hi = hex_value(pair[0]).ok_or_else(invalid)?;
            let lo = hex_value(pair[1]).ok_or_else(invalid)?;
            *slot = (hi << 4) | lo;
        }
        Ok(Self(out))
    }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl Serialize for BlockId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for BlockId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_is_lowercase_32_chars() {
        let id = BlockId::from_bytes([
            0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0xab, 0xcd,
        ]);
        let text = id.to_string();
        assert_eq!(text, "deadbeef00010203040506070809abcd");
        assert_eq!(text.parse::<BlockId>().ok(), Some(id));
        assert_eq!(text.to_uppercase().parse::<BlockId>().ok(), Some(id));
    }

    #[test]
    fn bad_hex_is_invalid_input() {
        for bad in ["", "abc", &"g".repeat(32), &"0".repeat(33)] {
            let err = bad.parse::<BlockId>().err().map(|e| e.kind());
            assert_eq!(err, Some(ErrorKind::InvalidInput), "{bad:?}");
        }
    }

    #[test]
    fn digest_prefix_needs_16_bytes() {
        assert!(BlockId::from_digest_prefix(&[0u8; 15]).is_none());
        let id = BlockId::from_digest_prefix(&[7u8; 32]);
        assert_eq!(id, Some(BlockId([7u8; 16])));
    }

    #[test]
    fn serde_uses_hex_string() {
        let id = BlockId::from_u128(42);
        let json = serde_json::to_string(&id).unwrap_or_default();
        assert_eq!(json, format!("\"{id}\""));
        let back: BlockId = serde_json::from_str(&json).unwrap_or_default();
        assert_eq!(back, id);
    }
}
