// The stream delta, DIFF data version 5: a delta through the compressed
// streams of both buffers (docs/on-disk-format.md, "Stream delta").
//
// A compressed stream that changes a little changes almost every byte of
// its compressed form, so a byte-level delta of an executable shipped
// inside a zstd frame or a deflate stream costs about the whole stream.
// Version 5 instead diffs the expansions and rebuilds the new streams on
// the device with the recipe the publisher verified (stream_codec.h).
//
//   u8  magic[4]     "RPDF"
//   u32 version      5
//   u64 new_size     bytes the delta produces
//   u32 old_count    streams of the old buffer
//   u32 new_count    streams of the new buffer
//   old_count + new_count entries, each:
//     u64 offset            in its buffer (old or new)
//     u64 compressed_length
//     u8  codec             StreamCodec
//     u64 expanded_length
//     u32 recipe_length     (0 for old streams, which are only expanded)
//     recipe bytes
//   then the inner delta to the end: a delta of version 2, 3 or 4 (never
//   5) from the expanded old buffer to the expanded new one, with no
//   layout (each expanded buffer is its own view).
//
// Expanded = the buffer with each listed stream replaced by its expansion.
// Streams of a buffer are sorted, do not overlap, are not empty and lie
// inside it. The device expands the old streams (each must expand to
// exactly its expanded_length), decodes the inner delta (whose new_size is
// the expanded new size), then writes the new buffer: the bytes between
// streams as they are in the expanded new, each stream rebuilt from its
// expansion with its recipe to exactly compressed_length bytes.
//
// Bounds: at most kMaxStreams per buffer, each expanded buffer at most
// kMaxExpandedBytes, recipes at most kMaxRecipeBytes. Anything else is
// kCorrupt; a codec or recipe this engine cannot follow is kUnsupported
// (the manifest's `requires` lets a device refuse before any write).
#ifndef REVPATCH_ENGINE_STREAM_DELTA_H_
#define REVPATCH_ENGINE_STREAM_DELTA_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "status.h"
#include "stream_codec.h"

namespace revpatch {

constexpr uint32_t kStreamDiffFormatVersion = 5;
constexpr size_t kStreamDeltaHeaderSize = 24;
constexpr size_t kMaxStreams = 4096;
constexpr uint64_t kMaxExpandedBytes = 256ull << 20;
constexpr size_t kMaxRecipeBytes = 256;

struct StreamEntry {
  uint64_t offset = 0;
  uint64_t compressed_length = 0;
  StreamCodec codec = StreamCodec::kZstd;
  uint64_t expanded_length = 0;
  std::vector<uint8_t> recipe;
};

struct StreamTable {
  std::vector<StreamEntry> old_streams;
  std::vector<StreamEntry> new_streams;
};

// Writes header, table and inner delta (whose version must be 2, 3 or 4).
void EncodeStreamDelta(uint64_t new_size, const StreamTable& table,
                       const std::vector<uint8_t>& inner, std::vector<uint8_t>* out);

// Parses and checks the header and table against the buffer sizes; sets
// the inner delta's place and the expanded sizes. Used by the decoder and
// by tools that list what a delta needs.
Status ParseStreamDelta(const uint8_t* delta, size_t delta_size, uint64_t old_size,
                        uint64_t new_size, StreamTable* table, size_t* inner_offset,
                        uint64_t* expanded_old, uint64_t* expanded_new);

// The version 5 case of DecodeDiff (diff.h).
Status DecodeStreamDelta(const uint8_t* old_data, size_t old_size, const uint8_t* delta,
                         size_t delta_size, uint8_t* out, size_t out_size);

}  // namespace revpatch

#endif  // REVPATCH_ENGINE_STREAM_DELTA_H_
