/* C tests of the Cascade C API (include/cascade.h): round trip, a batch with a missing
 * id, bad arguments, a full tier, two threads. Built by CMake (CMakeLists.txt here) and
 * run by .ci/run; prints "N passed, N failed" and exits non-zero on any failure. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cascade.h"

static int passed = 0, failed = 0;

#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (cond) {                                                                   \
            passed++;                                                                 \
        } else {                                                                      \
            failed++;                                                                 \
            fprintf(stderr, "%s:%d: CHECK failed: %s (last error: %s)\n", __FILE__,   \
                    __LINE__, #cond, cascade_last_error_message());                   \
        }                                                                             \
    } while (0)

#define BLOCK (64 * 1024)

static const char *MEMORY_TOML =
    "dedup = true\n"
    "[[tiers]]\n"
    "kind = \"memory\"\n"
    "capacity = \"8 MiB\"\n";

static cascade_block_id id_of(uint64_t n) {
    cascade_block_id id;
    memset(&id, 0, sizeof id);
    memcpy(id.bytes, &n, sizeof n);
    id.bytes[15] = 0xc5;
    return id;
}

static void fill(uint8_t *buf, size_t len, unsigned seed) {
    for (size_t i = 0; i < len; i++) {
        buf[i] = (uint8_t)(i * 31u + seed * 7u + (i >> 8));
    }
}

static void test_round_trip(void) {
    cascade_store *store = NULL;
    CHECK(cascade_open_toml_str(MEMORY_TOML, &store) == CASCADE_STATUS_OK && store != NULL);
    if (!store) return;

    uint8_t *data = malloc(BLOCK), *out = malloc(BLOCK);
    fill(data, BLOCK, 1);
    cascade_block_id id;
    CHECK(cascade_compute_block_id(data, BLOCK, &id) == CASCADE_STATUS_OK);

    bool dedup = true;
    CHECK(cascade_put(store, id, data, BLOCK, &dedup) == CASCADE_STATUS_OK);
    CHECK(!dedup);
    CHECK(cascade_put(store, id, data, BLOCK, &dedup) == CASCADE_STATUS_OK);
    CHECK(dedup);

    bool found = false;
    CHECK(cascade_contains(store, id, &found) == CASCADE_STATUS_OK && found);
    size_t len = 0;
    CHECK(cascade_block_size(store, id, &len) == CASCADE_STATUS_OK && len == BLOCK);

    memset(out, 0, BLOCK);
    CHECK(cascade_get(store, id, out, BLOCK, &len) == CASCADE_STATUS_OK);
    CHECK(len == BLOCK && memcmp(out, data, BLOCK) == 0);

    /* Too small a buffer: nothing copied, the size needed reported. */
    memset(out, 0xee, BLOCK);
    CHECK(cascade_get(store, id, out, BLOCK - 1, &len) == CASCADE_STATUS_INVALID_INPUT);
    CHECK(len == BLOCK && out[0] == 0xee);
    /* A size query: no buffer. */
    CHECK(cascade_get(store, id, NULL, 0, &len) == CASCADE_STATUS_INVALID_INPUT && len == BLOCK);

    /* Hex forms round-trip. */
    char hex[CASCADE_BLOCK_ID_HEX_LEN];
    cascade_block_id back;
    CHECK(cascade_block_id_to_hex(id, hex, sizeof hex) == CASCADE_STATUS_OK && strlen(hex) == 32);
    CHECK(cascade_block_id_from_hex(hex, &back) == CASCADE_STATUS_OK &&
          memcmp(&back, &id, sizeof id) == 0);

    /* Prefix keys: the first two blocks are stored, the third is not. */
    uint32_t tokens[48];
    for (uint32_t i = 0; i < 48; i++) tokens[i] = 1000 + i;
    cascade_block_id keys[3];
    size_t n_keys = 0;
    const char *ns = "test-model";
    CHECK(cascade_prefix_keys((const uint8_t *)ns, strlen(ns), tokens, 48, 16, keys, 3, &n_keys) ==
              CASCADE_STATUS_OK &&
          n_keys == 3);
    CHECK(cascade_put(store, keys[0], data, 128, NULL) == CASCADE_STATUS_OK);
    CHECK(cascade_put(store, keys[1], data, 128, NULL) == CASCADE_STATUS_OK);
    size_t hits = 99;
    CHECK(cascade_lookup_prefix(store, keys, 3, &hits) == CASCADE_STATUS_OK && hits == 2);

    cascade_stats stats;
    CHECK(cascade_get_stats(store, &stats) == CASCADE_STATUS_OK);
    CHECK(stats.blocks == 3 && stats.dedup_hits == 1 && stats.tier_count == 1);
    cascade_tier_stats tier;
    CHECK(cascade_get_tier_stats(store, 0, &tier) == CASCADE_STATUS_OK && strcmp(tier.kind, "memory") == 0);

    bool removed = false;
    CHECK(cascade_remove(store, id, &removed) == CASCADE_STATUS_OK && removed);
    CHECK(cascade_get(store, id, out, BLOCK, &len) == CASCADE_STATUS_NOT_FOUND && len == 0);
    CHECK(cascade_last_error_status() == CASCADE_STATUS_NOT_FOUND);
    CHECK(strstr(cascade_last_error_message(), "not") != NULL);
    CHECK(cascade_remove(store, id, &removed) == CASCADE_STATUS_OK && !removed);

    CHECK(cascade_clear(store) == CASCADE_STATUS_OK);
    CHECK(cascade_get_stats(store, &stats) == CASCADE_STATUS_OK && stats.blocks == 0);
    CHECK(cascade_flush(store) == CASCADE_STATUS_OK);

    cascade_close(store);
    free(data);
    free(out);
}

static void test_batch_with_missing_id(void) {
    cascade_store *store = NULL;
    CHECK(cascade_open_toml_str(MEMORY_TOML, &store) == CASCADE_STATUS_OK);
    if (!store) return;
    enum { N = 4 };
    uint8_t *blocks[N], *outs[N];
    const uint8_t *in[N];
    cascade_block_id ids[N];
    size_t lens[N], caps[N], out_lens[N];
    cascade_status statuses[N];
    for (int i = 0; i < N; i++) {
        blocks[i] = malloc(BLOCK);
        outs[i] = malloc(BLOCK);
        fill(blocks[i], BLOCK, 10 + i);
        in[i] = blocks[i];
        ids[i] = id_of(100 + i);
        lens[i] = BLOCK - i; /* sizes differ */
        caps[i] = BLOCK;
    }
    size_t stored = 0;
    /* Store all but the third. */
    CHECK(cascade_put_batch(store, ids, in, lens, 2, statuses, &stored) == CASCADE_STATUS_OK && stored == 2);
    CHECK(cascade_put_batch(store, ids + 3, in + 3, lens + 3, 1, statuses, &stored) == CASCADE_STATUS_OK);

    size_t found = 0;
    cascade_status s = cascade_get_batch(store, ids, outs, caps, out_lens, N, statuses, &found);
    CHECK(s == CASCADE_STATUS_NOT_FOUND);
    CHECK(found == 3);
    for (int i = 0; i < N; i++) {
        if (i == 2) {
            CHECK(statuses[i] == CASCADE_STATUS_NOT_FOUND && out_lens[i] == 0);
        } else {
            CHECK(statuses[i] == CASCADE_STATUS_OK && out_lens[i] == lens[i]);
            CHECK(memcmp(outs[i], blocks[i], lens[i]) == 0);
        }
    }
    /* Overlapping output buffers are refused before anything is read. */
    uint8_t *overlap[2] = {outs[0], outs[0] + 16};
    size_t overlap_caps[2] = {64, 64};
    CHECK(cascade_get_batch(store, ids, overlap, overlap_caps, out_lens, 2, statuses, &found) ==
          CASCADE_STATUS_INVALID_INPUT);
    for (int i = 0; i < N; i++) {
        free(blocks[i]);
        free(outs[i]);
    }
    cascade_close(store);
}

static void test_bad_arguments(void) {
    cascade_store *store = (cascade_store *)0x1;
    CHECK(cascade_open_toml_str(NULL, &store) == CASCADE_STATUS_INVALID_INPUT);
    CHECK(cascade_open_toml_str("tiers = 3", &store) == CASCADE_STATUS_CONFIG && store == NULL);
    CHECK(cascade_open_toml_str("[[tiers]]\nkind = \"no-such-kind\"\n", &store) == CASCADE_STATUS_CONFIG);
    CHECK(strstr(cascade_last_error_message(), "memory") != NULL); /* lists the known kinds */
    CHECK(cascade_open_toml_file("/nonexistent/cascade.toml", &store) == CASCADE_STATUS_CONFIG);
    CHECK(cascade_open_toml_str(MEMORY_TOML, NULL) == CASCADE_STATUS_INVALID_INPUT);

    cascade_config config;
    CHECK(cascade_config_default(NULL) == CASCADE_STATUS_INVALID_INPUT);
    CHECK(cascade_config_default(&config) == CASCADE_STATUS_OK);
    CHECK(config.gpu_capacity_bytes == 32ULL << 30 && config.shm_capacity_bytes == 64ULL << 30);
    CHECK(config.dedup_enabled && config.num_io_threads == 8 && strcmp(config.shm_path, "/dev/shm/cascade") == 0);
    config.num_io_threads = -2;
    CHECK(cascade_open_config(&config, &store) == CASCADE_STATUS_CONFIG && store == NULL);
    CHECK(cascade_open_config(NULL, &store) == CASCADE_STATUS_INVALID_INPUT);

    CHECK(cascade_open_toml_str(MEMORY_TOML, &store) == CASCADE_STATUS_OK);
    uint8_t buf[16] = {0};
    size_t len = 0;
    cascade_block_id id = id_of(1);
    CHECK(cascade_put(NULL, id, buf, sizeof buf, NULL) == CASCADE_STATUS_INVALID_INPUT);
    CHECK(strstr(cascade_last_error_message(), "store is NULL") != NULL);
    CHECK(cascade_put(store, id, NULL, 16, NULL) == CASCADE_STATUS_INVALID_INPUT);
    CHECK(cascade_get(store, id, NULL, 16, &len) == CASCADE_STATUS_INVALID_INPUT);
    CHECK(cascade_get(store, id, buf, sizeof buf, NULL) == CASCADE_STATUS_INVALID_INPUT);
    CHECK(cascade_get(store, id, buf, SIZE_MAX, &len) == CASCADE_STATUS_INVALID_INPUT);
    CHECK(cascade_contains(store, id, NULL) == CASCADE_STATUS_INVALID_INPUT);
    CHECK(cascade_put_batch(store, NULL, NULL, NULL, 3, NULL, NULL) == CASCADE_STATUS_INVALID_INPUT);
    const uint8_t *null_block[1] = {NULL};
    size_t one_len[1] = {8};
    cascade_status st[1] = {CASCADE_STATUS_INTERNAL};
    CHECK(cascade_put_batch(store, &id, null_block, one_len, 1, st, NULL) == CASCADE_STATUS_INVALID_INPUT);
    CHECK(st[0] == CASCADE_STATUS_INTERNAL); /* untouched: refused before any item ran */
    CHECK(cascade_get_stats(store, NULL) == CASCADE_STATUS_INVALID_INPUT);
    cascade_tier_stats tier;
    CHECK(cascade_get_tier_stats(store, 5, &tier) == CASCADE_STATUS_INVALID_INPUT);
    CHECK(cascade_block_id_from_hex("not hex", &id) == CASCADE_STATUS_INVALID_INPUT);
    char small[8];
    CHECK(cascade_block_id_to_hex(id, small, sizeof small) == CASCADE_STATUS_INVALID_INPUT);
    size_t n = 0;
    uint32_t tokens[4] = {1, 2, 3, 4};
    CHECK(cascade_prefix_keys(NULL, 0, tokens, 4, 0, NULL, 0, &n) == CASCADE_STATUS_INVALID_INPUT);

    /* Device pointers on a machine without a GPU: a GPU build cannot reach device memory,
     * a build without GPU support refuses them. */
    cascade_status no_device = cascade_has_gpu_support() ? CASCADE_STATUS_UNAVAILABLE : CASCADE_STATUS_UNSUPPORTED;
    CHECK(cascade_put_device(store, id, 0x1000, 16, NULL) == no_device);
    /* A GPU build looks the block up first: an absent one is not found. */
    CHECK(cascade_get_device(store, id, 0x1000, 16, &len) ==
          (cascade_has_gpu_support() ? CASCADE_STATUS_NOT_FOUND : CASCADE_STATUS_UNSUPPORTED));
    CHECK(cascade_put(store, id, buf, sizeof buf, NULL) == CASCADE_STATUS_OK);
    CHECK(cascade_get_device(store, id, 0x1000, 16, &len) == no_device);

    CHECK(strcmp(cascade_status_name(CASCADE_STATUS_TIER_FULL), "tier_full") == 0);
    CHECK(strcmp(cascade_status_name(99), "unknown") == 0);
    cascade_close(store);
    cascade_close(NULL); /* a no-op */
}

static void test_full_tier(const char *dir) {
    /* One shm tier of 256 KiB opened from the documented config struct. */
    char pool[512];
    snprintf(pool, sizeof pool, "%s/full.pool", dir);
    cascade_config config;
    cascade_config_default(&config);
    config.gpu_capacity_bytes = 0;
    config.shm_capacity_bytes = 256 * 1024;
    config.shm_path = pool;
    config.num_io_threads = 2;
    cascade_store *store = NULL;
    CHECK(cascade_open_config(&config, &store) == CASCADE_STATUS_OK);
    if (!store) return;
    uint8_t *data = malloc(BLOCK);
    for (uint64_t i = 0; i < 8; i++) {
        fill(data, BLOCK, (unsigned)i);
        CHECK(cascade_put(store, id_of(i), data, BLOCK, NULL) == CASCADE_STATUS_OK);
    }
    cascade_tier_stats tier;
    CHECK(cascade_get_tier_stats(store, 0, &tier) == CASCADE_STATUS_OK);
    CHECK(strcmp(tier.kind, "shm") == 0);
    CHECK(tier.used_bytes <= tier.capacity_bytes && tier.capacity_bytes == 256 * 1024);
    CHECK(tier.evictions > 0 && tier.blocks < 8);
    bool found = true;
    CHECK(cascade_contains(store, id_of(0), &found) == CASCADE_STATUS_OK && !found); /* coldest went */
    CHECK(cascade_contains(store, id_of(7), &found) == CASCADE_STATUS_OK && found);
    size_t len = 0;
    CHECK(cascade_get(store, id_of(7), data, BLOCK, &len) == CASCADE_STATUS_OK && len == BLOCK);
    uint8_t *expect = malloc(BLOCK);
    fill(expect, BLOCK, 7);
    CHECK(memcmp(data, expect, BLOCK) == 0);
    /* Larger than the tier can ever hold. */
    uint8_t *big = calloc(1, 512 * 1024);
    CHECK(cascade_put(store, id_of(99), big, 512 * 1024, NULL) == CASCADE_STATUS_TOO_LARGE);
    CHECK(strlen(cascade_last_error_message()) > 0);
    free(big);
    free(expect);
    free(data);
    cascade_close(store);
    unlink(pool);
}

struct worker {
    cascade_store *store;
    unsigned seed;
    int errors;
};

static void *worker_main(void *arg) {
    struct worker *w = arg;
    uint8_t *data = malloc(4096), *out = malloc(4096);
    for (uint64_t i = 0; i < 500; i++) {
        uint64_t n = (uint64_t)w->seed * 1000000u + i;
        fill(data, 4096, (unsigned)n);
        size_t len = 0;
        if (cascade_put(w->store, id_of(n), data, 4096, NULL) != CASCADE_STATUS_OK) w->errors++;
        if (cascade_get(w->store, id_of(n), out, 4096, &len) != CASCADE_STATUS_OK || len != 4096 ||
            memcmp(out, data, 4096) != 0)
            w->errors++;
        /* A miss on this thread must not disturb the other thread's error record. */
        if (cascade_get(w->store, id_of(n + 500000), out, 4096, &len) != CASCADE_STATUS_NOT_FOUND) w->errors++;
        if (cascade_last_error_status() != CASCADE_STATUS_NOT_FOUND) w->errors++;
    }
    free(data);
    free(out);
    return NULL;
}

static void test_two_threads(void) {
    cascade_store *store = NULL;
    CHECK(cascade_open_toml_str(MEMORY_TOML, &store) == CASCADE_STATUS_OK);
    if (!store) return;
    struct worker w[2] = {{store, 1, 0}, {store, 2, 0}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++) CHECK(pthread_create(&t[i], NULL, worker_main, &w[i]) == 0);
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    CHECK(w[0].errors == 0 && w[1].errors == 0);
    cascade_stats stats;
    CHECK(cascade_get_stats(store, &stats) == CASCADE_STATUS_OK && stats.blocks == 1000);
    cascade_close(store);
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "/tmp";
    printf("cascade %s (GPU support: %s)\n", cascade_version(), cascade_has_gpu_support() ? "yes" : "no");
    test_round_trip();
    test_batch_with_missing_id();
    test_bad_arguments();
    test_full_tier(dir);
    test_two_threads();
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
