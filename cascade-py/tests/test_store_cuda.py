"""CascadeStore with CUDA tensors: put / get / put_batch / get_batch copy device to
device through the GPU tier and demote into shared memory, which serves device reads by DMA;
a store without a GPU tier takes and fills CUDA tensors by DMA into its shared memory;
blocks given as lists of CUDA tensors (an engine's per-layer K and V) are gathered and
scattered. Runs only where torch with CUDA and a GPU build of cascade are present (it
skips, saying which is missing, everywhere else)."""

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


def test_cuda_round_trip_with_demotion(gpu_store):
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
    # promote_on_read is off: shared memory serves the demoted blocks into CUDA memory
    # itself, by DMA from its registered pool, and they stay where they are.
    assert stats["promotions"] == 0
    tiers = {t["name"]: t for t in stats["tiers"]}
    assert tiers["shm"]["hits"] >= 16
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
    # The pieces of one block are all host or all device memory.
    with pytest.raises(cascade.InvalidInputError, match="partly in host and partly in device"):
        gpu_store.put(ident(3), [block[:KIB], np.zeros(KIB, np.uint8)])
    assert not gpu_store.contains(ident(3))


class InterfaceOnly:
    """Exports only ``__cuda_array_interface__`` (as CuPy or Numba arrays do): no DLPack,
    so no device id; the store asks the driver where the address lives."""

    def __init__(self, ptr, nbytes):
        self.__cuda_array_interface__ = {
            "shape": (nbytes,),
            "typestr": "|u1",
            "data": (ptr, False),
            "version": 3,
            "strides": None,
            "stream": None,
        }


def test_device_of_cuda_memory_is_checked(gpu_store):
    block = cuda_blocks(1, seed=8)[0]
    torch.cuda.synchronize()
    gpu_store.put(ident(70), InterfaceOnly(block.data_ptr(), BLOCK))
    out = torch.zeros(BLOCK, dtype=torch.uint8, device="cuda")
    torch.cuda.synchronize()
    assert gpu_store.get(ident(70), InterfaceOnly(out.data_ptr(), BLOCK)) == (True, BLOCK)
    assert torch.equal(out, block)
    # An address that is no CUDA memory, named as if it were, is refused before a copy.
    host = np.zeros(BLOCK, np.uint8)
    with pytest.raises(cascade.InvalidInputError, match="not CUDA device memory"):
        gpu_store.put(ident(71), InterfaceOnly(host.ctypes.data, BLOCK))
    assert not gpu_store.contains(ident(71))
    if torch.cuda.device_count() > 1:
        other = torch.ones(BLOCK, dtype=torch.uint8, device="cuda:1")
        for named in (other, InterfaceOnly(other.data_ptr(), BLOCK)):
            with pytest.raises(cascade.InvalidInputError, match="cuda:1"):
                gpu_store.put(ident(72), named)
        assert not gpu_store.contains(ident(72))


@pytest.fixture
def shm_store(tmp_path):
    """A store with no GPU tier: 64 MiB of shared memory."""
    with cascade.CascadeStore(make_config(tmp_path, shm_bytes=64 * MIB)) as s:
        assert s.tiers == ["shm"]
        yield s


def test_shm_only_store_takes_and_fills_cuda_tensors(shm_store):
    blocks = cuda_blocks(16, seed=5)
    assert shm_store.put(ident(0), blocks[0])
    out = torch.zeros(BLOCK, dtype=torch.uint8, device="cuda")
    assert shm_store.get(ident(0), out) == (True, BLOCK)
    assert torch.equal(out, blocks[0])
    ids = [ident(n) for n in range(1, 16)]
    assert shm_store.put_batch(ids, blocks[1:]) == 15
    outs = torch.zeros_like(blocks[1:])
    assert shm_store.get_batch(ids, outs) == [BLOCK] * 15
    assert torch.equal(outs, blocks[1:])
    # The shared-memory copy is what a host reader sees.
    host = np.zeros(BLOCK, np.uint8)
    assert shm_store.get(ids[4], host) == (True, BLOCK)
    assert np.array_equal(host, blocks[5].cpu().numpy())
    assert shm_store.get(ident(999), out) == (False, 0)


def layer_pieces(block, pieces: int):
    """One block as `pieces` separate CUDA tensors (as an engine's per-layer K and V are),
    each its own allocation."""
    return [chunk.clone() for chunk in block.chunk(pieces)]


@pytest.mark.parametrize("pieces", [2, 32])
def test_cuda_pieces_are_gathered_and_scattered_in_a_shm_only_store(shm_store, pieces):
    blocks = cuda_blocks(8, seed=6)
    ids = [ident(200 + n) for n in range(8)]
    assert shm_store.put_batch(ids, [layer_pieces(b, pieces) for b in blocks]) == 8
    whole = torch.zeros_like(blocks)
    assert shm_store.get_batch(ids, whole) == [BLOCK] * 8
    assert torch.equal(whole, blocks)
    outs = [[torch.zeros(BLOCK // pieces, dtype=torch.uint8, device="cuda") for _ in range(pieces)] for _ in ids]
    assert shm_store.get_batch(ids, outs) == [BLOCK] * 8
    for out, block in zip(outs, blocks):
        assert torch.equal(torch.cat(out), block)
    # Single calls take pieces too.
    single = [torch.zeros(BLOCK // pieces, dtype=torch.uint8, device="cuda") for _ in range(pieces)]
    assert shm_store.get(ids[3], single) == (True, BLOCK)
    assert torch.equal(torch.cat(single), blocks[3])
    assert shm_store.put(ident(299), layer_pieces(blocks[7], pieces))
    host = np.zeros(BLOCK, np.uint8)
    assert shm_store.get(ident(299), host) == (True, BLOCK)
    assert np.array_equal(host, blocks[7].cpu().numpy())


def test_cuda_pieces_into_a_store_with_a_gpu_tier(gpu_store):
    blocks = cuda_blocks(12, seed=7)
    ids = [ident(300 + n) for n in range(12)]
    assert gpu_store.put_batch(ids, [layer_pieces(b, 4) for b in blocks]) == 12
    outs = [[torch.zeros(BLOCK // 4, dtype=torch.uint8, device="cuda") for _ in range(4)] for _ in ids]
    assert gpu_store.get_batch(ids, outs) == [BLOCK] * 12
    for out, block in zip(outs, blocks):
        assert torch.equal(torch.cat(out), block)


def test_write_through_copies_gpu_blocks_into_shared_memory(tmp_path):
    config = make_config(
        tmp_path,
        shm_bytes=64 * MIB,
        gpu_capacity_bytes=4 * MIB,
        gpu_required=True,
        write_policy="write_through",
    )
    blocks = cuda_blocks(4, seed=8)
    ids = [ident(400 + n) for n in range(4)]
    with cascade.CascadeStore(config) as s:
        assert s.put_batch(ids, blocks) == 4
        s.flush()
        tiers = {t["name"]: t for t in s.get_stats()["tiers"]}
        assert tiers["gpu"]["blocks"] == 4
        assert tiers["shm"]["copies"] == 4
    # The GPU tier is gone with the process; the shared-memory copies are not.
    alone = make_config(tmp_path, shm_bytes=64 * MIB)
    with cascade.CascadeStore(alone) as s:
        out = torch.zeros(BLOCK, dtype=torch.uint8, device="cuda")
        for block_id, block in zip(ids, blocks):
            assert s.get(block_id, out) == (True, BLOCK)
            assert torch.equal(out, block)
