#!/usr/bin/env bash
# Builds and runs the C++ tests of the native feature cache (native/test/cache_test.cc) without
# Node. SANITIZE=1 builds with AddressSanitizer + UndefinedBehaviorSanitizer instead, SANITIZE=thread
# with ThreadSanitizer (CI runs all three). Exits non-zero if compilation or any check fails.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out_dir="${root}/build/native-test"
mkdir -p "${out_dir}"

cxx="${CXX:-g++}"
flags=(-std=c++17 -pthread -Wall -Wextra -Werror)
if [[ "${SANITIZE:-0}" == "1" ]]; then
  flags+=(-O1 -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all -g)
  binary="${out_dir}/cache_test_sanitized"
  export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
  export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
elif [[ "${SANITIZE:-0}" == "thread" ]]; then
  # ThreadSanitizer: the checker for the shard locks the cache's concurrent tests exercise.
  flags+=(-O1 -fsanitize=thread -fno-omit-frame-pointer -g)
  binary="${out_dir}/cache_test_tsan"
  export TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}"
else
  flags+=(-O2)
  binary="${out_dir}/cache_test"
fi

echo "compiling: ${cxx} ${flags[*]}"
"${cxx}" "${flags[@]}" -I"${root}/native" \
  "${root}/native/cache.cc" "${root}/native/test/cache_test.cc" -o "${binary}"
"${binary}"
