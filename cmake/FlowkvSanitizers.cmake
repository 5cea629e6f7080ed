# FLOWKV_SANITIZE=address -> ASan + UBSan; FLOWKV_SANITIZE=thread -> TSan.
# Applied to every target of the build (library, tests, benchmarks, tools).
if(FLOWKV_SANITIZE STREQUAL "address")
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
elseif(FLOWKV_SANITIZE STREQUAL "thread")
  add_compile_options(-fsanitize=thread -fno-omit-frame-pointer)
  add_link_options(-fsanitize=thread)
elseif(NOT FLOWKV_SANITIZE STREQUAL "")
  message(FATAL_ERROR "FLOWKV_SANITIZE must be '', 'address' or 'thread', not '${FLOWKV_SANITIZE}'")
endif()
