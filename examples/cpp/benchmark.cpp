// The documented OpenMP benchmark, written against include/cascade.hpp: puts and gets
// --blocks blocks of --size KiB from --threads threads (`#pragma omp parallel for`) and
// prints write and read GB/s (medians of --repeat rounds after one untimed warm-up round),
// plus the time of one single-block get (--latency-ops calls of --latency-size bytes).
//
//   cascade_bench --blocks 10000 --size 128 --threads 32 [--config deployment.toml]
//                 [--batch 64] [--repeat 3] [--latency-ops 200000] [--latency-size 4096]
//
// --batch 1 (the default) is the documented loop: one put / get per block on --threads
// OpenMP threads. --batch N has those threads hand N blocks per put_batch / get_batch call
// to the store, as cascade-bench's threads do with its batches of 64; the store copies the
// blocks of a batch in parallel (on its num_io_threads; 0: rayon's threads, one per core).
// The OpenMP threads then only wait: run batches with OMP_WAIT_POLICY=passive, or libgomp's
// spinning threads take cores from the threads that copy.
// Without --config the store is one shm tier sized for the data set, in a pool file of this
// run in /dev/shm, with num_io_threads = --threads.
// Every block read is checked against what was written; a mismatch is an error (exit 1).
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <vector>

#include "cascade.hpp"

namespace {

struct Args {
    size_t blocks = 1024;
    size_t size_kib = 128;
    int threads = omp_get_max_threads();
    std::string config;
    size_t batch = 1;
    int repeat = 3;
    size_t latency_ops = 200000;
    size_t latency_size = 4096;
};

[[noreturn]] void usage(const char* why) {
    std::fprintf(stderr,
                 "%s\nusage: cascade_bench [--blocks N] [--size KiB] [--threads T] [--config TOML] "
                 "[--batch N] [--repeat R] [--latency-ops N] [--latency-size BYTES]\n",
                 why);
    std::exit(2);
}

size_t parse_count(const char* flag, const char* text) {
    char* end = nullptr;
    unsigned long long v = std::strtoull(text, &end, 10);
    if (end == text || *end != '\0' || v == 0) {
        usage((std::string(flag) + " needs a positive integer, got \"" + text + "\"").c_str());
    }
    return static_cast<size_t>(v);
}

Args parse(int argc, char** argv) {
    Args a;
    for (int i = 1; i < argc; i++) {
        std::string flag = argv[i];
        if (flag == "-h" || flag == "--help") usage("cascade_bench: the documented OpenMP benchmark");
        if (i + 1 >= argc) usage((flag + " needs a value").c_str());
        const char* v = argv[++i];
        if (flag == "--blocks") a.blocks = parse_count("--blocks", v);
        else if (flag == "--size") a.size_kib = parse_count("--size", v);
        else if (flag == "--threads") a.threads = static_cast<int>(parse_count("--threads", v));
        else if (flag == "--config") a.config = v;
        else if (flag == "--batch") a.batch = parse_count("--batch", v);
        else if (flag == "--repeat") a.repeat = static_cast<int>(parse_count("--repeat", v));
        else if (flag == "--latency-ops") a.latency_ops = parse_count("--latency-ops", v);
        else if (flag == "--latency-size") a.latency_size = parse_count("--latency-size", v);
        else usage(("unknown flag " + flag).c_str());
    }
    return a;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Page-aligned bytes, as engines' host buffers are (pinned allocations, mmap) and as
// cascade-bench's are: std::vector's storage starts 16 bytes past a page, and copies
// between a page-aligned pool extent and such a buffer run measurably slower.
struct FreeAligned {
    void operator()(uint8_t* p) const { std::free(p); }
};
using AlignedBytes = std::unique_ptr<uint8_t[], FreeAligned>;

AlignedBytes page_aligned(size_t bytes) {
    const size_t page = 4096, rounded = (bytes + page - 1) / page * page;
    auto* p = static_cast<uint8_t*>(std::aligned_alloc(page, rounded == 0 ? page : rounded));
    if (p == nullptr) throw std::bad_alloc();
    return AlignedBytes(p);
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    size_t n = v.size();
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// The store to measure: --config's deployment, or one shm tier sized for the data set in
// a pool file of this run (`pool` is set to it, for removal at the end).
cascade::CascadeStore open_store(const Args& a, size_t total, std::string& pool) {
    if (!a.config.empty()) return cascade::CascadeStore::from_toml_file(a.config);
    cascade::CascadeConfig config;
    config.gpu_capacity_bytes = 0;
    // Room for the data set plus slot rounding, as cascade-bench sizes its tiers.
    config.shm_capacity_bytes = (total + total / 8 + a.blocks * 8192 + (16u << 20)) >> 20 << 20;
    pool = "/dev/shm/cascade-cpp-bench-" + std::to_string(getpid()) + ".pool";
    config.shm_path = pool;
    config.num_io_threads = a.threads;
    config.promote_on_read = false;
    return cascade::CascadeStore(config);
}

// Puts every block; false when any put failed.
bool put_all(cascade::CascadeStore& store, const Args& a, const std::vector<cascade::BlockId>& ids,
             const uint8_t* src, size_t block) {
    long failures = 0;
    const long n = static_cast<long>(ids.size());
    if (a.batch <= 1) {
#pragma omp parallel for num_threads(a.threads) schedule(dynamic, 64) reduction(+ : failures)
        for (long i = 0; i < n; i++) {
            failures += !store.put(ids[i], src + static_cast<size_t>(i) * block, block);
        }
    } else {
        // --threads OpenMP threads each hand batches to the store, as cascade-bench's
        // threads do; the store copies a batch's blocks in parallel on its threads.
        const long chunks = (n + static_cast<long>(a.batch) - 1) / static_cast<long>(a.batch);
#pragma omp parallel for num_threads(a.threads) schedule(dynamic, 1) reduction(+ : failures)
        for (long c = 0; c < chunks; c++) {
            size_t first = static_cast<size_t>(c) * a.batch, last = std::min(ids.size(), first + a.batch);
            std::vector<cascade::BlockId> chunk(ids.begin() + first, ids.begin() + last);
            std::vector<const uint8_t*> data;
            std::vector<size_t> sizes(last - first, block);
            for (size_t i = first; i < last; i++) data.push_back(src + i * block);
            failures += static_cast<long>(chunk.size() - store.put_batch(chunk, data, sizes));
        }
    }
    return failures == 0;
}

// Gets every block; false when any block was missing or short.
bool get_all(cascade::CascadeStore& store, const Args& a, const std::vector<cascade::BlockId>& ids, uint8_t* dst,
             size_t block) {
    long failures = 0;
    const long n = static_cast<long>(ids.size());
    if (a.batch <= 1) {
#pragma omp parallel for num_threads(a.threads) schedule(dynamic, 64) reduction(+ : failures)
        for (long i = 0; i < n; i++) {
            size_t size = block;
            failures += !store.get(ids[i], dst + static_cast<size_t>(i) * block, &size) || size != block;
        }
    } else {
        const long chunks = (n + static_cast<long>(a.batch) - 1) / static_cast<long>(a.batch);
#pragma omp parallel for num_threads(a.threads) schedule(dynamic, 1) reduction(+ : failures)
        for (long c = 0; c < chunks; c++) {
            size_t first = static_cast<size_t>(c) * a.batch, last = std::min(ids.size(), first + a.batch);
            std::vector<cascade::BlockId> chunk(ids.begin() + first, ids.begin() + last);
            std::vector<uint8_t*> outs;
            std::vector<size_t> sizes(last - first, block);
            for (size_t i = first; i < last; i++) outs.push_back(dst + i * block);
            failures += static_cast<long>(chunk.size() - store.get_batch(chunk, outs, sizes));
        }
    }
    return failures == 0;
}

}  // namespace

int main(int argc, char** argv) {
    Args a = parse(argc, argv);
    const size_t block = a.size_kib * 1024;
    const size_t total = a.blocks * block;
    std::string pool;
    struct RemovePool {
        std::string& path;
        ~RemovePool() {
            if (!path.empty()) std::remove(path.c_str());
        }
    } remove_pool{pool};
    try {
        // Buffers are allocated and touched once, before any timing (the VM hands memory
        // left unused back to the host; touching it again is slow).
        AlignedBytes src_bytes = page_aligned(total), dst_bytes = page_aligned(total);
        uint8_t* src = src_bytes.get();
        uint8_t* dst = dst_bytes.get();
        for (size_t i = 0; i < total; i++) src[i] = static_cast<uint8_t>((i * 2654435761u) >> 13);
        std::vector<cascade::BlockId> ids(a.blocks);
        for (size_t i = 0; i < a.blocks; i++) {
            // Distinct content per block: the first 8 bytes carry the block number.
            std::memcpy(&src[i * block], &i, sizeof i);
            ids[i] = cascade::compute_block_id(&src[i * block], block);
        }
        cascade::CascadeStore store = open_store(a, total, pool);

        std::vector<double> writes, reads;
        for (int round = 0; round <= a.repeat; round++) {
            std::memset(dst, 0, total);
            auto start = std::chrono::steady_clock::now();
            if (!put_all(store, a, ids, src, block)) throw cascade::Exception(cascade::last_error());
            store.flush();
            double w = seconds_since(start);
            start = std::chrono::steady_clock::now();
            if (!get_all(store, a, ids, dst, block)) throw cascade::Exception(cascade::last_error());
            double r = seconds_since(start);
            if (std::memcmp(src, dst, total) != 0) {
                std::fprintf(stderr, "cascade_bench: blocks read back differ from those written\n");
                return 1;
            }
            if (round > 0) {  // round 0 warms the pool, the caches and the threads
                writes.push_back(total / w / 1e9);
                reads.push_back(total / r / 1e9);
            }
            store.clear();
        }

        // One get of one block, many times from one thread: the cost of a call.
        std::vector<uint8_t> small(a.latency_size, 7), out(a.latency_size);
        cascade::BlockId small_id = cascade::compute_block_id(small.data(), small.size());
        if (!store.put(small_id, small.data(), small.size())) throw cascade::Exception(cascade::last_error());
        std::vector<double> per_call;
        for (int round = 0; round <= a.repeat; round++) {
            auto start = std::chrono::steady_clock::now();
            size_t bad = 0;
            for (size_t i = 0; i < a.latency_ops; i++) {
                size_t size = out.size();
                bad += !store.get(small_id, out.data(), &size);
            }
            double t = seconds_since(start);
            if (bad) throw cascade::Exception(cascade::last_error());
            if (round > 0) per_call.push_back(t / static_cast<double>(a.latency_ops) * 1e9);
        }

        std::printf("cascade C++ benchmark: %zu blocks of %zu KiB, %d threads, %s, median of %d\n", a.blocks,
                    a.size_kib, a.threads, a.batch <= 1 ? "one call per block" : "batched", a.repeat);
        if (a.batch > 1) std::printf("batch: %zu blocks per call\n", a.batch);
        std::printf("write_gbps %.2f\nread_gbps %.2f\n", median(writes), median(reads));
        std::printf("single_get_ns %.0f (%zu bytes, %zu calls)\n", median(per_call), a.latency_size,
                    a.latency_ops);
    } catch (const cascade::Exception& e) {
        std::fprintf(stderr, "cascade_bench: %s: %s\n", cascade::error_code_name(e.code()), e.what());
        return 1;
    }
    return 0;
}
