# SPDX-License-Identifier: Apache-2.0
include(CMakePackageConfigHelpers)

# flowkv/telemetry/ only with flowkv::prometheus.
set(FLOWKV_HEADER_EXCLUDES PATTERN "*.in" EXCLUDE)
if(NOT FLOWKV_PROMETHEUS_ENABLED)
  list(APPEND FLOWKV_HEADER_EXCLUDES PATTERN "telemetry" EXCLUDE)
endif()
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/flowkv
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} ${FLOWKV_HEADER_EXCLUDES})
install(FILES ${PROJECT_BINARY_DIR}/include/flowkv/export.h
              ${PROJECT_BINARY_DIR}/include/flowkv/version.h
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/flowkv)

set(FLOWKV_INSTALL_TARGETS flowkv flowkv_scheduler_lib flowkv_sim_lib)
if(FLOWKV_CUDA_ENABLED)
  list(APPEND FLOWKV_INSTALL_TARGETS flowkv_cuda)
endif()
if(FLOWKV_PROMETHEUS_ENABLED)
  list(APPEND FLOWKV_INSTALL_TARGETS flowkv_prometheus)
endif()
install(TARGETS ${FLOWKV_INSTALL_TARGETS} EXPORT flowkvTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})

set(FLOWKV_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/flowkv)
install(EXPORT flowkvTargets NAMESPACE flowkv:: DESTINATION ${FLOWKV_CMAKE_DIR})

configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/flowkvConfig.cmake.in
  ${PROJECT_BINARY_DIR}/flowkvConfig.cmake INSTALL_DESTINATION ${FLOWKV_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/flowkvConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/flowkvConfig.cmake
              ${PROJECT_BINARY_DIR}/flowkvConfigVersion.cmake
        DESTINATION ${FLOWKV_CMAKE_DIR})
