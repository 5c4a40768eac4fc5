"""CascadeConfig maps the documented flat settings onto tiers; a missing GPU warns."""

import warnings

import numpy as np
import pytest

import cascade
from conftest import KIB, MIB, gpu_available, has_kind, make_config, random_block


def test_documented_fields_and_defaults():
    config = cascade.CascadeConfig()
    assert config.gpu_capacity_bytes == 0
    assert config.shm_capacity_bytes == 1024**3
    assert config.shm_path == ""
    assert config.lustre_path == ""
    assert config.dedup_enabled is True
    assert config.num_io_threads == 0
    assert config.promote_on_read is True
    assert config.hasher == "sha256"
    assert config.gpu_required is False
    config.gpu_capacity_bytes = 4 * 1024**3
    config.dedup_enabled = False
    assert "gpu_capacity_bytes=4294967296" in repr(config)
    assert "dedup_enabled=False" in repr(config)


def test_to_toml_lists_the_host_tier(tmp_path):
    config = make_config(tmp_path, dedup_enabled=False, num_io_threads=2)
    text = config.to_toml()
    assert "dedup = false" in text
    assert "num_io_threads = 2" in text
    assert f"capacity = {16 * MIB}" in text
    if has_kind("shm"):
        assert 'kind = "shm"' in text and "pool.shm" in text
    else:
        assert 'kind = "memory"' in text


def test_from_toml_file_round_trips_the_config(tmp_path, rng):
    path = tmp_path / "cascade.toml"
    path.write_text(make_config(tmp_path).to_toml())
    store = cascade.CascadeStore.from_toml(path)
    block = random_block(rng, KIB)
    block_id = store.put_content(block)
    out = np.zeros(KIB, np.uint8)
    assert store.get(block_id, out) == (True, KIB)
    assert np.array_equal(out, block)


def test_from_toml_str_memory_tier():
    store = cascade.CascadeStore.from_toml_str(
        'dedup = false\n[[tiers]]\nkind = "memory"\nname = "ram"\ncapacity = "4 MiB"\n'
    )
    assert store.tiers == ["ram"]
    assert store.get_stats()["tiers"][0]["capacity_bytes"] == 4 * MIB


@pytest.mark.skipif(gpu_available(), reason="this machine has a usable GPU")
def test_missing_gpu_warns_and_opens_the_other_tiers(tmp_path, rng):
    config = make_config(tmp_path)
    config.gpu_capacity_bytes = 4 * 1024**3
    with pytest.warns(cascade.TierUnavailableWarning, match="GPU") as record:
        store = cascade.CascadeStore(config)
    assert "gpu" not in store.tiers
    assert store.tiers, "the host tiers must still open"
    assert issubclass(record[0].category, RuntimeWarning)
    block = random_block(rng, KIB)
    store.put(cascade.compute_block_id(block), block)
    assert len(store) == 1


@pytest.mark.skipif(gpu_available(), reason="this machine has a usable GPU")
def test_required_gpu_raises(tmp_path):
    config = make_config(tmp_path, gpu_capacity_bytes=1024**3, gpu_required=True)
    with pytest.raises(cascade.UnavailableError, match="GPU|gpu"):
        cascade.CascadeStore(config)


def test_no_warning_without_a_gpu_tier(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cascade.CascadeStore(make_config(tmp_path))


def test_tier_kinds_lists_this_build():
    kinds = cascade.tier_kinds()
    assert "memory" in kinds
    assert kinds == sorted(kinds)


@pytest.mark.skipif(gpu_available(), reason="this machine has a usable GPU")
def test_toml_gpu_tier_not_required_is_skipped_with_a_warning():
    text = (
        '[[tiers]]\nkind = "gpu"\nrequired = false\ncapacity = "64 MiB"\n'
        '[[tiers]]\nkind = "memory"\ncapacity = "4 MiB"\n'
    )
    with pytest.warns(cascade.TierUnavailableWarning) as record:
        store = cascade.CascadeStore.from_toml_str(text)
    assert store.tiers == ["memory1"]
    assert len(record) == 1
    assert "GPU" in str(record[0].message) and "memory1" in str(record[0].message)


@pytest.mark.skipif(gpu_available(), reason="this machine has a usable GPU")
def test_toml_gpu_tier_required_raises_without_a_gpu():
    with pytest.raises(cascade.UnavailableError):
        cascade.CascadeStore.from_toml_str('[[tiers]]\nkind = "gpu"\ncapacity = "64 MiB"\n')
