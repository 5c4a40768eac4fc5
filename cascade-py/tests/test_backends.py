"""Direct tier access (GPUBackend, ShmBackend, MemoryBackend, LustreBackend) and the
DLPack / __cuda_array_interface__ inputs."""

import numpy as np
import pytest

import cascade
from conftest import KIB, MIB, gpu_available, has_kind, random_block


def backends(tmp_path):
    made = [cascade.MemoryBackend(4 * MIB)]
    if has_kind("shm"):
        made.append(cascade.ShmBackend(4 * MIB, str(tmp_path / "direct.shm")))
    if has_kind("file"):
        made.append(cascade.LustreBackend(tmp_path / "files", 16 * MIB))
    return made


def test_round_trip_on_every_host_backend(tmp_path, rng):
    for backend in backends(tmp_path):
        blocks = [random_block(rng, 8 * KIB) for _ in range(6)]
        ids = cascade.compute_block_ids(blocks)
        assert backend.put(ids[0], blocks[0])
        assert backend.put_batch(ids[1:], blocks[1:]) == 5
        out = np.zeros(8 * KIB, np.uint8)
        assert backend.get(ids[0], out) == (True, 8 * KIB)
        assert np.array_equal(out, blocks[0])
        outs = [np.zeros(8 * KIB, np.uint8) for _ in blocks]
        assert backend.get_batch(ids + ["0" * 32], outs + [bytearray(1)]) == [8 * KIB] * 6 + [None]
        assert all(np.array_equal(a, b) for a, b in zip(blocks, outs))
        assert len(backend) == 6 and ids[3] in backend
        assert backend.size_of(ids[3]) == 8 * KIB
        assert backend.remove(ids[3]) and not backend.contains(ids[3])
        assert backend.get(ids[3], out) == (False, 0)
        stats = backend.get_stats()
        assert stats["blocks"] == 5 and stats["used_bytes"] <= stats["capacity_bytes"]
        assert backend.capacity == stats["capacity_bytes"]
        backend.clear()
        assert len(backend) == 0, backend


def test_backend_batch_of_array_rows(rng):
    backend = cascade.MemoryBackend(MIB)
    pool = rng.integers(0, 256, (8, KIB), dtype=np.uint8)
    ids = [f"{i:032x}" for i in range(8)]
    assert backend.put_batch(ids, pool) == 8
    back = np.zeros_like(pool)
    assert backend.get_batch(ids, back) == [KIB] * 8
    assert np.array_equal(back, pool)


def test_backend_put_replaces(tmp_path, rng):
    backend = cascade.MemoryBackend(MIB)
    backend.put("ab" * 16, b"first")
    backend.put("ab" * 16, b"second!")
    out = bytearray(16)
    assert backend.get("ab" * 16, out) == (True, 7)
    assert bytes(out[:7]) == b"second!"


def test_full_backend_raises_tier_full(rng):
    backend = cascade.MemoryBackend(256 * KIB)
    backend.put("1" * 32, np.zeros(128 * KIB, np.uint8))
    backend.put("2" * 32, np.zeros(128 * KIB, np.uint8))
    with pytest.raises(cascade.TierFullError):
        backend.put("3" * 32, np.zeros(128 * KIB, np.uint8))
    assert backend.used <= backend.capacity


@pytest.mark.skipif(not has_kind("shm"), reason="this build has no shm tier")
def test_shm_backend_reopens_its_pool(tmp_path, rng):
    path = str(tmp_path / "reopen.shm")
    block = random_block(rng, 4 * KIB)
    first = cascade.ShmBackend(2 * MIB, path)
    first.put("c" * 32, block)
    first.flush()
    del first
    again = cascade.ShmBackend(2 * MIB, path)
    out = np.zeros(4 * KIB, np.uint8)
    assert again.get("c" * 32, out) == (True, 4 * KIB)
    assert np.array_equal(out, block)


def test_gpu_backend_without_a_gpu_raises_unavailable():
    try:
        gpu = cascade.GPUBackend(64 * MIB, device_id=0)
    except cascade.UnavailableError as e:
        assert "GPU" in str(e) or "CUDA" in str(e)
    else:  # a machine with a GPU: the backend must work
        block = np.arange(4096, dtype=np.uint8)
        gpu.put("d" * 32, block)
        out = np.zeros_like(block)
        assert gpu.get("d" * 32, out) == (True, 4096)
        assert np.array_equal(out, block)


class DlpackOnly:
    """Exposes a numpy array through DLPack alone, as a torch CPU tensor does."""

    def __init__(self, array):
        self.array = array

    def __dlpack__(self, *args, **kwargs):
        return self.array.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        return self.array.__dlpack_device__()


def test_dlpack_cpu_tensors_go_in_and_out(store, rng):
    block = random_block(rng, 16 * KIB).view(np.float16).reshape(64, -1)
    block_id = cascade.compute_block_id(DlpackOnly(block))
    assert block_id == cascade.compute_block_id(block)
    store.put(block_id, DlpackOnly(block))
    out = np.zeros_like(block)
    assert store.get(block_id, DlpackOnly(out)) == (True, 16 * KIB)
    assert out.tobytes() == block.tobytes()  # float16 noise holds NaNs: compare bytes


def test_dlpack_non_contiguous_is_refused(store):
    strided = np.zeros((64, 64), np.uint8)[:, ::2]
    with pytest.raises(cascade.InvalidInputError, match="not C-contiguous"):
        store.put("0" * 32, DlpackOnly(strided))


class FakeCudaArray:
    """Looks like a CUDA array to the interface checks; its pointer is never touched
    by a build or machine without a GPU."""

    def __init__(self, nbytes, readonly=False, ptr=0xDEAD0000):
        self.__cuda_array_interface__ = {
            "shape": (nbytes,),
            "typestr": "|u1",
            "data": (ptr, readonly),
            "version": 3,
            "strides": None,
            "stream": None,
        }


def test_cuda_arrays_need_a_driver_in_host_stores(store):
    """A GPU build copies CUDA memory into host tiers itself (pinned DMA); where no driver
    or device is usable, each call says so with UnavailableError and stores nothing. A
    build without GPU support refuses with UnsupportedError. A real device runs the copies
    in test_store_cuda.py; the fake pointer here is never touched."""
    if gpu_available():
        pytest.skip("a usable GPU is present: test_store_cuda.py covers CUDA memory in host stores")
    refused = (cascade.UnavailableError, cascade.UnsupportedError)
    with pytest.raises(refused, match="CUDA driver|GPU memory"):
        store.put("0" * 32, FakeCudaArray(64))
    with pytest.raises(refused, match="CUDA driver|GPU memory"):
        store.put_batch(["0" * 32, "1" * 32], FakeCudaArray(128))
    with pytest.raises(refused, match="CUDA driver|GPU memory"):
        store.put("0" * 32, [FakeCudaArray(32), FakeCudaArray(32)])
    # A stored block cannot be read into CUDA memory either (whole, in pieces, batched);
    # an absent one is simply not found.
    host_block = np.arange(64, dtype=np.uint8)
    store.put("a" * 32, host_block)
    with pytest.raises(refused, match="CUDA driver|GPU memory"):
        store.get("a" * 32, FakeCudaArray(64))
    with pytest.raises(refused, match="CUDA driver|GPU memory"):
        store.get_batch(["a" * 32], [FakeCudaArray(64)])
    with pytest.raises(refused, match="CUDA driver|GPU memory"):
        store.get_batch(["a" * 32], [[FakeCudaArray(32), FakeCudaArray(32, ptr=0xDEAD1000)]])
    # The rows of a CUDA array are checked against the ids before any device work.
    rows = FakeCudaArray(192)
    rows.__cuda_array_interface__ = dict(rows.__cuda_array_interface__, shape=(3, 64))
    with pytest.raises(cascade.InvalidInputError, match="has 3 rows but block_ids has 2 entries"):
        store.put_batch(["0" * 32, "1" * 32], rows)
    assert store.get_stats()["blocks"] == 1
    assert not store.contains("0" * 32)
    out = np.zeros(64, np.uint8)
    assert store.get("a" * 32, out) == (True, 64)
    assert (out == host_block).all()
    # Hashing and the plain memory backend read host bytes only.
    with pytest.raises(cascade.UnsupportedError):
        cascade.compute_block_id(FakeCudaArray(64))
    with pytest.raises(cascade.UnsupportedError, match="GPUBackend"):
        cascade.MemoryBackend(MIB).put("0" * 32, FakeCudaArray(64))


def test_cuda_array_interface_layout_checks(store):
    bad = FakeCudaArray(64)
    bad.__cuda_array_interface__ = dict(bad.__cuda_array_interface__, shape=(8, 8), strides=(1, 8))
    with pytest.raises(cascade.InvalidInputError, match="not C-contiguous"):
        store.put("0" * 32, bad)
    with pytest.raises(cascade.InvalidInputError, match="read-only"):
        cascade.MemoryBackend(MIB).get("0" * 32, FakeCudaArray(64, readonly=True))
