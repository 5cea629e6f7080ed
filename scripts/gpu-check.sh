#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Runs libflowkv's GPU tests (Catch2 tag [cuda], CTest label "cuda") and GPU
# benchmarks on a machine with an NVIDIA GPU, in one of two modes:
#
#   scripts/gpu-check.sh --bundle DIR [--no-bench]
#       Bare GPU machine (driver only): runs the binaries of a bundle made
#       elsewhere by scripts/gpu-bundle.sh (DIR/bin, libraries in DIR/lib).
#       Tests and benchmarks together take well under 5 minutes (each
#       step has a time limit: 120 s per test binary, 150 s and 90 s for
#       the benchmarks).
#   scripts/gpu-check.sh [--bench]
#       Machine with the CUDA Toolkit (nvcc on PATH, in $CUDACXX or at
#       /usr/local/cuda/bin/nvcc) and Debian's packages: builds in
#       build-gpu/, runs the tests through CTest and, with --bench, the
#       benchmarks.
#
# Logs and a summary go to $OUT/gpu-check/ when $OUT is set (else to
# build-gpu/gpu-check/ or DIR/results/). Exits non-zero when a step fails,
# when no GPU is usable, or when a GPU test was skipped (a skip means the GPU
# was not usable, which must not pass as success).
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bundle=""
bench=0
no_bench=0
while (($#)); do
  case "$1" in
    --bundle) bundle="$2"; shift 2 ;;
    --bench) bench=1; shift ;;
    --no-bench) no_bench=1; shift ;;
    *) echo "gpu-check: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -n "${bundle}" ]] && bundle="$(cd "${bundle}" && pwd)"

if [[ -n "${OUT:-}" ]]; then
  results="${OUT}/gpu-check"
elif [[ -n "${bundle}" ]]; then
  results="${bundle}/results"
else
  results="${root}/build-gpu/gpu-check"
fi
mkdir -p "${results}"
summary="${results}/summary.txt"
: >"${summary}"
failed=0

note() { echo "gpu-check: $*" | tee -a "${summary}"; }

# nvidia-smi is informational: the tests decide whether the GPU is usable.
if command -v nvidia-smi >/dev/null; then
  nvidia-smi -L >"${results}/nvidia-smi.txt" 2>&1 || true
  nvidia-smi >>"${results}/nvidia-smi.txt" 2>&1 || true
  note "nvidia-smi: $(head -1 "${results}/nvidia-smi.txt")"
else
  note "nvidia-smi: not found"
fi

# Runs one Catch2 test binary; fails on a non-zero exit or a skipped case.
run_test() {
  local bin="$1" name log start
  name="$(basename "${bin}")"
  log="${results}/${name}.log"
  start=$(date +%s)
  timeout 120 "${bin}" --durations yes >"${log}" 2>&1
  local rc=$?
  local took=$(($(date +%s) - start))
  if grep -q "SKIP_NO_GPU" "${log}"; then
    note "FAIL ${name}: GPU cases skipped, no usable GPU: $(grep -m1 -o 'SKIP_NO_GPU.*' "${log}")"
    return 2
  fi
  if ((rc != 0)); then
    note "FAIL ${name} (exit ${rc}, ${took} s): $(grep -E '^(test cases|All tests)' "${log}" | tail -1)"
    tail -60 "${log}"
    return 1
  fi
  note "ok   ${name} (${took} s): $(grep -E '^(test cases|All tests)' "${log}" | tail -1)"
}

# run_bench NAME SECONDS COMMAND...: one benchmark, killed after SECONDS.
run_bench() {
  local name="$1" limit="$2"; shift 2
  local log="${results}/${name}.txt" start
  start=$(date +%s)
  timeout "${limit}" "$@" >"${log}" 2>&1
  local rc=$?
  if ((rc != 0)); then
    note "FAIL ${name} (exit ${rc}): $(tail -1 "${log}")"
    tail -30 "${log}"
    return 1
  fi
  note "ok   ${name} ($(($(date +%s) - start)) s): ${log}"
}

if [[ -n "${bundle}" ]]; then
  # ---- bundle mode -------------------------------------------------------
  export LD_LIBRARY_PATH="${bundle}/lib${LD_LIBRARY_PATH:+:${LD_LIBRARY_PATH}}"
  export UCX_MODULE_DIR="${bundle}/lib/ucx"
  export UCX_NET_DEVICES=lo
  # cuda_kv_transfer_test's two processes talk UCX over TCP loopback (as
  # CTest runs it).
  export UCX_TLS=tcp
  [[ -f "${bundle}/MANIFEST" ]] && head -4 "${bundle}/MANIFEST" >>"${summary}"
  missing="$(ldd "${bundle}"/bin/* 2>/dev/null | grep "not found" | sort -u)"
  if [[ -n "${missing}" ]]; then
    note "FAIL libraries missing on this machine: ${missing}"
    exit 1
  fi
  for t in cuda_pool_memory_test cuda_kv_transfer_test cuda_layout_test; do
    run_test "${bundle}/bin/${t}"
    rc=$?
    if ((rc == 2)); then
      note "no usable GPU: stopping"
      exit 1
    fi
    ((rc != 0)) && failed=1
  done
  if ((!no_bench)); then
    run_bench cuda_pool_benchmark 150 "${bundle}/bin/cuda_pool_benchmark" || failed=1
    run_bench cuda_layout_benchmark 90 "${bundle}/bin/cuda_layout_benchmark" \
      --benchmark_min_time=0.2 || failed=1
    sed -n '/^device/p;/^case/,$p' "${results}/cuda_pool_benchmark.txt" 2>/dev/null |
      tee -a "${summary}"
  fi
else
  # ---- build-from-source mode -------------------------------------------
  build="${root}/build-gpu"
  "${root}/scripts/install-deps.sh" || exit 1
  cmake -S "${root}" -B "${build}" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DFLOWKV_WITH_CUDA=ON || exit 1
  start=$(date +%s)
  cmake --build "${build}" -j "$(nproc)" --target flowkv_cuda || exit 1
  note "flowkv_cuda built in $(($(date +%s) - start)) s"
  cmake --build "${build}" -j "$(nproc)" --target cuda_layout_test \
    layout_convert_test cuda_pool_memory_test cuda_pool_peer cuda_kv_transfer_test \
    cuda_layout_benchmark cuda_pool_benchmark || exit 1
  (cd "${build}" && UCX_NET_DEVICES=lo ctest -L cuda --output-on-failure \
    --no-tests=error) >"${results}/ctest-cuda.log" 2>&1 || failed=1
  tail -3 "${results}/ctest-cuda.log" | tee -a "${summary}"
  if grep -q "(Skipped)" "${results}/ctest-cuda.log"; then
    note "FAIL GPU tests were skipped (no usable GPU?)"
    exit 1
  fi
  (cd "${build}" && ctest -R "ConvertBlocks|PackBlocks|PackedLayout" \
    --output-on-failure) >>"${results}/ctest-cuda.log" 2>&1 || failed=1
  if ((bench && !no_bench)); then
    run_bench cuda_pool_benchmark 150 "${build}/bin/cuda_pool_benchmark" || failed=1
    run_bench cuda_layout_benchmark 300 "${build}/bin/cuda_layout_benchmark" || failed=1
    sed -n '/^device/p;/^case/,$p' "${results}/cuda_pool_benchmark.txt" 2>/dev/null |
      tee -a "${summary}"
  fi
fi

if ((failed)); then
  note "FAILED (logs in ${results})"
  exit 1
fi
note "OK (logs in ${results})"
