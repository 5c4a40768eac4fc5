"""ClusterStore under mpirun (wheels built with the `cluster` feature).

Runs cluster_worker.py on 2 ranks. Skipped, with the reason, where the wheel has no
cluster support or no MPI launcher is installed; CASCADE_REQUIRE_CLUSTER=1 (set by CI for
the cluster wheel) turns those skips into failures.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import cascade

REQUIRED = os.environ.get("CASCADE_REQUIRE_CLUSTER") == "1"


def _skip_or_fail(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"CASCADE_REQUIRE_CLUSTER=1 but {reason}")
    pytest.skip(reason)


def _launcher() -> list:
    program = os.environ.get("CASCADE_MPIRUN", "mpirun")
    if shutil.which(program) is None:
        _skip_or_fail(f"no MPI launcher {program!r} on PATH")
    version = subprocess.run([program, "--version"], capture_output=True, text=True)
    command = [program, "-n", "2"]
    if "Open MPI" in version.stdout + version.stderr:
        command.append("--oversubscribe")
        if os.geteuid() == 0:
            command.append("--allow-run-as-root")
    return command


def test_without_cluster_support_constructing_says_how_to_build_it():
    if hasattr(cascade._native, "ClusterStore"):
        pytest.skip("this wheel has cluster support (the worker test covers it)")
    with pytest.raises(cascade.UnsupportedError, match="--features gpu,cluster"):
        cascade.ClusterStore()


def test_two_ranks_share_blocks_and_dedup(tmp_path):
    if not hasattr(cascade._native, "ClusterStore"):
        _skip_or_fail("this wheel was built without the `cluster` feature")
    worker = Path(__file__).with_name("cluster_worker.py")
    command = _launcher() + [sys.executable, str(worker), str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    for rank in range(2):
        assert f"rank {rank}: cluster checks passed" in output, output
