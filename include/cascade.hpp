// Cascade C++ API: a header-only C++17 wrapper over the C API (cascade.h), with the names
// and shapes of the documented interface: cascade::CascadeConfig, cascade::CascadeStore
// (put / get / contains / put_batch / get_batch / get_stats / clear / flush) and
// cascade::compute_block_id.
//
// Errors: the documented calls answer bool (put, get) or a count (put_batch, get_batch);
// the reason of a failure is cascade::last_error() on the same thread. Every call also has
// a try_ form returning a cascade::Error (code + message). Construction from a config and
// clear() / flush(), which have no value to answer with, throw cascade::Exception.
//
// Thread safety: one CascadeStore may be used from any number of threads at once (every
// method is const-safe over the internally synchronised store), except that it must not be
// moved from or destroyed while another thread uses it.
//
// Link with libcascade_c (pkg-config: cascade; CMake: find_package(Cascade), target
// Cascade::cascade). Guide: docs/c-api.md.
#ifndef CASCADE_HPP
#define CASCADE_HPP

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cascade.h"

namespace cascade {

/// The kind of a failure: the C API's status codes.
enum class ErrorCode : int {
    ok = CASCADE_STATUS_OK,
    not_found = CASCADE_STATUS_NOT_FOUND,
    tier_full = CASCADE_STATUS_TIER_FULL,
    too_large = CASCADE_STATUS_TOO_LARGE,
    corrupt = CASCADE_STATUS_CORRUPT,
    io = CASCADE_STATUS_IO,
    config = CASCADE_STATUS_CONFIG,
    unavailable = CASCADE_STATUS_UNAVAILABLE,
    plugin = CASCADE_STATUS_PLUGIN,
    invalid_input = CASCADE_STATUS_INVALID_INPUT,
    incompatible = CASCADE_STATUS_INCOMPATIBLE,
    busy = CASCADE_STATUS_BUSY,
    unsupported = CASCADE_STATUS_UNSUPPORTED,
    internal = CASCADE_STATUS_INTERNAL,
};

/// The stable lowercase name of a code ("not_found", "tier_full", ...).
inline const char* error_code_name(ErrorCode code) noexcept {
    return cascade_status_name(static_cast<int32_t>(code));
}

/// A failure's code and readable message; ok() when there was none.
class Error {
public:
    Error() = default;
    Error(ErrorCode code, std::string message) : code_(code), message_(std::move(message)) {}

    /// The error of a C call's status: for a failure, the calling thread's last message.
    static Error from_status(cascade_status status) {
        if (status == CASCADE_STATUS_OK) {
            return Error();
        }
        return Error(static_cast<ErrorCode>(status), cascade_last_error_message());
    }

    bool ok() const noexcept { return code_ == ErrorCode::ok; }
    explicit operator bool() const noexcept { return !ok(); }
    ErrorCode code() const noexcept { return code_; }
    const std::string& message() const noexcept { return message_; }

private:
    ErrorCode code_ = ErrorCode::ok;
    std::string message_;
};

/// The calling thread's last failure (as cascade_last_error_status / _message).
inline Error last_error() {
    return Error::from_status(cascade_last_error_status());
}

/// Thrown by the calls that cannot answer with a value: construction, clear(), flush().
class Exception : public std::runtime_error {
public:
    explicit Exception(Error error)
        : std::runtime_error(error.message()), error_(std::move(error)) {}
    const Error& error() const noexcept { return error_; }
    ErrorCode code() const noexcept { return error_.code(); }

private:
    Error error_;
};

namespace detail {
inline void throw_if_failed(cascade_status status) {
    if (status != CASCADE_STATUS_OK) {
        throw Exception(Error::from_status(status));
    }
}
}  // namespace detail

/// A 128-bit block id: 16 bytes, shown as 32 lowercase hex characters.
struct BlockId {
    std::array<uint8_t, 16> bytes{};

    BlockId() = default;
    explicit BlockId(const std::array<uint8_t, 16>& raw) : bytes(raw) {}
    /// From the 32 hex characters of the documented compute_block_id (either case);
    /// throws Exception (invalid_input) for other text.
    explicit BlockId(std::string_view hex) {
        Error e = parse(hex, *this);
        if (e) {
            throw Exception(std::move(e));
        }
    }

    /// Parses 32 hex characters into out; out is unchanged on failure.
    static Error parse(std::string_view hex, BlockId& out) {
        std::string text(hex);
        cascade_block_id raw;
        cascade_status s = cascade_block_id_from_hex(text.c_str(), &raw);
        if (s == CASCADE_STATUS_OK) {
            out = BlockId(raw);
        }
        return Error::from_status(s);
    }

    /// The 32 lowercase hex characters.
    std::string to_hex() const {
        char text[CASCADE_BLOCK_ID_HEX_LEN];
        if (cascade_block_id_to_hex(raw(), text, sizeof text) != CASCADE_STATUS_OK) {
            return std::string();
        }
        return std::string(text, 32);
    }

    /// The C form.
    cascade_block_id raw() const noexcept {
        cascade_block_id id;
        std::memcpy(id.bytes, bytes.data(), bytes.size());
        return id;
    }
    explicit BlockId(const cascade_block_id& id) { std::memcpy(bytes.data(), id.bytes, bytes.size()); }

    friend bool operator==(const BlockId& a, const BlockId& b) { return a.bytes == b.bytes; }
    friend bool operator!=(const BlockId& a, const BlockId& b) { return a.bytes != b.bytes; }
    friend bool operator<(const BlockId& a, const BlockId& b) { return a.bytes < b.bytes; }
};

/// The documented content id: the first 16 bytes of the SHA-256 of the data.
inline BlockId compute_block_id(const uint8_t* data, size_t size) {
    cascade_block_id id;
    detail::throw_if_failed(cascade_compute_block_id(data, size, &id));
    return BlockId(id);
}

/// Token-prefix keys: one per full block of block_tokens tokens, chained so key i stands
/// for the whole prefix up to block i under namespace_ (model, dtype, layout, shard).
/// Throws Exception (invalid_input) when block_tokens is 0.
inline std::vector<BlockId> prefix_keys(std::string_view namespace_, const std::vector<uint32_t>& tokens,
                                        size_t block_tokens) {
    std::vector<cascade_block_id> raw(block_tokens == 0 ? 0 : tokens.size() / block_tokens);
    size_t count = 0;
    detail::throw_if_failed(cascade_prefix_keys(reinterpret_cast<const uint8_t*>(namespace_.data()),
                                                namespace_.size(), tokens.data(), tokens.size(),
                                                block_tokens, raw.data(), raw.size(), &count));
    std::vector<BlockId> keys;
    keys.reserve(count);
    for (size_t i = 0; i < count; ++i) {
        keys.emplace_back(raw[i]);
    }
    return keys;
}

/// Settings of a store: the documented fields and defaults, plus Cascade's extras.
/// Tiers, fastest first: GPU when gpu_capacity_bytes > 0 (skipped when the machine has no
/// usable GPU, unless gpu_required), shm when shm_capacity_bytes > 0 (the pool is
/// allocated up front: the 64 GiB default needs that much room in /dev/shm), and a file
/// tier when lustre_path is not empty.
struct CascadeConfig {
    size_t gpu_capacity_bytes = 32ULL * 1024 * 1024 * 1024;
    size_t shm_capacity_bytes = 64ULL * 1024 * 1024 * 1024;
    std::string shm_path = "/dev/shm/cascade";
    std::string lustre_path = "";
    bool dedup_enabled = true;
    int num_io_threads = 8;
    // Beyond the documented fields:
    int gpu_device_id = 0;
    bool gpu_required = false;
    size_t lustre_capacity_bytes = 0;  // 0: the file tier's default
    bool promote_on_read = true;

    /// The C form; its strings point into this object.
    cascade_config raw() const {
        cascade_config c;
        cascade_config_default(&c);
        c.gpu_capacity_bytes = gpu_capacity_bytes;
        c.shm_capacity_bytes = shm_capacity_bytes;
        c.shm_path = shm_path.c_str();
        c.lustre_path = lustre_path.c_str();
        c.dedup_enabled = dedup_enabled;
        c.num_io_threads = num_io_threads;
        c.gpu_device_id = gpu_device_id;
        c.gpu_required = gpu_required;
        c.lustre_capacity_bytes = lustre_capacity_bytes;
        c.promote_on_read = promote_on_read;
        return c;
    }
};

/// Counters of one tier.
struct TierStats {
    std::string name;
    std::string kind;
    uint64_t capacity_bytes = 0, used_bytes = 0, blocks = 0, bytes = 0, hits = 0, puts = 0;
    uint64_t evictions = 0, demotions = 0, promotions = 0, corrupt = 0;
};

/// Counters of the store, and per tier (fastest first).
struct Stats {
    uint64_t blocks = 0, bytes = 0, hits = 0, misses = 0, puts = 0, dedup_hits = 0;
    uint64_t dedup_bytes_saved = 0, evictions = 0, demotions = 0, promotions = 0;
    std::vector<TierStats> tiers;
};

/// The tiered KV-block store. Move-only; closes the store when destroyed.
/// Counts of a prefetch's blocks so far (blocks, ready, missing, failed, cancelled,
/// pending), as cascade_prefetch_progress reports them.
using PrefetchProgress = cascade_prefetch_counts;

/// The store's prefetch counters (prefetched, prefetch_hits, prefetch_wasted).
using PrefetchStats = cascade_prefetch_stats;

/// A prefetch running in the background (CascadeStore::prefetch). Destroying it cancels
/// the prefetch unless detach() was called; blocks already moved stay where they went.
/// Move-only; safe to query from several threads.
class Prefetch {
public:
    Prefetch(Prefetch&& other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
    Prefetch& operator=(Prefetch&& other) noexcept {
        if (this != &other) {
            cascade_prefetch_free(handle_);
            handle_ = std::exchange(other.handle_, nullptr);
        }
        return *this;
    }
    Prefetch(const Prefetch&) = delete;
    Prefetch& operator=(const Prefetch&) = delete;
    ~Prefetch() { cascade_prefetch_free(handle_); }

    /// The counts so far; throws Exception on a moved-from handle.
    PrefetchProgress progress() const {
        PrefetchProgress counts{};
        detail::throw_if_failed(cascade_prefetch_progress(handle_, &counts));
        return counts;
    }
    /// Waits at most timeout_ms milliseconds (negative: without a limit); true once every
    /// block is settled.
    bool wait(int64_t timeout_ms = -1) const {
        bool done = false;
        detail::throw_if_failed(cascade_prefetch_wait(handle_, timeout_ms, &done));
        return done;
    }
    /// Stops before the next chunk of blocks; does not wait.
    void cancel() const { detail::throw_if_failed(cascade_prefetch_cancel(handle_)); }
    /// Lets the prefetch run to its end when this object is destroyed.
    void detach() const { detail::throw_if_failed(cascade_prefetch_detach(handle_)); }

private:
    friend class CascadeStore;
    explicit Prefetch(cascade_prefetch_handle* handle) noexcept : handle_(handle) {}
    cascade_prefetch_handle* handle_ = nullptr;
};

/// A batch get running in the background (CascadeStore::get_batch_async). The output
/// buffers must stay valid and untouched until wait() reports the read done or this
/// object is destroyed; destroying it cancels the blocks not started and waits for the
/// others, so the buffers are free once the destructor returns. Move-only.
class GetBatchAsync {
public:
    GetBatchAsync(GetBatchAsync&& other) noexcept
        : handle_(std::exchange(other.handle_, nullptr)), count_(other.count_) {}
    GetBatchAsync& operator=(GetBatchAsync&& other) noexcept {
        if (this != &other) {
            cascade_get_batch_async_free(handle_);
            handle_ = std::exchange(other.handle_, nullptr);
            count_ = other.count_;
        }
        return *this;
    }
    GetBatchAsync(const GetBatchAsync&) = delete;
    GetBatchAsync& operator=(const GetBatchAsync&) = delete;
    ~GetBatchAsync() { cascade_get_batch_async_free(handle_); }

    /// Waits at most timeout_ms milliseconds (negative: without a limit). While the read
    /// runs: returns std::nullopt and leaves sizes and statuses alone. Once it is done:
    /// sizes[i] is block i's size (0 when not stored), statuses (when given) each
    /// item's code as get_batch gives them, and the result is how many were found.
    std::optional<size_t> wait(int64_t timeout_ms, std::vector<size_t>& sizes,
                               std::vector<ErrorCode>* statuses = nullptr) const {
        std::vector<size_t> lens(count_);
        std::vector<cascade_status> st(count_);
        size_t found = 0;
        bool done = false;
        cascade_status status =
            cascade_get_batch_async_wait(handle_, timeout_ms, lens.data(), st.data(), &found, &done);
        if (!done) {
            detail::throw_if_failed(status);
            return std::nullopt;
        }
        sizes = std::move(lens);
        if (statuses != nullptr) {
            statuses->resize(count_);
            for (size_t i = 0; i < count_; ++i) {
                (*statuses)[i] = static_cast<ErrorCode>(st[i]);
            }
        }
        return found;
    }
    /// Stops before the next chunk of blocks (those not read report unavailable).
    void cancel() const { detail::throw_if_failed(cascade_get_batch_async_cancel(handle_)); }

private:
    friend class CascadeStore;
    GetBatchAsync(cascade_get_batch_async_handle* handle, size_t count) noexcept
        : handle_(handle), count_(count) {}
    cascade_get_batch_async_handle* handle_ = nullptr;
    size_t count_ = 0;
};

class CascadeStore {
public:
    /// Opens a store from the documented config; throws Exception on failure.
    explicit CascadeStore(const CascadeConfig& config) {
        cascade_config raw = config.raw();
        detail::throw_if_failed(cascade_open_config(&raw, &handle_));
    }

    /// Opens a store from a TOML file (the format of cascade.toml); throws on failure.
    static CascadeStore from_toml_file(const std::string& path) {
        cascade_store* h = nullptr;
        detail::throw_if_failed(cascade_open_toml_file(path.c_str(), &h));
        return CascadeStore(h);
    }
    /// Opens a store from a TOML document; throws on failure.
    static CascadeStore from_toml_string(const std::string& text) {
        cascade_store* h = nullptr;
        detail::throw_if_failed(cascade_open_toml_str(text.c_str(), &h));
        return CascadeStore(h);
    }

    /// Error-returning form of the constructor: out holds the store on success.
    static Error open(const CascadeConfig& config, std::optional<CascadeStore>& out) {
        cascade_config raw = config.raw();
        cascade_store* h = nullptr;
        Error e = Error::from_status(cascade_open_config(&raw, &h));
        if (!e) {
            out.emplace(CascadeStore(h));
        }
        return e;
    }
    /// Error-returning form of from_toml_file.
    static Error open_toml_file(const std::string& path, std::optional<CascadeStore>& out) {
        cascade_store* h = nullptr;
        Error e = Error::from_status(cascade_open_toml_file(path.c_str(), &h));
        if (!e) {
            out.emplace(CascadeStore(h));
        }
        return e;
    }
    /// Error-returning form of from_toml_string.
    static Error open_toml_string(const std::string& text, std::optional<CascadeStore>& out) {
        cascade_store* h = nullptr;
        Error e = Error::from_status(cascade_open_toml_str(text.c_str(), &h));
        if (!e) {
            out.emplace(CascadeStore(h));
        }
        return e;
    }

    CascadeStore(CascadeStore&& other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
    CascadeStore& operator=(CascadeStore&& other) noexcept {
        if (this != &other) {
            cascade_close(handle_);
            handle_ = std::exchange(other.handle_, nullptr);
        }
        return *this;
    }
    CascadeStore(const CascadeStore&) = delete;
    CascadeStore& operator=(const CascadeStore&) = delete;
    ~CascadeStore() { cascade_close(handle_); }

    // ---- single-block operations ------------------------------------------------------

    /// Stores size bytes under id (with dedup on, an id already stored copies nothing).
    /// False on failure: last_error() says why.
    bool put(const BlockId& id, const uint8_t* data, size_t size) {
        return cascade_put(handle_, id.raw(), data, size, nullptr) == CASCADE_STATUS_OK;
    }

    /// Copies the block into out. *size: on entry the capacity of out in bytes, on return
    /// the block's size (0 when not stored; the size needed when out is too small).
    /// False when not stored or on failure: last_error() says which.
    bool get(const BlockId& id, uint8_t* out, size_t* size) {
        if (size == nullptr) {
            return try_get(id, out, 0, nullptr).ok();
        }
        return get(id, out, *size, size);
    }
    /// As get(id, out, size) with the capacity given apart from the size reported.
    bool get(const BlockId& id, uint8_t* out, size_t capacity, size_t* size) {
        return cascade_get(handle_, id.raw(), out, capacity, size) == CASCADE_STATUS_OK;
    }

    /// Whether id is stored.
    bool contains(const BlockId& id) const {
        bool found = false;
        return cascade_contains(handle_, id.raw(), &found) == CASCADE_STATUS_OK && found;
    }

    /// Removes id; true when it was stored.
    bool remove(const BlockId& id) {
        bool removed = false;
        return cascade_remove(handle_, id.raw(), &removed) == CASCADE_STATUS_OK && removed;
    }

    // ---- batch operations (higher throughput) -----------------------------------------

    /// Stores ids[i] from data[i] (sizes[i] bytes), in parallel. Returns how many were
    /// stored (or deduplicated); statuses, when given, gets each item's code.
    size_t put_batch(const std::vector<BlockId>& ids, const std::vector<const uint8_t*>& data,
                     const std::vector<size_t>& sizes, std::vector<ErrorCode>* statuses = nullptr) {
        size_t stored = 0;
        (void)try_put_batch(ids, data, sizes, statuses, &stored);
        return stored;
    }

    /// Reads ids[i] into outs[i], in parallel. sizes[i]: on entry the capacity of outs[i],
    /// on return the block's size (0 when not stored). Returns how many were found;
    /// statuses, when given, gets each item's code (not_found for a miss).
    size_t get_batch(const std::vector<BlockId>& ids, const std::vector<uint8_t*>& outs,
                     std::vector<size_t>& sizes, std::vector<ErrorCode>* statuses = nullptr) {
        size_t found = 0;
        (void)try_get_batch(ids, outs, sizes, statuses, &found);
        return found;
    }

    // ---- prefetch and asynchronous batch gets --------------------------------------------

    /// Starts moving ids into tier `tier` (a position, 0 the fastest, or
    /// CASCADE_PREFETCH_FASTEST) in the background; throws Exception for a tier that does
    /// not exist. A get of a block being moved waits for it instead of reading it twice.
    Prefetch prefetch(const std::vector<BlockId>& ids, int32_t tier = CASCADE_PREFETCH_FASTEST) const {
        std::vector<cascade_block_id> raw = raw_ids(ids);
        cascade_prefetch_handle* h = nullptr;
        detail::throw_if_failed(cascade_prefetch(handle_, raw.data(), raw.size(), tier, &h));
        return Prefetch(h);
    }
    /// prefetch() of the leading stored keys of a prefix chain (prefix_keys): the blocks
    /// lookup_prefix counts.
    Prefetch prefetch_prefix(const std::vector<BlockId>& keys,
                             int32_t tier = CASCADE_PREFETCH_FASTEST) const {
        std::vector<cascade_block_id> raw = raw_ids(keys);
        cascade_prefetch_handle* h = nullptr;
        detail::throw_if_failed(cascade_prefetch_prefix(handle_, raw.data(), raw.size(), tier, &h));
        return Prefetch(h);
    }
    /// Starts reading ids[i] into outs[i] (capacities[i] bytes) in the background, as
    /// get_batch reads them; throws Exception (invalid_input) for vectors of different
    /// lengths or overlapping buffers.
    GetBatchAsync get_batch_async(const std::vector<BlockId>& ids, const std::vector<uint8_t*>& outs,
                                  const std::vector<size_t>& capacities) const {
        if (outs.size() != ids.size() || capacities.size() != ids.size()) {
            throw Exception(
                Error(ErrorCode::invalid_input, "get_batch_async: ids, outs and capacities differ in length"));
        }
        std::vector<cascade_block_id> raw = raw_ids(ids);
        cascade_get_batch_async_handle* h = nullptr;
        detail::throw_if_failed(
            cascade_get_batch_async(handle_, raw.data(), outs.data(), capacities.data(), ids.size(), &h));
        return GetBatchAsync(h, ids.size());
    }
    /// The store's prefetch counters.
    PrefetchStats prefetch_stats() const {
        PrefetchStats stats{};
        detail::throw_if_failed(cascade_get_prefetch_stats(handle_, &stats));
        return stats;
    }

    // ---- prefix lookups, device memory --------------------------------------------------

    /// How many leading keys of a prefix chain (prefix_keys) are stored.
    size_t lookup_prefix(const std::vector<BlockId>& keys) const {
        std::vector<cascade_block_id> raw = raw_ids(keys);
        size_t hits = 0;
        if (cascade_lookup_prefix(handle_, raw.data(), raw.size(), &hits) != CASCADE_STATUS_OK) {
            return 0;
        }
        return hits;
    }

    /// Stores size bytes of GPU memory at device address src (unsupported without GPU
    /// support in the build, unavailable without a usable GPU).
    Error put_device(const BlockId& id, uint64_t src, size_t size) {
        return Error::from_status(cascade_put_device(handle_, id.raw(), src, size, nullptr));
    }
    /// Copies the block into GPU memory at dst (capacity bytes); *size gets its size.
    Error get_device(const BlockId& id, uint64_t dst, size_t capacity, size_t* size) {
        size_t ignored = 0;
        return Error::from_status(
            cascade_get_device(handle_, id.raw(), dst, capacity, size ? size : &ignored));
    }

    // ---- statistics and maintenance ---------------------------------------------------

    /// Counters of the store and its tiers (zeros if they cannot be read).
    Stats get_stats() const {
        Stats stats;
        (void)try_get_stats(stats);
        return stats;
    }

    /// Removes every block; throws Exception on failure.
    void clear() { detail::throw_if_failed(cascade_clear(handle_)); }
    /// Makes every tier durable; throws Exception on failure.
    void flush() { detail::throw_if_failed(cascade_flush(handle_)); }

    // ---- forms that return the reason ---------------------------------------------------

    Error try_put(const BlockId& id, const uint8_t* data, size_t size, bool* deduplicated = nullptr) {
        return Error::from_status(cascade_put(handle_, id.raw(), data, size, deduplicated));
    }
    Error try_get(const BlockId& id, uint8_t* out, size_t capacity, size_t* size) {
        size_t ignored = 0;
        return Error::from_status(cascade_get(handle_, id.raw(), out, capacity, size ? size : &ignored));
    }
    Error try_contains(const BlockId& id, bool* found) const {
        return Error::from_status(cascade_contains(handle_, id.raw(), found));
    }
    Error try_remove(const BlockId& id, bool* removed = nullptr) {
        return Error::from_status(cascade_remove(handle_, id.raw(), removed));
    }
    Error try_block_size(const BlockId& id, size_t* size) const {
        return Error::from_status(cascade_block_size(handle_, id.raw(), size));
    }
    /// Argument errors (mismatched vector lengths: invalid_input) leave statuses alone.
    Error try_put_batch(const std::vector<BlockId>& ids, const std::vector<const uint8_t*>& data,
                        const std::vector<size_t>& sizes, std::vector<ErrorCode>* statuses = nullptr,
                        size_t* stored = nullptr) {
        if (stored) {
            *stored = 0;
        }
        if (data.size() != ids.size() || sizes.size() != ids.size()) {
            return Error(ErrorCode::invalid_input, "put_batch: ids, data and sizes differ in length");
        }
        std::vector<cascade_block_id> raw = raw_ids(ids);
        std::vector<cascade_status> st(ids.size());
        Error e = Error::from_status(cascade_put_batch(handle_, raw.data(), data.data(), sizes.data(),
                                                       ids.size(), st.data(), stored));
        copy_statuses(e, st, statuses);
        return e;
    }
    Error try_get_batch(const std::vector<BlockId>& ids, const std::vector<uint8_t*>& outs,
                        std::vector<size_t>& sizes, std::vector<ErrorCode>* statuses = nullptr,
                        size_t* found = nullptr) {
        if (found) {
            *found = 0;
        }
        if (outs.size() != ids.size() || sizes.size() != ids.size()) {
            return Error(ErrorCode::invalid_input, "get_batch: ids, outs and sizes differ in length");
        }
        std::vector<cascade_block_id> raw = raw_ids(ids);
        std::vector<size_t> capacities(sizes);
        std::vector<cascade_status> st(ids.size());
        Error e = Error::from_status(cascade_get_batch(handle_, raw.data(), outs.data(), capacities.data(),
                                                       sizes.data(), ids.size(), st.data(), found));
        copy_statuses(e, st, statuses);
        return e;
    }
    Error try_get_stats(Stats& out) const {
        cascade_stats s;
        cascade_status status = cascade_get_stats(handle_, &s);
        if (status != CASCADE_STATUS_OK) {
            return Error::from_status(status);
        }
        out = Stats{s.blocks,   s.bytes,          s.hits,      s.misses,     s.puts, s.dedup_hits,
                    s.dedup_bytes_saved, s.evictions, s.demotions, s.promotions, {}};
        for (size_t i = 0; i < s.tier_count; ++i) {
            cascade_tier_stats t;
            status = cascade_get_tier_stats(handle_, i, &t);
            if (status != CASCADE_STATUS_OK) {
                return Error::from_status(status);
            }
            out.tiers.push_back(TierStats{t.name, t.kind, t.capacity_bytes, t.used_bytes, t.blocks, t.bytes,
                                          t.hits, t.puts, t.evictions, t.demotions, t.promotions, t.corrupt});
        }
        return Error();
    }
    Error try_clear() { return Error::from_status(cascade_clear(handle_)); }
    Error try_flush() { return Error::from_status(cascade_flush(handle_)); }

    /// The C handle, for calls this wrapper does not cover; owned by this object.
    const cascade_store* handle() const noexcept { return handle_; }

private:
    explicit CascadeStore(cascade_store* handle) noexcept : handle_(handle) {}

    static std::vector<cascade_block_id> raw_ids(const std::vector<BlockId>& ids) {
        std::vector<cascade_block_id> raw;
        raw.reserve(ids.size());
        for (const BlockId& id : ids) {
            raw.push_back(id.raw());
        }
        return raw;
    }

    // A call refused for its arguments (invalid_input before any item ran) leaves the
    // statuses unwritten: the caller's vector is then left alone.
    static void copy_statuses(const Error& e, const std::vector<cascade_status>& st,
                              std::vector<ErrorCode>* statuses) {
        if (statuses == nullptr) {
            return;
        }
        if (e.code() == ErrorCode::invalid_input) {
            bool item_failed = false;
            for (cascade_status s : st) {
                item_failed = item_failed || s == CASCADE_STATUS_INVALID_INPUT;
            }
            if (!item_failed) {
                return;
            }
        }
        statuses->resize(st.size());
        for (size_t i = 0; i < st.size(); ++i) {
            (*statuses)[i] = static_cast<ErrorCode>(st[i]);
        }
    }

    cascade_store* handle_ = nullptr;
};

}  // namespace cascade

namespace std {
/// Hashing of ids for unordered containers (their first 8 bytes: ids are hash output).
template <>
struct hash<cascade::BlockId> {
    size_t operator()(const cascade::BlockId& id) const noexcept {
        uint64_t head;
        std::memcpy(&head, id.bytes.data(), sizeof head);
        return static_cast<size_t>(head);
    }
};
}  // namespace std

#endif  // CASCADE_HPP
