"""Batch calls: one crossing into Rust for many blocks, per-item outcomes."""

import numpy as np
import pytest

import cascade
from conftest import KIB, random_block


def test_put_batch_then_get_batch(store, rng):
    blocks = [random_block(rng, 32 * KIB) for _ in range(40)]
    ids = cascade.compute_block_ids(blocks)
    assert store.put_batch(ids, blocks) == 40
    outs = [np.zeros(32 * KIB, dtype=np.uint8) for _ in blocks]
    assert store.get_batch(ids, outs) == [32 * KIB] * 40
    for block, out in zip(blocks, outs):
        assert np.array_equal(block, out)


def test_batch_accepts_tuples_and_mixed_buffers(store, rng):
    blocks = [random_block(rng, KIB) for _ in range(3)]
    ids = tuple(cascade.compute_block_ids(blocks))
    store.put_batch(ids, (blocks[0], blocks[1].tobytes(), bytearray(blocks[2].tobytes())))
    outs = (bytearray(KIB), np.zeros(KIB, np.uint8), memoryview(bytearray(KIB)))
    assert store.get_batch(ids, outs) == [KIB] * 3
    assert bytes(outs[0]) == blocks[0].tobytes()
    assert np.array_equal(outs[1], blocks[1])
    assert bytes(outs[2]) == blocks[2].tobytes()


def test_get_batch_reports_missing_blocks_as_none(store, rng):
    block = random_block(rng, KIB)
    block_id = cascade.compute_block_id(block)
    store.put(block_id, block)
    outs = [np.zeros(KIB, np.uint8), np.zeros(KIB, np.uint8)]
    assert store.get_batch(["1" * 32, block_id], outs) == [None, KIB]
    assert np.array_equal(outs[1], block)
    assert store.get_stats()["misses"] == 1


def test_batch_dedup_counts(store, rng):
    block = random_block(rng, KIB)
    block_id = cascade.compute_block_id(block)
    store.put(block_id, block)
    assert store.put_batch([block_id, block_id], [block, block]) == 2
    stats = store.get_stats()
    assert stats["blocks"] == 1
    assert stats["dedup_hits"] >= 2


def test_batch_slices_of_one_big_array(store, rng):
    # An engine's KV pool: one array, blocks are rows. Rows of a C-contiguous 2-D array
    # are themselves contiguous and go in without a copy.
    pool = rng.integers(0, 256, (16, 8 * KIB), dtype=np.uint8)
    ids = [f"{i:032x}" for i in range(16)]
    store.put_batch(ids, list(pool))
    back = np.zeros_like(pool)
    assert store.get_batch(ids, list(back)) == [8 * KIB] * 16
    assert np.array_equal(back, pool)


def test_empty_batches(store):
    assert store.put_batch([], []) == 0
    assert store.get_batch([], []) == []


@pytest.mark.parametrize(
    "empty",
    [
        lambda: [],
        lambda: (),
        lambda: np.zeros((0, 4 * KIB), np.uint8),
        lambda: np.zeros(0, np.uint8),
        lambda: bytearray(),
    ],
    ids=["list", "tuple", "2-D array", "1-D array", "bytearray"],
)
def test_an_empty_batch_in_any_form_does_nothing(store, empty):
    assert store.put_batch([], empty()) == 0
    assert store.get_batch([], empty()) == []
    assert len(store) == 0
    backend = cascade.MemoryBackend(1 << 20)
    assert backend.put_batch([], empty()) == 0
    assert backend.get_batch([], empty()) == []


def test_rows_must_match_the_ids(store, rng):
    ids = [f"{i + 1:032x}" for i in range(2)]
    three = rng.integers(0, 256, (3, 64 * KIB), dtype=np.uint8)
    with pytest.raises(cascade.InvalidInputError, match="has 3 rows but block_ids has 2 entries"):
        store.put_batch(ids, three)
    assert len(store) == 0, "nothing is stored from a batch whose rows do not match"
    store.put_batch(ids, three[:2])
    outs = np.zeros((3, 64 * KIB), np.uint8)
    with pytest.raises(cascade.InvalidInputError, match="has 3 rows but block_ids has 2 entries"):
        store.get_batch(ids, outs)
    assert not outs.any(), "nothing is written into rows that do not match"
    with pytest.raises(cascade.InvalidInputError, match="has 2 rows but block_ids has 0 entries"):
        store.put_batch([], three[:2])
    with pytest.raises(cascade.InvalidInputError, match="0 entries"):
        store.get_batch([], bytearray(10))
    backend = cascade.MemoryBackend(1 << 20)
    with pytest.raises(cascade.InvalidInputError, match="has 3 rows but block_ids has 2 entries"):
        backend.put_batch(ids, three)
    with pytest.raises(cascade.InvalidInputError, match="has 3 rows but block_ids has 2 entries"):
        backend.get_batch(ids, outs)
    # A 3-D pool (blocks x layers x bytes) is split on its first dimension.
    pool = rng.integers(0, 256, (2, 4, KIB), dtype=np.uint8)
    more = [f"{i + 10:032x}" for i in range(2)]
    assert store.put_batch(more, pool) == 2
    back = np.zeros_like(pool)
    assert store.get_batch(more, back) == [4 * KIB] * 2
    assert np.array_equal(back, pool)


def test_length_mismatch_is_invalid_input(store):
    with pytest.raises(cascade.InvalidInputError, match="2 entries"):
        store.put_batch(["0" * 32, "1" * 32], [b"x"])
    with pytest.raises(cascade.InvalidInputError):
        store.get_batch(["0" * 32], [])


def test_overlapping_outputs_are_refused(store, rng):
    block = random_block(rng, KIB)
    ids = cascade.compute_block_ids([block, block[::-1].copy()])
    store.put_batch(ids, [block, block[::-1].copy()])
    shared = np.zeros(2 * KIB, np.uint8)
    with pytest.raises(cascade.InvalidInputError, match="share memory"):
        store.get_batch(ids, [shared[: KIB + 1], shared[KIB:]])
    with pytest.raises(cascade.InvalidInputError, match="share memory"):
        store.get_batch(ids, [shared, shared])
    # Adjacent, non-overlapping views of one array are fine.
    assert store.get_batch(ids, [shared[:KIB], shared[KIB:]]) == [KIB, KIB]


def test_one_bad_item_raises_but_the_rest_are_read(store, rng):
    blocks = [random_block(rng, KIB) for _ in range(3)]
    ids = cascade.compute_block_ids(blocks)
    store.put_batch(ids, blocks)
    outs = [np.zeros(KIB, np.uint8), np.zeros(10, np.uint8), np.zeros(KIB, np.uint8)]
    with pytest.raises(cascade.InvalidInputError) as info:
        store.get_batch(ids, outs)
    assert info.value.context["index"] == "1"
    assert np.array_equal(outs[0], blocks[0])
    assert np.array_equal(outs[2], blocks[2])


def test_bad_id_in_batch_stores_nothing(store, rng):
    blocks = [random_block(rng, KIB) for _ in range(2)]
    with pytest.raises(cascade.InvalidInputError):
        store.put_batch([cascade.compute_block_id(blocks[0]), "nope"], blocks)
    assert len(store) == 0


def test_one_array_whose_rows_are_the_blocks(store, rng):
    pool = rng.integers(0, 256, (32, 4 * KIB), dtype=np.uint8)
    ids = [f"{i + 100:032x}" for i in range(32)]
    assert store.put_batch(ids, pool) == 32  # the buffer is taken once for all rows
    one = np.zeros(4 * KIB, np.uint8)
    assert store.get(ids[5], one) == (True, 4 * KIB)
    assert np.array_equal(one, pool[5])
    back = np.zeros_like(pool)
    assert store.get_batch(ids, back) == [4 * KIB] * 32
    assert np.array_equal(back, pool)
    flat = np.zeros(32 * 4 * KIB, np.uint8)  # any buffer that splits evenly works
    store.get_batch(ids, memoryview(flat))
    assert np.array_equal(flat.reshape(32, -1), pool)


def test_array_batch_that_does_not_split_evenly(store):
    with pytest.raises(cascade.InvalidInputError, match="equal blocks"):
        store.put_batch(["0" * 32, "1" * 32, "2" * 32], np.zeros(100, np.uint8))
    with pytest.raises(cascade.InvalidInputError, match="list of blocks"):
        store.put_batch(["0" * 32], 42)


def test_blocks_gathered_from_pieces_and_scattered_into_pieces(store, rng):
    """An engine keeps each layer's K and V apart: a block given as a list of buffers is
    their concatenation, and a list of outputs receives it in order."""
    layers = [[random_block(rng, 4 * KIB) for _ in range(6)] for _ in range(5)]
    ids = [cascade.compute_block_id(np.concatenate(pieces)) for pieces in layers]
    assert store.put_batch(ids, layers) == 5
    for block_id, pieces in zip(ids, layers):
        assert store.size_of(block_id) == 24 * KIB
    # Whole outputs read what the pieces made.
    whole = [np.zeros(24 * KIB, np.uint8) for _ in ids]
    assert store.get_batch(ids, whole) == [24 * KIB] * 5
    for out, pieces in zip(whole, layers):
        assert np.array_equal(out, np.concatenate(pieces))
    # Pieces of other sizes (and kinds of buffer) are filled in order.
    outs = [[np.zeros(10 * KIB, np.uint8), bytearray(14 * KIB)] for _ in ids]
    assert store.get_batch(ids, outs) == [24 * KIB] * 5
    for (a, b), pieces in zip(outs, layers):
        assert np.concatenate([a, np.frombuffer(b, np.uint8)]).tobytes() == np.concatenate(pieces).tobytes()


def test_single_puts_and_gets_take_pieces_too(store, rng):
    pieces = [random_block(rng, 3 * KIB), random_block(rng, 5 * KIB).tobytes()]
    whole = np.concatenate([pieces[0], np.frombuffer(pieces[1], np.uint8)])
    assert store.put("7" * 32, tuple(pieces))
    out = [np.zeros(2 * KIB, np.uint8), np.zeros(6 * KIB, np.uint8)]
    assert store.get("7" * 32, out) == (True, 8 * KIB)
    assert np.array_equal(np.concatenate(out), whole)
    # Pieces with room to spare: the block fills them in order, the rest is untouched.
    roomy = [np.full(6 * KIB, 0xEE, np.uint8), np.full(6 * KIB, 0xEE, np.uint8)]
    assert store.get("7" * 32, roomy) == (True, 8 * KIB)
    assert np.array_equal(roomy[0], whole[: 6 * KIB])
    assert np.array_equal(roomy[1][: 2 * KIB], whole[6 * KIB :])
    assert (roomy[1][2 * KIB :] == 0xEE).all()


def test_pieces_mix_with_whole_blocks_in_one_batch(store, rng):
    whole = random_block(rng, 8 * KIB)
    pieces = [random_block(rng, 2 * KIB) for _ in range(4)]
    ids = ["1" * 32, "2" * 32]
    assert store.put_batch(ids, [whole, pieces]) == 2
    outs = [[np.zeros(4 * KIB, np.uint8), np.zeros(4 * KIB, np.uint8)], np.zeros(8 * KIB, np.uint8)]
    assert store.get_batch(ids, outs) == [8 * KIB, 8 * KIB]
    assert np.array_equal(np.concatenate(outs[0]), whole)
    assert np.array_equal(outs[1], np.concatenate(pieces))


def test_bad_pieces_are_typed_errors(store, rng):
    block = random_block(rng, 8 * KIB)
    store.put("3" * 32, block)
    # Pieces too small in total copy nothing.
    small = [np.zeros(2 * KIB, np.uint8), np.zeros(2 * KIB, np.uint8)]
    with pytest.raises(cascade.InvalidInputError, match="too small"):
        store.get("3" * 32, small)
    assert not small[0].any() and not small[1].any()
    # Two pieces of one output on the same memory would be written twice.
    shared = np.zeros(8 * KIB, np.uint8)
    with pytest.raises(cascade.InvalidInputError, match="share memory"):
        store.get_batch(["3" * 32], [[shared[: 6 * KIB], shared[4 * KIB :]]])
    # Pieces must be buffers, named by their place; a read-only piece cannot be an output.
    with pytest.raises(cascade.InvalidInputError, match=r"data\[1\] must be a C-contiguous buffer"):
        store.put("4" * 32, [block, "text"])
    with pytest.raises((cascade.InvalidInputError, TypeError, BufferError)):
        store.get("3" * 32, [bytes(8 * KIB)])
    assert not store.contains("4" * 32)
