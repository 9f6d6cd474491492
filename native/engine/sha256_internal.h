// Test hooks of sha256.cc: lets sha256_test compare the accelerated path
// chosen at run time with the portable one on the same inputs.
#ifndef REVPATCH_ENGINE_SHA256_INTERNAL_H_
#define REVPATCH_ENGINE_SHA256_INTERNAL_H_

#include <cstddef>

#include "sha256.h"

namespace revpatch {
namespace internal {

// "sha-ni", "armv8" or "portable": what Sha256 uses on this machine.
const char* Sha256Implementation();
// SHA-256 computed with the portable code only.
Digest Sha256Portable(const void* data, size_t size);

}  // namespace internal
}  // namespace revpatch

#endif  // REVPATCH_ENGINE_SHA256_INTERNAL_H_
