/*
 * example_tier.c: a Cascade tier plugin written in C.
 *
 * A fixed-capacity in-memory table: an open-addressing hash table of at most
 * `max_blocks` blocks whose bytes add up to at most `capacity`. One reader/writer lock
 * per instance makes every call safe from many threads. It exists to prove that the ABI
 * in cascade-plugin.h is language-neutral; the tests load it through the Rust loader and
 * run Cascade's conformance kit on it.
 *
 * Settings (TOML, flat `key = integer` lines):
 *   capacity   = bytes the tier may hold (default 67108864)
 *   max_blocks = most blocks held at once (default 4096)
 *
 * Build: cc -shared -fPIC -fvisibility=hidden -I.. -o libcascade_example_c.so example_tier.c
 */
#include "cascade-plugin.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXPORT __attribute__((visibility("default")))

typedef struct slot {
    cascade_block_id id;
    uint8_t *data; /* NULL marks an empty slot */
    size_t len;
} slot;

typedef struct table {
    pthread_rwlock_t lock;
    slot *slots;
    size_t mask; /* slot count - 1; the count is a power of two above 2 * max_blocks */
    size_t count;
    size_t max_blocks;
    uint64_t capacity;
    uint64_t used;
} table;

/* The calling thread's last error (see the header's rules). */
static _Thread_local char last_error_text[512];

static cascade_status fail(cascade_status status, const char *format, ...) {
    va_list args;
    va_start(args, format);
    vsnprintf(last_error_text, sizeof last_error_text, format, args);
    va_end(args);
    return status;
}

static size_t hash_id(const cascade_block_id *id) {
    uint64_t a, b;
    memcpy(&a, id->bytes, 8);
    memcpy(&b, id->bytes + 8, 8);
    uint64_t x = a ^ (b * 0x9E3779B97F4A7C15ull);
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 29;
    return (size_t)x;
}

/* The slot holding id, or the empty slot where it would go. Caller holds the lock. */
static size_t find(const table *t, const cascade_block_id *id) {
    size_t i = hash_id(id) & t->mask;
    while (t->slots[i].data != NULL && memcmp(t->slots[i].id.bytes, id->bytes, 16) != 0) {
        i = (i + 1) & t->mask;
    }
    return i;
}

/* Empties slot i, shifting later entries of the probe run back (no tombstones). */
static void erase_at(table *t, size_t i) {
    size_t j = i;
    for (;;) {
        j = (j + 1) & t->mask;
        if (t->slots[j].data == NULL) {
            break;
        }
        size_t home = hash_id(&t->slots[j].id) & t->mask;
        /* Move j back to i unless its home lies cyclically in (i, j]. */
        int home_in_gap = (i <= j) ? (home > i && home <= j) : (home > i || home <= j);
        if (!home_in_gap) {
            t->slots[i] = t->slots[j];
            i = j;
        }
    }
    t->slots[i].data = NULL;
    t->slots[i].len = 0;
}

/* Parses `key = integer` lines; rejects anything else with a message. */
static cascade_status parse_config(const char *text, size_t len, uint64_t *capacity,
                                   size_t *max_blocks) {
    char line[256];
    size_t pos = 0;
    while (pos < len) {
        size_t end = pos;
        while (end < len && text[end] != '\n') {
            end++;
        }
        size_t n = end - pos;
        if (n >= sizeof line) {
            return fail(CASCADE_CONFIG, "example-c: setting line too long");
        }
        memcpy(line, text + pos, n);
        line[n] = '\0';
        pos = end + 1;

        char *p = line;
        while (isspace((unsigned char)*p)) {
            p++;
        }
        if (*p == '\0' || *p == '#') {
            continue;
        }
        char key[64];
        char value[128];
        if (sscanf(p, " %63[A-Za-z_] = %127s", key, value) != 2) {
            return fail(CASCADE_CONFIG, "example-c: cannot read setting line `%s`", p);
        }
        errno = 0;
        char *rest = NULL;
        unsigned long long number = strtoull(value, &rest, 10);
        if (errno != 0 || rest == value || *rest != '\0' || value[0] == '-') {
            return fail(CASCADE_CONFIG, "example-c: setting `%s` must be a non-negative integer, got %s",
                        key, value);
        }
        if (strcmp(key, "capacity") == 0) {
            *capacity = number;
        } else if (strcmp(key, "max_blocks") == 0) {
            *max_blocks = (size_t)number;
        } else {
            return fail(CASCADE_CONFIG,
                        "example-c: unknown setting `%s` (known: capacity, max_blocks)", key);
        }
    }
    if (*capacity == 0 || *max_blocks == 0) {
        return fail(CASCADE_CONFIG, "example-c: capacity and max_blocks must be greater than zero");
    }
    if (*max_blocks > ((size_t)1 << 28)) {
        return fail(CASCADE_CONFIG, "example-c: max_blocks above 2^28");
    }
    return CASCADE_OK;
}

static cascade_status ex_create(const uint8_t *config, size_t config_len,
                                cascade_plugin_instance **out) {
    uint64_t capacity = 64ull << 20;
    size_t max_blocks = 4096;
    cascade_status status = parse_config((const char *)config, config_len, &capacity, &max_blocks);
    if (status != CASCADE_OK) {
        return status;
    }
    table *t = calloc(1, sizeof *t);
    if (t == NULL) {
        return fail(CASCADE_PLUGIN, "example-c: out of memory");
    }
    size_t slots = 2;
    while (slots < 2 * max_blocks) {
        slots <<= 1;
    }
    t->slots = calloc(slots, sizeof *t->slots);
    if (t->slots == NULL || pthread_rwlock_init(&t->lock, NULL) != 0) {
        free(t->slots);
        free(t);
        return fail(CASCADE_PLUGIN, "example-c: out of memory");
    }
    t->mask = slots - 1;
    t->max_blocks = max_blocks;
    t->capacity = capacity;
    *out = t;
    return CASCADE_OK;
}

static void ex_destroy(cascade_plugin_instance *instance) {
    table *t = instance;
    for (size_t i = 0; i <= t->mask; i++) {
        free(t->slots[i].data);
    }
    pthread_rwlock_destroy(&t->lock);
    free(t->slots);
    free(t);
}

static cascade_status ex_capability(cascade_plugin_instance *instance,
                                    cascade_plugin_capability *out) {
    table *t = instance;
    out->max_block_size = t->capacity;
    out->flags = 0;
    out->reserved = 0;
    return CASCADE_OK;
}

static uint64_t ex_capacity(cascade_plugin_instance *instance) {
    return ((table *)instance)->capacity;
}

static uint64_t ex_used(cascade_plugin_instance *instance) {
    table *t = instance;
    pthread_rwlock_rdlock(&t->lock);
    uint64_t used = t->used;
    pthread_rwlock_unlock(&t->lock);
    return used;
}

static cascade_status ex_put(cascade_plugin_instance *instance, const cascade_block_id *id,
                             const uint8_t *data, size_t len) {
    table *t = instance;
    if (len > t->capacity) {
        return fail(CASCADE_TOO_LARGE, "example-c: block of %zu bytes exceeds capacity %llu", len,
                    (unsigned long long)t->capacity);
    }
    /* Copy before taking the lock so that writers hold it only for the bookkeeping. */
    uint8_t *copy = malloc(len > 0 ? len : 1);
    if (copy == NULL) {
        return fail(CASCADE_TIER_FULL, "example-c: malloc of %zu bytes failed", len);
    }
    memcpy(copy, data, len);

    pthread_rwlock_wrlock(&t->lock);
    size_t i = find(t, id);
    int present = t->slots[i].data != NULL;
    uint64_t old = present ? t->slots[i].len : 0;
    if (t->used - old + len > t->capacity) {
        uint64_t used = t->used;
        pthread_rwlock_unlock(&t->lock);
        free(copy);
        return fail(CASCADE_TIER_FULL, "example-c: full (used %llu, need %zu, capacity %llu)",
                    (unsigned long long)used, len, (unsigned long long)t->capacity);
    }
    if (!present && t->count >= t->max_blocks) {
        pthread_rwlock_unlock(&t->lock);
        free(copy);
        return fail(CASCADE_TIER_FULL, "example-c: all %zu block slots in use", t->max_blocks);
    }
    uint8_t *previous = t->slots[i].data;
    t->slots[i].id = *id;
    t->slots[i].data = copy;
    t->slots[i].len = len;
    t->used = t->used - old + len;
    if (!present) {
        t->count++;
    }
    pthread_rwlock_unlock(&t->lock);
    free(previous);
    return CASCADE_OK;
}

static cascade_status ex_get(cascade_plugin_instance *instance, const cascade_block_id *id,
                             uint8_t *out, size_t out_cap, size_t *out_len) {
    table *t = instance;
    pthread_rwlock_rdlock(&t->lock);
    size_t i = find(t, id);
    if (t->slots[i].data == NULL) {
        pthread_rwlock_unlock(&t->lock);
        return fail(CASCADE_NOT_FOUND, "example-c: block not found");
    }
    size_t len = t->slots[i].len;
    *out_len = len;
    if (out_cap < len) {
        pthread_rwlock_unlock(&t->lock);
        return fail(CASCADE_INVALID_INPUT, "example-c: buffer of %zu bytes, block of %zu", out_cap,
                    len);
    }
    memcpy(out, t->slots[i].data, len);
    pthread_rwlock_unlock(&t->lock);
    return CASCADE_OK;
}

static cascade_status ex_len_of(cascade_plugin_instance *instance, const cascade_block_id *id,
                                uint64_t *out_len) {
    table *t = instance;
    pthread_rwlock_rdlock(&t->lock);
    size_t i = find(t, id);
    int present = t->slots[i].data != NULL;
    *out_len = present ? t->slots[i].len : 0;
    pthread_rwlock_unlock(&t->lock);
    return present ? CASCADE_OK : fail(CASCADE_NOT_FOUND, "example-c: block not found");
}

static cascade_status ex_remove(cascade_plugin_instance *instance, const cascade_block_id *id,
                                uint8_t *removed) {
    table *t = instance;
    pthread_rwlock_wrlock(&t->lock);
    size_t i = find(t, id);
    uint8_t *data = t->slots[i].data;
    if (data != NULL) {
        t->used -= t->slots[i].len;
        t->count--;
        erase_at(t, i);
    }
    pthread_rwlock_unlock(&t->lock);
    free(data);
    *removed = data != NULL;
    return CASCADE_OK;
}

static cascade_status ex_flush(cascade_plugin_instance *instance) {
    (void)instance;
    return CASCADE_OK;
}

static cascade_status ex_clear(cascade_plugin_instance *instance) {
    table *t = instance;
    pthread_rwlock_wrlock(&t->lock);
    for (size_t i = 0; i <= t->mask; i++) {
        free(t->slots[i].data);
        t->slots[i].data = NULL;
        t->slots[i].len = 0;
    }
    t->count = 0;
    t->used = 0;
    pthread_rwlock_unlock(&t->lock);
    return CASCADE_OK;
}

static cascade_status ex_list_ids(cascade_plugin_instance *instance, cascade_id_visitor visit,
                                  void *ctx) {
    table *t = instance;
    pthread_rwlock_rdlock(&t->lock);
    for (size_t i = 0; i <= t->mask; i++) {
        if (t->slots[i].data != NULL) {
            visit(ctx, &t->slots[i].id, t->slots[i].len);
        }
    }
    pthread_rwlock_unlock(&t->lock);
    return CASCADE_OK;
}

static const char *ex_last_error(cascade_plugin_instance *instance) {
    (void)instance;
    return last_error_text[0] != '\0' ? last_error_text : NULL;
}

static const cascade_plugin_vtable VTABLE = {
    .abi_version = CASCADE_PLUGIN_ABI_VERSION,
    .struct_size = sizeof(cascade_plugin_vtable),
    .name = "example-c",
    .create = ex_create,
    .destroy = ex_destroy,
    .capability = ex_capability,
    .capacity = ex_capacity,
    .used = ex_used,
    .put = ex_put,
    .get = ex_get,
    .len_of = ex_len_of,
    .remove = ex_remove,
    .flush = ex_flush,
    .clear = ex_clear,
    .list_ids = ex_list_ids,
    .last_error = ex_last_error,
};

EXPORT const cascade_plugin_vtable *cascade_plugin_entry(void) {
    return &VTABLE;
}
