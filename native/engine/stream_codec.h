// The compressed streams a version 5 delta (stream_delta.h) diffs through:
// how the device expands one and how it rebuilds one, byte for byte, from
// its expansion and the recipe the publisher recorded.
//
// Why a recipe: a compressor's output is not a function of its input alone
// but of its version and every parameter it ran with. The publisher keeps a
// stream only when compressing its expansion with the recipe reproduced its
// bytes exactly (generator/stream_scan.h), and the device refuses a recipe
// it cannot follow (kUnsupported) before anything is written: the manifest
// names what a patch requires (docs/on-disk-format.md, "requires"), and the
// op's target hash is checked after the rebuild as for every op, so a
// rebuild that comes out different is a refused install, never wrong bytes.
//
// Codecs:
// - kZstd: one whole zstd frame. Its recipe (ZstdRecipe below) names the
//   libzstd version that made it and the parameters; only that exact
//   version rebuilds it. Expansion reads windows up to 2^kZstdMaxWindowLog.
// - kDeflate: one deflate stream, rebuilt whatever zlib made it
//   (deflate_stream.h: its expansion carries the stream's structure); the
//   recipe is empty.
#ifndef REVPATCH_ENGINE_STREAM_CODEC_H_
#define REVPATCH_ENGINE_STREAM_CODEC_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "status.h"

namespace revpatch {

enum class StreamCodec : uint8_t { kZstd = 1, kDeflate = 2 };

// "zstd", "deflate", or "unknown".
const char* StreamCodecName(StreamCodec codec);

// Appends the expansion of in[0, in_size) to *out; kCorrupt when it is
// not one whole stream of the codec or expands past `limit` bytes.
// kUnsupported for a codec this engine does not have.
Status ExpandStream(StreamCodec codec, const uint8_t* in, size_t in_size, uint64_t limit,
                    std::vector<uint8_t>* out);

// Rebuilds exactly out_size compressed bytes from an expansion and the
// recipe; kUnsupported when this engine cannot follow the recipe (e.g.
// another zstd version), kCorrupt when the result is not out_size bytes or
// the recipe is malformed.
Status RebuildStream(StreamCodec codec, const uint8_t* recipe, size_t recipe_size,
                     const uint8_t* expanded, size_t expanded_size, uint8_t* out,
                     size_t out_size);

// Largest zstd window an expansion accepts (128 MiB: level 22's).
constexpr int kZstdMaxWindowLog = 27;

// How a zstd frame was made. Encoded as 12 bytes:
//   u32 version   ZSTD_versionNumber() of the compressor (10504 = 1.5.4)
//   i32 level     compression level (ZSTD_c_compressionLevel)
//   u8  flags     bit 0: checksum, bit 1: content size in the header;
//                 other bits zero
//   u8  mode      0: single-threaded, the whole input in one call (what
//                 ZSTD_compress2 and one-shot library calls do);
//                 1: multi-threaded jobs (ZSTD_c_nbWorkers >= 1, the zstd
//                 command line's default; the output does not depend on
//                 the worker count)
//   u8  window_log  0: the level's; else ZSTD_c_windowLog
//   u8  reserved  zero
// The source size is pledged (as one-shot calls and the command line on a
// file do) when the content size is in the header.
struct ZstdRecipe {
  uint32_t version = 0;
  int32_t level = 0;
  bool checksum = false;
  bool content_size = true;
  uint8_t mode = 0;
  uint8_t window_log = 0;
};
constexpr size_t kZstdRecipeSize = 12;
constexpr uint8_t kZstdModeSingle = 0;
constexpr uint8_t kZstdModeThreaded = 1;

void EncodeZstdRecipe(const ZstdRecipe& recipe, std::vector<uint8_t>* out);
// kCorrupt for a malformed recipe (size, flags, mode, level range).
Status DecodeZstdRecipe(const uint8_t* data, size_t size, ZstdRecipe* recipe);

// The libzstd version this engine rebuilds with (ZSTD_versionNumber(),
// unless a test set another), and as "1.5.4".
uint32_t EngineZstdVersion();
std::string ZstdVersionString(uint32_t version);
// Tests only: make the engine report (and rebuild as if it had) another
// libzstd version; 0 restores the real one. Process-wide.
void SetZstdVersionForTesting(uint32_t version);

// Compresses with the recipe's parameters into out[0, capacity) and sets
// *size; kUnsupported when the recipe's version is not this engine's (or
// threads are unavailable for mode 1), kCorrupt when it does not fit.
// The generator calls it to verify a recipe; RebuildStream is built on it.
Status ZstdCompressWithRecipe(const ZstdRecipe& recipe, const uint8_t* in, size_t in_size,
                              uint8_t* out, size_t capacity, size_t* size);

}  // namespace revpatch

#endif  // REVPATCH_ENGINE_STREAM_CODEC_H_
