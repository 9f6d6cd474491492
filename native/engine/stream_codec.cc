#include "stream_codec.h"

#define ZSTD_STATIC_LINKING_ONLY  // ZSTD_c_nbWorkers is stable; ZSTD_d_windowLogMax too
#include <zstd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <memory>
#include <new>
#include <string>

#include "deflate_stream.h"
#include "little_endian.h"

namespace revpatch {
namespace {

std::atomic<uint32_t> zstd_version_override{0};

Status Corrupt(const std::string& what) { return Status(ErrorCode::kCorrupt, "stream: " + what); }

struct CCtxFree {
  void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
};
struct DCtxFree {
  void operator()(ZSTD_DCtx* d) const { ZSTD_freeDCtx(d); }
};

Status ZstdExpand(const uint8_t* in, size_t in_size, uint64_t limit, std::vector<uint8_t>* out) {
  // Exactly one frame, nothing after it (skippable frames are not streams).
  const size_t frame = ZSTD_findFrameCompressedSize(in, in_size);
  if (ZSTD_isError(frame) || frame != in_size) return Corrupt("not one whole zstd frame");
  unsigned magic = in_size >= 4 ? GetU32(in) : 0;
  if (magic != ZSTD_MAGICNUMBER) return Corrupt("not a zstd frame");
  std::unique_ptr<ZSTD_DCtx, DCtxFree> d(ZSTD_createDCtx());
  if (!d) return Status(ErrorCode::kTooLarge, "zstd: out of memory");
  if (ZSTD_isError(ZSTD_DCtx_setParameter(d.get(), ZSTD_d_windowLogMax, kZstdMaxWindowLog))) {
    return Status(ErrorCode::kUnsupported, "zstd: cannot bound the window");
  }
  const size_t start = out->size();
  ZSTD_inBuffer ib{in, in_size, 0};
  size_t ret = 1;
  while (ret != 0) {
    const uint64_t produced = out->size() - start;
    if (produced >= limit) {
      // Full: the frame must end without another byte.
      uint8_t probe = 0;
      ZSTD_outBuffer ob{&probe, 1, 0};
      ret = ZSTD_decompressStream(d.get(), &ob, &ib);
      if (ZSTD_isError(ret)) return Corrupt(std::string("zstd: ") + ZSTD_getErrorName(ret));
      if (ob.pos != 0) return Corrupt("zstd frame expands past its limit");
      if (ret != 0 && ib.pos == ib.size) return Corrupt("truncated zstd frame");
      continue;
    }
    const size_t step = static_cast<size_t>(std::min<uint64_t>(limit - produced, 1u << 20));
    try {
      out->resize(out->size() + step);
    } catch (const std::bad_alloc&) {
      return Status(ErrorCode::kTooLarge, "zstd: out of memory");
    }
    ZSTD_outBuffer ob{out->data() + out->size() - step, step, 0};
    ret = ZSTD_decompressStream(d.get(), &ob, &ib);
    out->resize(out->size() - step + ob.pos);
    if (ZSTD_isError(ret)) return Corrupt(std::string("zstd: ") + ZSTD_getErrorName(ret));
    if (ret != 0 && ob.pos == 0 && ib.pos == ib.size) return Corrupt("truncated zstd frame");
  }
  if (ib.pos != ib.size) return Corrupt("bytes after the zstd frame");
  return Status::Ok();
}

}  // namespace

const char* StreamCodecName(StreamCodec codec) {
  switch (codec) {
    case StreamCodec::kZstd:
      return "zstd";
    case StreamCodec::kDeflate:
      return "deflate";
  }
  return "unknown";
}

uint32_t EngineZstdVersion() {
  const uint32_t v = zstd_version_override.load();
  return v != 0 ? v : ZSTD_versionNumber();
}

std::string ZstdVersionString(uint32_t v) {
  return std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." +
         std::to_string(v % 100);
}

void SetZstdVersionForTesting(uint32_t version) { zstd_version_override.store(version); }

void EncodeZstdRecipe(const ZstdRecipe& r, std::vector<uint8_t>* out) {
  uint8_t b[kZstdRecipeSize] = {};
  PutU32(b, r.version);
  PutU32(b + 4, static_cast<uint32_t>(r.level));
  b[8] = static_cast<uint8_t>((r.checksum ? 1 : 0) | (r.content_size ? 2 : 0));
  b[9] = r.mode;
  b[10] = r.window_log;
  out->insert(out->end(), b, b + kZstdRecipeSize);
}

Status DecodeZstdRecipe(const uint8_t* data, size_t size, ZstdRecipe* r) {
  if (size != kZstdRecipeSize) return Corrupt("zstd recipe of " + std::to_string(size) + " bytes");
  ZstdRecipe out;
  out.version = GetU32(data);
  out.level = static_cast<int32_t>(GetU32(data + 4));
  if (data[8] & ~3u) return Corrupt("unknown zstd recipe flags");
  out.checksum = data[8] & 1;
  out.content_size = (data[8] & 2) != 0;
  out.mode = data[9];
  out.window_log = data[10];
  if (out.mode > kZstdModeThreaded) return Corrupt("unknown zstd recipe mode");
  if (data[11] != 0) return Corrupt("zstd recipe reserved byte set");
  // Levels and windows any libzstd 1.x accepts; the version check decides
  // the rest.
  if (out.level < -(1 << 17) || out.level > 22) return Corrupt("zstd recipe level out of range");
  if (out.window_log != 0 && (out.window_log < 10 || out.window_log > kZstdMaxWindowLog)) {
    return Corrupt("zstd recipe window out of range");
  }
  *r = out;
  return Status::Ok();
}

Status ZstdCompressWithRecipe(const ZstdRecipe& r, const uint8_t* in, size_t in_size,
                              uint8_t* out, size_t capacity, size_t* size) {
  *size = 0;
  if (r.version != EngineZstdVersion()) {
    return Status(ErrorCode::kUnsupported,
                  "zstd: the stream was made by libzstd " + ZstdVersionString(r.version) +
                      "; this engine has " + ZstdVersionString(EngineZstdVersion()));
  }
  std::unique_ptr<ZSTD_CCtx, CCtxFree> c(ZSTD_createCCtx());
  if (!c) return Status(ErrorCode::kTooLarge, "zstd: out of memory");
  auto set = [&](ZSTD_cParameter p, int v) {
    return !ZSTD_isError(ZSTD_CCtx_setParameter(c.get(), p, v));
  };
  if (!set(ZSTD_c_compressionLevel, r.level) || !set(ZSTD_c_checksumFlag, r.checksum ? 1 : 0) ||
      !set(ZSTD_c_contentSizeFlag, r.content_size ? 1 : 0) ||
      (r.window_log != 0 && !set(ZSTD_c_windowLog, r.window_log))) {
    return Status(ErrorCode::kUnsupported, "zstd: parameters this libzstd refuses");
  }
  if (r.mode == kZstdModeThreaded && !set(ZSTD_c_nbWorkers, 1)) {
    return Status(ErrorCode::kUnsupported, "zstd: this libzstd has no threads");
  }
  if (r.mode == kZstdModeSingle && r.content_size) {
    // One call over the whole input, as ZSTD_compress2: only given room
    // for the worst case does libzstd compress straight through, so a
    // smaller `out` gets a scratch buffer (a bounded call would stream in
    // blocks and could choose differently).
    const size_t bound = ZSTD_compressBound(in_size);
    std::vector<uint8_t> scratch;
    uint8_t* dst = out;
    if (capacity < bound) {
      try {
        scratch.resize(bound);
      } catch (const std::bad_alloc&) {
        return Status(ErrorCode::kTooLarge, "zstd: out of memory");
      }
      dst = scratch.data();
    }
    const size_t n = ZSTD_compress2(c.get(), dst, std::max(capacity, bound), in, in_size);
    if (ZSTD_isError(n)) return Corrupt(std::string("zstd: ") + ZSTD_getErrorName(n));
    if (n > capacity) return Corrupt("zstd: the rebuilt frame is longer than the original");
    if (dst != out) std::memcpy(out, dst, n);
    *size = n;
    return Status::Ok();
  }
  if (r.content_size && ZSTD_isError(ZSTD_CCtx_setPledgedSrcSize(c.get(), in_size))) {
    return Status(ErrorCode::kUnsupported, "zstd: cannot pledge the size");
  }
  ZSTD_inBuffer ib{in, in_size, 0};
  ZSTD_outBuffer ob{out, capacity, 0};
  if (!r.content_size) {
    // A size unknown to the compressor (a pipe): the input goes in as a
    // stream first, so the parameters are those of an unknown size.
    while (ib.pos < ib.size) {
      const size_t ret = ZSTD_compressStream2(c.get(), &ob, &ib, ZSTD_e_continue);
      if (ZSTD_isError(ret)) return Corrupt(std::string("zstd: ") + ZSTD_getErrorName(ret));
      if (ob.pos == ob.size && ib.pos < ib.size) {
        return Corrupt("zstd: the rebuilt frame is longer than the original");
      }
    }
  }
  for (;;) {
    const size_t left = ZSTD_compressStream2(c.get(), &ob, &ib, ZSTD_e_end);
    if (ZSTD_isError(left)) return Corrupt(std::string("zstd: ") + ZSTD_getErrorName(left));
    if (left == 0) break;
    if (ob.pos == ob.size) return Corrupt("zstd: the rebuilt frame is longer than the original");
  }
  *size = ob.pos;
  return Status::Ok();
}

Status ExpandStream(StreamCodec codec, const uint8_t* in, size_t in_size, uint64_t limit,
                    std::vector<uint8_t>* out) {
  switch (codec) {
    case StreamCodec::kZstd:
      return ZstdExpand(in, in_size, limit, out);
    case StreamCodec::kDeflate:
      return DeflateExpand(in, in_size, limit, out);
  }
  return Status(ErrorCode::kUnsupported,
                std::string("stream: no ") + StreamCodecName(codec) + " codec in this engine");
}

Status RebuildStream(StreamCodec codec, const uint8_t* recipe, size_t recipe_size,
                     const uint8_t* expanded, size_t expanded_size, uint8_t* out,
                     size_t out_size) {
  if (codec == StreamCodec::kZstd) {
    ZstdRecipe r;
    REVPATCH_RETURN_IF_ERROR(DecodeZstdRecipe(recipe, recipe_size, &r));
    size_t size = 0;
    REVPATCH_RETURN_IF_ERROR(ZstdCompressWithRecipe(r, expanded, expanded_size, out, out_size, &size));
    if (size != out_size) return Corrupt("zstd: the rebuilt frame is shorter than the original");
    return Status::Ok();
  }
  if (codec == StreamCodec::kDeflate) {
    // Everything a deflate rebuild needs is in the expansion.
    if (recipe_size != 0) return Corrupt("deflate: a recipe where none is defined");
    return DeflateRebuild(expanded, expanded_size, out, out_size);
  }
  return Status(ErrorCode::kUnsupported,
                std::string("stream: no ") + StreamCodecName(codec) + " codec in this engine");
}

}  // namespace revpatch
