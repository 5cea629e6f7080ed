# SPDX-License-Identifier: Apache-2.0
# FLOWKV_SANITIZE=address -> ASan + UBSan; FLOWKV_SANITIZE=thread -> TSan.
# Applied to every target of the build (library, tests, benchmarks, tools).
# FLOWKV_SANITIZE_FLAGS holds the flags, for programs built outside this
# tree against it (the install consumer test).
set(FLOWKV_SANITIZE_FLAGS "")
if(FLOWKV_SANITIZE STREQUAL "address")
  set(FLOWKV_SANITIZE_FLAGS -fsanitize=address,undefined)
  add_compile_options(${FLOWKV_SANITIZE_FLAGS} -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  add_link_options(${FLOWKV_SANITIZE_FLAGS})
elseif(FLOWKV_SANITIZE STREQUAL "thread")
  set(FLOWKV_SANITIZE_FLAGS -fsanitize=thread)
  add_compile_options(${FLOWKV_SANITIZE_FLAGS} -fno-omit-frame-pointer)
  add_link_options(${FLOWKV_SANITIZE_FLAGS})
elseif(NOT FLOWKV_SANITIZE STREQUAL "")
  message(FATAL_ERROR "FLOWKV_SANITIZE must be '', 'address' or 'thread', not '${FLOWKV_SANITIZE}'")
endif()
