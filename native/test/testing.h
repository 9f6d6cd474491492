// A minimal test harness for the engine's unit tests: TEST(name) registers
// a case, EXPECT_* records a failure and continues, ASSERT_* returns. Each
// test binary's main() runs every case and exits non-zero on any failure;
// ctest runs the binaries.
#ifndef REVPATCH_TEST_TESTING_H_
#define REVPATCH_TEST_TESTING_H_

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "../engine/status.h"

namespace revpatch_test {

struct Case {
  const char* name;
  std::function<void()> body;
};

inline std::vector<Case>& Registry() {
  static std::vector<Case> cases;
  return cases;
}
inline int& Failures() {
  static int failures = 0;
  return failures;
}
struct Registrar {
  Registrar(const char* name, std::function<void()> body) {
    Registry().push_back({name, std::move(body)});
  }
};

inline void Fail(const char* file, int line, const std::string& what) {
  std::fprintf(stderr, "  %s:%d: %s\n", file, line, what.c_str());
  ++Failures();
}

// A fresh empty directory under $TMPDIR (or /tmp); removed when every case
// of the binary passed, kept for inspection otherwise.
std::string TempDir();

}  // namespace revpatch_test

#define TEST(name)                                                        \
  static void name();                                                     \
  static ::revpatch_test::Registrar name##_registrar(#name, name);        \
  static void name()

#define EXPECT_TRUE(cond)                                                 \
  do {                                                                    \
    if (!(cond)) ::revpatch_test::Fail(__FILE__, __LINE__, "expected " #cond); \
  } while (0)
#define ASSERT_TRUE(cond)                                                 \
  do {                                                                    \
    if (!(cond)) {                                                        \
      ::revpatch_test::Fail(__FILE__, __LINE__, "expected " #cond);       \
      return;                                                             \
    }                                                                     \
  } while (0)
#define EXPECT_EQ(a, b) EXPECT_TRUE((a) == (b))
#define ASSERT_EQ(a, b) ASSERT_TRUE((a) == (b))
#define EXPECT_OK(expr)                                                   \
  do {                                                                    \
    ::revpatch::Status s_ = (expr);                                       \
    if (!s_.ok()) ::revpatch_test::Fail(__FILE__, __LINE__, #expr ": " + s_.ToString()); \
  } while (0)
#define ASSERT_OK(expr)                                                   \
  do {                                                                    \
    ::revpatch::Status s_ = (expr);                                       \
    if (!s_.ok()) {                                                       \
      ::revpatch_test::Fail(__FILE__, __LINE__, #expr ": " + s_.ToString()); \
      return;                                                             \
    }                                                                     \
  } while (0)
// The call fails with exactly `code`.
#define EXPECT_CODE(expr, want)                                           \
  do {                                                                    \
    ::revpatch::Status s_ = (expr);                                       \
    if (s_.code() != (want))                                              \
      ::revpatch_test::Fail(__FILE__, __LINE__, #expr " gave " + s_.ToString() + \
                            ", want " + ::revpatch::ErrorCodeName(want)); \
  } while (0)

#endif  // REVPATCH_TEST_TESTING_H_
