#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds the "fuzz" preset (clang, libFuzzer + ASan + UBSan, build-fuzz/)
# and runs every fuzz target of tests/fuzz/ for a bounded time, one after
# the other, starting from its committed corpus (read only: new inputs go
# to a scratch directory). Prints the executions of each target (libFuzzer's
# stat::number_of_executed_units) and fails when any target finds a crash,
# leak, timeout, out-of-memory or broken property; the input that did it is
# left in build-fuzz/fuzz-artifacts/<target>/ (add it to
# tests/fuzz/regressions/<target>/ with the fix).
#
#   scripts/fuzz.sh [seconds per target, default 60] [target ...]
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for f in tests/fuzz/*_fuzz.cc; do targets+=("$(basename "$f" .cc)"); done
fi

cmake --preset fuzz >/dev/null
cmake --build --preset fuzz -j "${JOBS:-$(nproc)}" --target "${targets[@]}"

work=build-fuzz/fuzz-work
artifacts=build-fuzz/fuzz-artifacts
failed=()
summary=()
for t in "${targets[@]}"; do
  rm -rf "$work/$t"
  mkdir -p "$work/$t" "$artifacts/$t"
  dict=()
  [ -f "tests/fuzz/$t.dict" ] && dict=("-dict=tests/fuzz/$t.dict")
  inputs=("tests/fuzz/corpus/$t")
  [ -d "tests/fuzz/regressions/$t" ] && inputs+=("tests/fuzz/regressions/$t")
  log="$work/$t.log"
  echo "== $t: ${seconds}s"
  status=0
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "build-fuzz/bin/$t" "$work/$t" "${inputs[@]}" "${dict[@]}" \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
    -max_len=4096 -print_final_stats=1 \
    -artifact_prefix="$artifacts/$t/" >"$log" 2>&1 || status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  summary+=("$(printf '%-24s %12s executions  %s' "$t" "${execs:-?}" \
    "$([ $status -eq 0 ] && echo ok || echo "FAILED (exit $status)")")")
  if [ $status -ne 0 ]; then
    failed+=("$t")
    tail -n 40 "$log"
    ls "$artifacts/$t"
  fi
done
echo "== fuzz summary (${seconds}s per target)"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -ne 0 ]; then
  echo "fuzz: FAILED: ${failed[*]} (inputs in $artifacts/)"
  exit 1
fi
echo "fuzz: ok"
