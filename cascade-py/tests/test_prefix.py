"""Token-prefix keys and lookup_prefix: how many leading blocks of a prompt are cached."""

import numpy as np
import pytest

import cascade
from conftest import KIB


def test_keys_chain_block_by_block():
    tokens = list(range(1000, 1040))
    keys = cascade.prefix_keys(tokens, 16)
    assert len(keys) == 2  # the trailing 8 tokens form no full block
    assert all(len(k) == 32 for k in keys)
    assert cascade.prefix_key(None, tokens[:16]) == keys[0]
    assert cascade.prefix_key(keys[0], tokens[16:32]) == keys[1]
    # A changed token changes its block's key and every later one.
    changed = cascade.prefix_keys(tokens[:15] + [7] + tokens[16:], 16)
    assert changed[0] != keys[0] and changed[1] != keys[1]
    later = cascade.prefix_keys(tokens[:16] + [7] + tokens[17:], 16)
    assert later[0] == keys[0] and later[1] != keys[1]


def test_namespaces_separate_models_and_shards():
    tokens = list(range(32))
    ns_a = cascade.prefix_namespace("llama-3-8b", dtype="bf16", layout="nhd-16", tp_rank=0, tp_size=2)
    ns_b = cascade.prefix_namespace("llama-3-8b", dtype="bf16", layout="nhd-16", tp_rank=1, tp_size=2)
    assert isinstance(ns_a, bytes)
    keys_a = cascade.prefix_keys(tokens, 16, ns_a)
    assert keys_a != cascade.prefix_keys(tokens, 16, ns_b)
    assert keys_a != cascade.prefix_keys(tokens, 16)
    assert keys_a == cascade.prefix_keys(np.arange(32, dtype=np.int64), 16, namespace=ns_a)


def test_lookup_prefix_counts_leading_cached_blocks(store):
    tokens = list(range(64))
    keys = cascade.prefix_keys(tokens, 16)
    assert store.lookup_prefix(keys) == 0
    for key in keys[:2]:
        store.put(key, np.zeros(KIB, np.uint8))
    store.put(keys[3], np.zeros(KIB, np.uint8))
    assert store.lookup_prefix(keys) == 2  # block 2 is missing, so block 3 cannot be used
    assert store.lookup_prefix([]) == 0


def test_bad_prefix_arguments():
    with pytest.raises(cascade.InvalidInputError):
        cascade.prefix_keys([1, 2, 3], 0)
    with pytest.raises(cascade.InvalidInputError, match="integers"):
        cascade.prefix_keys([1, -2, 3], 1)
    with pytest.raises(cascade.InvalidInputError, match="integers"):
        cascade.prefix_keys([1, 2**32], 1)
    with pytest.raises(cascade.InvalidInputError):
        cascade.prefix_namespace("m", tp_rank=2, tp_size=2)
    with pytest.raises(cascade.InvalidInputError, match="32 hex"):
        cascade.prefix_key("nope", [1])
