#!/usr/bin/env bash
# Installs the peers that `cascade-bench --peers` compares Cascade with:
#   redis-server (Debian package) and h5py (PyPI, for the HDF5 peer).
# Idempotent; uses sudo only when not root. One file per block needs nothing.
set -euo pipefail

SUDO=$([ "$(id -u)" = 0 ] || echo sudo)

if ! command -v redis-server >/dev/null 2>&1; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq redis-server
fi
# The bench starts its own server on a free loopback port; the packaged service is not
# needed, so stop it where the package started one (ignore machines without systemd).
$SUDO systemctl disable --now redis-server >/dev/null 2>&1 || true

PYTHON=${PYTHON:-python3}
if ! command -v "$PYTHON" >/dev/null 2>&1; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq python3 python3-pip
fi
if ! "$PYTHON" -c 'import h5py, numpy' >/dev/null 2>&1; then
  "$PYTHON" -m pip install --quiet h5py numpy \
    || "$PYTHON" -m pip install --quiet --break-system-packages h5py numpy
fi

redis-server --version
"$PYTHON" -c 'import h5py; print("h5py", h5py.__version__, "HDF5", h5py.version.hdf5_version)'
