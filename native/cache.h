// The feature cache as plain C++17: a sharded LRU of byte strings with a per-entry TTL, limited
// by entry count and by bytes. No Node headers, so native/test/cache_test.cc tests it alone;
// native/binding.cc puts one process-wide instance behind N-API.
//
// Layout: N shards (a power of two) chosen by the top bits of a 64-bit key hash. Each shard has
// its own mutex, an open-addressing table (linear probing, backward-shift deletion) indexed by
// the low bits of the same hash, and an intrusive doubly linked LRU list. An entry is one
// allocation: header, then key bytes, then value bytes. Allocation and freeing happen outside
// the shard lock; a read allocates nothing.
#ifndef SCORELINE_NATIVE_CACHE_H_
#define SCORELINE_NATIVE_CACHE_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <type_traits>

namespace scoreline {

// Milliseconds since an arbitrary fixed origin, never going backwards. Tests inject one; an empty
// function means std::chrono::steady_clock. Called only for entries that carry a TTL.
using MonotonicClockMs = std::function<uint64_t()>;

// 64-bit hash of a key (multiply-rotate over 8-byte words, then a full avalanche), so that both
// the top bits (shard) and the low bits (table slot) are usable.
uint64_t HashKey(std::string_view key) noexcept;

struct CacheLimits {
  uint64_t max_entries = 1u << 20;
  uint64_t max_bytes = 256ull << 20;
};

struct CacheOptions {
  size_t shards = 64;  // rounded up to a power of two, clamped to [1, 65536]
  CacheLimits limits;
  MonotonicClockMs clock;
  // Move an entry to the front of the LRU list when it is read. Off for a table that never evicts
  // (limits it cannot reach): relinking costs two more cache misses per read at millions of entries.
  // Eviction, if limits are lowered later, then goes by insertion (or last write) order.
  bool touch_on_read = true;
};

struct CacheStats {
  uint64_t hits = 0;
  uint64_t misses = 0;       // includes reads that found an expired entry
  uint64_t evictions = 0;    // removed to make room (LRU), live at the time
  uint64_t expirations = 0;  // removed because their TTL had passed
  uint64_t entries = 0;      // stored now, including expired ones not touched since
  uint64_t bytes = 0;        // sum of Charge() over stored entries
};

struct ByteView {
  const void* data;
  size_t size;
};

class ShardedLruCache {
 public:
  // Fixed bookkeeping charged per entry on top of key and value bytes: the entry header (two
  // list links, hash, expiry, sizes = 40 bytes), its table slot (16 bytes at most 75% load) and
  // the allocator's header, rounded.
  static constexpr uint64_t kEntryOverheadBytes = 80;
  static constexpr uint64_t Charge(size_t key_size, size_t value_size) {
    return key_size + value_size + kEntryOverheadBytes;
  }

  explicit ShardedLruCache(CacheOptions options = CacheOptions());
  ~ShardedLruCache();
  ShardedLruCache(const ShardedLruCache&) = delete;
  ShardedLruCache& operator=(const ShardedLruCache&) = delete;

  // Reads key. On a live hit calls sink(const char* data, size_t size) while the shard is locked
  // (the entry may be evicted right after, so the sink copies) and returns true. An expired
  // entry is removed, counted as an expiration and a miss, and never passed to the sink.
  template <typename Sink>
  bool Get(std::string_view key, Sink&& sink) {
    using S = std::remove_reference_t<Sink>;
    return GetRaw(
        key,
        [](void* ctx, const char* data, size_t size) { (*static_cast<S*>(ctx))(data, size); },
        const_cast<void*>(static_cast<const void*>(&sink)));
  }
  bool Get(std::string_view key, std::string* out);

  // Reads n keys. Calls sink(size_t index, const char* data, size_t size) once per key in order,
  // data == nullptr for a miss, while holding the shard locks of (up to 32 of) the keys, so the
  // sink must only copy. Returns the number of hits.
  template <typename Sink>
  size_t GetMany(const std::string_view* keys, size_t n, Sink&& sink) {
    using S = std::remove_reference_t<Sink>;
    return GetManyRaw(
        keys, n,
        [](void* ctx, size_t i, const char* data, size_t size) {
          (*static_cast<S*>(ctx))(i, data, size);
        },
        const_cast<void*>(static_cast<const void*>(&sink)));
  }

  // Stores a copy of value under key, replacing any previous value, as most recently used.
  // ttl_ms == 0 means no expiry. Returns false (and stores nothing) if the entry alone exceeds a
  // shard's byte budget, a size exceeds 4 GiB, or memory runs out.
  bool Set(std::string_view key, ByteView value, uint64_t ttl_ms = 0);
  // Set only when key holds no live entry: returns false, changing nothing (not even the LRU
  // order), when it does. An expired entry counts as absent and is replaced. For loaders that must
  // not overwrite what a concurrent writer stored meanwhile.
  bool Insert(std::string_view key, ByteView value, uint64_t ttl_ms = 0);
  // Set for each pair; returns how many were stored.
  size_t SetMany(const std::string_view* keys, const ByteView* values, size_t n, uint64_t ttl_ms);

  // Removes key; true if a live entry was removed (an expired one is removed and counted as an
  // expiration, returning false).
  bool Delete(std::string_view key);
  // Removes every entry. Counters (hits, misses, ...) are kept.
  void Clear();
  CacheStats Stats() const;

  // New global limits, split evenly over the shards (rounded down, at least one entry per
  // shard); shrinking evicts least recently used entries at once.
  void SetLimits(CacheLimits limits);
  CacheLimits limits() const;
  size_t shard_count() const { return shard_count_; }
  // Effective per-shard limits, for tests and diagnostics.
  uint64_t shard_max_entries() const;
  uint64_t shard_max_bytes() const;

 private:
  struct Entry;
  struct Shard;
  using GetSinkFn = void (*)(void* ctx, const char* data, size_t size);
  using GetManySinkFn = void (*)(void* ctx, size_t index, const char* data, size_t size);

  bool Store(std::string_view key, ByteView value, uint64_t ttl_ms, bool only_if_absent);
  bool GetRaw(std::string_view key, GetSinkFn sink, void* ctx);
  size_t GetManyRaw(const std::string_view* keys, size_t n, GetManySinkFn sink, void* ctx);
  // With shard.mu held: the live entry for key (moved to the front, counted as a hit), or
  // nullptr (counted as a miss; an expired entry is unlinked and pushed onto *expired for the
  // caller to free after unlocking). *now_ms is read from the clock at most once (0 = not yet).
  Entry* LookupLocked(Shard& shard, uint64_t hash, std::string_view key, uint64_t* now_ms,
                      Entry** expired) const;
  size_t ShardIndex(uint64_t hash) const;
  Shard& ShardFor(uint64_t hash) const;
  uint64_t NowMs() const;
  bool IsLive(const Entry& e) const;

  size_t shard_count_;
  unsigned shard_shift_;
  std::unique_ptr<Shard[]> shards_;
  CacheLimits limits_;  // guarded by limits_mu_
  mutable std::mutex limits_mu_;
  MonotonicClockMs clock_;
  bool touch_on_read_;
};

}  // namespace scoreline

#endif  // SCORELINE_NATIVE_CACHE_H_
