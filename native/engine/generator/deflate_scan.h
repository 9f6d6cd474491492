// Finding deflate streams inside a buffer (the publisher's side of
// deflate_stream.h): gzip members, zlib streams and zip entries, kept only
// when DeflateRebuild(DeflateExpand(stream)) gives back their exact bytes.
//
// FoundStream and StreamCodec belong to the stream delta (stream_scan.h,
// stream_codec.h); until those headers are in the tree this one declares
// the same types itself, so either way there is one definition.
#ifndef REVPATCH_ENGINE_GENERATOR_DEFLATE_SCAN_H_
#define REVPATCH_ENGINE_GENERATOR_DEFLATE_SCAN_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#if __has_include("stream_scan.h")
#include "stream_scan.h"
#else
namespace revpatch {

enum class StreamCodec : uint8_t { kZstd = 1, kDeflate = 2 };

struct FoundStream {
  uint64_t offset = 0, length = 0;  // compressed bytes in the buffer
  StreamCodec codec;
  std::vector<uint8_t> recipe;  // empty for deflate
};

void FindDeflateStreams(const uint8_t* buf, size_t size, std::vector<FoundStream>* out);

}  // namespace revpatch
#endif

namespace revpatch {

// Streams shorter than this are not worth a table entry.
constexpr uint64_t kMinDeflateStreamLength = 32;
// The largest expansion the scan tries (bounds its memory).
constexpr uint64_t kMaxDeflateScanExpansion = uint64_t{1} << 30;

}  // namespace revpatch

#endif  // REVPATCH_ENGINE_GENERATOR_DEFLATE_SCAN_H_
