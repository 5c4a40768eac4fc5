//! Block ids as Python sees them (32 hex characters) and content hashing.

use pyo3::prelude::*;
use pyo3::types::PyString;

use cascade::{BlockId, Hasher};

use crate::buffer::Access;
use crate::data::{self, Host};
// Callers that take ids also take lists of them: the helper is data.rs's, re-exported.
pub use crate::data::sequence;
use crate::errors::{IntoPy, invalid_input};

/// Parses a block id argument: a 32-character hex string.
pub fn parse(obj: &Bound<'_, PyAny>) -> PyResult<BlockId> {
    let Ok(text) = obj.cast::<PyString>() else {
        let type_name = obj
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "?".to_string());
        return Err(invalid_input(format!(
            "block id must be a str of 32 hex characters, got {type_name}"
        )));
    };
    BlockId::parse_hex(&text.to_cow()?).py_err()
}

/// Parses a list of block ids.
pub fn parse_all(list: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<BlockId>> {
    let items = sequence(list, what)?;
    items.iter().map(parse).collect()
}

/// `compute_block_id(data) -> str`: the documented content id, the first 16 bytes of
/// SHA-256 of the bytes, as 32 lowercase hex characters. Accepts any C-contiguous
/// buffer (numpy array, bytes, bytearray, memoryview); hashes without holding the GIL.
#[pyfunction]
pub fn compute_block_id(py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<String> {
    let buffer = data::take_host(data, Access::Read, &"data")?;
    let bytes = buffer.bytes();
    Ok(py.detach(|| cascade::compute_block_id(bytes)).to_hex())
}

/// `compute_block_ids(blocks) -> list[str]`: `compute_block_id` of each block, hashed
/// in parallel without the GIL.
#[pyfunction]
pub fn compute_block_ids(py: Python<'_>, blocks: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    let buffers = sequence(blocks, "blocks")?
        .iter()
        .enumerate()
        .map(|(i, b)| data::take_host(b, Access::Read, &format_args!("blocks[{i}]")))
        .collect::<PyResult<Vec<_>>>()?;
    let slices: Vec<&[u8]> = buffers.iter().map(Host::bytes).collect();
    let ids = py.detach(|| cascade::hash::Sha256Hasher.block_ids(&slices));
    Ok(ids.iter().map(BlockId::to_hex).collect())
}
