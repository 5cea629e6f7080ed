# SPDX-License-Identifier: Apache-2.0
# FLOWKV_BUILD_FUZZERS=ON: the libFuzzer targets of tests/fuzz/ (the "fuzz"
# preset, build-fuzz/). Requires clang. Every target of the build (the
# library included) is compiled with -fsanitize=fuzzer-no-link,address,
# undefined (coverage for the fuzzer, ASan + UBSan, undefined behaviour
# fatal); the fuzz binaries link with -fsanitize=fuzzer (tests/fuzz/
# CMakeLists.txt). Abseil and UCX come from Debian, not instrumented.
option(FLOWKV_BUILD_FUZZERS "Build the libFuzzer targets (clang only)" OFF)
if(FLOWKV_BUILD_FUZZERS)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR
      "FLOWKV_BUILD_FUZZERS=ON requires clang (libFuzzer), but the C++ "
      "compiler is ${CMAKE_CXX_COMPILER_ID} ${CMAKE_CXX_COMPILER}: use the "
      "\"fuzz\" preset (cmake --preset fuzz) or CMAKE_CXX_COMPILER=clang++-14")
  endif()
  if(NOT FLOWKV_SANITIZE STREQUAL "")
    message(FATAL_ERROR
      "FLOWKV_BUILD_FUZZERS=ON brings its own sanitizers: leave FLOWKV_SANITIZE "
      "empty (it is '${FLOWKV_SANITIZE}')")
  endif()
  add_compile_options(-fsanitize=fuzzer-no-link,address,undefined
    -fno-sanitize-recover=undefined -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined)
endif()
