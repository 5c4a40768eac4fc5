// C++ tests of include/cascade.hpp: round trip, a batch with a missing id, bad arguments,
// a full tier, two threads, prefetch and asynchronous batch gets. Built by CMake
// (CMakeLists.txt here) and run by .ci/run; prints "N passed, N failed" and exits
// non-zero on any failure.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include "cascade.hpp"

static int passed = 0, failed = 0;

#define CHECK(cond)                                                                            \
    do {                                                                                       \
        if (cond) {                                                                            \
            passed++;                                                                          \
        } else {                                                                               \
            failed++;                                                                          \
            std::fprintf(stderr, "%s:%d: CHECK failed: %s (last error: %s)\n", __FILE__, __LINE__, \
                         #cond, cascade::last_error().message().c_str());                     \
        }                                                                                      \
    } while (0)

static const char* kMemoryToml = "[[tiers]]\nkind = \"memory\"\ncapacity = \"8 MiB\"\n";

// Distinct seeds give distinct contents (the seed is the first bytes), so ids differ.
static std::vector<uint8_t> pattern(size_t len, unsigned seed) {
    std::vector<uint8_t> v(len);
    for (size_t i = 0; i < len; i++) v[i] = static_cast<uint8_t>(i * 13u + seed * 101u + (i >> 9));
    std::memcpy(v.data(), &seed, std::min(len, sizeof seed));
    return v;
}

static void test_round_trip() {
    auto store = cascade::CascadeStore::from_toml_string(kMemoryToml);
    auto data = pattern(128 * 1024, 1);
    cascade::BlockId id = cascade::compute_block_id(data.data(), data.size());
    CHECK(id.to_hex().size() == 32);
    CHECK(cascade::BlockId(id.to_hex()) == id);

    CHECK(store.put(id, data.data(), data.size()));
    CHECK(store.contains(id));
    std::vector<uint8_t> out(data.size());
    size_t size = out.size();
    CHECK(store.get(id, out.data(), &size));
    CHECK(size == data.size() && out == data);

    bool dedup = false;
    CHECK(store.try_put(id, data.data(), data.size(), &dedup).ok() && dedup);

    cascade::Stats stats = store.get_stats();
    CHECK(stats.blocks == 1 && stats.puts == 1 && stats.dedup_hits == 1 && stats.hits == 1);
    CHECK(stats.tiers.size() == 1 && stats.tiers[0].kind == "memory");

    std::vector<uint32_t> tokens(64);
    for (size_t i = 0; i < tokens.size(); i++) tokens[i] = static_cast<uint32_t>(i * 3);
    auto keys = cascade::prefix_keys("model-a", tokens, 16);
    CHECK(keys.size() == 4);
    CHECK(cascade::prefix_keys("model-b", tokens, 16)[0] != keys[0]);
    CHECK(store.put(keys[0], data.data(), 256) && store.put(keys[1], data.data(), 256));
    CHECK(store.lookup_prefix(keys) == 2);

    CHECK(store.remove(id));
    size = out.size();
    CHECK(!store.get(id, out.data(), &size) && size == 0);
    CHECK(cascade::last_error().code() == cascade::ErrorCode::not_found);
    store.clear();
    CHECK(!store.contains(keys[0]));
    store.flush();

    // RAII: a moved-from store is empty, the new owner works.
    cascade::CascadeStore moved = std::move(store);
    CHECK(moved.put(id, data.data(), 16));
    std::unordered_set<cascade::BlockId> set{id, keys[0], id};
    CHECK(set.size() == 2);
}

static void test_batch_with_missing_id() {
    auto store = cascade::CascadeStore::from_toml_string(kMemoryToml);
    const size_t n = 5;
    std::vector<std::vector<uint8_t>> blocks;
    std::vector<cascade::BlockId> ids;
    std::vector<const uint8_t*> in;
    std::vector<size_t> sizes;
    for (size_t i = 0; i < n; i++) {
        blocks.push_back(pattern(32 * 1024 + i, static_cast<unsigned>(i)));
        ids.push_back(cascade::compute_block_id(blocks[i].data(), blocks[i].size()));
        in.push_back(blocks[i].data());
        sizes.push_back(blocks[i].size());
    }
    std::vector<cascade::ErrorCode> statuses;
    // Store all but the last.
    std::vector<cascade::BlockId> some(ids.begin(), ids.end() - 1);
    std::vector<const uint8_t*> some_in(in.begin(), in.end() - 1);
    std::vector<size_t> some_sizes(sizes.begin(), sizes.end() - 1);
    CHECK(store.put_batch(some, some_in, some_sizes, &statuses) == n - 1);
    CHECK(statuses.size() == n - 1);

    std::vector<std::vector<uint8_t>> outs(n, std::vector<uint8_t>(64 * 1024));
    std::vector<uint8_t*> out_ptrs;
    for (auto& o : outs) out_ptrs.push_back(o.data());
    std::vector<size_t> got(n, 64 * 1024);
    CHECK(store.get_batch(ids, out_ptrs, got, &statuses) == n - 1);
    CHECK(statuses.size() == n && statuses[n - 1] == cascade::ErrorCode::not_found && got[n - 1] == 0);
    for (size_t i = 0; i + 1 < n; i++) {
        CHECK(statuses[i] == cascade::ErrorCode::ok && got[i] == sizes[i]);
        CHECK(std::memcmp(outs[i].data(), blocks[i].data(), sizes[i]) == 0);
    }
    size_t found = 99;
    std::vector<size_t> again(n, 64 * 1024);
    cascade::Error e = store.try_get_batch(ids, out_ptrs, again, nullptr, &found);
    CHECK(e.code() == cascade::ErrorCode::not_found && found == n - 1);
}

static void test_bad_arguments() {
    bool threw = false;
    try {
        cascade::CascadeStore bad = cascade::CascadeStore::from_toml_string("[[tiers]]\nkind = \"nope\"\n");
    } catch (const cascade::Exception& ex) {
        threw = ex.code() == cascade::ErrorCode::config && std::strlen(ex.what()) > 0;
    }
    CHECK(threw);

    cascade::CascadeConfig defaults;
    CHECK(defaults.gpu_capacity_bytes == 32ULL << 30 && defaults.shm_capacity_bytes == 64ULL << 30);
    CHECK(defaults.shm_path == "/dev/shm/cascade" && defaults.lustre_path.empty());
    CHECK(defaults.dedup_enabled && defaults.num_io_threads == 8);
    cascade::CascadeConfig config;
    config.num_io_threads = -1;
    std::optional<cascade::CascadeStore> opened;
    cascade::Error e = cascade::CascadeStore::open(config, opened);
    CHECK(e.code() == cascade::ErrorCode::config && !opened);
    CHECK(e.message().find("num_io_threads") != std::string::npos);

    threw = false;
    try {
        cascade::BlockId id("xyz");
    } catch (const cascade::Exception& ex) {
        threw = ex.code() == cascade::ErrorCode::invalid_input;
    }
    CHECK(threw);

    auto store = cascade::CascadeStore::from_toml_string(kMemoryToml);
    cascade::BlockId id = cascade::compute_block_id(nullptr, 0);
    CHECK(!store.put(id, nullptr, 10));
    CHECK(cascade::last_error().code() == cascade::ErrorCode::invalid_input);
    size_t size = 10;
    CHECK(!store.get(id, nullptr, &size));
    CHECK(store.try_get(id, nullptr, 10, &size).code() == cascade::ErrorCode::invalid_input);
    std::vector<cascade::ErrorCode> statuses{cascade::ErrorCode::internal};
    CHECK(store.try_put_batch({id, id}, {nullptr}, {1}, &statuses).code() == cascade::ErrorCode::invalid_input);
    CHECK(statuses.size() == 1 && statuses[0] == cascade::ErrorCode::internal);
    // No GPU here: a GPU build cannot reach device memory, other builds refuse pointers.
    cascade::ErrorCode no_device =
        cascade_has_gpu_support() ? cascade::ErrorCode::unavailable : cascade::ErrorCode::unsupported;
    CHECK(store.put_device(id, 0x1000, 8).code() == no_device);
}

static void test_full_tier(const std::string& dir) {
    cascade::CascadeConfig config;
    config.gpu_capacity_bytes = 0;
    config.shm_capacity_bytes = 256 * 1024;
    config.shm_path = dir + "/full-cpp.pool";
    config.num_io_threads = 2;
    {
        cascade::CascadeStore store(config);
        auto data = pattern(64 * 1024, 3);
        for (uint64_t i = 0; i < 8; i++) {
            data[0] = static_cast<uint8_t>(i);
            CHECK(store.put(cascade::compute_block_id(data.data(), data.size()), data.data(), data.size()));
        }
        cascade::Stats stats = store.get_stats();
        CHECK(stats.tiers.size() == 1 && stats.tiers[0].kind == "shm");
        CHECK(stats.tiers[0].used_bytes <= stats.tiers[0].capacity_bytes);
        CHECK(stats.evictions > 0 && stats.blocks < 8);
        std::vector<uint8_t> big(1024 * 1024);
        cascade::BlockId big_id = cascade::compute_block_id(big.data(), big.size());
        cascade::Error e = store.try_put(big_id, big.data(), big.size());
        CHECK(e.code() == cascade::ErrorCode::too_large && !e.message().empty());
    }
    std::remove(config.shm_path.c_str());
}

static void test_two_threads() {
    auto store = cascade::CascadeStore::from_toml_string(kMemoryToml);
    int errors[2] = {0, 0};
    auto work = [&](int t) {
        for (uint32_t i = 0; i < 400; i++) {
            auto data = pattern(2048, t * 100000 + i);
            cascade::BlockId id = cascade::compute_block_id(data.data(), data.size());
            if (!store.put(id, data.data(), data.size())) errors[t]++;
            std::vector<uint8_t> out(2048);
            size_t size = out.size();
            if (!store.get(id, out.data(), &size) || size != 2048 || out != data) errors[t]++;
        }
    };
    std::thread a(work, 0), b(work, 1);
    a.join();
    b.join();
    CHECK(errors[0] == 0 && errors[1] == 0);
    CHECK(store.get_stats().blocks == 800);
}

// Two memory tiers: the fast one holds 4 of the 8 blocks, so the oldest 4 start below.
static const char* kTwoTierToml =
    "promote_on_read = false\n"
    "[[tiers]]\nkind = \"memory\"\nname = \"fast\"\ncapacity = \"256 KiB\"\n"
    "[[tiers]]\nkind = \"memory\"\nname = \"slow\"\ncapacity = \"8 MiB\"\n";

static void test_prefetch_and_async_get() {
    auto store = cascade::CascadeStore::from_toml_string(kTwoTierToml);
    const size_t n = 8, len = 64 * 1024;
    std::vector<std::vector<uint8_t>> blocks;
    std::vector<cascade::BlockId> ids;
    for (unsigned i = 0; i < n; i++) {
        blocks.push_back(pattern(len, 700 + i));
        ids.push_back(cascade::compute_block_id(blocks[i].data(), len));
        CHECK(store.put(ids[i], blocks[i].data(), len));
    }
    std::vector<cascade::BlockId> asked(ids.begin(), ids.begin() + 4);
    auto absent = pattern(len, 9999);
    asked.push_back(cascade::compute_block_id(absent.data(), len));

    cascade::Prefetch prefetch = store.prefetch(asked, 0);
    CHECK(prefetch.wait(-1));
    cascade::PrefetchProgress p = prefetch.progress();
    CHECK(p.blocks == 5 && p.missing == 1 && p.pending == 0);
    CHECK(p.ready + p.failed + p.cancelled == 4 && p.ready >= 1);
    CHECK(store.prefetch_stats().prefetched >= 1);
    // A moved-from handle is inert: its destructor frees nothing twice.
    cascade::Prefetch moved = std::move(prefetch);
    CHECK(moved.wait(0));

    // A cancelled prefetch settles: nothing is left pending.
    cascade::Prefetch cancelled = store.prefetch(ids);
    cancelled.cancel();
    CHECK(cancelled.wait(-1) && cancelled.progress().pending == 0);
    bool threw = false;
    try {
        (void)store.prefetch(ids, 7);
    } catch (const cascade::Exception& ex) {
        threw = ex.error().code() == cascade::ErrorCode::invalid_input;
    }
    CHECK(threw);

    // The asynchronous get reads what the synchronous one reads, into the same bytes.
    std::vector<cascade::BlockId> wanted(ids);
    wanted.push_back(asked.back());
    std::vector<std::vector<uint8_t>> outs(wanted.size(), std::vector<uint8_t>(len, 0xAA));
    std::vector<uint8_t*> out_ptrs;
    for (auto& o : outs) out_ptrs.push_back(o.data());
    std::vector<size_t> capacities(wanted.size(), len);
    std::vector<size_t> sizes;
    std::vector<cascade::ErrorCode> statuses;
    std::optional<size_t> found;
    {
        cascade::GetBatchAsync pending = store.get_batch_async(wanted, out_ptrs, capacities);
        found = pending.wait(-1, sizes, &statuses);
    }
    CHECK(found.has_value() && *found == n);
    CHECK(sizes.size() == n + 1 && statuses.size() == n + 1);
    CHECK(statuses[n] == cascade::ErrorCode::not_found && sizes[n] == 0);
    for (size_t i = 0; i < n; i++) {
        CHECK(statuses[i] == cascade::ErrorCode::ok && sizes[i] == len && outs[i] == blocks[i]);
    }
    threw = false;
    try {
        (void)store.get_batch_async(wanted, out_ptrs, std::vector<size_t>(1, len));
    } catch (const cascade::Exception& ex) {
        threw = ex.error().code() == cascade::ErrorCode::invalid_input;
    }
    CHECK(threw);
}

int main(int argc, char** argv) {
    std::string dir = argc > 1 ? argv[1] : "/tmp";
    try {
        test_round_trip();
        test_batch_with_missing_id();
        test_bad_arguments();
        test_full_tier(dir);
        test_two_threads();
        test_prefetch_and_async_get();
    } catch (const cascade::Exception& ex) {
        failed++;
        std::fprintf(stderr, "unexpected exception: %s\n", ex.what());
    }
    std::printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
