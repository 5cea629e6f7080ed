// SPDX-License-Identifier: Apache-2.0
// The replay driver: a main() for the fuzz targets in builds without
// libFuzzer (g++, the release and sanitizer presets). Runs
// LLVMFuzzerTestOneInput once on every file named on the command line and
// every file in the directories named (sorted by name, dot files skipped),
// as libFuzzer does with file arguments. A broken property aborts inside the
// target (FUZZ_CHECK); the driver fails when a path cannot be read or when
// it ran no input at all.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

bool RunFile(const std::filesystem::path& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    std::fprintf(stderr, "replay: cannot read %s\n", path.c_str());
    return false;
  }
  const std::vector<char> bytes{std::istreambuf_iterator<char>(file),
                                std::istreambuf_iterator<char>()};
  // A copy of exactly the input's size, so that ASan sees reads past it.
  std::vector<uint8_t> input(bytes.begin(), bytes.end());
  LLVMFuzzerTestOneInput(input.empty() ? nullptr : input.data(), input.size());
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  int ran = 0;
  for (int i = 1; i < argc; ++i) {
    const std::filesystem::path arg(argv[i]);
    std::error_code error;
    if (!std::filesystem::is_directory(arg, error)) {
      if (!RunFile(arg)) return 1;
      ++ran;
      continue;
    }
    std::vector<std::filesystem::path> files;
    for (const auto& entry : std::filesystem::directory_iterator(arg)) {
      if (entry.is_regular_file() &&
          entry.path().filename().string().front() != '.') {
        files.push_back(entry.path());
      }
    }
    std::sort(files.begin(), files.end());
    for (const auto& file : files) {
      if (!RunFile(file)) return 1;
      ++ran;
    }
  }
  std::printf("replay: %d inputs ran\n", ran);
  return ran > 0 ? 0 : 1;
}
