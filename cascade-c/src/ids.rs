//! Block ids across the boundary: 16 raw bytes, or 32 hex characters; content ids
//! (`cascade_compute_block_id`) and token-prefix keys.

use std::ffi::c_char;

use cascade::{BlockId, hash};

use crate::args;
use crate::error::{CResult, Failure, guard};
use crate::status::CascadeStatus;

/// A 128-bit block id, passed by value. Its text form is 32 lowercase hex characters
/// (`cascade_block_id_to_hex`), the form of the documented `compute_block_id`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CascadeBlockId {
    /// The id's bytes.
    pub bytes: [u8; 16],
}

impl From<CascadeBlockId> for BlockId {
    fn from(id: CascadeBlockId) -> Self {
        BlockId::from_bytes(id.bytes)
    }
}

impl From<BlockId> for CascadeBlockId {
    fn from(id: BlockId) -> Self {
        Self { bytes: id.0 }
    }
}

/// Bytes `cascade_block_id_to_hex` writes: 32 hex characters and a NUL.
pub const CASCADE_BLOCK_ID_HEX_LEN: usize = 33;

/// The documented content id of `len` bytes at `data`: the first 16 bytes of their
/// SHA-256 digest. `data` may be NULL when `len` is 0.
///
/// Errors: `CASCADE_STATUS_INVALID_INPUT` for a NULL `data` with `len > 0` or a NULL `out`.
///
/// Thread safety: safe from any thread.
///
/// # Safety
/// `data` points to `len` readable bytes; `out` to a writable `cascade_block_id`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cascade_compute_block_id(
    data: *const u8,
    len: usize,
    out: *mut CascadeBlockId,
) -> CascadeStatus {
    guard(|| {
        // SAFETY: the caller's contract, checked for NULL.
        let (data, out) = unsafe { (args::slice(data, len, "data")?, args::out(out, "out")?) };
        out.write(hash::compute_block_id(data).into());
        Ok(())
    })
}

/// Writes the id as 32 lowercase hex characters and a NUL into `out`, which holds
/// `capacity` bytes (at least `CASCADE_BLOCK_ID_HEX_LEN`, 33).
///
/// Errors: `CASCADE_STATUS_INVALID_INPUT` for a NULL `out` or a `capacity` below 33
/// (nothing is written).
///
/// Thread safety: safe from any thread.
///
/// # Safety
/// `out` points to `capacity` writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cascade_block_id_to_hex(
    id: CascadeBlockId,
    out: *mut c_char,
    capacity: usize,
) -> CascadeStatus {
    guard(|| {
        if out.is_null() {
            return Err(Failure::invalid("out is NULL"));
        }
        if capacity < CASCADE_BLOCK_ID_HEX_LEN {
            return Err(Failure::invalid(format!(
                "out: {capacity} bytes is too small for an id's hex text (needs 33)"
            )));
        }
        // SAFETY: the caller's contract, checked for NULL.
        let out = unsafe { args::out_slice(out.cast::<u8>(), capacity, "out")? };
        let text = BlockId::from(id).to_hex();
        for (slot, byte) in out.iter_mut().zip(text.bytes().chain([0])) {
            slot.write(byte);
        }
        Ok(())
    })
}

/// Parses 32 hex characters (either case, NUL-terminated) into `out`.
///
/// Errors: `CASCADE_STATUS_INVALID_INPUT` for NULL arguments or text that is not exactly 32
/// hex characters (`out` is left unchanged).
///
/// Thread safety: safe from any thread.
///
/// # Safety
/// `text` is a NUL-terminated string; `out` points to a writable `cascade_block_id`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cascade_block_id_from_hex(
    text: *const c_char,
    out: *mut CascadeBlockId,
) -> CascadeStatus {
    guard(|| {
        // SAFETY: the caller's contract, checked for NULL.
        let (text, out) = unsafe { (args::text(text, "text")?, args::out(out, "out")?) };
        let id = BlockId::parse_hex(text)?;
        out.write(id.into());
        Ok(())
    })
}

/// Token-prefix keys: one per full block of `block_tokens` tokens of `tokens`, key `i`
/// standing for the whole prefix up to block `i` under `namespace` (bytes naming the
/// model, dtype, layout, shard: KV of the same tokens under another namespace gets other
/// keys). Engines compute them before the KV exists and ask `cascade_lookup_prefix` how
/// many leading blocks are cached. A trailing partial block has no key.
///
/// `*out_count` is set to the number of keys (`n_tokens / block_tokens`) even when
/// `capacity` is too small, so a call with `capacity` 0 asks how many there are.
///
/// Errors: `CASCADE_STATUS_INVALID_INPUT` when `block_tokens` is 0, a pointer is NULL
/// (`namespace_`/`tokens` may be NULL when their length is 0) or `capacity` is below the
/// key count (no key is written).
///
/// Thread safety: safe from any thread.
///
/// # Safety
/// `namespace_` points to `namespace_len` bytes, `tokens` to `n_tokens` `uint32_t`,
/// `out_keys` to `capacity` writable ids, `out_count` to a writable `size_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cascade_prefix_keys(
    namespace_: *const u8,
    namespace_len: usize,
    tokens: *const u32,
    n_tokens: usize,
    block_tokens: usize,
    out_keys: *mut CascadeBlockId,
    capacity: usize,
    out_count: *mut usize,
) -> CascadeStatus {
    guard(|| {
        // SAFETY: the caller's contract, checked for NULL.
        let (namespace, tokens, count) = unsafe {
            (
                args::slice(namespace_, namespace_len, "namespace")?,
                args::slice(tokens, n_tokens, "tokens")?,
                args::out(out_count, "out_count")?,
            )
        };
        if block_tokens == 0 {
            return Err(Failure::invalid("block_tokens must be at least 1"));
        }
        let needed = tokens.len() / block_tokens;
        count.write(needed);
        if capacity < needed {
            return Err(Failure::invalid(format!(
                "out_keys: room for {capacity} keys, {needed} needed"
            )));
        }
        // SAFETY: the caller's contract, checked for NULL; only written.
        let out = unsafe { args::out_slice(out_keys, needed, "out_keys")? };
        let keys = hash::prefix_keys(namespace, tokens, block_tokens)?;
        for (slot, key) in out.iter_mut().zip(keys) {
            slot.write(key.into());
        }
        Ok(())
    })
}

/// One step of the prefix-key chain: the key of the block holding `tokens` after the
/// block keyed `*parent` (NULL `parent` for a sequence's first block). For engines that
/// extend a sequence block by block during decode; `cascade_prefix_keys` is this applied
/// to each full block.
///
/// Errors: `CASCADE_STATUS_INVALID_INPUT` for NULL `out`, or NULL `namespace_`/`tokens`
/// with a non-zero length.
///
/// Thread safety: safe from any thread.
///
/// # Safety
/// As `cascade_prefix_keys`; `parent` is NULL or points to a readable id.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cascade_prefix_key(
    namespace_: *const u8,
    namespace_len: usize,
    parent: *const CascadeBlockId,
    tokens: *const u32,
    n_tokens: usize,
    out: *mut CascadeBlockId,
) -> CascadeStatus {
    guard(|| {
        // SAFETY: the caller's contract, checked for NULL.
        let (namespace, tokens, out) = unsafe {
            (
                args::slice(namespace_, namespace_len, "namespace")?,
                args::slice(tokens, n_tokens, "tokens")?,
                args::out(out, "out")?,
            )
        };
        let parent = if parent.is_null() {
            None
        } else {
            // SAFETY: the caller's contract; non-null here.
            Some(BlockId::from(*unsafe { args::read(parent, "parent")? }))
        };
        out.write(hash::prefix_key(namespace, parent, tokens).into());
        Ok(())
    })
}

/// The ids of `count` entries at `ids`.
///
/// # Safety
/// `ids` points to `count` readable ids (may be NULL when `count` is 0).
pub unsafe fn id_slice<'a>(
    ids: *const CascadeBlockId,
    count: usize,
) -> CResult<&'a [CascadeBlockId]> {
    // SAFETY: forwarded contract.
    unsafe { args::slice(ids, count, "ids") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_bad_text() {
        let id = CascadeBlockId::from(BlockId::from_u128(0xdead_beef));
        let mut text = [0 as c_char; 33];
        // SAFETY: text holds 33 bytes.
        let status = unsafe { cascade_block_id_to_hex(id, text.as_mut_ptr(), text.len()) };
        assert_eq!(status, CascadeStatus::Ok);
        let mut back = CascadeBlockId::default();
        // SAFETY: text is NUL-terminated; back is a valid id.
        let status = unsafe { cascade_block_id_from_hex(text.as_ptr(), &mut back) };
        assert_eq!(status, CascadeStatus::Ok);
        assert_eq!(back, id);

        // SAFETY: too small a capacity is refused before writing.
        let status = unsafe { cascade_block_id_to_hex(id, text.as_mut_ptr(), 32) };
        assert_eq!(status, CascadeStatus::InvalidInput);
        // SAFETY: NUL-terminated literal.
        let status = unsafe { cascade_block_id_from_hex(c"xyz".as_ptr(), &mut back) };
        assert_eq!(status, CascadeStatus::InvalidInput);
        assert_eq!(back, id, "a failed parse leaves out unchanged");
        // SAFETY: NULL is checked.
        let status = unsafe { cascade_block_id_from_hex(std::ptr::null(), &mut back) };
        assert_eq!(status, CascadeStatus::InvalidInput);
    }

    #[test]
    fn compute_block_id_is_the_documented_sha256_prefix() {
        let data = b"hello";
        let mut id = CascadeBlockId::default();
        // SAFETY: data and id are valid.
        let status = unsafe { cascade_compute_block_id(data.as_ptr(), data.len(), &mut id) };
        assert_eq!(status, CascadeStatus::Ok);
        // SHA-256("hello") starts 2cf24dba5fb0a30e26e83b2ac5b9e29e.
        assert_eq!(
            BlockId::from(id).to_hex(),
            "2cf24dba5fb0a30e26e83b2ac5b9e29e"
        );
        // SAFETY: NULL with a length is refused.
        let status = unsafe { cascade_compute_block_id(std::ptr::null(), 4, &mut id) };
        assert_eq!(status, CascadeStatus::InvalidInput);
    }

    #[test]
    fn prefix_keys_chain_and_report_their_count() {
        let tokens: Vec<u32> = (0..10).collect();
        let ns = b"model";
        let mut count = 0usize;
        // SAFETY: a capacity of 0 writes no key.
        let status = unsafe {
            cascade_prefix_keys(
                ns.as_ptr(),
                ns.len(),
                tokens.as_ptr(),
                10,
                4,
                std::ptr::null_mut(),
                0,
                &mut count,
            )
        };
        assert_eq!((status, count), (CascadeStatus::InvalidInput, 2));
        let mut keys = [CascadeBlockId::default(); 2];
        // SAFETY: keys holds 2 ids.
        let status = unsafe {
            cascade_prefix_keys(
                ns.as_ptr(),
                ns.len(),
                tokens.as_ptr(),
                10,
                4,
                keys.as_mut_ptr(),
                2,
                &mut count,
            )
        };
        assert_eq!(status, CascadeStatus::Ok);
        let mut second = CascadeBlockId::default();
        // SAFETY: valid pointers.
        let status = unsafe {
            cascade_prefix_key(
                ns.as_ptr(),
                ns.len(),
                &keys[0],
                tokens[4..].as_ptr(),
                4,
                &mut second,
            )
        };
        assert_eq!(status, CascadeStatus::Ok);
        assert_eq!(second, keys[1]);
        // SAFETY: block_tokens 0 is refused.
        let status = unsafe {
            cascade_prefix_keys(
                ns.as_ptr(),
                ns.len(),
                tokens.as_ptr(),
                10,
                0,
                keys.as_mut_ptr(),
                2,
                &mut count,
            )
        };
        assert_eq!(status, CascadeStatus::InvalidInput);
    }
}
