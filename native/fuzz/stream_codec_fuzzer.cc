// stream_codec_fuzzer: the compressed-stream codec and its recipe
// (stream_codec.h), the zstd frame scanner (stream_scan.h) and the stream
// delta's table (stream_delta.h), on fuzzed bytes.
//
// Input: u8 mode, then
//   mode % 4 == 0: the rest is a stream: ExpandStream (zstd) with a limit
//     of u16-from-the-end bytes; when it expands, RebuildStream of the
//     expansion with the recipe FindZstdRecipe finds must give the stream
//     back exactly;
//   mode % 4 == 1: 12 recipe bytes, u16 output size, the rest an
//     expansion: DecodeZstdRecipe and RebuildStream must refuse or produce
//     exactly the output size, never more;
//   mode % 4 == 2: the rest is a buffer: FindZstdFrames must return
//     sorted, disjoint frames inside it that each expand;
//   mode % 4 == 3: u16 old size, the old bytes, then a version 5 delta:
//     DecodeDiff into an exact output buffer of the header's size (at most
//     kMaxOutput).
// Failures are kCorrupt or kUnsupported only (kTooLarge only when memory
// runs out, which the fuzzer's limits avoid).
#include <algorithm>
#include <string>
#include <vector>

#include "diff.h"
#include "fuzz_input.h"
#include "fuzz_support.h"
#include "fuzz_targets.h"
#include "little_endian.h"
#include "stream_codec.h"
#include "stream_delta.h"
#include "stream_scan.h"

namespace revpatch_fuzz {
namespace {

using revpatch::ErrorCode;
using revpatch::Status;

constexpr uint64_t kMaxOutput = 1u << 20;

bool Refusal(const Status& s) {
  return s.code() == ErrorCode::kCorrupt || s.code() == ErrorCode::kUnsupported;
}

}  // namespace

int FuzzStreamCodec(const uint8_t* data, size_t size) {
  FuzzInput in(data, size);
  const uint8_t mode = in.Take<uint8_t>();
  switch (mode % 4) {
    case 0: {
      const uint16_t limit = in.Take<uint16_t>();
      const Bytes stream = in.TakeRest();
      Bytes expanded;
      const Status s = revpatch::ExpandStream(revpatch::StreamCodec::kZstd, stream.data(),
                                              stream.size(), limit, &expanded);
      FUZZ_CHECK(expanded.size() <= limit, "ExpandStream passed its limit");
      if (!s.ok()) {
        FUZZ_CHECK(Refusal(s), s.ToString());
        return 0;
      }
      revpatch::ZstdRecipe recipe;
      if (revpatch::FindZstdRecipe(stream.data(), stream.size(), expanded.data(), expanded.size(),
                                   &recipe)) {
        Bytes bytes, out(stream.size());
        revpatch::EncodeZstdRecipe(recipe, &bytes);
        const Status r = revpatch::RebuildStream(revpatch::StreamCodec::kZstd, bytes.data(),
                                                 bytes.size(), expanded.data(), expanded.size(),
                                                 out.data(), out.size());
        FUZZ_CHECK(r.ok() && out == stream, "a recipe found does not rebuild its frame");
      }
      return 0;
    }
    case 1: {
      const Bytes recipe = in.TakeBytes(revpatch::kZstdRecipeSize);
      const uint16_t out_size = in.Take<uint16_t>();
      const Bytes expanded = in.TakeRest();
      revpatch::ZstdRecipe r;
      const Status d = revpatch::DecodeZstdRecipe(recipe.data(), recipe.size(), &r);
      if (d.ok()) {
        Bytes again;
        revpatch::EncodeZstdRecipe(r, &again);
        FUZZ_CHECK(again == recipe, "a recipe does not encode back to its bytes");
      } else {
        FUZZ_CHECK(d.code() == ErrorCode::kCorrupt, d.ToString());
      }
      Bytes out(out_size, 0xA5);
      const Status s = revpatch::RebuildStream(revpatch::StreamCodec::kZstd, recipe.data(),
                                               recipe.size(), expanded.data(), expanded.size(),
                                               out.data(), out.size());
      FUZZ_CHECK(s.ok() || Refusal(s), s.ToString());
      if (s.ok()) {
        Bytes back;
        const Status e = revpatch::ExpandStream(revpatch::StreamCodec::kZstd, out.data(),
                                                out.size(), expanded.size(), &back);
        FUZZ_CHECK(e.ok() && back == expanded, "a rebuilt frame does not expand to its input");
      }
      return 0;
    }
    case 2: {
      const Bytes buf = in.TakeRest();
      std::vector<revpatch::FoundStream> found;
      revpatch::FindZstdFrames(buf.data(), buf.size(), &found);
      uint64_t end = 0;
      for (const revpatch::FoundStream& f : found) {
        FUZZ_CHECK(f.offset >= end && f.length <= buf.size() - f.offset, "frames overlap or overrun");
        end = f.offset + f.length;
        Bytes expanded;
        FUZZ_CHECK(revpatch::ExpandStream(f.codec, buf.data() + f.offset, f.length,
                                          revpatch::kMaxExpandedBytes, &expanded)
                       .ok(),
                   "a frame found does not expand");
      }
      return 0;
    }
    default: {
      const Bytes old_data = in.TakeBytes(in.Take<uint16_t>());
      const Bytes delta = in.TakeRest();
      if (delta.size() < 16) return 0;
      const uint64_t out_size = revpatch::GetU64(delta.data() + 8);
      if (out_size > kMaxOutput) return 0;
      Bytes out(static_cast<size_t>(out_size), 0xA5);
      const Status s = revpatch::DecodeDiff(old_data.data(), old_data.size(), delta.data(),
                                            delta.size(), out.data(), out.size());
      FUZZ_CHECK(s.ok() || Refusal(s), s.ToString());
      return 0;
    }
  }
}

}  // namespace revpatch_fuzz

REVPATCH_FUZZ_ENTRY(FuzzStreamCodec)
