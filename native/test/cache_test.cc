// Tests for native/cache.h without Node: semantics with an injected clock, limits, and a
// multi-threaded stress run whose invariants are checked afterwards. Run by scripts/native-test.sh
// (plain -O2, and with ASan/UBSan when SANITIZE=1). Exit code 1 on any failed check.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "../cache.h"

using scoreline::ByteView;
using scoreline::CacheOptions;
using scoreline::CacheStats;
using scoreline::ShardedLruCache;

namespace {

int g_failures = 0;
int g_checks = 0;

#define CHECK(cond)                                                    \
  do {                                                                 \
    ++g_checks;                                                        \
    if (!(cond)) {                                                     \
      ++g_failures;                                                    \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
    }                                                                  \
  } while (0)

#define CHECK_EQ(a, b)                                                                    \
  do {                                                                                    \
    ++g_checks;                                                                           \
    auto va_ = (a);                                                                       \
    auto vb_ = (b);                                                                       \
    if (!(va_ == vb_)) {                                                                  \
      ++g_failures;                                                                       \
      std::fprintf(stderr, "%s:%d: CHECK_EQ failed: %s == %s (%llu vs %llu)\n", __FILE__, \
                   __LINE__, #a, #b, static_cast<unsigned long long>(va_),                \
                   static_cast<unsigned long long>(vb_));                                 \
    }                                                                                     \
  } while (0)

struct FakeClock {
  std::atomic<uint64_t> now{1000};
  scoreline::MonotonicClockMs fn() {
    return [this] { return now.load(); };
  }
};

ByteView Bytes(const std::string& s) { return ByteView{s.data(), s.size()}; }

std::string Read(ShardedLruCache& cache, const std::string& key, bool* hit = nullptr) {
  std::string out;
  bool found = cache.Get(key, &out);
  if (hit != nullptr) *hit = found;
  return found ? out : std::string("<miss>");
}

CacheOptions OneShard(uint64_t max_entries, uint64_t max_bytes, FakeClock* clock = nullptr) {
  CacheOptions o;
  o.shards = 1;
  o.limits.max_entries = max_entries;
  o.limits.max_bytes = max_bytes;
  if (clock != nullptr) o.clock = clock->fn();
  return o;
}

void TestBasic() {
  ShardedLruCache cache(OneShard(100, 1 << 20));
  CHECK(cache.Set("a", Bytes("alpha")));
  CHECK(cache.Set("b", Bytes("beta")));
  CHECK(cache.Set("", Bytes("empty key")));
  CHECK(cache.Set("z", Bytes("")));
  CHECK(Read(cache, "a") == "alpha");
  CHECK(Read(cache, "b") == "beta");
  CHECK(Read(cache, "") == "empty key");
  bool hit = false;
  CHECK(Read(cache, "z", &hit).empty());
  CHECK(hit);
  CHECK(Read(cache, "c") == "<miss>");

  // Binary values with NUL bytes survive intact.
  std::string binary("\0\1\2\0\xff", 5);
  CHECK(cache.Set(std::string("k\0ey", 4), Bytes(binary)));
  CHECK(Read(cache, std::string("k\0ey", 4)) == binary);
  CHECK(Read(cache, "k") == "<miss>");

  CHECK(cache.Delete("a"));
  CHECK(!cache.Delete("a"));
  CHECK(Read(cache, "a") == "<miss>");

  CacheStats s = cache.Stats();
  CHECK_EQ(s.entries, 4u);
  CHECK_EQ(s.hits, 5u);
  CHECK_EQ(s.misses, 3u);
  CHECK_EQ(s.evictions, 0u);
  CHECK_EQ(s.bytes, ShardedLruCache::Charge(1, 4) + ShardedLruCache::Charge(0, 9) +
                        ShardedLruCache::Charge(1, 0) + ShardedLruCache::Charge(4, 5));

  cache.Clear();
  s = cache.Stats();
  CHECK_EQ(s.entries, 0u);
  CHECK_EQ(s.bytes, 0u);
  CHECK_EQ(s.hits, 5u);  // counters survive clear
  CHECK(Read(cache, "b") == "<miss>");
  // Usable again after clear (the table was released).
  CHECK(cache.Set("b", Bytes("again")));
  CHECK(Read(cache, "b") == "again");
}

void TestOverwriteAdjustsBytes() {
  ShardedLruCache cache(OneShard(100, 1 << 20));
  CHECK(cache.Set("key", Bytes(std::string(100, 'x'))));
  CHECK_EQ(cache.Stats().bytes, ShardedLruCache::Charge(3, 100));
  CHECK(cache.Set("key", Bytes(std::string(10, 'y'))));
  CacheStats s = cache.Stats();
  CHECK_EQ(s.bytes, ShardedLruCache::Charge(3, 10));
  CHECK_EQ(s.entries, 1u);
  CHECK(Read(cache, "key") == std::string(10, 'y'));
  CHECK(cache.Set("key", Bytes(std::string(500, 'z'))));
  CHECK_EQ(cache.Stats().bytes, ShardedLruCache::Charge(3, 500));
  CHECK_EQ(cache.Stats().evictions, 0u);
}

void TestLruEvictionByCount() {
  ShardedLruCache cache(OneShard(3, 1 << 20));
  cache.Set("a", Bytes("1"));
  cache.Set("b", Bytes("2"));
  cache.Set("c", Bytes("3"));
  CHECK(Read(cache, "a") == "1");  // a is now most recent; b is the LRU
  cache.Set("d", Bytes("4"));
  CHECK(Read(cache, "b") == "<miss>");
  CHECK(Read(cache, "a") == "1");
  CHECK(Read(cache, "c") == "3");
  CHECK(Read(cache, "d") == "4");
  // Order now (LRU -> MRU): a c d. Overwriting a refreshes it.
  cache.Set("a", Bytes("1b"));
  cache.Set("e", Bytes("5"));  // evicts c
  CHECK(Read(cache, "c") == "<miss>");
  CHECK(Read(cache, "a") == "1b");
  CacheStats s = cache.Stats();
  CHECK_EQ(s.entries, 3u);
  CHECK_EQ(s.evictions, 2u);

  // Many shards: each shard holds max_entries / shards.
  CacheOptions o;
  o.shards = 8;
  o.limits.max_entries = 80;
  o.limits.max_bytes = 1 << 20;
  ShardedLruCache sharded(o);
  CHECK_EQ(sharded.shard_max_entries(), 10u);
  for (int i = 0; i < 1000; ++i) sharded.Set("k" + std::to_string(i), Bytes("v"));
  s = sharded.Stats();
  CHECK(s.entries <= 80);
  CHECK(s.entries >= 70);  // 1000 keys spread over 8 shards fill every one
  CHECK_EQ(s.evictions, 1000 - s.entries);
  for (int i = 990; i < 1000; ++i) CHECK(Read(sharded, "k" + std::to_string(i)) == "v");
}

void TestEvictionByBytes() {
  const uint64_t per = ShardedLruCache::Charge(2, 100);  // keys "k0".."k9"
  ShardedLruCache cache(OneShard(1000, per * 3 + per / 2));
  std::string v(100, 'v');
  for (int i = 0; i < 5; ++i) CHECK(cache.Set("k" + std::to_string(i), Bytes(v)));
  CacheStats s = cache.Stats();
  CHECK_EQ(s.entries, 3u);
  CHECK_EQ(s.bytes, per * 3);
  CHECK_EQ(s.evictions, 2u);
  CHECK(Read(cache, "k0") == "<miss>");
  CHECK(Read(cache, "k1") == "<miss>");
  CHECK(Read(cache, "k2") == v);

  // Growing an entry in place evicts others to make room: k3 LRU, then k4.
  CHECK(cache.Set("k2", Bytes(std::string(250, 'w'))));
  s = cache.Stats();
  CHECK(s.bytes <= per * 3 + per / 2);
  CHECK(Read(cache, "k3") == "<miss>");
  CHECK(Read(cache, "k2") == std::string(250, 'w'));

  // An entry larger than the whole budget is refused and leaves the cache untouched.
  uint64_t before = cache.Stats().entries;
  CHECK(!cache.Set("huge", Bytes(std::string(per * 4, 'h'))));
  CHECK_EQ(cache.Stats().entries, before);
  CHECK(Read(cache, "huge") == "<miss>");

  // Shrinking the limits evicts at once.
  cache.SetLimits({1000, per});
  s = cache.Stats();
  CHECK(s.bytes <= per);
  CHECK(s.entries <= 1);
}

void TestTtl() {
  FakeClock clock;
  ShardedLruCache cache(OneShard(100, 1 << 20, &clock));
  CHECK(cache.Set("short", Bytes("s"), 50));
  CHECK(cache.Set("long", Bytes("l"), 5000));
  CHECK(cache.Set("forever", Bytes("f"), 0));
  clock.now += 49;
  CHECK(Read(cache, "short") == "s");
  clock.now += 1;  // exactly at expiry: expired
  CHECK(Read(cache, "short") == "<miss>");
  CacheStats s = cache.Stats();
  CHECK_EQ(s.expirations, 1u);
  CHECK_EQ(s.entries, 2u);  // removed on access
  CHECK(Read(cache, "short") == "<miss>");
  CHECK_EQ(cache.Stats().expirations, 1u);  // counted once

  clock.now += 10000;
  CHECK(Read(cache, "forever") == "f");
  // Deleting an expired entry removes it, counts it and reports false.
  CHECK(!cache.Delete("long"));
  s = cache.Stats();
  CHECK_EQ(s.expirations, 2u);
  CHECK_EQ(s.entries, 1u);

  // Overwrite resets the TTL; getMany never returns an expired value.
  CHECK(cache.Set("x", Bytes("1"), 10));
  clock.now += 8;
  CHECK(cache.Set("x", Bytes("2"), 10));
  clock.now += 8;
  CHECK(Read(cache, "x") == "2");  // would have expired at +10 without the overwrite
  CHECK(cache.Set("x", Bytes("2"), 100));
  CHECK(cache.Set("y", Bytes("y"), 5));
  clock.now += 5;
  std::string_view keys[] = {"x", "y", "forever"};
  std::vector<std::string> got(3, "<miss>");
  size_t hits = cache.GetMany(keys, 3, [&](size_t i, const char* d, size_t n) {
    if (d != nullptr) got[i].assign(d, n);
  });
  CHECK_EQ(hits, 2u);
  CHECK(got[0] == "2");
  CHECK(got[1] == "<miss>");
  CHECK(got[2] == "f");

  // An expired LRU victim is counted as an expiration, not an eviction.
  ShardedLruCache small(OneShard(1, 1 << 20, &clock));
  small.Set("old", Bytes("o"), 1);
  clock.now += 2;
  small.Set("new", Bytes("n"));
  s = small.Stats();
  CHECK_EQ(s.expirations, 1u);
  CHECK_EQ(s.evictions, 0u);
}

void TestGetMany() {
  CacheOptions o;
  o.shards = 16;
  ShardedLruCache cache(o);
  for (int i = 0; i < 50; ++i) {
    cache.Set("key:" + std::to_string(i), Bytes("value-" + std::to_string(i)));
  }
  std::vector<std::string> names;
  for (int i = 0; i < 60; i += 3) names.push_back("key:" + std::to_string(i));
  std::vector<std::string_view> keys(names.begin(), names.end());
  std::vector<std::string> got(keys.size());
  std::vector<int> misses;
  size_t hits = cache.GetMany(keys.data(), keys.size(), [&](size_t i, const char* d, size_t n) {
    if (d == nullptr) {
      misses.push_back(static_cast<int>(i));
    } else {
      got[i].assign(d, n);
    }
  });
  CHECK_EQ(hits, 17u);  // 0,3,...,48
  CHECK_EQ(misses.size(), 3u);
  CHECK(misses.size() == 3 && misses[0] == 17 && misses[1] == 18 && misses[2] == 19);
  CHECK(got[0] == "value-0");
  CHECK(got[16] == "value-48");
  CacheStats s = cache.Stats();
  CHECK_EQ(s.hits, 17u);
  CHECK_EQ(s.misses, 3u);

  std::vector<ByteView> values;
  std::vector<std::string> storage;
  storage.reserve(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) storage.push_back("new-" + std::to_string(i));
  for (auto& v : storage) values.push_back(Bytes(v));
  CHECK_EQ(cache.SetMany(keys.data(), values.data(), keys.size(), 0), keys.size());
  CHECK(Read(cache, "key:57") == "new-19");
  CHECK_EQ(cache.Stats().entries, 53u);  // 50 + 3 new
}

void TestHashSpread() {
  // Sequential keys spread evenly over 64 shards.
  std::vector<int> buckets(64, 0);
  for (int i = 0; i < 64000; ++i) {
    ++buckets[scoreline::HashKey("customer:" + std::to_string(i)) >> 58];
  }
  for (int b : buckets) CHECK(b > 800 && b < 1200);
  CHECK(scoreline::HashKey("a") != scoreline::HashKey("b"));
  CHECK(scoreline::HashKey("") != scoreline::HashKey(std::string(1, '\0')));
}

void TestTableGrowthAndDeletion() {
  // Many inserts and deletes in one shard exercise growth and backward-shift deletion.
  ShardedLruCache cache(OneShard(1 << 20, 1ull << 30));
  const int n = 20000;
  for (int i = 0; i < n; ++i) cache.Set("k" + std::to_string(i), Bytes(std::to_string(i)));
  for (int i = 0; i < n; i += 2) CHECK(cache.Delete("k" + std::to_string(i)));
  int wrong = 0;
  for (int i = 0; i < n; ++i) {
    bool hit = false;
    std::string v = Read(cache, "k" + std::to_string(i), &hit);
    if (hit != (i % 2 == 1) || (hit && v != std::to_string(i))) ++wrong;
  }
  CHECK_EQ(wrong, 0);
  CHECK_EQ(cache.Stats().entries, static_cast<uint64_t>(n / 2));
}

void TestConcurrency() {
  CacheOptions o;
  o.shards = 8;
  o.limits.max_entries = 2000;
  o.limits.max_bytes = 8 * (2000 / 8) * ShardedLruCache::Charge(8, 64) / 2;  // bytes bind first
  ShardedLruCache cache(o);
  const int threads = 6;
  const auto duration = std::chrono::milliseconds(700);
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> bad_values{0};
  std::atomic<uint64_t> ops{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      std::mt19937_64 rng(1234 + t);
      std::string out;
      char key[32];
      char value[200];
      uint64_t local_ops = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        int k = static_cast<int>(rng() % 5000);  // overlapping key space across threads
        int klen = std::snprintf(key, sizeof key, "k%07d", k);
        std::string_view kv(key, static_cast<size_t>(klen));
        unsigned op = static_cast<unsigned>(rng() % 100);
        if (op < 45) {
          // A value is its key's number repeated, of varying length: readers can verify it.
          size_t len = 8 + rng() % 150;
          for (size_t i = 0; i < len; ++i) value[i] = static_cast<char>('a' + (k + i) % 26);
          cache.Set(kv, ByteView{value, len}, (op % 3 == 0) ? 1 + rng() % 5 : 0);
        } else if (op < 85) {
          if (cache.Get(kv, &out)) {
            for (size_t i = 0; i < out.size(); ++i) {
              if (out[i] != static_cast<char>('a' + (k + i) % 26)) {
                ++bad_values;
                break;
              }
            }
          }
        } else if (op < 95) {
          cache.Delete(kv);
        } else if (op < 99) {
          std::string_view many[4];
          char keys[4][32];
          for (int j = 0; j < 4; ++j) {
            int kk = static_cast<int>(rng() % 5000);
            int l = std::snprintf(keys[j], sizeof keys[j], "k%07d", kk);
            many[j] = std::string_view(keys[j], static_cast<size_t>(l));
          }
          cache.GetMany(many, 4, [&](size_t, const char* d, size_t n) {
            if (d != nullptr && n < 8) ++bad_values;
          });
        } else if (t == 0 && rng() % 50 == 0) {
          cache.Clear();
        } else {
          CacheStats s = cache.Stats();
          if (s.entries > 2000) ++bad_values;
        }
        ++local_ops;
      }
      ops += local_ops;
    });
  }
  std::this_thread::sleep_for(duration);
  stop = true;
  for (auto& th : pool) th.join();

  CacheStats s = cache.Stats();
  CHECK_EQ(bad_values.load(), 0u);
  CHECK(ops.load() > 10000);
  CHECK(s.entries <= 2000);
  CHECK(s.bytes <= o.limits.max_bytes);
  CHECK(s.evictions > 0);
  // bytes agrees with what is stored: recount by reading every key.
  uint64_t counted_entries = 0;
  uint64_t counted_bytes = 0;
  std::string out;
  char key[32];
  for (int k = 0; k < 5000; ++k) {
    int klen = std::snprintf(key, sizeof key, "k%07d", k);
    std::string_view kv(key, static_cast<size_t>(klen));
    if (cache.Get(kv, &out)) {
      ++counted_entries;
      counted_bytes += ShardedLruCache::Charge(kv.size(), out.size());
    }
  }
  // Reads above may have expired some entries; what is left must match exactly.
  CacheStats after = cache.Stats();
  CHECK_EQ(after.entries, counted_entries);
  CHECK_EQ(after.bytes, counted_bytes);
  std::printf("  concurrency: %d threads, %llu ops, entries=%llu bytes=%llu evictions=%llu "
              "expirations=%llu\n",
              threads, static_cast<unsigned long long>(ops.load()),
              static_cast<unsigned long long>(s.entries), static_cast<unsigned long long>(s.bytes),
              static_cast<unsigned long long>(s.evictions),
              static_cast<unsigned long long>(s.expirations));
}

void TestInsertOnlyIfAbsent() {
  FakeClock clock;
  ShardedLruCache cache(OneShard(2, 1 << 20, &clock));
  CHECK(cache.Insert("a", Bytes("first")));
  CHECK(!cache.Insert("a", Bytes("second")));  // a live entry is kept
  CHECK(Read(cache, "a") == "first");
  CHECK(!cache.Insert("a", Bytes("a longer value that would need a new entry")));
  CHECK(Read(cache, "a") == "first");
  // A refused insert does not touch the LRU order: b, then a's read made a most recent; c evicts b.
  CHECK(cache.Insert("b", Bytes("bee")));
  CHECK(Read(cache, "a") == "first");
  CHECK(!cache.Insert("b", Bytes("ignored")));
  CHECK(cache.Set("c", Bytes("sea")));
  CHECK(Read(cache, "b") == "<miss>");
  CHECK(Read(cache, "a") == "first");
  // An expired entry is absent: the insert replaces it, same size or not.
  CHECK(cache.Set("t", Bytes("old"), 10));
  clock.now += 11;
  CHECK(cache.Insert("t", Bytes("new")));
  CHECK(Read(cache, "t") == "new");
  CHECK(cache.Set("u", Bytes("old"), 10));
  clock.now += 11;
  CHECK(cache.Insert("u", Bytes("newer and longer")));
  CHECK(Read(cache, "u") == "newer and longer");
  // Set still overwrites what Insert stored.
  CHECK(cache.Set("u", Bytes("set")));
  CHECK(Read(cache, "u") == "set");
}

void TestNoTouchOnRead() {
  CacheOptions o = OneShard(2, 1 << 20);
  o.touch_on_read = false;
  ShardedLruCache cache(o);
  CHECK(cache.Set("a", Bytes("1")));
  CHECK(cache.Set("b", Bytes("2")));
  CHECK(Read(cache, "a") == "1");  // does not make "a" the most recent
  CHECK(cache.Set("c", Bytes("3")));
  CHECK(Read(cache, "a") == "<miss>");
  CHECK(Read(cache, "b") == "2");
  CHECK(Read(cache, "c") == "3");
  CHECK_EQ(cache.Stats().hits, 3u);
  CHECK_EQ(cache.Stats().evictions, 1u);
}

struct NamedTest {
  const char* name;
  void (*fn)();
};

}  // namespace

int main() {
  const NamedTest tests[] = {
      {"basic get/set/del/clear", TestBasic},
      {"overwrite adjusts bytes", TestOverwriteAdjustsBytes},
      {"LRU eviction by count", TestLruEvictionByCount},
      {"eviction by bytes", TestEvictionByBytes},
      {"TTL with injected clock", TestTtl},
      {"getMany / setMany", TestGetMany},
      {"hash spread", TestHashSpread},
      {"table growth and deletion", TestTableGrowthAndDeletion},
      {"insert only if absent", TestInsertOnlyIfAbsent},
      {"reads that do not touch the LRU order", TestNoTouchOnRead},
      {"concurrency", TestConcurrency},
  };
  for (const NamedTest& t : tests) {
    int before = g_failures;
    t.fn();
    std::printf("%s %s\n", g_failures == before ? "ok  " : "FAIL", t.name);
  }
  std::printf("%d checks, %d failures\n", g_checks, g_failures);
  return g_failures == 0 ? 0 : 1;
}
