#include <stdlib.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "testing.h"

namespace revpatch_test {
namespace {
std::vector<std::string>& TempDirs() {
  static std::vector<std::string> dirs;
  return dirs;
}
}  // namespace

std::string TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string templ = std::string(base && *base ? base : "/tmp") +
                      "/revpatch-native-XXXXXX";
  if (mkdtemp(&templ[0]) == nullptr) {
    std::perror("mkdtemp");
    std::abort();
  }
  TempDirs().push_back(templ);
  return templ;
}

}  // namespace revpatch_test

int main() {
  int failed_cases = 0;
  for (const auto& test_case : revpatch_test::Registry()) {
    int before = revpatch_test::Failures();
    test_case.body();
    bool ok = revpatch_test::Failures() == before;
    if (!ok) ++failed_cases;
    std::printf("%s %s\n", ok ? "ok  " : "FAIL", test_case.name);
  }
  size_t total = revpatch_test::Registry().size();
  std::printf("%zu passed, %d failed\n", total - failed_cases, failed_cases);
  // Kept on failure for inspection; removed when everything passed.
  if (failed_cases == 0) {
    for (const auto& dir : revpatch_test::TempDirs()) {
      std::error_code ignored;
      std::filesystem::remove_all(dir, ignored);
    }
  }
  return failed_cases == 0 ? 0 : 1;
}
