"""cascade.integrations without any engine: importing it imports no engine, engine keys
become namespaced ids, and reads where anything but the stored bytes is a miss."""

import subprocess
import sys

import numpy as np
import pytest

import cascade
from cascade.integrations import KeySpace, load_blocks, open_store
from cascade.integrations.common import leading_hits, save_blocks
from conftest import KIB, random_block


def test_importing_the_integrations_imports_no_engine():
    code = (
        "import sys, cascade.integrations;"
        "bad = [m for m in ('torch', 'vllm', 'sglang', 'lmcache') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_key_spaces_give_unrelated_ids_for_the_same_key():
    spaces = [
        KeySpace("vllm", "llama"),
        KeySpace("vllm", "mistral"),
        KeySpace("vllm", "llama", dtype="float16"),
        KeySpace("vllm", "llama", layout="block16"),
        KeySpace("vllm", "llama", tp_rank=1, tp_size=2),
        KeySpace("vllm", "llama", salt="tenant-b"),
        KeySpace("sglang", "llama"),
    ]
    ids = [s.block_id(b"same engine key") for s in spaces]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    # Stable: the same namespace and key give the same id in every process.
    assert KeySpace("vllm", "llama").block_id(b"same engine key") == ids[0]


def test_key_forms_are_distinct_and_batch_matches_single():
    space = KeySpace("lmcache", "m")
    keys = [b"a", "a-str", 7, -7, 2**70, bytearray(b"z")]
    assert space.block_ids(keys) == [space.block_id(k) for k in keys]
    assert space.block_id(7) != space.block_id(-7)


def test_load_blocks_hits_misses_and_wrong_sizes(store, rng):
    space = KeySpace("test", "m")
    blocks = [random_block(rng, 8 * KIB) for _ in range(3)]
    ids = space.block_ids([b"0", b"1", b"2"])
    assert save_blocks(store, ids, blocks)
    assert leading_hits(store, ids + [space.block_id(b"absent")]) == 3
    outs = [np.zeros(8 * KIB, np.uint8) for _ in range(3)] + [np.zeros(8 * KIB, np.uint8)]
    hits = load_blocks(store, ids + [space.block_id(b"absent")], outs)
    assert hits == [True, True, True, False]
    assert all(np.array_equal(a, b) for a, b in zip(blocks, outs))
    # A stored block of another size (another layout under the same key) is a miss.
    big = [np.zeros(16 * KIB, np.uint8)]
    assert load_blocks(store, ids[:1], big, sizes=[16 * KIB]) == [False]


def test_a_corrupt_block_is_a_miss_and_is_dropped(tmp_path, rng):
    toml = tmp_path / "c.toml"
    toml.write_text(f'[[tiers]]\nkind = "file"\nname = "file"\npath = "{tmp_path}/files"\n')
    block = random_block(rng, 64 * KIB)
    good = random_block(rng, 64 * KIB)
    space = KeySpace("test", "m")
    with open_store(toml) as s:
        assert save_blocks(s, space.block_ids([b"bad", b"good"]), [block, good])
    needle = bytes(block[8192 : 8192 + 64])
    changed = 0
    for seg in (tmp_path / "files").glob("*.seg"):
        data = bytearray(seg.read_bytes())
        at = data.find(needle)
        if at >= 0:
            data[at] ^= 0xFF
            seg.write_bytes(bytes(data))
            changed += 1
    assert changed == 1
    with open_store(toml) as s:
        outs = [np.zeros(64 * KIB, np.uint8), np.zeros(64 * KIB, np.uint8)]
        assert load_blocks(s, space.block_ids([b"bad", b"good"]), outs) == [False, True]
        assert np.array_equal(outs[1], good)
        assert not s.contains(space.block_id(b"bad"))


def test_open_store_names_each_rank_its_own_pool(tmp_path, monkeypatch):
    toml = tmp_path / "c.toml"
    toml.write_text(
        f'[[tiers]]\nkind = "shm"\nname = "shm"\ncapacity = "4 MiB"\n'
        f'path = "{tmp_path}/pool-{{rank}}.shm"\n'
    )
    with open_store(toml, rank=0) as a, open_store(toml, rank=1) as b:
        a.put("1" * 32, b"rank zero")
        assert not b.contains("1" * 32)
    assert (tmp_path / "pool-0.shm").exists() and (tmp_path / "pool-1.shm").exists()
    monkeypatch.setenv("CASCADE_CONFIG", str(toml))
    with open_store(rank=0) as again:
        assert again.contains("1" * 32)


def test_open_store_reports_a_missing_config(tmp_path):
    with pytest.raises(cascade.ConfigError, match="cannot read"):
        open_store(tmp_path / "missing.toml")
