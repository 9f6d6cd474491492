// FindZstdStreams and FindZstdFrames (stream_scan.h).
#include <algorithm>
#include <cstring>

#define ZSTD_STATIC_LINKING_ONLY  // ZSTD_getFrameHeader
#include <zstd.h>

#include "stream_delta.h"
#include "stream_scan.h"

namespace revpatch {
namespace {

// Levels in the order they are tried: the defaults of the command line and
// the libraries, then the rest.
constexpr int kLevels[] = {3, 19, 1, 9, 6, 12, 22, 15, 2, 4, 5, 7, 8, 10, 11, 13, 14, 16, 17, 18, 20, 21, -1, -3, -5};

constexpr size_t kProbeBytes = 128u << 10;  // one block

// The frames at `buf`, whether or not a recipe is searched.
void Scan(const uint8_t* buf, size_t size, bool with_recipe, std::vector<FoundStream>* out) {
  static const uint8_t kMagic[4] = {0x28, 0xB5, 0x2F, 0xFD};
  size_t i = 0;
  while (size >= 4 && i <= size - 4) {
    const void* hit = std::memchr(buf + i, kMagic[0], size - 3 - i);
    if (hit == nullptr) break;
    i = static_cast<const uint8_t*>(hit) - buf;
    if (std::memcmp(buf + i, kMagic, 4) != 0) {
      ++i;
      continue;
    }
    const size_t frame = ZSTD_findFrameCompressedSize(buf + i, size - i);
    ZSTD_frameHeader header;
    if (ZSTD_isError(frame) || frame < kMinStreamBytes ||
        ZSTD_getFrameHeader(&header, buf + i, size - i) != 0 || header.dictID != 0 ||
        header.frameType != ZSTD_frame) {
      ++i;
      continue;
    }
    std::vector<uint8_t> expanded;
    if (!ExpandStream(StreamCodec::kZstd, buf + i, frame, kMaxExpandedBytes, &expanded).ok()) {
      ++i;
      continue;
    }
    FoundStream found;
    found.offset = i;
    found.length = frame;
    found.expanded_length = expanded.size();
    found.codec = StreamCodec::kZstd;
    if (with_recipe) {
      ZstdRecipe recipe;
      if (!FindZstdRecipe(buf + i, frame, expanded.data(), expanded.size(), &recipe)) {
        i += frame;  // a whole frame, just not one this codec reproduces
        continue;
      }
      EncodeZstdRecipe(recipe, &found.recipe);
    }
    out->push_back(std::move(found));
    i += frame;
  }
}

// Whether the first block the recipe's level makes equals the frame's.
bool FirstBlockMatches(const ZstdRecipe& r, const uint8_t* frame, size_t frame_size,
                       const uint8_t* expanded, size_t expanded_size) {
  ZSTD_CCtx* c = ZSTD_createCCtx();
  if (c == nullptr) return false;
  ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, r.level);
  ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, r.checksum ? 1 : 0);
  ZSTD_CCtx_setParameter(c, ZSTD_c_contentSizeFlag, r.content_size ? 1 : 0);
  if (r.content_size) ZSTD_CCtx_setPledgedSrcSize(c, expanded_size);
  std::vector<uint8_t> out(ZSTD_compressBound(kProbeBytes) + 64);
  ZSTD_inBuffer ib{expanded, std::min(expanded_size, kProbeBytes), 0};
  ZSTD_outBuffer ob{out.data(), out.size(), 0};
  const ZSTD_EndDirective end = expanded_size <= kProbeBytes ? ZSTD_e_end : ZSTD_e_flush;
  if (!r.content_size) {  // as ZstdCompressWithRecipe: streamed in, size unknown
    while (ib.pos < ib.size) {
      if (ZSTD_isError(ZSTD_compressStream2(c, &ob, &ib, ZSTD_e_continue)) || ob.pos == ob.size) {
        ZSTD_freeCCtx(c);
        return false;
      }
    }
  }
  size_t left = 1;
  while (left != 0) {
    left = ZSTD_compressStream2(c, &ob, &ib, end);
    if (ZSTD_isError(left) || ob.pos == ob.size) break;
  }
  ZSTD_freeCCtx(c);
  if (ZSTD_isError(left) || left != 0) return false;
  // The block after the header; a flushed (not final) block differs from
  // the frame's only in its last-block bit, so compare all but the
  // header's last byte region loosely: the first byte onwards of the
  // block's contents.
  const size_t n = std::min(ob.pos, frame_size);
  if (end == ZSTD_e_end) return ob.pos == frame_size && std::memcmp(out.data(), frame, n) == 0;
  const size_t header = ZSTD_frameHeaderSize(frame, frame_size);
  if (ZSTD_isError(header) || n <= header + 3) return false;
  // Block header: 3 bytes, bit 0 = last block. Compare it without that bit.
  if (std::memcmp(out.data(), frame, header) != 0) return false;
  if ((out[header] & 0xFE) != (frame[header] & 0xFE) ||
      std::memcmp(out.data() + header + 1, frame + header + 1, n - header - 1) != 0) {
    return false;
  }
  return true;
}

}  // namespace

bool FindZstdRecipe(const uint8_t* frame, size_t frame_size, const uint8_t* expanded,
                    size_t expanded_size, ZstdRecipe* recipe) {
  ZSTD_frameHeader header;
  if (ZSTD_getFrameHeader(&header, frame, frame_size) != 0) return false;
  ZstdRecipe r;
  r.version = ZSTD_versionNumber();
  r.checksum = header.checksumFlag != 0;
  r.content_size = header.frameContentSize != ZSTD_CONTENTSIZE_UNKNOWN;
  std::vector<uint8_t> rebuilt(frame_size);
  for (int level : kLevels) {
    r.level = level;
    if (!FirstBlockMatches(r, frame, frame_size, expanded, expanded_size)) continue;
    for (uint8_t mode : {kZstdModeThreaded, kZstdModeSingle}) {
      r.mode = mode;
      size_t size = 0;
      if (ZstdCompressWithRecipe(r, expanded, expanded_size, rebuilt.data(), rebuilt.size(), &size)
              .ok() &&
          size == frame_size && std::memcmp(rebuilt.data(), frame, frame_size) == 0) {
        *recipe = r;
        return true;
      }
    }
  }
  return false;
}

void FindZstdStreams(const uint8_t* buf, size_t size, std::vector<FoundStream>* out) {
  Scan(buf, size, true, out);
}

void FindZstdFrames(const uint8_t* buf, size_t size, std::vector<FoundStream>* out) {
  Scan(buf, size, false, out);
}

}  // namespace revpatch
