//! The messages ranks exchange: a request names an operation, the tag the reply comes
//! back on, and its items; every reply starts with a status byte. Decoding checks every
//! length, so a damaged message is an error, never a panic.

use cascade_core::{BlockId, Error, ErrorKind, Result, SharedFile, SharedPlace};

/// What a request asks its target rank to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Op {
    /// Owner: record the sender as holder unless some rank holds the block already.
    Claim = 1,
    /// Owner: record the sender as a holder.
    Register = 2,
    /// Owner: forget a holder of each block.
    Unregister = 3,
    /// Owner: the length and holders of each block.
    Locate = 4,
    /// Holder: send each block's bytes.
    Fetch = 5,
    /// Holder: drop each block from the local store.
    Remove = 6,
    /// Sent by a rank to its own progress thread at close.
    Stop = 7,
    /// Holder on the same node: where each block lies in its shared pool files.
    Place = 8,
}

impl Op {
    fn from_u8(byte: u8) -> Result<Self> {
        Ok(match byte {
            1 => Op::Claim,
            2 => Op::Register,
            3 => Op::Unregister,
            4 => Op::Locate,
            5 => Op::Fetch,
            6 => Op::Remove,
            7 => Op::Stop,
            8 => Op::Place,
            other => return Err(malformed(format!("unknown operation {other}"))),
        })
    }
}

/// A reply's first byte: the request was served.
pub(crate) const REPLY_OK: u8 = 0;
/// A reply's first byte: the request failed; a UTF-8 message follows.
pub(crate) const REPLY_ERROR: u8 = 1;

/// A fetched block's state in a fetch reply's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum FetchState {
    /// The bytes follow in their own message.
    Found = 0,
    /// The holder no longer has the block.
    Absent = 1,
    /// The holder could not read it (corrupt, I/O error).
    Failed = 2,
}

pub(crate) fn malformed(what: impl Into<String>) -> Error {
    Error::new(
        ErrorKind::Corrupt,
        format!("malformed cluster message: {}", what.into()),
    )
}

/// Builds a message.
#[derive(Default)]
pub(crate) struct Writer {
    bytes: Vec<u8>,
}

impl Writer {
    /// A request header for `op` with `items` items, answered on `reply_tag`.
    pub(crate) fn request(op: Op, reply_tag: i32, items: usize) -> Self {
        let mut w = Self::default();
        w.u8(op as u8);
        w.u32(reply_tag as u32);
        w.u32(items as u32);
        w
    }

    /// A successful reply.
    pub(crate) fn reply() -> Self {
        let mut w = Self::default();
        w.u8(REPLY_OK);
        w
    }

    pub(crate) fn u8(&mut self, v: u8) {
        self.bytes.push(v);
    }
    pub(crate) fn u16(&mut self, v: u16) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn id(&mut self, id: BlockId) {
        self.bytes.extend_from_slice(id.as_bytes());
    }
    /// A length-prefixed byte string.
    pub(crate) fn bytes(&mut self, v: &[u8]) {
        self.u32(u32::try_from(v.len()).unwrap_or(u32::MAX));
        self.bytes
            .extend_from_slice(&v[..v.len().min(u32::MAX as usize)]);
    }
    pub(crate) fn finish(self) -> Vec<u8> {
        self.bytes
    }
}

/// An error reply carrying `error`'s text.
pub(crate) fn error_reply(error: &Error) -> Vec<u8> {
    let mut bytes = vec![REPLY_ERROR];
    bytes.extend_from_slice(error.to_string().as_bytes());
    bytes
}

/// Reads a message.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    /// Opens a reply: Ok with the body reader, or the remote error.
    pub(crate) fn reply(bytes: &'a [u8], rank: usize) -> Result<Self> {
        match bytes.first() {
            Some(&REPLY_OK) => Ok(Self { bytes, at: 1 }),
            Some(&REPLY_ERROR) => Err(Error::new(
                ErrorKind::Io,
                format!(
                    "rank {rank} failed the request: {}",
                    String::from_utf8_lossy(&bytes[1..])
                ),
            )),
            _ => Err(malformed("empty or unknown reply")),
        }
    }

    /// Reads a request header: the operation, its reply tag and item count.
    pub(crate) fn request(&mut self) -> Result<(Op, i32, usize)> {
        let op = Op::from_u8(self.u8()?)?;
        let tag = self.u32()?;
        let items = self.u32()? as usize;
        let tag = i32::try_from(tag).map_err(|_| malformed("reply tag out of range"))?;
        Ok((op, tag, items))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| malformed("message shorter than its contents"))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16> {
        let mut b = [0u8; 2];
        b.copy_from_slice(self.take(2)?);
        Ok(u16::from_le_bytes(b))
    }
    pub(crate) fn u32(&mut self) -> Result<u32> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b))
    }
    pub(crate) fn u64(&mut self) -> Result<u64> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }
    pub(crate) fn id(&mut self) -> Result<BlockId> {
        let mut b = [0u8; 16];
        b.copy_from_slice(self.take(16)?);
        Ok(BlockId::from_bytes(b))
    }
    /// A length-prefixed byte string.
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8]> {
        let len = self.u32()? as usize;
        self.take(len)
    }
    /// Checks that an item count can be real (each item takes at least `min_item`
    /// bytes), so a damaged count cannot make a reader allocate without bound.
    pub(crate) fn items(&self, count: usize, min_item: usize) -> Result<usize> {
        if count.saturating_mul(min_item) > self.bytes.len().saturating_sub(self.at) {
            return Err(malformed("item count larger than the message"));
        }
        Ok(count)
    }
}

/// A holder's answer to [`Op::Place`]: its shared files, by tier, and where each asked
/// block lies in one of them (`None`: not readable that way; fetch it).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Places {
    pub files: Vec<(u32, SharedFile)>,
    pub items: Vec<Option<(u32, SharedPlace)>>,
}

impl Places {
    pub(crate) fn encode(&self) -> Vec<u8> {
        use std::os::unix::ffi::OsStrExt;
        let mut w = Writer::reply();
        w.u16(u16::try_from(self.files.len()).unwrap_or(u16::MAX));
        for (tier, file) in self.files.iter().take(usize::from(u16::MAX)) {
            w.u32(*tier);
            w.u64(file.device);
            w.u64(file.inode);
            w.u64(file.len);
            w.bytes(file.path.as_os_str().as_bytes());
        }
        w.u32(u32::try_from(self.items.len()).unwrap_or(u32::MAX));
        for item in &self.items {
            match item {
                Some((tier, place)) => {
                    w.u8(1);
                    w.u32(*tier);
                    w.u64(place.offset);
                    w.u64(place.len);
                    w.u64(place.checksum);
                }
                None => w.u8(0),
            }
        }
        w.finish()
    }

    /// Decodes `rank`'s reply; an answer for another number of blocks than `expected` is
    /// malformed.
    pub(crate) fn decode(bytes: &[u8], rank: usize, expected: usize) -> Result<Self> {
        use std::os::unix::ffi::OsStrExt;
        let mut r = Reader::reply(bytes, rank)?;
        let files = usize::from(r.u16()?);
        let files = r.items(files, 32)?;
        let files = (0..files)
            .map(|_| {
                let tier = r.u32()?;
                let (device, inode, len) = (r.u64()?, r.u64()?, r.u64()?);
                let path = std::ffi::OsStr::from_bytes(r.bytes()?).into();
                Ok((
                    tier,
                    SharedFile {
                        path,
                        device,
                        inode,
                        len,
                    },
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let count = r.u32()? as usize;
        let count = r.items(count, 1)?;
        if count != expected {
            return Err(malformed(format!("{count} places for {expected} blocks")));
        }
        let items = (0..count)
            .map(|_| {
                Ok(match r.u8()? {
                    0 => None,
                    1 => Some((
                        r.u32()?,
                        SharedPlace {
                            offset: r.u64()?,
                            len: r.u64()?,
                            checksum: r.u64()?,
                        },
                    )),
                    other => return Err(malformed(format!("place marker {other}"))),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { files, items })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_round_trip_and_damaged_ones_are_errors() {
        let places = Places {
            files: vec![(
                1,
                SharedFile {
                    path: "/dev/shm/cascade-1000-shm-rank1.pool".into(),
                    device: 25,
                    inode: 4242,
                    len: 1 << 30,
                },
            )],
            items: vec![
                Some((
                    1,
                    SharedPlace {
                        offset: 8192,
                        len: 131072,
                        checksum: 0xfeed,
                    },
                )),
                None,
            ],
        };
        let bytes = places.encode();
        assert_eq!(Places::decode(&bytes, 1, 2).expect("decodes"), places);
        assert!(Places::decode(&bytes, 1, 3).is_err());
        for cut in 0..bytes.len() {
            assert!(Places::decode(&bytes[..cut], 1, 2).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn a_request_round_trips() {
        let mut w = Writer::request(Op::Locate, 77, 2);
        w.id(BlockId::from_u128(1));
        w.id(BlockId::from_u128(2));
        let bytes = w.finish();
        let mut r = Reader::new(&bytes);
        let (op, tag, n) = r.request().expect("header");
        assert_eq!((op, tag, n), (Op::Locate, 77, 2));
        assert_eq!(r.items(n, 16).expect("count"), 2);
        assert_eq!(r.id().expect("id"), BlockId::from_u128(1));
        assert_eq!(r.id().expect("id"), BlockId::from_u128(2));
        assert!(r.u8().is_err(), "reading past the end is an error");
    }

    #[test]
    fn damaged_messages_are_errors() {
        assert!(
            Reader::new(&[99, 0, 0, 0, 0, 0, 0, 0, 0])
                .request()
                .is_err()
        );
        assert!(Reader::new(&[1, 0]).request().is_err());
        let r = Reader::new(&[0; 8]);
        assert!(r.items(1 << 30, 16).is_err());
        assert!(Reader::reply(&[], 0).is_err());
        let failed = Reader::reply(b"\x01disk on fire", 3).err();
        let text = failed.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            text.contains("rank 3") && text.contains("disk on fire"),
            "{text}"
        );
    }
}
