"""Helpers the engine tests share (each engine's tests run in that engine's virtualenv
with the Cascade wheel installed)."""

import os
from pathlib import Path


def write_toml(tmp_path: Path, shm: bool = True, file: bool = True, shm_mib: int = 64) -> Path:
    """A Cascade deployment under tmp_path: shm over a file tier, or either alone."""
    parts = ["dedup = true\npromote_on_read = false\n"]
    if shm:
        parts.append(
            f'[[tiers]]\nkind = "shm"\nname = "shm"\ncapacity = "{shm_mib} MiB"\n'
            f'path = "{tmp_path}/pool-{{rank}}.shm"\n'
        )
    if file:
        parts.append(
            f'[[tiers]]\nkind = "file"\nname = "file"\ncapacity = "1 GiB"\n'
            f'path = "{tmp_path}/files"\n'
        )
    path = tmp_path / "cascade.toml"
    path.write_text("\n".join(parts))
    return path


def corrupt_block(directory: Path, payload: bytes) -> int:
    """Flips one byte of every stored copy of `payload` in the files under `directory`
    (a file tier's segments); returns how many copies it changed."""
    needle = payload[4096 : 4096 + 64] if len(payload) >= 4096 + 64 else payload[:64]
    changed = 0
    for root, _, names in os.walk(directory):
        for name in names:
            path = Path(root) / name
            data = bytearray(path.read_bytes())
            at = data.find(needle)
            here = 0
            while at >= 0:
                data[at + 7] ^= 0xFF
                here += 1
                at = data.find(needle, at + 1)
            if here:
                path.write_bytes(bytes(data))
                changed += here
    return changed
