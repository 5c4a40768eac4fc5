"""Bad input gives a clear, typed exception; nothing crashes the interpreter."""

import numpy as np
import pytest

import cascade
from conftest import KIB, MIB, make_config, random_block

KINDS = {
    "NotFoundError": "not_found",
    "TierFullError": "tier_full",
    "TooLargeError": "too_large",
    "CorruptError": "corrupt",
    "IoError": "io",
    "ConfigError": "config",
    "UnavailableError": "unavailable",
    "PluginError": "plugin",
    "InvalidInputError": "invalid_input",
    "IncompatibleError": "incompatible",
    "BusyError": "busy",
    "UnsupportedError": "unsupported",
}


def test_one_subclass_per_kind():
    for name in KINDS:
        cls = getattr(cascade, name)
        assert issubclass(cls, cascade.CascadeError), name
        assert cls.__module__ == "cascade"
        assert cls.__doc__
    assert issubclass(cascade.InvalidInputError, ValueError)
    assert issubclass(cascade.ConfigError, ValueError)
    assert issubclass(cascade.IoError, OSError)
    assert issubclass(cascade.UnsupportedError, NotImplementedError)
    assert issubclass(cascade.CascadeError, Exception)


@pytest.mark.parametrize(
    "bad", ["", "abc", "g" * 32, "0" * 33, 42, None, b"0" * 32], ids=repr
)
def test_wrong_id_is_invalid_input(store, bad):
    with pytest.raises(cascade.InvalidInputError, match="32 hex") as info:
        store.put(bad, b"x")
    assert info.value.kind == "invalid_input"
    with pytest.raises(cascade.InvalidInputError):
        store.get(bad, bytearray(1))
    with pytest.raises(cascade.InvalidInputError):
        store.contains(bad)


def test_non_contiguous_array_is_refused(store):
    strided = np.zeros((64, 64), dtype=np.uint8)[:, ::2]
    with pytest.raises(cascade.InvalidInputError, match="not C-contiguous"):
        store.put("0" * 32, strided)
    with pytest.raises(cascade.InvalidInputError, match="not C-contiguous"):
        cascade.compute_block_id(np.asfortranarray(np.zeros((8, 8))))
    with pytest.raises(cascade.InvalidInputError, match="not C-contiguous"):
        store.get("0" * 32, np.zeros((64, 64), dtype=np.uint8)[:, ::2])


def test_output_too_small_copies_nothing(store, rng):
    block = random_block(rng, KIB)
    block_id = cascade.compute_block_id(block)
    store.put(block_id, block)
    out = np.full(KIB - 1, 7, dtype=np.uint8)
    with pytest.raises(cascade.InvalidInputError, match="too small") as info:
        store.get(block_id, out)
    assert info.value.context["block_bytes"] == str(KIB)
    assert (out == 7).all()


def test_read_only_output_is_refused(store, rng):
    block = random_block(rng, KIB)
    block_id = cascade.compute_block_id(block)
    store.put(block_id, block)
    with pytest.raises(cascade.InvalidInputError, match="read-only"):
        store.get(block_id, bytes(KIB))
    frozen = np.zeros(KIB, np.uint8)
    frozen.flags.writeable = False
    with pytest.raises(cascade.InvalidInputError, match="read-only"):
        store.get(block_id, frozen)
    assert not frozen.any()


def test_objects_without_buffer_are_refused(store):
    for bad in (42, "text", [1, 2, 3], None, object()):
        with pytest.raises(cascade.InvalidInputError, match="buffer"):
            store.put("0" * 32, bad)


def test_block_larger_than_every_tier_is_too_large(tmp_path):
    store = cascade.CascadeStore(make_config(tmp_path, shm_bytes=MIB))
    with pytest.raises(cascade.TooLargeError):
        store.put("0" * 32, np.zeros(2 * MIB, np.uint8))
    assert len(store) == 0


def test_bad_config_values(tmp_path):
    with pytest.raises(cascade.ConfigError, match="hasher"):
        cascade.CascadeStore(make_config(tmp_path, hasher="md5"))
    with pytest.raises(cascade.ConfigError, match="no tier"):
        cascade.CascadeStore(cascade.CascadeConfig(shm_capacity_bytes=0))
    with pytest.raises(OverflowError):
        cascade.CascadeConfig(shm_capacity_bytes=-1)
    with pytest.raises(TypeError):
        cascade.CascadeConfig(no_such_setting=1)


def test_bad_toml(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("dedupe = true\n")
    with pytest.raises(cascade.ConfigError, match="dedupe"):
        cascade.CascadeStore.from_toml(path)
    with pytest.raises(cascade.ConfigError, match="cannot read"):
        cascade.CascadeStore.from_toml(tmp_path / "missing.toml")
    with pytest.raises(cascade.ConfigError, match="unknown tier kind"):
        cascade.CascadeStore.from_toml_str('[[tiers]]\nkind = "tape"\n')


def test_closed_store_raises(tmp_path):
    store = cascade.CascadeStore(make_config(tmp_path))
    store.close()
    assert store.closed
    store.close()
    with pytest.raises(cascade.InvalidInputError, match="closed"):
        store.put("0" * 32, b"x")
    assert "closed" in repr(store)
