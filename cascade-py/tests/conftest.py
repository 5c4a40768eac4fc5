"""Shared fixtures: small stores on temporary paths, so tests never touch /dev/shm pools
of other users or runs."""

import numpy as np
import pytest

import cascade

KIB = 1024
MIB = 1024 * KIB


def has_kind(kind: str) -> bool:
    return kind in cascade.tier_kinds()


def gpu_available() -> bool:
    """Whether this machine and build can open a GPU tier (checked by opening one)."""
    try:
        cascade.GPUBackend(1 << 20)
    except cascade.UnavailableError:
        return False
    return True


def make_config(tmp_path, shm_bytes=16 * MIB, **kwargs) -> cascade.CascadeConfig:
    """A config with a small host tier whose pool file lives under tmp_path."""
    return cascade.CascadeConfig(
        shm_capacity_bytes=shm_bytes, shm_path=str(tmp_path / "pool.shm"), **kwargs
    )


@pytest.fixture
def store(tmp_path):
    with cascade.CascadeStore(make_config(tmp_path)) as s:
        yield s


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def random_block(rng, size=128 * KIB) -> np.ndarray:
    return rng.integers(0, 256, size, dtype=np.uint8)
