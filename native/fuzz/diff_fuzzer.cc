// diff_fuzzer: the DIFF decoder (diff.h) on a fuzzed delta against a fuzzed
// source, and the encoder's round trip.
//
// Input: u8 mode, u16 source length, the source bytes, then
//   mode bit 3 set: a layout first (u8 block size exponent, u8 count and
//     that many (u8 start, u8 blocks) source extents, the same for the
//     target), placing a version 3 delta's buffers in their views;
//   mode bit 0 clear (decode): u32 output size, then the delta. With mode
//     bit 1 set the output size is the delta header's new_size instead
//     (when it is at most kMaxOutput), as the executor passes it; with
//     bit 2 set, what the delta produced is also re-encoded and decoded;
//   mode bit 0 set (encode): the rest is the new data; EncodeDiff then
//     DecodeDiff must give it back, and so must a version 3 delta with
//     references predicted all over old (as x86-64 code, with bit 4 as
//     pointers, with bit 5 as arm64 code) under the layout.
// The encoder (suffix array, Brotli at quality 11) costs far more than the
// decoder, so encoding is kept to kMaxEncoded bytes of source and of new
// data: the decoder, which sees untrusted deltas, gets most of the time.
//
// Checks, besides the sanitizers (the output buffer is exactly out_size
// bytes on the heap, so a write past it is caught):
//  - a delta that decodes does so the same way into a buffer that held
//    other bytes (every output byte is written, none is read unset);
//  - re-encoding what a delta produced and decoding that gives it back
//    (up to kMaxEncoded bytes);
//  - the source is never written;
//  - failures are kCorrupt or kUnsupported (an unknown version) only.
#include <algorithm>
#include <string>
#include <vector>

#include "diff.h"
#include "diff_encoder.h"
#include "fuzz_input.h"
#include "fuzz_support.h"
#include "fuzz_targets.h"
#include "little_endian.h"

namespace revpatch_fuzz {
namespace {

using revpatch::ErrorCode;
using revpatch::Status;

constexpr uint32_t kMaxOutput = 1u << 20;
constexpr size_t kMaxEncoded = 1024;

struct Layout {
  std::vector<revpatch::Extent> source, target;
  revpatch::DeltaLayout layout;
  bool given = false;
};

void TakeExtents(FuzzInput* in, std::vector<revpatch::Extent>* out) {
  const uint8_t count = in->Take<uint8_t>() % 8;
  for (uint8_t i = 0; i < count; ++i) {
    const uint64_t start = in->Take<uint8_t>();
    out->push_back({start, in->Take<uint8_t>()});
  }
}

void TakeLayout(FuzzInput* in, Layout* l) {
  l->given = true;
  l->layout.block_size = 1u << (in->Take<uint8_t>() % 10);
  TakeExtents(in, &l->source);
  TakeExtents(in, &l->target);
  l->layout.source = &l->source;
  l->layout.target = &l->target;
}

void CheckRoundTrip(const Bytes& old_data, const Bytes& new_data, uint8_t mode,
                    const Layout& layout) {
  if (old_data.size() > kMaxEncoded || new_data.size() > kMaxEncoded) return;
  Bytes delta;
  Status s = revpatch::EncodeDiff(old_data, new_data, &delta);
  FUZZ_CHECK(s.ok(), "EncodeDiff: " + s.ToString());
  Bytes out(new_data.size());
  s = revpatch::DecodeDiff(old_data.data(), old_data.size(), delta.data(), delta.size(),
                           out.data(), out.size());
  FUZZ_CHECK(s.ok(), "DecodeDiff of EncodeDiff's delta: " + s.ToString());
  FUZZ_CHECK(out == new_data, "EncodeDiff/DecodeDiff round trip changed the bytes");

  // The same records with references predicted: whatever the prediction
  // makes of these bytes, the decoder must make the same.
  revpatch::DeltaMatcher matcher;
  s = matcher.Init(old_data.data(), old_data.size());
  FUZZ_CHECK(s.ok(), "DeltaMatcher: " + s.ToString());
  std::vector<revpatch::DeltaRecord> records;
  matcher.Match(new_data.data(), new_data.size(), &records);
  revpatch::ReferenceInfo info;
  revpatch::ReferenceSpan span;
  span.kind = (mode & 32)   ? revpatch::ReferenceKind::kArm64
              : (mode & 16) ? revpatch::ReferenceKind::kAbs64
                            : revpatch::ReferenceKind::kRel32;
  span.start = 0;
  span.length = 1 << 20;
  span.low = 0;
  span.high = span.kind == revpatch::ReferenceKind::kAbs64 ? ~uint64_t{0} : 1 << 20;
  span.bias = 3;
  info.spans.push_back(span);
  info.equivalences.push_back({0, 16, 64});
  const revpatch::DeltaLayout* l = layout.given ? &layout.layout : nullptr;
  s = revpatch::WriteDelta(old_data.data(), old_data.size(), new_data.data(), new_data.size(),
                           records, &delta, &info, l);
  if (!s.ok()) {
    // Only a layout that does not cover the buffers may refuse.
    FUZZ_CHECK(layout.given && s.code() == ErrorCode::kCorrupt, "WriteDelta: " + s.ToString());
    return;
  }
  std::fill(out.begin(), out.end(), 0xA5);
  s = revpatch::DecodeDiff(old_data.data(), old_data.size(), delta.data(), delta.size(),
                           out.data(), out.size(), l);
  FUZZ_CHECK(s.ok(), "DecodeDiff of a predicted delta: " + s.ToString());
  FUZZ_CHECK(out == new_data, "predicted round trip changed the bytes");
}

}  // namespace

int FuzzDiff(const uint8_t* data, size_t size) {
  FuzzInput in(data, size);
  const uint8_t mode = in.Take<uint8_t>();
  const Bytes old_data = in.TakeBytes(in.Take<uint16_t>());
  Layout layout;
  if (mode & 8) TakeLayout(&in, &layout);
  const revpatch::DeltaLayout* l = layout.given ? &layout.layout : nullptr;

  if (mode & 1) {
    CheckRoundTrip(Bytes(old_data.begin(), old_data.begin() + std::min(old_data.size(), kMaxEncoded)),
                   in.TakeBytes(kMaxEncoded), mode, layout);
    return 0;
  }

  uint32_t out_size = in.Take<uint32_t>() % (kMaxOutput + 1);
  const Bytes delta = in.TakeRest();
  if ((mode & 2) && delta.size() >= 16) {
    const uint64_t header_size = revpatch::GetU64(delta.data() + 8);
    if (header_size <= kMaxOutput) out_size = static_cast<uint32_t>(header_size);
  }
  const Bytes old_copy = old_data;
  Bytes out(out_size, 0xA5);
  const Status s = revpatch::DecodeDiff(old_data.data(), old_data.size(), delta.data(),
                                        delta.size(), out.data(), out.size(), l);
  FUZZ_CHECK(old_data == old_copy, "DecodeDiff wrote to its source");
  if (!s.ok()) {
    FUZZ_CHECK(s.code() == ErrorCode::kCorrupt || s.code() == ErrorCode::kUnsupported,
               s.ToString());
    return 0;
  }
  Bytes again(out_size, 0x5A);
  const Status s2 = revpatch::DecodeDiff(old_data.data(), old_data.size(), delta.data(),
                                         delta.size(), again.data(), again.size(), l);
  FUZZ_CHECK(s2.ok() && again == out, "decoding depends on the output buffer's old bytes");
  if (mode & 4) CheckRoundTrip(old_data, out, mode, layout);
  return 0;
}

}  // namespace revpatch_fuzz

REVPATCH_FUZZ_ENTRY(FuzzDiff)
