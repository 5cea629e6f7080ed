// SPDX-License-Identifier: Apache-2.0
// flowkv::Version (include/flowkv/version.h.in): the linked library's
// version string, from CMake's project(VERSION).
#include "flowkv/version.h"

namespace flowkv {

const char* Version() { return FLOWKV_VERSION_STRING; }

}  // namespace flowkv
