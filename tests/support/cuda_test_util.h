// SPDX-License-Identifier: Apache-2.0
// What the CUDA tests share: whether a usable GPU is present (device cases
// skip without one, printing SKIP_NO_GPU, which CTest's
// SKIP_REGULAR_EXPRESSION and scripts/gpu-check.sh look for) and checked
// CUDA calls. Catch2 assertions: use from a test's main thread only.
#ifndef FLOWKV_TESTS_SUPPORT_CUDA_TEST_UTIL_H_
#define FLOWKV_TESTS_SUPPORT_CUDA_TEST_UTIL_H_

#include <cuda_runtime_api.h>

#include <catch2/catch.hpp>

namespace flowkv::testing {

// True when CUDA sees a device; otherwise warns SKIP_NO_GPU and returns
// false.
inline bool HaveGpu() {
  int count = 0;
  const cudaError_t error = cudaGetDeviceCount(&count);
  if (error != cudaSuccess || count == 0) {
    WARN("SKIP_NO_GPU: no usable GPU (" << cudaGetErrorName(error) << ", "
                                        << count << " devices)");
    return false;
  }
  return true;
}

}  // namespace flowkv::testing

// Ends the test case (passing, with SKIP_NO_GPU in its output) without a
// GPU.
#define FLOWKV_SKIP_WITHOUT_GPU()        \
  do {                                   \
    if (!::flowkv::testing::HaveGpu()) { \
      SUCCEED("no GPU");                 \
      return;                            \
    }                                    \
  } while (false)

#define CUDA_REQUIRE(expr) REQUIRE((expr) == cudaSuccess)

#endif  // FLOWKV_TESTS_SUPPORT_CUDA_TEST_UTIL_H_
