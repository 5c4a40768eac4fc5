#!/usr/bin/env bash
# How far bare memory copies scale from one core to two on this machine: the baseline for
# the cluster bench's local-read scaling (docs/benchmarks.md, "Cluster"). A C loop copies
# 128 MiB in 128 KiB memcpy pieces, 41 passes (long enough for the two to overlap), and prints the median GB/s; it runs alone
# pinned to core 0, then twice at once pinned to cores 0 and 1. Needs cc and taskset.
#
#   scripts/memcpy-scaling.sh [ROUNDS]   # default 3
set -euo pipefail
rounds="${1:-3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cat > "$work/copy.c" <<'C'
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#define PASSES 41
int main(void) {
    const size_t total = 128u << 20, piece = 128u << 10;
    char *src = malloc(total), *dst = malloc(total);
    if (!src || !dst) return 1;
    memset(src, 1, total);
    memset(dst, 0, total);
    double rate[PASSES];
    for (int pass = 0; pass < PASSES; pass++) {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (size_t at = 0; at < total; at += piece) memcpy(dst + at, src + at, piece);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        rate[pass] = total / ((t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9) / 1e9;
    }
    for (int i = 0; i < PASSES; i++)
        for (int j = i + 1; j < PASSES; j++)
            if (rate[j] < rate[i]) { double t = rate[i]; rate[i] = rate[j]; rate[j] = t; }
    printf("%.2f\n", rate[PASSES / 2]);
    return dst[5] != 1;
}
C
cc -O2 "$work/copy.c" -o "$work/copy"
for round in $(seq 1 "$rounds"); do
  one=$(taskset -c 0 "$work/copy")
  two=$( (taskset -c 0 "$work/copy" & taskset -c 1 "$work/copy" & wait) | tr '\n' ' ')
  echo "round $round: one process $one GB/s; two at once ${two% } GB/s"
done
