#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs the Debian 12 packages libflowkv needs to build and test.
# Idempotent: only missing packages are installed. As root it runs apt-get;
# otherwise it prints the exact command to run.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config
  libucx-dev ucx-utils libssl-dev
  libabsl-dev libfmt-dev catch2 libbenchmark-dev
  clang-format iproute2
  # The Python package (python/) and its tests, for /usr/bin/python3.
  pybind11-dev python3-dev python3-pytest python3-numpy python3-torch
  # Optional: Prometheus metrics (flowkv::prometheus, FLOWKV_WITH_PROMETHEUS).
  prometheus-cpp-dev
  # scripts/plot-cluster.py (the figures of docs/cluster.md).
  python3-matplotlib
  # libFuzzer targets (tests/fuzz/, FLOWKV_BUILD_FUZZERS=ON).
  clang-14 libclang-rt-14-dev
  # flowkv-cluster's model (tools/cluster/model/): its matrix products.
  # Optional at build time (FLOWKV_WITH_BLAS=AUTO: plain loops without it).
  libopenblas-dev
  # flowkv-cluster --etcd (FLOWKV_WITH_ETCD=AUTO builds it when libcurl is
  # found; the server runs only in its tests and where a deployment uses it).
  libcurl4-openssl-dev etcd-server
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

cmd=(apt-get install -y --no-install-recommends "${missing[@]}")
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages: ${missing[*]}" >&2
  echo "install-deps: run as root: apt-get update && ${cmd[*]}" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
"${cmd[@]}"
