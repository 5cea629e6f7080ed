#!/usr/bin/env bash
# Builds libflowkv with its CUDA kernels in build-gpu/ and runs the GPU tests
# (CTest label "cuda") and, with --bench, the CUDA layout benchmark. Meant
# for a machine with an NVIDIA GPU, a driver and the CUDA Toolkit (nvcc on
# PATH, in $CUDACXX or at /usr/local/cuda/bin/nvcc).
#
#   scripts/gpu-check.sh [--bench]
#
# Exits non-zero when a step fails, or when no GPU is visible (the tests
# would only be skipped then).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${root}/build-gpu"
jobs="$(nproc)"

"${root}/scripts/install-deps.sh"

if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L; then
  echo "gpu-check: no GPU visible (nvidia-smi failed)" >&2
  exit 1
fi

cmake -S "${root}" -B "${build}" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DFLOWKV_WITH_CUDA=ON
start=$(date +%s)
cmake --build "${build}" -j "${jobs}" --target flowkv_cuda
echo "gpu-check: flowkv_cuda built in $(( $(date +%s) - start )) s"
cmake --build "${build}" -j "${jobs}" \
  --target cuda_layout_test layout_convert_test cuda_layout_benchmark

# A skipped GPU test means the GPU was not usable: fail loudly.
(cd "${build}" && ctest -L cuda --output-on-failure --no-tests=error) |
  tee "${build}/gpu-check-ctest.log"
if grep -q "(Skipped)" "${build}/gpu-check-ctest.log"; then
  echo "gpu-check: GPU tests were skipped (no usable GPU?)" >&2
  exit 1
fi
(cd "${build}" && ctest -R "ConvertBlocks|PackBlocks|StagingLayout" \
  --output-on-failure)

if [[ "${1:-}" == "--bench" ]]; then
  "${build}/bin/cuda_layout_benchmark"
fi
echo "gpu-check: OK"
