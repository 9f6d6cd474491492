// The binary delta of DIFF operations and its decoder, and the Brotli
// helper the device uses (REPLACE_BROTLI data and the three delta streams).
// The encoder, which only the publisher runs, is generator/diff_encoder.h.
//
// Delta format, version 3 (bsdiff-like; docs/on-disk-format.md):
//   u8  magic[4]        "RPDF"
//   u32 version         3 (1 and 2 are still decoded and 2 still written:
//                       see below)
//   u64 new_size        bytes the delta produces
//   u64 control_length  compressed length of the control stream
//   u64 diff_length     compressed length of the diff stream
//   u64 extra_length    compressed length of the extra stream
//   u64 reference_length  length of the reference part (version 3 only)
//   then the three Brotli streams and the reference part (references.h),
//   back to back, nothing after them.
// The control stream decodes to records of three LEB128 varints (at most
// 10 bytes each, no bits past 64): zigzag(seek), add_len, copy_len. Version
// 1 used fixed (i64, u64, u64) little-endian words instead; nothing else
// differs. Starting with old_pos = new_pos = 0, a record
//   seeks:  old_pos += seek;
//   adds:   new[new_pos + k] = old[old_pos + k] + diff[k] (mod 256) for
//           k < add_len, taking add_len bytes of the diff stream;
//           new_pos += add_len, old_pos += add_len;
//   copies: copy_len bytes of the extra stream to new[new_pos..];
//           new_pos += copy_len.
// In version 3 the adds add onto a prediction instead of old itself: the
// old bytes with the references the reference part describes rewritten to
// where their targets went (references.h); the generator writes it for
// sources holding executables when it is smaller. Version 2 is version 3
// without the reference part (and its header field) and with adds onto old.
// Records follow until new_pos == new_size. Every record makes progress
// (add_len + copy_len > 0), old_pos stays in [0, old_size] after every step
// (so every add lies inside old), nothing is written past new_size, and each
// stream must end exactly where the records stop reading it. A delta that
// breaks any of this is kCorrupt; an unknown version is kUnsupported (a
// decoder of version 1 refuses version 2 this way).
//
// Version 5 is the stream delta (stream_delta.h): a table of the
// compressed streams of both buffers, then an inner delta of version 2, 3
// or 4 between the buffers with those streams expanded.
//
// Why this shape: the diff bytes of a near match are mostly zeros and the
// three streams compress separately far better than interleaved (bsdiff's
// observation); varints make the control stream a few bytes per record
// before compression. The decoder streams diff and extra through Brotli
// straight into the target buffer and the control stream through a small
// buffer, so its memory is the target plus Brotli's windows.
//
#ifndef REVPATCH_ENGINE_DIFF_H_
#define REVPATCH_ENGINE_DIFF_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "references.h"
#include "status.h"

namespace revpatch {

constexpr uint8_t kDiffMagic[4] = {'R', 'P', 'D', 'F'};
constexpr uint32_t kDiffFormatVersion = 3;
// What the generator writes when it predicts no references (most data);
// version 3 is written only where it is smaller.
constexpr uint32_t kPlainDiffFormatVersion = 2;
constexpr size_t kDiffHeaderSize = 40;        // versions 1 and 2
constexpr size_t kPredictedHeaderSize = 48;   // version 3
// A version 3 decoder holds every record before it applies one (24 bytes
// each, plus the equivalences), so their number is capped.
constexpr size_t kMaxPredictedRecords = size_t{1} << 18;

// One record of a delta before serialization: add `add_length` bytes from
// old[old_start..] (old_start is ignored when add_length is 0), then copy
// `copy_length` bytes of new data.
struct DeltaRecord {
  uint64_t old_start = 0;
  uint64_t add_length = 0;
  uint64_t copy_length = 0;
};

// Decodes a whole Brotli stream that must produce exactly `out_size` bytes
// and end exactly at `in_size`; kCorrupt otherwise. Never writes past
// `out_size`.
Status BrotliDecompressExact(const uint8_t* in, size_t in_size, uint8_t* out,
                             size_t out_size);

// Applies `delta` to `old_data`, producing exactly `out_size` bytes in
// `out`. Fully bounds-checked against all three sizes. `layout` places the
// buffers in their views for a version 3 delta's references (null: each
// buffer is its view); it must cover both buffers.
Status DecodeDiff(const uint8_t* old_data, size_t old_size,
                  const uint8_t* delta, size_t delta_size, uint8_t* out,
                  size_t out_size, const DeltaLayout* layout = nullptr);

}  // namespace revpatch

#endif  // REVPATCH_ENGINE_DIFF_H_
