// Implementation of ShardedLruCache (see cache.h for the layout and the contract).
#include "cache.h"

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <limits>

namespace scoreline {

namespace {

constexpr uint64_t kMulA = 0x87c37b91114253d5ULL;
constexpr uint64_t kMulB = 0x4cf5ad432745937fULL;
constexpr uint64_t kSeed = 0x9e3779b97f4a7c15ULL;

inline uint64_t Rotl(uint64_t x, unsigned r) { return (x << r) | (x >> (64 - r)); }

// Full avalanche: every input bit flips each output bit with probability ~1/2.
inline uint64_t Avalanche(uint64_t h) {
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  return h;
}

inline uint64_t MixWord(uint64_t h, uint64_t w) {
  w *= kMulA;
  w = Rotl(w, 31);
  w *= kMulB;
  h ^= w;
  return Rotl(h, 27) * 5 + 0x52dce729;
}

constexpr size_t kMinTableSlots = 16;

// The 1..7 bytes after the last whole word, read without a byte loop (a byte-wise copy into a
// word stalls on store forwarding). For a given length the mapping is injective.
inline uint64_t LoadTail(const char* p, size_t n) {
  if (n >= 4) {
    uint32_t first;
    uint32_t last;
    std::memcpy(&first, p, 4);
    std::memcpy(&last, p + n - 4, 4);
    return (static_cast<uint64_t>(last) << 32) | first;
  }
  return static_cast<uint64_t>(static_cast<unsigned char>(p[0])) |
         static_cast<uint64_t>(static_cast<unsigned char>(p[n / 2])) << 8 |
         static_cast<uint64_t>(static_cast<unsigned char>(p[n - 1])) << 16;
}

}  // namespace

uint64_t HashKey(std::string_view key) noexcept {
  const char* p = key.data();
  size_t n = key.size();
  uint64_t h = kSeed ^ (static_cast<uint64_t>(n) * kMulB);
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    h = MixWord(h, w);
    p += 8;
    n -= 8;
  }
  if (n > 0) h = MixWord(h, LoadTail(p, n) ^ (static_cast<uint64_t>(n) << 59));
  return Avalanche(h);
}

struct ShardedLruCache::Entry {
  Entry* prev;
  Entry* next;
  uint64_t hash;
  uint64_t expires_at_ms;  // 0 = never
  uint32_t key_size;
  uint32_t value_size;

  char* key_data() { return reinterpret_cast<char*>(this + 1); }
  char* value_data() { return key_data() + key_size; }
  uint64_t charge() const { return Charge(key_size, value_size); }
};

struct alignas(64) ShardedLruCache::Shard {
  struct Slot {
    uint64_t hash;
    Entry* entry;  // nullptr = empty
  };

  std::mutex mu;
  Entry lru{};  // sentinel: lru.next is the most recently used, lru.prev the least
  Slot* slots = nullptr;
  size_t mask = 0;
  // Copies of slots/mask readable without the lock, only to compute prefetch addresses (a stale
  // pair yields a useless but harmless prefetch). Updated whenever the table is replaced.
  std::atomic<uintptr_t> prefetch_slots{0};
  std::atomic<size_t> prefetch_mask{0};
  size_t count = 0;
  uint64_t bytes = 0;
  uint64_t max_entries = 0;
  uint64_t max_bytes = 0;
  uint64_t hits = 0;
  uint64_t misses = 0;
  uint64_t evictions = 0;
  uint64_t expirations = 0;

  Shard() {
    lru.prev = &lru;
    lru.next = &lru;
  }
  ~Shard() {
    FreeChain(DetachAll());
    std::free(slots);
  }

  // ---- LRU list ----
  void LinkFront(Entry* e) {
    e->prev = &lru;
    e->next = lru.next;
    lru.next->prev = e;
    lru.next = e;
  }
  static void Unlink(Entry* e) {
    e->prev->next = e->next;
    e->next->prev = e->prev;
  }
  void MoveToFront(Entry* e) {
    if (lru.next == e) return;
    Unlink(e);
    LinkFront(e);
  }

  // ---- table ----
  // Slot of key, or SIZE_MAX.
  size_t Find(uint64_t hash, std::string_view key) const {
    if (slots == nullptr) return SIZE_MAX;
    for (size_t i = hash & mask;; i = (i + 1) & mask) {
      const Slot& s = slots[i];
      if (s.entry == nullptr) return SIZE_MAX;
      if (s.hash == hash && s.entry->key_size == key.size() &&
          std::memcmp(s.entry->key_data(), key.data(), key.size()) == 0) {
        return i;
      }
    }
  }
  size_t FindEntry(const Entry* e) const {
    for (size_t i = e->hash & mask;; i = (i + 1) & mask) {
      if (slots[i].entry == e) return i;
    }
  }
  // Makes room for one more entry at <= 75% load. False if the table is full and cannot grow.
  bool Reserve() {
    size_t capacity = slots == nullptr ? 0 : mask + 1;
    if ((count + 1) * 4 <= capacity * 3) return true;
    size_t new_capacity = capacity == 0 ? kMinTableSlots : capacity * 2;
    auto* fresh = static_cast<Slot*>(std::calloc(new_capacity, sizeof(Slot)));
    if (fresh == nullptr) return count + 1 < capacity;
    size_t new_mask = new_capacity - 1;
    for (size_t i = 0; i < capacity; ++i) {
      if (slots[i].entry == nullptr) continue;
      size_t j = slots[i].hash & new_mask;
      while (fresh[j].entry != nullptr) j = (j + 1) & new_mask;
      fresh[j] = slots[i];
    }
    std::free(slots);
    slots = fresh;
    mask = new_mask;
    PublishTable();
    return true;
  }
  void PublishTable() {
    prefetch_slots.store(reinterpret_cast<uintptr_t>(slots), std::memory_order_relaxed);
    prefetch_mask.store(mask, std::memory_order_relaxed);
  }
  void PrefetchSlot(uint64_t hash) const {
    uintptr_t base = prefetch_slots.load(std::memory_order_relaxed);
    if (base == 0) return;
    size_t i = hash & prefetch_mask.load(std::memory_order_relaxed);
    __builtin_prefetch(reinterpret_cast<const void*>(base + i * sizeof(Slot)));
  }
  void InsertSlot(Entry* e) {
    size_t i = e->hash & mask;
    while (slots[i].entry != nullptr) i = (i + 1) & mask;
    slots[i] = Slot{e->hash, e};
    ++count;
  }
  // Backward-shift deletion: pull later members of the probe run into the hole so that every
  // entry stays reachable from its home slot without tombstones.
  void EraseSlot(size_t hole) {
    size_t j = hole;
    for (;;) {
      j = (j + 1) & mask;
      if (slots[j].entry == nullptr) break;
      size_t home = slots[j].hash & mask;
      bool stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
      if (stays) continue;
      slots[hole] = slots[j];
      hole = j;
    }
    slots[hole] = Slot{0, nullptr};
    --count;
  }

  // Removes the entry in slot i from table, list and byte count; returns it for freeing.
  Entry* RemoveAt(size_t i) {
    Entry* e = slots[i].entry;
    EraseSlot(i);
    Unlink(e);
    bytes -= e->charge();
    return e;
  }

  // Evicts from the LRU tail until within limits. Evicted entries are chained through `next`
  // onto *garbage so the caller frees them after unlocking.
  void EvictOverflow(Entry** garbage, uint64_t now_ms) {
    while ((count > max_entries || bytes > max_bytes) && lru.prev != &lru) {
      Entry* victim = lru.prev;
      RemoveAt(FindEntry(victim));
      if (victim->expires_at_ms != 0 && now_ms >= victim->expires_at_ms) {
        ++expirations;
      } else {
        ++evictions;
      }
      victim->next = *garbage;
      *garbage = victim;
    }
  }

  Entry* DetachAll() {
    Entry* chain = nullptr;
    for (Entry* e = lru.next; e != &lru;) {
      Entry* next = e->next;
      e->next = chain;
      chain = e;
      e = next;
    }
    lru.prev = &lru;
    lru.next = &lru;
    count = 0;
    bytes = 0;
    return chain;
  }

  static void FreeChain(Entry* chain) {
    while (chain != nullptr) {
      Entry* next = chain->next;
      std::free(chain);
      chain = next;
    }
  }
};

namespace {

size_t RoundShards(size_t requested) {
  size_t n = 1;
  while (n < requested && n < 65536) n <<= 1;
  return n;
}

unsigned Log2(size_t power_of_two) {
  unsigned bits = 0;
  while ((size_t{1} << bits) < power_of_two) ++bits;
  return bits;
}

}  // namespace

ShardedLruCache::ShardedLruCache(CacheOptions options)
    : shard_count_(RoundShards(options.shards)),
      shard_shift_(64 - Log2(RoundShards(options.shards))),
      shards_(new Shard[RoundShards(options.shards)]),
      clock_(std::move(options.clock)),
      touch_on_read_(options.touch_on_read) {
  SetLimits(options.limits);
}

ShardedLruCache::~ShardedLruCache() = default;

size_t ShardedLruCache::ShardIndex(uint64_t hash) const {
  // shard_shift_ == 64 (one shard) would be undefined behaviour as a shift.
  return shard_shift_ >= 64 ? 0 : static_cast<size_t>(hash >> shard_shift_);
}

ShardedLruCache::Shard& ShardedLruCache::ShardFor(uint64_t hash) const {
  return shards_[ShardIndex(hash)];
}

uint64_t ShardedLruCache::NowMs() const {
  if (clock_) return clock_();
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

bool ShardedLruCache::IsLive(const Entry& e) const {
  return e.expires_at_ms == 0 || NowMs() < e.expires_at_ms;
}

ShardedLruCache::Entry* ShardedLruCache::LookupLocked(Shard& shard, uint64_t hash,
                                                      std::string_view key, uint64_t* now_ms,
                                                      Entry** expired) const {
  size_t i = shard.Find(hash, key);
  if (i == SIZE_MAX) {
    ++shard.misses;
    return nullptr;
  }
  Entry* e = shard.slots[i].entry;
  if (e->expires_at_ms != 0) {
    if (*now_ms == 0) *now_ms = NowMs();
    if (*now_ms >= e->expires_at_ms) {
      shard.RemoveAt(i);
      ++shard.expirations;
      ++shard.misses;
      e->next = *expired;
      *expired = e;
      return nullptr;
    }
  }
  if (touch_on_read_) shard.MoveToFront(e);
  ++shard.hits;
  return e;
}

bool ShardedLruCache::GetRaw(std::string_view key, GetSinkFn sink, void* ctx) {
  uint64_t hash = HashKey(key);
  Shard& shard = ShardFor(hash);
  Entry* expired = nullptr;
  uint64_t now_ms = 0;
  {
    std::lock_guard<std::mutex> lock(shard.mu);
    if (Entry* e = LookupLocked(shard, hash, key, &now_ms, &expired)) {
      sink(ctx, e->value_data(), e->value_size);
      return true;
    }
  }
  std::free(expired);
  return false;
}

bool ShardedLruCache::Get(std::string_view key, std::string* out) {
  return Get(key, [out](const char* data, size_t size) { out->assign(data, size); });
}

// Reads a batch in chunks of up to 32 keys. Per chunk: hash every key and prefetch its table
// slot (so the slot misses of all keys overlap), lock each distinct shard once in ascending
// index order (the only place holding several shard locks, so the order rules out deadlock),
// look every key up with no lock operation in between (the locked instructions of a mutex are
// full barriers that would serialise the misses), then unlock and free expired entries.
size_t ShardedLruCache::GetManyRaw(const std::string_view* keys, size_t n, GetManySinkFn sink,
                                   void* ctx) {
  constexpr size_t kChunk = 32;
  uint64_t hashes[kChunk];
  size_t locked[kChunk];  // distinct shard indexes of the chunk, ascending
  size_t hits = 0;
  uint64_t now_ms = 0;
  for (size_t base = 0; base < n; base += kChunk) {
    size_t m = n - base < kChunk ? n - base : kChunk;
    size_t distinct = 0;
    for (size_t i = 0; i < m; ++i) {
      uint64_t hash = HashKey(keys[base + i]);
      hashes[i] = hash;
      size_t index = ShardIndex(hash);
      shards_[index].PrefetchSlot(hash);
      size_t j = distinct;
      while (j > 0 && locked[j - 1] > index) --j;
      if (j > 0 && locked[j - 1] == index) continue;
      std::memmove(locked + j + 1, locked + j, (distinct - j) * sizeof(size_t));
      locked[j] = index;
      ++distinct;
    }
    Entry* expired = nullptr;
    for (size_t u = 0; u < distinct; ++u) shards_[locked[u]].mu.lock();
    for (size_t i = 0; i < m; ++i) {
      Shard& shard = shards_[ShardIndex(hashes[i])];
      if (Entry* e = LookupLocked(shard, hashes[i], keys[base + i], &now_ms, &expired)) {
        sink(ctx, base + i, e->value_data(), e->value_size);
        ++hits;
      } else {
        sink(ctx, base + i, nullptr, 0);
      }
    }
    for (size_t u = distinct; u > 0; --u) shards_[locked[u - 1]].mu.unlock();
    Shard::FreeChain(expired);
  }
  return hits;
}

bool ShardedLruCache::Set(std::string_view key, ByteView value, uint64_t ttl_ms) {
  return Store(key, value, ttl_ms, false);
}

bool ShardedLruCache::Insert(std::string_view key, ByteView value, uint64_t ttl_ms) {
  return Store(key, value, ttl_ms, true);
}

bool ShardedLruCache::Store(std::string_view key, ByteView value, uint64_t ttl_ms,
                            bool only_if_absent) {
  constexpr size_t kMaxPart = std::numeric_limits<uint32_t>::max();
  if (key.size() > kMaxPart || value.size > kMaxPart) return false;
  uint64_t hash = HashKey(key);
  Shard& shard = ShardFor(hash);

  uint64_t expires_at_ms = ttl_ms != 0 ? NowMs() + ttl_ms : 0;
  {
    // Refreshing a value of the same size (fixed-width feature vectors) rewrites it in place:
    // no allocation, no relinking of the table.
    std::lock_guard<std::mutex> lock(shard.mu);
    size_t i = shard.Find(hash, key);
    if (i != SIZE_MAX && only_if_absent && IsLive(*shard.slots[i].entry)) return false;
    if (i != SIZE_MAX && shard.slots[i].entry->value_size == value.size) {
      Entry* e = shard.slots[i].entry;
      if (value.size != 0) std::memcpy(e->value_data(), value.data, value.size);
      e->expires_at_ms = expires_at_ms;
      shard.MoveToFront(e);
      return true;
    }
  }

  auto* e = static_cast<Entry*>(std::malloc(sizeof(Entry) + key.size() + value.size));
  if (e == nullptr) return false;
  e->hash = hash;
  e->expires_at_ms = expires_at_ms;
  e->key_size = static_cast<uint32_t>(key.size());
  e->value_size = static_cast<uint32_t>(value.size);
  if (!key.empty()) std::memcpy(e->key_data(), key.data(), key.size());
  if (value.size != 0) std::memcpy(e->value_data(), value.data, value.size);

  Entry* garbage = nullptr;
  bool stored = false;
  {
    std::lock_guard<std::mutex> lock(shard.mu);
    if (e->charge() <= shard.max_bytes) {
      size_t i = shard.Find(hash, key);
      if (i != SIZE_MAX && only_if_absent && IsLive(*shard.slots[i].entry)) {
        // Stored by another thread between the two locked sections.
      } else if (i != SIZE_MAX) {
        Entry* old = shard.slots[i].entry;
        Shard::Unlink(old);
        shard.bytes -= old->charge();
        shard.slots[i].entry = e;
        old->next = garbage;
        garbage = old;
        stored = true;
      } else if (shard.Reserve()) {
        shard.InsertSlot(e);
        stored = true;
      }
      if (stored) {
        shard.LinkFront(e);
        shard.bytes += e->charge();
        // Expiry of the victims is judged against the clock only when something may be evicted.
        if (shard.count > shard.max_entries || shard.bytes > shard.max_bytes) {
          shard.EvictOverflow(&garbage, NowMs());
        }
      }
    }
  }
  if (!stored) std::free(e);
  Shard::FreeChain(garbage);
  return stored;
}

size_t ShardedLruCache::SetMany(const std::string_view* keys, const ByteView* values, size_t n,
                                uint64_t ttl_ms) {
  size_t stored = 0;
  for (size_t i = 0; i < n; ++i) {
    if (Set(keys[i], values[i], ttl_ms)) ++stored;
  }
  return stored;
}

bool ShardedLruCache::Delete(std::string_view key) {
  uint64_t hash = HashKey(key);
  Shard& shard = ShardFor(hash);
  Entry* removed = nullptr;
  bool live = false;
  {
    std::lock_guard<std::mutex> lock(shard.mu);
    size_t i = shard.Find(hash, key);
    if (i == SIZE_MAX) return false;
    removed = shard.RemoveAt(i);
    live = removed->expires_at_ms == 0 || NowMs() < removed->expires_at_ms;
    if (!live) ++shard.expirations;
  }
  std::free(removed);
  return live;
}

void ShardedLruCache::Clear() {
  for (size_t s = 0; s < shard_count_; ++s) {
    Shard& shard = shards_[s];
    Entry* chain;
    Shard::Slot* slots;
    {
      std::lock_guard<std::mutex> lock(shard.mu);
      chain = shard.DetachAll();
      slots = shard.slots;
      shard.slots = nullptr;
      shard.mask = 0;
      shard.PublishTable();
    }
    std::free(slots);
    Shard::FreeChain(chain);
  }
}

CacheStats ShardedLruCache::Stats() const {
  CacheStats total;
  for (size_t s = 0; s < shard_count_; ++s) {
    Shard& shard = shards_[s];
    std::lock_guard<std::mutex> lock(shard.mu);
    total.hits += shard.hits;
    total.misses += shard.misses;
    total.evictions += shard.evictions;
    total.expirations += shard.expirations;
    total.entries += shard.count;
    total.bytes += shard.bytes;
  }
  return total;
}

void ShardedLruCache::SetLimits(CacheLimits limits) {
  std::lock_guard<std::mutex> limits_lock(limits_mu_);
  limits_ = limits;
  uint64_t per_entries = limits.max_entries / shard_count_;
  if (per_entries == 0) per_entries = 1;
  uint64_t per_bytes = limits.max_bytes / shard_count_;
  for (size_t s = 0; s < shard_count_; ++s) {
    Shard& shard = shards_[s];
    Entry* garbage = nullptr;
    {
      std::lock_guard<std::mutex> lock(shard.mu);
      shard.max_entries = per_entries;
      shard.max_bytes = per_bytes;
      if (shard.count > per_entries || shard.bytes > per_bytes) {
        shard.EvictOverflow(&garbage, NowMs());
      }
    }
    Shard::FreeChain(garbage);
  }
}

CacheLimits ShardedLruCache::limits() const {
  std::lock_guard<std::mutex> lock(limits_mu_);
  return limits_;
}

uint64_t ShardedLruCache::shard_max_entries() const {
  std::lock_guard<std::mutex> lock(shards_[0].mu);
  return shards_[0].max_entries;
}

uint64_t ShardedLruCache::shard_max_bytes() const {
  std::lock_guard<std::mutex> lock(shards_[0].mu);
  return shards_[0].max_bytes;
}

}  // namespace scoreline
