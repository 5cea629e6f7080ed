# SPDX-License-Identifier: Apache-2.0
# Installs the build tree into a scratch prefix, then configures, builds and
# runs a small outside project that finds it with find_package(flowkv).
file(REMOVE_RECURSE ${WORK_DIR})
execute_process(COMMAND ${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${WORK_DIR}/prefix
                RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "install failed: ${rc}")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} -S ${SOURCE_DIR}/tests/install_consumer/project
                  -B ${WORK_DIR}/build -G ${GENERATOR}
                  -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix
                  "-DCMAKE_CXX_FLAGS=${CXX_FLAGS}"
                  "-DCMAKE_C_FLAGS=${CXX_FLAGS}"
                  "-DCMAKE_EXE_LINKER_FLAGS=${CXX_FLAGS}"
                RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "configuring the consumer failed: ${rc}")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${WORK_DIR}/build RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "building the consumer failed: ${rc}")
endif()
execute_process(COMMAND ${WORK_DIR}/build/consumer RESULT_VARIABLE rc OUTPUT_VARIABLE out)
message(STATUS "consumer printed: ${out}")
if(rc OR NOT out MATCHES "runs=1")
  message(FATAL_ERROR "consumer failed (${rc}): ${out}")
endif()
execute_process(COMMAND ${WORK_DIR}/build/c_consumer RESULT_VARIABLE rc OUTPUT_VARIABLE out)
message(STATUS "c_consumer printed: ${out}")
if(rc OR NOT out MATCHES "c version=[0-9]+[.][0-9]+[.][0-9]+ runs=1")
  message(FATAL_ERROR "c_consumer failed (${rc}): ${out}")
endif()
execute_process(COMMAND ${WORK_DIR}/build/router RESULT_VARIABLE rc OUTPUT_VARIABLE out)
message(STATUS "router printed: ${out}")
if(rc OR NOT out MATCHES "policy=load_aware")
  message(FATAL_ERROR "router failed (${rc}): ${out}")
endif()
if(EXISTS ${WORK_DIR}/build/metrics_consumer)
  execute_process(COMMAND ${WORK_DIR}/build/metrics_consumer RESULT_VARIABLE rc
                  OUTPUT_VARIABLE out)
  message(STATUS "metrics_consumer printed: ${out}")
  if(rc OR NOT out MATCHES "families=[1-9]")
    message(FATAL_ERROR "metrics_consumer failed (${rc}): ${out}")
  endif()
endif()
execute_process(COMMAND ldd ${WORK_DIR}/build/router OUTPUT_VARIABLE deps)
if(deps MATCHES "libuc[pst]|libcrypto|libflowkv")
  message(FATAL_ERROR "flowkv::scheduler pulled in UCX, libcrypto or libflowkv:\n${deps}")
endif()
