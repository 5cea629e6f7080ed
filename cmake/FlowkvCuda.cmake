# SPDX-License-Identifier: Apache-2.0
# Decides FLOWKV_CUDA_ENABLED. AUTO enables CUDA only when nvcc is found
# (CUDACXX, PATH or /usr/local/cuda/bin/nvcc); OFF never; ON requires it.
set(FLOWKV_CUDA_ENABLED OFF)
if(NOT FLOWKV_WITH_CUDA STREQUAL "OFF")
  if(NOT CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX})
    find_program(FLOWKV_NVCC nvcc HINTS /usr/local/cuda/bin)
    if(FLOWKV_NVCC)
      set(CMAKE_CUDA_COMPILER ${FLOWKV_NVCC})
    endif()
  endif()
  # CUDA 13 builds sm_75 and newer: real code for Turing, Ampere, Hopper and
  # Blackwell, plus PTX of the newest for later GPUs. A user's
  # CMAKE_CUDA_ARCHITECTURES or CUDAARCHS wins.
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES AND NOT DEFINED ENV{CUDAARCHS})
    set(CMAKE_CUDA_ARCHITECTURES "75-real;80-real;90-real;100-real;120")
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    enable_language(CUDA)
    find_package(CUDAToolkit REQUIRED)
    set(FLOWKV_CUDA_ENABLED ON)
  elseif(FLOWKV_WITH_CUDA STREQUAL "ON")
    message(FATAL_ERROR "FLOWKV_WITH_CUDA=ON but no CUDA compiler was found")
  endif()
endif()
message(STATUS "flowkv: CUDA kernels ${FLOWKV_CUDA_ENABLED}")
