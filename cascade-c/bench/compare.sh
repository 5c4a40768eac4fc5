#!/usr/bin/env bash
# The C++ benchmark (examples/cpp) against cascade-bench on one shm deployment, same
# blocks, block size and threads, in one run; then the per-call cost of a single get
# through Rust, through the C ABI from Rust, and from C++ through libcascade_c.so.
# Runs alternate (Rust, C++, Rust, C++, ...) so that load on a shared machine hits both
# alike; the summary is the median over rounds of each run's median.
#
# Usage: cascade-c/bench/compare.sh [OUT_DIR]
#   env: BLOCKS (1024), SIZE_KIB (128), THREADS (2), ROUNDS (3), REPEAT (5)
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$repo"
out="${1:-$repo/target/capi-compare}"
blocks="${BLOCKS:-1024}"; size="${SIZE_KIB:-128}"; threads="${THREADS:-2}"
rounds="${ROUNDS:-3}"; repeat="${REPEAT:-5}"
mkdir -p "$out"

bash cascade-c/install.sh --prefix "$out/prefix" >/dev/null
cmake -S examples/cpp -B "$out/example" -DCMAKE_PREFIX_PATH="$out/prefix" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$out/example" >/dev/null
cargo build --release -p cascade-bench >/dev/null 2>&1
cpp="$out/example/cascade_bench"
rust="$repo/target/release/cascade-bench"

# The deployment both measure: one shm tier; cascade-bench keeps its settings and gives
# its own pool file the size the data set needs.
cat > "$out/shm.toml" <<TOML
dedup = true
promote_on_read = false
num_io_threads = 0
[[tiers]]
kind = "shm"
name = "shm"
capacity = "$(( (blocks * size * 9 / 8 / 1024) + 64 )) MiB"
path = "/dev/shm/cascade-capi-compare-$$.pool"
TOML
trap 'rm -f /dev/shm/cascade-capi-compare-$$.pool' EXIT

for round in $(seq 1 "$rounds"); do
  for batch in 64 1; do
    "$rust" --config "$out/shm.toml" --tier shm --section tiers --blocks "$blocks" --size "$size" \
      --threads "$threads" --repeat "$repeat" --batch "$batch" --no-progress \
      --json "$out/rust-b$batch-r$round.json" > "$out/rust-b$batch-r$round.txt"
    # Batches: the OpenMP threads only wait while rayon's threads copy, so they must sleep
    # rather than spin (libgomp spins by default and would take the copiers' cores).
    wait_policy=active; [ "$batch" -gt 1 ] && wait_policy=passive
    OMP_WAIT_POLICY="$wait_policy" "$cpp" --config "$out/shm.toml" --blocks "$blocks" --size "$size" --threads "$threads" \
      --repeat "$repeat" --batch "$batch" --latency-ops 200000 --latency-size 4096 \
      > "$out/cpp-b$batch-r$round.txt"
  done
done

CASCADE_C_BENCH_CONFIG="$out/shm.toml" cargo bench --profile release -p cascade-c --bench call_overhead \
  -- --noplot > "$out/call_overhead.txt" 2>&1

python3 - "$out" "$rounds" <<'PY'
import json, re, statistics, sys, pathlib
out, rounds = pathlib.Path(sys.argv[1]), int(sys.argv[2])
def rust(batch, r):
    rows = json.loads((out / f"rust-b{batch}-r{r}.json").read_text())["tiers"]
    row = next(t for t in rows if t["kind"] == "shm")
    return row["write_gbps"]["median"], row["read_gbps"]["median"]
def cpp(batch, r):
    text = (out / f"cpp-b{batch}-r{r}.txt").read_text()
    get = lambda key: float(re.search(rf"^{key} ([0-9.]+)", text, re.M).group(1))
    return get("write_gbps"), get("read_gbps"), get("single_get_ns")
print("| calls | Rust write | C++ write | C++/Rust | Rust read | C++ read | C++/Rust |")
print("|---|---|---|---|---|---|---|")
for batch in (64, 1):
    rw = statistics.median(rust(batch, r)[0] for r in range(1, rounds + 1))
    rr = statistics.median(rust(batch, r)[1] for r in range(1, rounds + 1))
    cw = statistics.median(cpp(batch, r)[0] for r in range(1, rounds + 1))
    cr = statistics.median(cpp(batch, r)[1] for r in range(1, rounds + 1))
    label = f"put_batch / get_batch of {batch}" if batch > 1 else "one put / get per block (C++), batch of 1 (Rust)"
    print(f"| {label} | {rw:.2f} | {cw:.2f} | {cw / rw:.0%} | {rr:.2f} | {cr:.2f} | {cr / rr:.0%} |")
ns = statistics.median(cpp(b, r)[2] for b in (64, 1) for r in range(1, rounds + 1))
print(f"\nsingle get of 4096 bytes from C++ through libcascade_c.so: {ns:.0f} ns (median of rounds)")
text = (out / "call_overhead.txt").read_text()
for name in ("rust CascadeStore::get", "C ABI cascade_get"):
    m = re.search(re.escape(name) + r"\s*\n?\s*time:\s*\[([^\]]+)\]", text)
    print(f"{name}: {m.group(1) if m else 'not found'}")
PY
