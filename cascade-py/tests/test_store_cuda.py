"""CascadeStore with CUDA tensors: put / get / put_batch / get_batch copy device to
device through the GPU tier, demote into shared memory and promote back on device reads.
Runs only where torch with CUDA and a GPU build of cascade are present."""

import numpy as np
import pytest

import cascade

from conftest import KIB, MIB, gpu_available, make_config, skip_unless_present

torch = pytest.importorskip("torch", reason="torch is not installed")
if not torch.cuda.is_available():
    pytest.skip("torch has no CUDA device here", allow_module_level=True)
if not gpu_available():
    skip_unless_present("gpu", "this build of cascade cannot open a GPU tier", allow_module_level=True)

BLOCK = 512 * KIB


def ident(n: int) -> str:
    return f"{n:032x}"


@pytest.fixture
def gpu_store(tmp_path):
    """A 4 MiB GPU tier (8 blocks of 512 KiB) over a 64 MiB shm tier."""
    config = make_config(
        tmp_path,
        shm_bytes=64 * MIB,
        gpu_capacity_bytes=4 * MIB,
        gpu_required=True,
        promote_on_read=False,
    )
    with cascade.CascadeStore(config) as s:
        assert s.tiers[0] == "gpu"
        yield s


def cuda_blocks(count: int, seed: int = 0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    return torch.randint(0, 256, (count, BLOCK), dtype=torch.uint8, device="cuda", generator=g)


def test_cuda_round_trip_with_demotion_and_promotion(gpu_store):
    blocks = cuda_blocks(24)
    for n in range(24):
        assert gpu_store.put(ident(n), blocks[n])
    stats = gpu_store.get_stats()
    assert stats["blocks"] == 24
    tiers = {t["name"]: t for t in stats["tiers"]}
    assert tiers["gpu"]["blocks"] <= 8
    assert stats["demotions"] >= 16
    # A second put of a stored id copies nothing.
    assert gpu_store.put(ident(0), blocks[1])
    assert gpu_store.get_stats()["dedup_hits"] == 1

    out = torch.zeros(BLOCK, dtype=torch.uint8, device="cuda")
    for n in range(24):
        out.zero_()
        assert gpu_store.get(ident(n), out) == (True, BLOCK)
        assert torch.equal(out, blocks[n]), n
    stats = gpu_store.get_stats()
    assert stats["promotions"] >= 16
    assert stats["hits"] == 24
    # Host reads see the same bytes.
    host = np.zeros(BLOCK, np.uint8)
    assert gpu_store.get(ident(3), host) == (True, BLOCK)
    assert np.array_equal(host, blocks[3].cpu().numpy())
    assert gpu_store.get(ident(999), out) == (False, 0)


def test_host_block_read_into_cuda_memory(gpu_store, rng):
    data = rng.integers(0, 256, BLOCK, dtype=np.uint8)
    gpu_store.put(ident(500), data)
    # Newer device blocks push it down into shared memory.
    blocks = cuda_blocks(8, seed=1)
    for n in range(8):
        gpu_store.put(ident(600 + n), blocks[n])
    out = torch.empty(BLOCK, dtype=torch.uint8, device="cuda")
    assert gpu_store.get(ident(500), out) == (True, BLOCK)
    assert np.array_equal(out.cpu().numpy(), data)


def test_cuda_batches_rows_and_lists(gpu_store):
    blocks = cuda_blocks(12, seed=2)
    ids = [ident(100 + n) for n in range(12)]
    assert gpu_store.put_batch(ids, blocks) == 12
    outs = torch.zeros_like(blocks)
    assert gpu_store.get_batch(ids, outs) == [BLOCK] * 12
    assert torch.equal(outs, blocks)
    # Host and CUDA outputs mixed in one list, with a missing id.
    mixed = [torch.zeros(BLOCK, dtype=torch.uint8, device="cuda"), np.zeros(BLOCK, np.uint8)]
    assert gpu_store.get_batch([ids[0], ident(7777)], mixed) == [BLOCK, None]
    assert torch.equal(mixed[0], blocks[0])


def test_producer_stream_is_synchronized(gpu_store):
    expected = cuda_blocks(1, seed=4)[0]
    block = torch.zeros(BLOCK, dtype=torch.uint8, device="cuda")
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        # The block is written only after a long spin on the producer's stream: a put
        # that did not wait for that stream would store zeros.
        torch.cuda._sleep(200_000_000)
        block.copy_(expected)
        gpu_store.put(ident(42), block)
    torch.cuda.synchronize()
    out = torch.zeros(BLOCK, dtype=torch.uint8, device="cuda")
    assert gpu_store.get(ident(42), out) == (True, BLOCK)
    assert torch.equal(out, expected)


def test_cuda_errors_are_typed(gpu_store, tmp_path):
    block = cuda_blocks(1, seed=3)[0]
    gpu_store.put(ident(1), block)
    small = torch.full((BLOCK - 1,), 7, dtype=torch.uint8, device="cuda")
    with pytest.raises(cascade.InvalidInputError):
        gpu_store.get(ident(1), small)
    assert int(small.min()) == 7 and int(small.max()) == 7
    with pytest.raises(cascade.InvalidInputError, match="not C-contiguous"):
        gpu_store.put(ident(2), torch.zeros((64, 64), dtype=torch.uint8, device="cuda")[:, ::2])
    (tmp_path / "host").mkdir()
    with cascade.CascadeStore(make_config(tmp_path / "host")) as host_only:
        with pytest.raises(cascade.UnsupportedError, match="no GPU tier"):
            host_only.put(ident(1), block)
        with pytest.raises(cascade.UnsupportedError, match="no GPU tier"):
            host_only.get(ident(1), block)
