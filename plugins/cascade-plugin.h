/*
 * cascade-plugin.h: the C ABI of Cascade tier plugins.
 *
 * A plugin is a shared library that exports one function,
 *
 *     const cascade_plugin_vtable *cascade_plugin_entry(void);
 *
 * returning a table that lives as long as the library. Cascade loads only the libraries
 * named by `path` in `[[tiers]] kind = "plugin"` entries of its config, checks
 * `abi_version`, then calls `create` once per configured tier with the TOML text of that
 * tier's settings.
 *
 * Rules (the Rust definition is cascade_core::plugin::abi; a test compiles this header
 * against its sizes and offsets):
 *  - Every function may be called from many threads at once on one instance.
 *  - Functions return a cascade_status. On anything but CASCADE_OK the plugin keeps a
 *    message for the calling thread, returned by last_error() until that thread's next
 *    call into the plugin (thread-local storage is the simple way).
 *  - Pointers passed in are valid only during the call; the plugin copies what it keeps.
 *  - No C++ exception, longjmp or abort may leave a plugin function for a bad input;
 *    report an error status instead.
 *  - used() never exceeds capacity(). A full instance answers CASCADE_TIER_FULL (the
 *    store then moves colder blocks down a tier and retries), a block that can never fit
 *    CASCADE_TOO_LARGE.
 *
 * docs/plugins.md is the guide; plugins/example-c/example_tier.c is a complete plugin.
 */
#ifndef CASCADE_PLUGIN_H
#define CASCADE_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CASCADE_PLUGIN_ABI_VERSION 1u

/* Status codes (int32_t). Unknown values are read as CASCADE_PLUGIN. */
typedef int32_t cascade_status;
#define CASCADE_OK 0
#define CASCADE_NOT_FOUND 1      /* the block is not stored */
#define CASCADE_TIER_FULL 2      /* no room now */
#define CASCADE_TOO_LARGE 3      /* the block can never fit */
#define CASCADE_CORRUPT 4        /* stored bytes failed their checksum */
#define CASCADE_IO 5             /* I/O or network error */
#define CASCADE_CONFIG 6         /* bad settings given to create */
#define CASCADE_UNAVAILABLE 7    /* a needed resource is absent (server down) */
#define CASCADE_PLUGIN 8         /* any other failure inside the plugin */
#define CASCADE_INVALID_INPUT 9  /* bad arguments; also an output buffer too small */
#define CASCADE_INCOMPATIBLE 10  /* data written by an incompatible version */
#define CASCADE_BUSY 11          /* the resource is held by someone else */
#define CASCADE_UNSUPPORTED 12   /* the operation is not supported */

/* A block id: 16 raw bytes. */
typedef struct cascade_block_id {
    uint8_t bytes[16];
} cascade_block_id;

/* Bits of cascade_plugin_capability.flags. */
#define CASCADE_CAP_PERSISTENT 1u    /* blocks survive the process */
#define CASCADE_CAP_DEVICE_MEMORY 2u /* bytes live in GPU memory */
#define CASCADE_CAP_SHARED 4u        /* instances in several processes share the storage */
#define CASCADE_CAP_REFRESH 8u       /* the refresh slot reports other instances' changes */
#define CASCADE_CAP_BATCH_NATIVE 16u /* put_batch / get_batch beat one call per block */

typedef struct cascade_plugin_capability {
    uint64_t max_block_size; /* largest block accepted, in bytes */
    uint32_t flags;          /* CASCADE_CAP_* */
    uint32_t reserved;       /* zero */
} cascade_plugin_capability;

/* An instance is whatever the plugin wants it to be. */
typedef void cascade_plugin_instance;

/* Called by list_ids once per stored block (and by refresh per change). */
typedef void (*cascade_id_visitor)(void *ctx, const cascade_block_id *id, uint64_t len);

typedef struct cascade_plugin_vtable {
    uint32_t abi_version; /* CASCADE_PLUGIN_ABI_VERSION */
    uint32_t struct_size; /* sizeof(cascade_plugin_vtable) */
    const char *name;     /* the plugin's name, NUL-terminated, static */

    /* Builds an instance from TOML settings (config_len bytes, not NUL-terminated).
       On failure, last_error(NULL) returns the reason to the calling thread. */
    cascade_status (*create)(const uint8_t *config, size_t config_len,
                             cascade_plugin_instance **out);
    /* Releases an instance; called once, after every other call on it returned. */
    void (*destroy)(cascade_plugin_instance *instance);
    cascade_status (*capability)(cascade_plugin_instance *instance,
                                 cascade_plugin_capability *out);
    uint64_t (*capacity)(cascade_plugin_instance *instance);
    uint64_t (*used)(cascade_plugin_instance *instance);
    /* Stores len bytes under id, replacing an older block of the same id. */
    cascade_status (*put)(cascade_plugin_instance *instance, const cascade_block_id *id,
                          const uint8_t *data, size_t len);
    /* Copies the block into out and writes its length to *out_len. If out_cap is too
       small: CASCADE_INVALID_INPUT with the block's length in *out_len. */
    cascade_status (*get)(cascade_plugin_instance *instance, const cascade_block_id *id,
                          uint8_t *out, size_t out_cap, size_t *out_len);
    /* Writes the stored length to *out_len, or returns CASCADE_NOT_FOUND. */
    cascade_status (*len_of)(cascade_plugin_instance *instance, const cascade_block_id *id,
                             uint64_t *out_len);
    /* Removes id; *removed = 1 when it was present, else 0. */
    cascade_status (*remove)(cascade_plugin_instance *instance, const cascade_block_id *id,
                             uint8_t *removed);
    cascade_status (*flush)(cascade_plugin_instance *instance);
    cascade_status (*clear)(cascade_plugin_instance *instance);
    cascade_status (*list_ids)(cascade_plugin_instance *instance, cascade_id_visitor visit,
                               void *ctx);
    /* The calling thread's last error message for instance (NULL: for create). */
    const char *(*last_error)(cascade_plugin_instance *instance);

    /* Optional slots (NULL: not provided). A plugin built before they were added has a
       smaller struct_size (at least CASCADE_MIN_VTABLE_SIZE) and keeps working: the host
       reads no field past struct_size. */

    /* Stores count blocks (ids[i], lens[i] bytes at data[i]); writes each item's status
       to statuses[i]. Returns CASCADE_OK when every item was tried, else an error for the
       whole call. NULL: the host calls put per block. */
    cascade_status (*put_batch)(cascade_plugin_instance *instance, const cascade_block_id *ids,
                                const uint8_t *const *data, const size_t *lens, size_t count,
                                cascade_status *statuses);
    /* Reads count blocks (ids[i] into caps[i] bytes at outs[i]); writes out_lens[i] and
       statuses[i] (a short buffer: CASCADE_INVALID_INPUT). Returns as put_batch. */
    cascade_status (*get_batch)(cascade_plugin_instance *instance, const cascade_block_id *ids,
                                uint8_t *const *outs, const size_t *caps, size_t count,
                                size_t *out_lens, cascade_status *statuses);
    /* For a shared instance (CASCADE_CAP_SHARED | CASCADE_CAP_REFRESH): looks at the
       storage again and calls added(ctx, id, len) for each block other instances stored
       or replaced since this one opened or last refreshed, removed(ctx, id, 0) for each
       they removed; never this instance's own changes. */
    cascade_status (*refresh)(cascade_plugin_instance *instance, cascade_id_visitor added,
                              cascade_id_visitor removed, void *ctx);
} cascade_plugin_vtable;

/* The struct_size of a table without the optional slots. */
#define CASCADE_MIN_VTABLE_SIZE offsetof(cascade_plugin_vtable, put_batch)

/* The one symbol a plugin exports. */
const cascade_plugin_vtable *cascade_plugin_entry(void);

#ifdef __cplusplus
}
#endif

#endif /* CASCADE_PLUGIN_H */
