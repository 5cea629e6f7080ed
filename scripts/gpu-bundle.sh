#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds the GPU tests and benchmarks here (Release, FLOWKV_WITH_CUDA=ON, in
# build-gpu/) and assembles gpu-bundle/: the binaries plus every shared
# library they load that a bare GPU machine (NVIDIA driver only, no CUDA
# Toolkit, no Debian packages) may lack, so that
#
#   scripts/gpu-check.sh --bundle gpu-bundle      (or gpu-bundle/run.sh)
#
# runs them there. Needs nvcc here (no GPU needed). gpu-bundle/ is ignored by
# git (.gitignore) and stays under 64 MiB (checked).
#
#   gpu-bundle/bin/   cuda_layout_test cuda_pool_memory_test cuda_pool_peer
#                     cuda_kv_transfer_test cuda_layout_benchmark
#                     cuda_pool_benchmark
#   gpu-bundle/lib/   libflowkv*, libcudart, Abseil, UCX (+ lib/ucx/ modules),
#                     fmt, libcrypto, libstdc++, ... (stripped copies)
#   gpu-bundle/run.sh gpu-bundle/gpu-check.sh  gpu-bundle/MANIFEST
#
# Never bundled: the C library and loader (libc, libm, libdl, libpthread,
# librt, ld-linux), the driver (libcuda, libnvidia-*). The bare machine needs
# an x86-64 Linux with glibc >= this machine's (Debian 12: 2.36) and an
# NVIDIA driver for CUDA 13.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${root}/build-gpu"
bundle="${root}/gpu-bundle"
limit_bytes=$((64 * 1024 * 1024))
binaries=(cuda_layout_test cuda_pool_memory_test cuda_pool_peer
          cuda_kv_transfer_test cuda_layout_benchmark cuda_pool_benchmark)

cmake -S "${root}" -B "${build}" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DFLOWKV_WITH_CUDA=ON >/dev/null
cmake --build "${build}" -j "${FLOWKV_JOBS:-2}" --target "${binaries[@]}"

rm -rf "${bundle}"
mkdir -p "${bundle}/bin" "${bundle}/lib/ucx"
for b in "${binaries[@]}"; do
  cp "${build}/bin/${b}" "${bundle}/bin/"
done

# Libraries the binaries and UCX's transport modules load, minus the
# system's own (C library, loader) and the driver's.
ucx_modules=/usr/lib/x86_64-linux-gnu/ucx
for m in "${ucx_modules}"/libuct_*.so.0; do
  [[ -e "${m}" ]] && cp -L "${m}" "${bundle}/lib/ucx/"
done
skip='^(linux-vdso|ld-linux|libc\.so|libm\.so|libdl\.so|libpthread\.so|librt\.so|libcuda\.so|libnvidia)'
while read -r name path; do
  [[ -z "${path}" || ! -e "${path}" ]] && continue
  if [[ "${name}" =~ ${skip} ]]; then continue; fi
  [[ -e "${bundle}/lib/${name}" ]] || cp -L "${path}" "${bundle}/lib/${name}"
done < <(LD_LIBRARY_PATH="${build}/lib" ldd "${bundle}"/bin/* "${bundle}"/lib/ucx/* |
         awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' | sort -u)

# The flowkv libraries under every name the binaries ask for.
for lib in "${build}"/lib/libflowkv*.so.*; do
  cp -L "${lib}" "${bundle}/lib/$(basename "${lib}")"
done
chmod -R u+w "${bundle}"
strip --strip-unneeded "${bundle}"/bin/* "${bundle}"/lib/*.so* \
  "${bundle}"/lib/ucx/*.so* 2>/dev/null || true

cp "${root}/scripts/gpu-check.sh" "${bundle}/gpu-check.sh"
cat > "${bundle}/run.sh" <<'RUN'
#!/usr/bin/env bash
# Runs the GPU check from this bundle: ./run.sh [--no-bench]
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "${here}/gpu-check.sh" --bundle "${here}" "$@"
RUN
chmod +x "${bundle}/run.sh" "${bundle}/gpu-check.sh"

{
  echo "flowkv GPU bundle, built $(date -u +%Y-%m-%dT%H:%M:%SZ) from"
  echo "  $(git -C "${root}" rev-parse HEAD 2>/dev/null || echo unknown)$(
    git -C "${root}" diff --quiet 2>/dev/null || echo ' (with local changes)')"
  echo "  nvcc: $("${CUDACXX:-/usr/local/cuda/bin/nvcc}" --version | tail -1)"
  echo "  glibc: $(ldd --version | head -1)"
  echo "files:"
  (cd "${bundle}" && find . -type f | sort | xargs ls -l | awk '{print "  " $5, $9}')
} >"${bundle}/MANIFEST"

bytes=$(du -sb "${bundle}" | cut -f1)
echo "gpu-bundle: ${bundle} ($((bytes / 1024 / 1024)) MiB, $(find "${bundle}" -type f | wc -l) files)"
if ((bytes > limit_bytes)); then
  echo "gpu-bundle: larger than $((limit_bytes / 1024 / 1024)) MiB" >&2
  exit 1
fi
