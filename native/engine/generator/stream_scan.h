// Publisher side of the stream delta (stream_delta.h): finds the
// compressed streams inside a buffer that the device can expand and
// rebuild byte for byte.
//
// A stream is kept only when rebuilding its expansion with the recipe
// found reproduces its bytes exactly (checked here, on the publisher's
// own codec, which is what the recipe then names); anything else is left
// to the plain delta. Old streams need only expand (FindZstdFrames): the
// device never rebuilds them.
#ifndef REVPATCH_GENERATOR_STREAM_SCAN_H_
#define REVPATCH_GENERATOR_STREAM_SCAN_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "stream_codec.h"

namespace revpatch {

struct FoundStream {
  uint64_t offset = 0, length = 0;  // compressed bytes in the buffer
  uint64_t expanded_length = 0;     // bytes ExpandStream gives for them
  StreamCodec codec;
  std::vector<uint8_t> recipe;      // empty for deflate
};

// Frames smaller than this are not worth a table entry.
constexpr uint64_t kMinStreamBytes = 512;

// zstd frames (one whole frame each, no dictionary, expanding to at most
// kMaxExpandedBytes) whose recipe was found: the levels most used first
// (3, 19, ...), each first checked on the frame's first block, then in
// full, multi-threaded (the zstd command line) and single-threaded
// (one-shot library calls). Appends in buffer order, non-overlapping.
void FindZstdStreams(const uint8_t* buf, size_t size, std::vector<FoundStream>* out);
// The same frames without a recipe search: every one that expands.
void FindZstdFrames(const uint8_t* buf, size_t size, std::vector<FoundStream>* out);
// The deflate streams (generator/deflate_scan.cc): same contract.
void FindDeflateStreams(const uint8_t* buf, size_t size, std::vector<FoundStream>* out);

// The recipe of one expanded zstd frame, if one reproduces `frame`.
bool FindZstdRecipe(const uint8_t* frame, size_t frame_size, const uint8_t* expanded,
                    size_t expanded_size, ZstdRecipe* recipe);

}  // namespace revpatch

#endif  // REVPATCH_GENERATOR_STREAM_SCAN_H_
