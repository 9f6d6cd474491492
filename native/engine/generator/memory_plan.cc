#include "memory_plan.h"

#include <algorithm>

namespace revpatch {
namespace {
constexpr uint64_t kMiB = 1ull << 20;
}  // namespace

uint64_t BrotliPeakBytes(uint64_t n) {
  if (n == 0) return 0;
  // The window BrotliCompress fits to the input (10 to 24 bits).
  int lgwin = 10;
  while (lgwin < 24 && (uint64_t{1} << lgwin) - 16 < n) ++lgwin;
  const uint64_t window = uint64_t{1} << lgwin;
  return 9 * window + 4 * std::min(n, window) + n + 4 * kMiB;
}

uint64_t MatcherPeakBytes(uint64_t n) {
  // The Bloom filter: the smallest power of two of at least 16 bits per
  // byte (from 2^16 bits).
  int bits = 16;
  while (bits < 32 && (uint64_t{1} << bits) < 16 * n) ++bits;
  const uint64_t grams = (uint64_t{1} << bits) / 8;
  // Old bytes, suffix array (4), SA-IS's type bits and buckets while it
  // builds (under 1), the two-byte buckets.
  return n + 4 * n + n + grams + 65537 * 4;
}

uint64_t WriteDeltaPeakBytes(uint64_t n, bool predicted) {
  // Control (at most about one byte per byte), diff (up to two), extra
  // (one), their compressed copies and the assembled delta (as large again).
  uint64_t bytes = 8 * n;
  if (predicted) bytes += n + 4 * n;  // the predicted bytes, the second delta
  // The diff stream compresses on this thread while control then extra do
  // on a helper.
  return bytes + BrotliPeakBytes(2 * n) + BrotliPeakBytes(n);
}

}  // namespace revpatch
