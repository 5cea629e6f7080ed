# SPDX-License-Identifier: Apache-2.0
# Decides FLOWKV_PROMETHEUS_ENABLED (flowkv::prometheus, lib/telemetry/).
# AUTO builds it when prometheus-cpp (Debian: prometheus-cpp-dev) is found;
# OFF never; ON requires it.
set(FLOWKV_PROMETHEUS_ENABLED OFF)
if(NOT FLOWKV_WITH_PROMETHEUS STREQUAL "OFF")
  if(FLOWKV_WITH_PROMETHEUS STREQUAL "ON")
    find_package(prometheus-cpp CONFIG REQUIRED)
  else()
    find_package(prometheus-cpp CONFIG QUIET)
  endif()
  if(TARGET prometheus-cpp::pull)
    set(FLOWKV_PROMETHEUS_ENABLED ON)
  elseif(FLOWKV_WITH_PROMETHEUS STREQUAL "ON")
    message(FATAL_ERROR "FLOWKV_WITH_PROMETHEUS=ON but prometheus-cpp has no pull library")
  endif()
endif()
message(STATUS "flowkv: Prometheus metrics (flowkv::prometheus) ${FLOWKV_PROMETHEUS_ENABLED}")
