// The binary delta of DIFF operations, and the Brotli helpers the payload
// uses (REPLACE_BROTLI data and the three delta streams).
//
// Delta format, version 1 (bsdiff-like; docs/on-disk-format.md):
//   u8  magic[4]        "RPDF"
//   u32 version         1
//   u64 new_size        bytes the delta produces
//   u64 control_length  compressed length of the control stream
//   u64 diff_length     compressed length of the diff stream
//   u64 extra_length    compressed length of the extra stream
//   then the three Brotli streams, back to back, nothing after them.
// The control stream decodes to records of (i64 seek, u64 add_len,
// u64 copy_len), little-endian, applied in that order. Starting with
// old_pos = new_pos = 0, a record
//   seeks:  old_pos += seek;
//   adds:   new[new_pos + k] = old[old_pos + k] + diff[k] (mod 256) for
//           k < add_len, taking add_len bytes of the diff stream;
//           new_pos += add_len, old_pos += add_len;
//   copies: copy_len bytes of the extra stream to new[new_pos..];
//           new_pos += copy_len.
// Records follow until new_pos == new_size. Every record makes progress
// (add_len + copy_len > 0), old_pos stays in [0, old_size] after every step
// (so every add lies inside old), nothing is written past new_size, and each
// stream must end exactly where the records stop reading it. A delta that
// breaks any of this is kCorrupt; an unknown version is kUnsupported.
//
// (bsdiff orders a record add, copy, seek; seeking first lets the first
// match start anywhere in old without an empty record.)
//
// Why this shape: the diff bytes of a near match are mostly zeros and the
// three streams compress separately far better than interleaved (bsdiff's
// observation). The decoder streams all three through Brotli straight into
// the target buffer, so its memory is the target plus Brotli's windows.
//
// The encoder is deliberately behind one function: version 1 uses seeded
// hash matching with greedy, mismatch-tolerant extension; a suffix-array
// matcher can replace it without touching the format or the decoder.
#ifndef REVPATCH_ENGINE_DIFF_H_
#define REVPATCH_ENGINE_DIFF_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "status.h"

namespace revpatch {

constexpr uint32_t kDiffFormatVersion = 1;
constexpr size_t kDiffHeaderSize = 40;

// Brotli quality and largest window of everything the generator writes
// (BrotliCompress uses a smaller window for a smaller input).
constexpr int kBrotliQuality = 9;
constexpr int kBrotliWindowBits = 24;

// One-shot compression of `size` bytes into `out` (replaced).
Status BrotliCompress(const uint8_t* data, size_t size, int quality,
                      std::vector<uint8_t>* out);

// Decodes a whole Brotli stream that must produce exactly `out_size` bytes
// and end exactly at `in_size`; kCorrupt otherwise. Never writes past
// `out_size`.
Status BrotliDecompressExact(const uint8_t* in, size_t in_size, uint8_t* out,
                             size_t out_size);

// Writes a delta that turns `old_data` into `new_data` into `out` (replaced).
Status EncodeDiff(const uint8_t* old_data, size_t old_size,
                  const uint8_t* new_data, size_t new_size,
                  std::vector<uint8_t>* out);
inline Status EncodeDiff(const std::vector<uint8_t>& old_data,
                         const std::vector<uint8_t>& new_data,
                         std::vector<uint8_t>* out) {
  return EncodeDiff(old_data.data(), old_data.size(), new_data.data(),
                    new_data.size(), out);
}

// Applies `delta` to `old_data`, producing exactly `out_size` bytes in
// `out`. Fully bounds-checked against all three sizes.
Status DecodeDiff(const uint8_t* old_data, size_t old_size,
                  const uint8_t* delta, size_t delta_size, uint8_t* out,
                  size_t out_size);

}  // namespace revpatch

#endif  // REVPATCH_ENGINE_DIFF_H_
