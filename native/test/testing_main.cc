#include <stdlib.h>

#include <cstdio>
#include <string>

#include "testing.h"

namespace revpatch_test {

std::string TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string templ = std::string(base && *base ? base : "/tmp") +
                      "/revpatch-native-XXXXXX";
  if (mkdtemp(&templ[0]) == nullptr) {
    std::perror("mkdtemp");
    std::abort();
  }
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
  return failed_cases == 0 ? 0 : 1;
}
