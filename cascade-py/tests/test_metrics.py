"""store.metrics_text() and metrics_listen: the store's figures in Prometheus text."""

import socket
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

import cascade
from conftest import KIB, random_block


def series(text, name):
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_metrics_text_counts_what_the_store_did(store, rng):
    blocks = [random_block(rng, 64 * KIB) for _ in range(3)]
    ids = cascade.compute_block_ids(blocks)
    store.put_batch(ids, blocks)
    store.put(ids[0], blocks[0])  # a dedup hit
    out = np.zeros(64 * KIB, np.uint8)
    assert store.get(ids[1], out) == (True, 64 * KIB)
    assert store.get("f" * 32, out)[0] is False
    text = store.metrics_text()
    assert "# TYPE cascade_tier_hits_total counter" in text
    assert series(text, "cascade_misses_total") == 1
    assert series(text, "cascade_dedup_hits_total") == 1
    stats = store.get_stats()
    first = stats["tiers"][0]
    labels = '{tier="%s",kind="%s"}' % (first["name"], first["kind"])
    assert series(text, "cascade_tier_blocks" + labels) == first["blocks"]
    assert series(text, "cascade_tier_capacity_bytes" + labels) == first["capacity_bytes"]
    store.close()
    with pytest.raises(cascade.InvalidInputError, match="closed"):
        store.metrics_text()


def test_metrics_listen_serves_over_loopback_until_close(tmp_path):
    address = f"127.0.0.1:{free_port()}"
    toml = f"""
metrics_listen = "{address}"
[[tiers]]
kind = "memory"
capacity = "4 MiB"
"""
    store = cascade.CascadeStore.from_toml_str(toml)
    store.put("1" * 32, b"kv" * 1000)
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        body = response.read().decode()
    assert series(body, 'cascade_tier_puts_total{tier="memory0",kind="memory"}') == 1
    store.close()
    deadline = time.monotonic() + 5
    while True:
        try:
            urllib.request.urlopen(f"http://{address}/metrics", timeout=1).close()
        except (urllib.error.URLError, ConnectionError):
            break
        assert time.monotonic() < deadline, "still served after close"
        time.sleep(0.05)


def test_a_taken_metrics_port_fails_the_open():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = "127.0.0.1:%d" % taken.getsockname()[1]
        with pytest.raises(cascade.ConfigError, match=address):
            cascade.CascadeStore.from_toml_str(
                f'metrics_listen = "{address}"\n[[tiers]]\nkind = "memory"\n'
            )
