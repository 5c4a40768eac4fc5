//! Token-prefix keys: block ids an engine computes from the prompt before the KV exists,
//! then hands to `CascadeStore.lookup_prefix` to learn how many leading blocks it can
//! load instead of recomputing.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use cascade::BlockId;
use cascade::hash::{PrefixNamespace, Token};

use crate::errors::{IntoPy, invalid_input};
use crate::ids;

fn namespace_bytes(namespace: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(bytes) = namespace.cast::<PyBytes>() {
        return Ok(bytes.as_bytes().to_vec());
    }
    if let Ok(text) = namespace.cast::<PyString>() {
        return Ok(text.to_cow()?.as_bytes().to_vec());
    }
    Err(invalid_input(
        "namespace must be bytes (see prefix_namespace) or str",
    ))
}

fn tokens_of(tokens: &Bound<'_, PyAny>) -> PyResult<Vec<Token>> {
    let items = ids::sequence(tokens, "tokens").or_else(|_| {
        // numpy arrays and other iterables of ints.
        tokens.try_iter()?.collect::<PyResult<Vec<_>>>()
    })?;
    items
        .iter()
        .map(|t| {
            t.extract::<Token>()
                .map_err(|_| invalid_input("tokens must be integers in [0, 2**32)"))
        })
        .collect()
}

/// `prefix_keys(tokens, block_tokens, namespace=b"") -> list[str]`: one key per full
/// block of `block_tokens` tokens, each chained to the one before, so key `i` stands for
/// the whole prefix up to block `i` (a trailing partial block has no key). The
/// namespace separates models, dtypes, layouts and tensor-parallel shards
/// (`prefix_namespace`).
#[pyfunction]
#[pyo3(signature = (tokens, block_tokens, namespace = None))]
pub fn prefix_keys(
    py: Python<'_>,
    tokens: &Bound<'_, PyAny>,
    block_tokens: usize,
    namespace: Option<&Bound<'_, PyAny>>,
) -> PyResult<Vec<String>> {
    let namespace = namespace
        .map(namespace_bytes)
        .transpose()?
        .unwrap_or_default();
    let tokens = tokens_of(tokens)?;
    let keys = py
        .detach(|| cascade::hash::prefix_keys(&namespace, &tokens, block_tokens))
        .py_err()?;
    Ok(keys.iter().map(BlockId::to_hex).collect())
}

/// `prefix_key(parent, tokens, namespace=b"") -> str`: one step of the chain, the key of
/// the block `tokens` after the block keyed `parent` (None for the first block). Engines
/// extending a sequence during decode call this with the last full block's key.
#[pyfunction]
#[pyo3(signature = (parent, tokens, namespace = None))]
pub fn prefix_key(
    parent: Option<&Bound<'_, PyAny>>,
    tokens: &Bound<'_, PyAny>,
    namespace: Option<&Bound<'_, PyAny>>,
) -> PyResult<String> {
    let parent = parent
        .filter(|p| !p.is_none())
        .map(ids::parse)
        .transpose()?;
    let namespace = namespace
        .map(namespace_bytes)
        .transpose()?
        .unwrap_or_default();
    let tokens = tokens_of(tokens)?;
    Ok(cascade::hash::prefix_key(&namespace, parent, &tokens).to_hex())
}

/// `prefix_namespace(model, dtype="", layout="", tp_rank=0, tp_size=1, salt=b"") ->
/// bytes`: what makes KV for the same tokens differ, as namespace bytes for
/// `prefix_keys`.
#[pyfunction]
#[pyo3(signature = (model, dtype = "", layout = "", tp_rank = 0, tp_size = 1, salt = None))]
pub fn prefix_namespace<'py>(
    py: Python<'py>,
    model: &str,
    dtype: &str,
    layout: &str,
    tp_rank: u32,
    tp_size: u32,
    salt: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyBytes>> {
    let mut namespace = PrefixNamespace::new(model)
        .dtype(dtype)
        .layout(layout)
        .tensor_parallel(tp_rank, tp_size)
        .py_err()?;
    if let Some(salt) = salt {
        namespace = namespace.salt(namespace_bytes(salt)?);
    }
    Ok(PyBytes::new(py, &namespace.to_bytes()))
}
