// N-API face of the feature cache: one process-wide ShardedLruCache (cache.h) shared by the main
// thread and every worker_thread, since the shared object is loaded once per process, and named
// tables (more instances, found by name) for the embedded feature store. Each
// thread's module instance keeps only scratch buffers, in instance data; no napi_value or
// reference lives in global state. Built without C++ exceptions: argument errors are thrown as
// pending JS exceptions and the function returns at once.
//
// src/features/native-cache.ts documents the JS contract; the hot reads are getManyJoined and
// getManyArray, which cross the boundary once per batch and write into caller-owned memory.
#include <napi.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "cache.h"

namespace {

using scoreline::ByteView;
using scoreline::CacheLimits;
using scoreline::CacheOptions;
using scoreline::ShardedLruCache;

constexpr char kKeySeparator = '\x1f';
constexpr size_t kDefaultShards = 64;
constexpr double kMaxSafeInteger = 9007199254740991.0;

// ---------------------------------------------------------------------------------------------
// The process-wide store. Created by the first configure() or the first operation, whichever
// comes first, and never destroyed: a worker may still be reading while the process exits.

std::mutex g_store_mu;
std::atomic<ShardedLruCache*> g_store{nullptr};

ShardedLruCache& CreateStoreLocked(size_t shards, CacheLimits limits) {
  CacheOptions options;
  options.shards = shards;
  options.limits = limits;
  auto* store = new ShardedLruCache(std::move(options));
  g_store.store(store, std::memory_order_release);
  return *store;
}

ShardedLruCache& Store() {
  ShardedLruCache* store = g_store.load(std::memory_order_acquire);
  if (store != nullptr) return *store;
  std::lock_guard<std::mutex> lock(g_store_mu);
  store = g_store.load(std::memory_order_relaxed);
  if (store != nullptr) return *store;
  return CreateStoreLocked(kDefaultShards, CacheLimits());
}

// ---------------------------------------------------------------------------------------------
// Named tables: more process-wide stores, found by name, without TTLs or limits unless given. The
// embedded feature store keeps every entity's groups in one, off the JS heap, and a loader thread
// fills it while the main thread reads. Like the cache they are never destroyed (clear() frees
// their entries): a pointer handed to one thread stays valid.

constexpr uint32_t kMaxTables = 64;
std::mutex g_tables_mu;
std::vector<std::string> g_table_names;  // guarded by g_tables_mu; index = table id
std::atomic<ShardedLruCache*> g_tables[kMaxTables];

// ---------------------------------------------------------------------------------------------
// Per-thread scratch, owned by the module instance (napi_set_instance_data) and freed with it.

struct ThreadState {
  std::vector<char> text = std::vector<char>(4096);  // UTF-8 of the keys of the current call
  std::vector<size_t> key_ends;                       // end offsets of each key in `text`
  std::vector<std::string_view> keys;
  std::string value;  // a single value copied out under the shard lock
};

ThreadState& State(const Napi::CallbackInfo& info) {
  return *static_cast<ThreadState*>(info.Data());
}

bool ThrowType(napi_env env, const char* message) {
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", message);
  return false;
}

bool ThrowRange(napi_env env, const char* message) {
  napi_throw_range_error(env, "ERR_OUT_OF_RANGE", message);
  return false;
}

// Appends the UTF-8 bytes of a JS string to state.text at offset `used`, growing the buffer as
// needed; the usual case is one N-API call.
bool AppendUtf8(napi_env env, napi_value value, std::vector<char>& text, size_t used,
                size_t* length) {
  if (text.size() - used < 64) text.resize((text.size() + 64) * 2);
  size_t room = text.size() - used;
  size_t written = 0;
  if (napi_get_value_string_utf8(env, value, text.data() + used, room, &written) != napi_ok) {
    return ThrowType(env, "key must be a string");
  }
  // N-API writes at most room - 1 bytes and never splits a character (at most 4 bytes): a
  // truncated write is at least room - 4 bytes long, so anything shorter is the whole string.
  if (written + 4 < room) {
    *length = written;
    return true;
  }
  size_t exact = 0;
  napi_get_value_string_utf8(env, value, nullptr, 0, &exact);
  if (exact + 1 > text.size() - used) text.resize(used + exact + 1);
  napi_get_value_string_utf8(env, value, text.data() + used, exact + 1, &written);
  *length = written;
  return true;
}

bool ReadKey(napi_env env, napi_value value, ThreadState& state, std::string_view* key) {
  size_t length = 0;
  if (!AppendUtf8(env, value, state.text, 0, &length)) return false;
  *key = std::string_view(state.text.data(), length);
  return true;
}

bool ReadBytes(napi_env env, napi_value value, const char* what, ByteView* bytes) {
  napi_typedarray_type type;
  size_t length = 0;
  void* data = nullptr;
  if (napi_get_typedarray_info(env, value, &type, &length, &data, nullptr, nullptr) != napi_ok ||
      (type != napi_uint8_array && type != napi_uint8_clamped_array)) {
    return ThrowType(env, what);
  }
  *bytes = ByteView{data, length};
  return true;
}

bool ReadInt32Array(napi_env env, napi_value value, int32_t** data, size_t* length) {
  napi_typedarray_type type;
  void* raw = nullptr;
  if (napi_get_typedarray_info(env, value, &type, length, &raw, nullptr, nullptr) != napi_ok ||
      type != napi_int32_array) {
    return ThrowType(env, "meta must be an Int32Array");
  }
  *data = static_cast<int32_t*>(raw);
  return true;
}

// undefined/null -> 0 (no expiry); otherwise a finite number >= 0, rounded up to whole ms.
bool ReadTtl(napi_env env, const Napi::Value& value, uint64_t* ttl_ms) {
  *ttl_ms = 0;
  if (value.IsUndefined() || value.IsNull()) return true;
  double ms = 0;
  if (napi_get_value_double(env, value, &ms) != napi_ok) {
    return ThrowType(env, "ttlMs must be a number");
  }
  if (!(ms >= 0) || ms > kMaxSafeInteger) {
    return ThrowRange(env, "ttlMs must be a finite number >= 0");
  }
  *ttl_ms = static_cast<uint64_t>(std::ceil(ms));
  return true;
}

// Optional positive integer property of an options object; absent leaves *out unchanged.
bool ReadLimit(const Napi::Object& options, const char* name, double max, double* out,
               bool* present) {
  Napi::Env env = options.Env();
  Napi::Value value = options.Get(name);
  if (env.IsExceptionPending()) return false;
  *present = !value.IsUndefined();
  if (!*present) return true;
  if (!value.IsNumber()) return ThrowType(env, "configure(): limits must be numbers");
  double v = value.As<Napi::Number>().DoubleValue();
  if (!(v >= 1) || v > max || std::floor(v) != v) {
    return ThrowRange(env, "configure(): limits must be integers >= 1");
  }
  *out = v;
  return true;
}

// ---------------------------------------------------------------------------------------------
// Reads for many keys (getManyJoined, getManyArray) write the values back to back into `out`
// and, for key i, meta[2i] = offset in out (-1 = miss, -2 = found but out too small) and
// meta[2i+1] = length; meta[2n] = the bytes all hits need. They return the number of hits. When
// meta[2n] > out.length the caller grows `out` and reads again.

struct ManyOutput {
  char* data;
  size_t capacity;
  int32_t* meta;
  size_t position = 0;

  void operator()(size_t i, const char* value, size_t size) {
    if (value == nullptr) {
      meta[2 * i] = -1;
      meta[2 * i + 1] = 0;
      return;
    }
    if (position <= capacity && size <= capacity - position) {
      std::memcpy(data + position, value, size);
      meta[2 * i] = static_cast<int32_t>(position);
    } else {
      meta[2 * i] = -2;
    }
    meta[2 * i + 1] = static_cast<int32_t>(std::min<size_t>(size, INT32_MAX));
    position += size;
  }

  void Finish(size_t count) {
    meta[2 * count] = static_cast<int32_t>(std::min<size_t>(position, INT32_MAX));
  }
};

bool ReadManyOutput(napi_env env, napi_value out, napi_value meta, size_t count,
                    ManyOutput* output) {
  ByteView bytes{};
  if (!ReadBytes(env, out, "out must be a Uint8Array", &bytes)) return false;
  size_t meta_length = 0;
  if (!ReadInt32Array(env, meta, &output->meta, &meta_length)) return false;
  if (meta_length < 2 * count + 1) return ThrowRange(env, "meta must hold 2 * keys + 1 int32");
  output->data = static_cast<char*>(const_cast<void*>(bytes.data));
  output->capacity = std::min<size_t>(bytes.size, INT32_MAX);
  return true;
}

Napi::Value ReadMany(napi_env env, ThreadState& state, ManyOutput& output) {
  size_t count = state.keys.size();
  size_t hits = Store().GetMany(state.keys.data(), count, output);
  output.Finish(count);
  return Napi::Number::New(env, static_cast<double>(hits));
}

// getManyJoined(keys: string, count: number, out: Uint8Array, meta: Int32Array): number
// The keys joined by U+001F: one string crosses the boundary instead of `count`. Returns -1 (and
// reads nothing) when splitting does not give `count` keys, i.e. a key contains U+001F; the
// caller then uses getManyArray.
Napi::Value GetManyJoined(const Napi::CallbackInfo& info) {
  napi_env env = info.Env();
  ThreadState& state = State(info);
  uint32_t count = 0;
  if (napi_get_value_uint32(env, info[1], &count) != napi_ok) {
    ThrowType(env, "count must be a number");
    return Napi::Value();
  }
  ManyOutput output{};
  if (!ReadManyOutput(env, info[2], info[3], count, &output)) return Napi::Value();
  state.keys.clear();
  if (count > 0) {
    size_t length = 0;
    if (!AppendUtf8(env, info[0], state.text, 0, &length)) return Napi::Value();
    const char* text = state.text.data();
    const char* end = text + length;
    const char* start = text;
    for (const char* p; (p = static_cast<const char*>(
                             std::memchr(start, kKeySeparator, static_cast<size_t>(end - start)))) !=
                        nullptr;
         start = p + 1) {
      state.keys.emplace_back(start, static_cast<size_t>(p - start));
    }
    state.keys.emplace_back(start, static_cast<size_t>(end - start));
    if (state.keys.size() != count) return Napi::Number::New(env, -1);
  }
  return ReadMany(env, state, output);
}

// getManyArray(keys: string[], out: Uint8Array, meta: Int32Array): number
Napi::Value GetManyArray(const Napi::CallbackInfo& info) {
  napi_env env = info.Env();
  ThreadState& state = State(info);
  if (!info[0].IsArray()) {
    ThrowType(env, "keys must be an array of strings");
    return Napi::Value();
  }
  napi_value keys = info[0];
  uint32_t count = 0;
  napi_get_array_length(env, keys, &count);
  ManyOutput output{};
  if (!ReadManyOutput(env, info[1], info[2], count, &output)) return Napi::Value();

  // Keys are appended to one buffer that may move while growing: record ends, then make views.
  state.key_ends.clear();
  size_t used = 0;
  for (uint32_t i = 0; i < count; ++i) {
    napi_value key;
    if (napi_get_element(env, keys, i, &key) != napi_ok) return Napi::Value();
    size_t length = 0;
    if (!AppendUtf8(env, key, state.text, used, &length)) return Napi::Value();
    used += length;
    state.key_ends.push_back(used);
  }
  state.keys.clear();
  size_t start = 0;
  for (size_t end : state.key_ends) {
    state.keys.emplace_back(state.text.data() + start, end - start);
    start = end;
  }
  return ReadMany(env, state, output);
}

// get(key: string): Buffer | undefined
// Simple, but creating a Buffer through N-API costs more than the read itself; the JS wrapper's
// get() uses getInto and a slab instead.
Napi::Value Get(const Napi::CallbackInfo& info) {
  napi_env env = info.Env();
  ThreadState& state = State(info);
  std::string_view key;
  if (!ReadKey(env, info[0], state, &key)) return Napi::Value();
  std::string& value = state.value;
  bool hit = Store().Get(key, [&value](const char* data, size_t size) { value.assign(data, size); });
  if (!hit) return info.Env().Undefined();
  return Napi::Buffer<char>::Copy(env, value.data(), value.size());
}

// getInto(key: string, out: Uint8Array, offset: number): number — the value's length, or -1 on a
// miss. The value is written at out[offset] only when it fits (offset + length <= out.length).
Napi::Value GetInto(const Napi::CallbackInfo& info) {
  napi_env env = info.Env();
  ThreadState& state = State(info);
  std::string_view key;
  if (!ReadKey(env, info[0], state, &key)) return Napi::Value();
  ByteView out{};
  if (!ReadBytes(env, info[1], "out must be a Uint8Array", &out)) return Napi::Value();
  uint32_t offset = 0;
  if (napi_get_value_uint32(env, info[2], &offset) != napi_ok || offset > out.size) {
    ThrowRange(env, "offset must be an integer within out");
    return Napi::Value();
  }
  char* dest = static_cast<char*>(const_cast<void*>(out.data)) + offset;
  size_t room = out.size - offset;
  size_t found = 0;
  bool hit = Store().Get(key, [&](const char* data, size_t size) {
    found = size;
    if (size <= room) std::memcpy(dest, data, size);
  });
  return Napi::Number::New(env, hit ? static_cast<double>(found) : -1.0);
}

// set(key: string, value: Uint8Array, ttlMs?: number): boolean
Napi::Value Set(const Napi::CallbackInfo& info) {
  napi_env env = info.Env();
  ThreadState& state = State(info);
  std::string_view key;
  if (!ReadKey(env, info[0], state, &key)) return Napi::Value();
  ByteView value{};
  if (!ReadBytes(env, info[1], "value must be a Uint8Array", &value)) return Napi::Value();
  uint64_t ttl_ms = 0;
  if (!ReadTtl(env, info[2], &ttl_ms)) return Napi::Value();
  return Napi::Boolean::New(env, Store().Set(key, value, ttl_ms));
}

// setMany(keys: string[], values: Uint8Array[], ttlMs?: number): number (entries stored)
Napi::Value SetMany(const Napi::CallbackInfo& info) {
  napi_env env = info.Env();
  ThreadState& state = State(info);
  if (!info[0].IsArray() || !info[1].IsArray()) {
    ThrowType(env, "keys and values must be arrays");
    return Napi::Value();
  }
  napi_value keys = info[0];
  napi_value values = info[1];
  uint32_t count = 0;
  uint32_t value_count = 0;
  napi_get_array_length(env, keys, &count);
  napi_get_array_length(env, values, &value_count);
  if (count != value_count) {
    ThrowRange(env, "keys and values must have the same length");
    return Napi::Value();
  }
  uint64_t ttl_ms = 0;
  if (!ReadTtl(env, info[2], &ttl_ms)) return Napi::Value();
  ShardedLruCache& store = Store();
  size_t stored = 0;
  for (uint32_t i = 0; i < count; ++i) {
    napi_value key_value;
    napi_value bytes_value;
    if (napi_get_element(env, keys, i, &key_value) != napi_ok ||
        napi_get_element(env, values, i, &bytes_value) != napi_ok) {
      return Napi::Value();
    }
    std::string_view key;
    ByteView bytes{};
    if (!ReadKey(env, key_value, state, &key)) return Napi::Value();
    if (!ReadBytes(env, bytes_value, "values must be Uint8Arrays", &bytes)) return Napi::Value();
    if (store.Set(key, bytes, ttl_ms)) ++stored;
  }
  return Napi::Number::New(env, static_cast<double>(stored));
}

// delete(key: string): boolean
Napi::Value Delete(const Napi::CallbackInfo& info) {
  napi_env env = info.Env();
  std::string_view key;
  if (!ReadKey(env, info[0], State(info), &key)) return Napi::Value();
  return Napi::Boolean::New(env, Store().Delete(key));
}

Napi::Value Clear(const Napi::CallbackInfo& info) {
  Store().Clear();
  return info.Env().Undefined();
}

Napi::Value StatsOf(Napi::Env env, ShardedLruCache& store) {
  scoreline::CacheStats stats = store.Stats();
  CacheLimits limits = store.limits();
  Napi::Object result = Napi::Object::New(env);
  auto put = [&](const char* name, uint64_t v) {
    result.Set(name, Napi::Number::New(env, static_cast<double>(v)));
  };
  put("hits", stats.hits);
  put("misses", stats.misses);
  put("evictions", stats.evictions);
  put("expirations", stats.expirations);
  put("entries", stats.entries);
  put("bytes", stats.bytes);
  put("maxEntries", limits.max_entries);
  put("maxBytes", limits.max_bytes);
  put("shards", store.shard_count());
  return result;
}

Napi::Value Stats(const Napi::CallbackInfo& info) {
  return StatsOf(info.Env(), Store());
}

// configure({ maxEntries?, maxBytes?, shards? }): boolean
// The first call (before any other operation) creates the store with these shards and limits.
// Later calls change only the limits (shrinking evicts at once); they return false and change
// nothing if they ask for a different shard count. Limits are split evenly over the shards, so
// maxEntries must be at least the shard count.
Napi::Value Configure(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsObject()) {
    ThrowType(env, "configure() takes an options object");
    return Napi::Value();
  }
  Napi::Object options = info[0].As<Napi::Object>();
  double max_entries = 0;
  double max_bytes = 0;
  double shards = 0;
  bool has_entries = false;
  bool has_bytes = false;
  bool has_shards = false;
  if (!ReadLimit(options, "maxEntries", kMaxSafeInteger, &max_entries, &has_entries) ||
      !ReadLimit(options, "maxBytes", kMaxSafeInteger, &max_bytes, &has_bytes) ||
      !ReadLimit(options, "shards", 65536, &shards, &has_shards)) {
    return Napi::Value();
  }
  size_t shard_count = has_shards ? static_cast<size_t>(shards) : kDefaultShards;
  if ((shard_count & (shard_count - 1)) != 0) {
    ThrowRange(env, "configure(): shards must be a power of two");
    return Napi::Value();
  }

  std::lock_guard<std::mutex> lock(g_store_mu);
  ShardedLruCache* store = g_store.load(std::memory_order_relaxed);
  CacheLimits limits = store != nullptr ? store->limits() : CacheLimits();
  if (has_entries) limits.max_entries = static_cast<uint64_t>(max_entries);
  if (has_bytes) limits.max_bytes = static_cast<uint64_t>(max_bytes);
  if (store != nullptr && has_shards && shard_count != store->shard_count()) {
    return Napi::Boolean::New(env, false);
  }
  size_t effective_shards = store != nullptr ? store->shard_count() : shard_count;
  if (limits.max_entries < effective_shards) {
    ThrowRange(env, "configure(): maxEntries must be at least the number of shards");
    return Napi::Value();
  }
  if (store == nullptr) {
    CreateStoreLocked(shard_count, limits);
    return Napi::Boolean::New(env, true);
  }
  store->SetLimits(limits);
  return Napi::Boolean::New(env, true);
}

// ---------------------------------------------------------------------------------------------
// Named tables (see above). Every function takes the table id from tableOpen first.

ShardedLruCache* TableArg(napi_env env, napi_value value) {
  uint32_t id = 0;
  ShardedLruCache* table = nullptr;
  if (napi_get_value_uint32(env, value, &id) == napi_ok && id < kMaxTables) {
    table = g_tables[id].load(std::memory_order_acquire);
  }
  if (table == nullptr) ThrowRange(env, "not an open table id");
  return table;
}

// tableOpen(name: string, limits?: { maxEntries?, maxBytes? }): number — the table's id; the same
// name gives the same table on every thread. Limits, when given, apply to the table (shrinking
// evicts at once); without them a new table is unlimited.
Napi::Value TableOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) {
    ThrowType(env, "tableOpen() takes a name");
    return Napi::Value();
  }
  std::string name = info[0].As<Napi::String>().Utf8Value();
  CacheLimits limits;
  limits.max_entries = static_cast<uint64_t>(kMaxSafeInteger);
  limits.max_bytes = static_cast<uint64_t>(kMaxSafeInteger);
  bool has_limits = false;
  if (info[1].IsObject()) {
    Napi::Object options = info[1].As<Napi::Object>();
    double entries = 0;
    double bytes = 0;
    bool has_entries = false;
    bool has_bytes = false;
    if (!ReadLimit(options, "maxEntries", kMaxSafeInteger, &entries, &has_entries) ||
        !ReadLimit(options, "maxBytes", kMaxSafeInteger, &bytes, &has_bytes)) {
      return Napi::Value();
    }
    if (has_entries) limits.max_entries = static_cast<uint64_t>(entries);
    if (has_bytes) limits.max_bytes = static_cast<uint64_t>(bytes);
    has_limits = has_entries || has_bytes;
  }
  if (limits.max_entries < kDefaultShards) {
    ThrowRange(env, "tableOpen(): maxEntries must be at least the number of shards (64)");
    return Napi::Value();
  }
  std::lock_guard<std::mutex> lock(g_tables_mu);
  for (uint32_t id = 0; id < g_table_names.size(); ++id) {
    if (g_table_names[id] != name) continue;
    if (has_limits) g_tables[id].load(std::memory_order_relaxed)->SetLimits(limits);
    return Napi::Number::New(env, id);
  }
  if (g_table_names.size() >= kMaxTables) {
    ThrowRange(env, "tableOpen(): too many tables (64)");
    return Napi::Value();
  }
  CacheOptions options;
  options.shards = kDefaultShards;
  options.limits = limits;
  // A table created without limits never evicts: reads need not keep an LRU order.
  options.touch_on_read = has_limits;
  uint32_t id = static_cast<uint32_t>(g_table_names.size());
  g_table_names.push_back(name);
  g_tables[id].store(new ShardedLruCache(std::move(options)), std::memory_order_release);
  return Napi::Number::New(env, id);
}

// tableGetInto(id, key, out, offset): number — as getInto.
Napi::Value TableGetInto(const Napi::CallbackInfo& info) {
  napi_env env = info.Env();
  ShardedLruCache* table = TableArg(env, info[0]);
  if (table == nullptr) return Napi::Value();
  ThreadState& state = State(info);
  std::string_view key;
  if (!ReadKey(env, info[1], state, &key)) return Napi::Value();
  ByteView out{};
  if (!ReadBytes(env, info[2], "out must be a Uint8Array", &out)) return Napi::Value();
  uint32_t offset = 0;
  if (napi_get_value_uint32(env, info[3], &offset) != napi_ok || offset > out.size) {
    ThrowRange(env, "offset must be an integer within out");
    return Napi::Value();
  }
  char* dest = static_cast<char*>(const_cast<void*>(out.data)) + offset;
  size_t room = out.size - offset;
  size_t found = 0;
  bool hit = table->Get(key, [&](const char* data, size_t size) {
    found = size;
    if (size <= room) std::memcpy(dest, data, size);
  });
  return Napi::Number::New(env, hit ? static_cast<double>(found) : -1.0);
}

// tableSet(id, key, value): boolean — stores (replacing), no expiry.
Napi::Value TableSet(const Napi::CallbackInfo& info) {
  napi_env env = info.Env();
  ShardedLruCache* table = TableArg(env, info[0]);
  if (table == nullptr) return Napi::Value();
  ThreadState& state = State(info);
  std::string_view key;
  if (!ReadKey(env, info[1], state, &key)) return Napi::Value();
  ByteView value{};
  if (!ReadBytes(env, info[2], "value must be a Uint8Array", &value)) return Napi::Value();
  return Napi::Boolean::New(env, table->Set(key, value, 0));
}

// tableInsertMany(id, keys: string, count, values: Uint8Array, ends: Int32Array): number
// Inserts `count` entries that are absent (a live entry is kept: a loader never overwrites what a
// writer stored meanwhile); returns how many were inserted. `keys` are joined by U+001F (-1 and
// nothing inserted when splitting does not give `count`; one key is taken whole); value i is
// values[ends[i-1] .. ends[i]).
Napi::Value TableInsertMany(const Napi::CallbackInfo& info) {
  napi_env env = info.Env();
  ShardedLruCache* table = TableArg(env, info[0]);
  if (table == nullptr) return Napi::Value();
  ThreadState& state = State(info);
  uint32_t count = 0;
  if (napi_get_value_uint32(env, info[2], &count) != napi_ok) {
    ThrowType(env, "count must be a number");
    return Napi::Value();
  }
  ByteView values{};
  if (!ReadBytes(env, info[3], "values must be a Uint8Array", &values)) return Napi::Value();
  int32_t* ends = nullptr;
  size_t ends_length = 0;
  if (!ReadInt32Array(env, info[4], &ends, &ends_length)) return Napi::Value();
  if (ends_length < count) {
    ThrowRange(env, "ends must hold one int32 per key");
    return Napi::Value();
  }
  state.keys.clear();
  if (count == 1) {
    // One key is taken whole, separator or not.
    size_t length = 0;
    if (!AppendUtf8(env, info[1], state.text, 0, &length)) return Napi::Value();
    state.keys.emplace_back(state.text.data(), length);
  } else if (count > 1) {
    size_t length = 0;
    if (!AppendUtf8(env, info[1], state.text, 0, &length)) return Napi::Value();
    const char* text = state.text.data();
    const char* end = text + length;
    const char* start = text;
    for (const char* p; (p = static_cast<const char*>(
                             std::memchr(start, kKeySeparator, static_cast<size_t>(end - start)))) !=
                        nullptr;
         start = p + 1) {
      state.keys.emplace_back(start, static_cast<size_t>(p - start));
    }
    state.keys.emplace_back(start, static_cast<size_t>(end - start));
    if (state.keys.size() != count) return Napi::Number::New(env, -1);
  }
  const char* bytes = static_cast<const char*>(values.data);
  size_t inserted = 0;
  int32_t from = 0;
  for (uint32_t i = 0; i < count; ++i) {
    int32_t to = ends[i];
    if (to < from || static_cast<size_t>(to) > values.size) {
      ThrowRange(env, "ends must be ascending offsets within values");
      return Napi::Value();
    }
    if (table->Insert(state.keys[i], ByteView{bytes + from, static_cast<size_t>(to - from)}, 0)) {
      ++inserted;
    }
    from = to;
  }
  return Napi::Number::New(env, static_cast<double>(inserted));
}

// tableDelete(id, key): boolean
Napi::Value TableDelete(const Napi::CallbackInfo& info) {
  napi_env env = info.Env();
  ShardedLruCache* table = TableArg(env, info[0]);
  if (table == nullptr) return Napi::Value();
  std::string_view key;
  if (!ReadKey(env, info[1], State(info), &key)) return Napi::Value();
  return Napi::Boolean::New(env, table->Delete(key));
}

// tableClear(id): removes every entry, freeing their memory.
Napi::Value TableClear(const Napi::CallbackInfo& info) {
  ShardedLruCache* table = TableArg(info.Env(), info[0]);
  if (table == nullptr) return Napi::Value();
  table->Clear();
  return info.Env().Undefined();
}

// tableStats(id): as stats().
Napi::Value TableStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ShardedLruCache* table = TableArg(env, info[0]);
  if (table == nullptr) return Napi::Value();
  return StatsOf(env, *table);
}

// The tree engine's logistic (src/inference/tree-runner.ts): onnxruntime's binary-classifier
// probabilities, [L(-s), L(s)] per row with L(v) = 1 / (1 + expf(-|v|)) mirrored for v < 0, all in
// float. Native because the result must be onnxruntime's to the bit, and that takes the C library's
// expf (onnxruntime's), which rounds differently from JavaScript's Math.exp near float midpoints.
// binaryLogistic(sums: Float32Array, probabilities: Float32Array) writes 2 values per sum.
float Logistic(float v) {
  float q = 1.0f / (1.0f + std::exp(-std::fabs(v)));
  return v < 0 ? 1.0f - q : q;
}

Napi::Value BinaryLogistic(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsTypedArray() || !info[1].IsTypedArray() ||
      info[0].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array ||
      info[1].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
    Napi::TypeError::New(env, "binaryLogistic(sums: Float32Array, probabilities: Float32Array)")
        .ThrowAsJavaScriptException();
    return Napi::Value();
  }
  Napi::Float32Array sums = info[0].As<Napi::Float32Array>();
  Napi::Float32Array out = info[1].As<Napi::Float32Array>();
  size_t n = sums.ElementLength();
  if (out.ElementLength() < 2 * n) {
    Napi::RangeError::New(env, "probabilities must hold 2 values per sum").ThrowAsJavaScriptException();
    return Napi::Value();
  }
  const float* s = sums.Data();
  float* p = out.Data();
  for (size_t r = 0; r < n; r++) {
    p[2 * r] = Logistic(-s[r]);
    p[2 * r + 1] = Logistic(s[r]);
  }
  return env.Undefined();
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* state = new ThreadState();
  env.SetInstanceData(state);  // deleted when this thread's environment shuts down
  exports.Set("configure", Napi::Function::New<Configure>(env, "configure", state));
  exports.Set("get", Napi::Function::New<Get>(env, "get", state));
  exports.Set("getInto", Napi::Function::New<GetInto>(env, "getInto", state));
  exports.Set("getManyJoined", Napi::Function::New<GetManyJoined>(env, "getManyJoined", state));
  exports.Set("getManyArray", Napi::Function::New<GetManyArray>(env, "getManyArray", state));
  exports.Set("set", Napi::Function::New<Set>(env, "set", state));
  exports.Set("setMany", Napi::Function::New<SetMany>(env, "setMany", state));
  exports.Set("delete", Napi::Function::New<Delete>(env, "delete", state));
  exports.Set("clear", Napi::Function::New<Clear>(env, "clear", state));
  exports.Set("stats", Napi::Function::New<Stats>(env, "stats", state));
  exports.Set("tableOpen", Napi::Function::New<TableOpen>(env, "tableOpen", state));
  exports.Set("tableGetInto", Napi::Function::New<TableGetInto>(env, "tableGetInto", state));
  exports.Set("tableSet", Napi::Function::New<TableSet>(env, "tableSet", state));
  exports.Set("tableInsertMany", Napi::Function::New<TableInsertMany>(env, "tableInsertMany", state));
  exports.Set("tableDelete", Napi::Function::New<TableDelete>(env, "tableDelete", state));
  exports.Set("tableClear", Napi::Function::New<TableClear>(env, "tableClear", state));
  exports.Set("tableStats", Napi::Function::New<TableStats>(env, "tableStats", state));
  exports.Set("binaryLogistic", Napi::Function::New<BinaryLogistic>(env, "binaryLogistic"));
  exports.Set("entryOverheadBytes",
              Napi::Number::New(env, static_cast<double>(ShardedLruCache::kEntryOverheadBytes)));
  exports.Set("keySeparator", Napi::String::New(env, std::string(1, kKeySeparator)));
  return exports;
}

}  // namespace

NODE_API_MODULE(scoreline_native, Init)
