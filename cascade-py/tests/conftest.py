"""Shared fixtures: small stores on temporary paths, so tests never touch /dev/shm pools
of other users or runs."""

import os

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


REQUIREMENTS = ("gpu", "redis", "mpi", "io_uring")


def required(requirement: str) -> bool:
    """Whether CASCADE_REQUIRE (comma-separated, or `all`) names `requirement`; the same
    rules as cascade-core's require module, so a typo fails instead of passing as a skip."""
    names = [n.strip().lower() for n in os.environ.get("CASCADE_REQUIRE", "").split(",") if n.strip()]
    unknown = [n for n in names if n != "all" and n not in REQUIREMENTS]
    if unknown:
        pytest.fail(f"CASCADE_REQUIRE: unknown requirement {unknown[0]!r}; known: {', '.join(REQUIREMENTS)}, all")
    return "all" in names or requirement in names


def skip_unless_present(requirement: str, reason: str, allow_module_level: bool = False) -> None:
    """Skips with `reason`, or fails where CASCADE_REQUIRE names `requirement`."""
    if required(requirement):
        pytest.fail(f"CASCADE_REQUIRE names {requirement}, so this test may not skip: {reason}")
    pytest.skip(reason, allow_module_level=allow_module_level)


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
