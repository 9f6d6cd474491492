// deflate_fuzzer: exact deflate (deflate_stream.h) on fuzzed streams and
// fuzzed expansions, and the scan for streams (generator/deflate_scan.h)
// on fuzzed buffers.
//
// Input: u8 mode, then
//   mode % 3 == 0 (expand): u32 limit (at most kMaxLimit), then the stream;
//   mode % 3 == 1 (rebuild): u32 output size (at most kMaxOutput), then the
//     expansion;
//   mode % 3 == 2 (scan): the buffer.
//
// Checks, besides the sanitizers:
//  - expand: a failure is kCorrupt and leaves the output vector as it was;
//    a success stays within the limit, starts with the data, and rebuilds
//    into exactly the stream (and not into one byte more or less); the
//    prefix form agrees and measures the whole stream;
//  - rebuild: a failure is kCorrupt (kUnsupported for another structure
//    version); a success does not depend on what the
//    output buffer held, and expanding what it wrote gives back exactly the
//    expansion (so a rebuild never writes bits its expansion does not
//    describe: the structure has one spelling for each stream);
//  - scan: streams in order, inside the buffer, not overlapping, each
//    rebuilding into its own bytes.
#include <algorithm>
#include <string>
#include <vector>

#include "deflate_scan.h"
#include "deflate_stream.h"
#include "fuzz_input.h"
#include "fuzz_support.h"
#include "fuzz_targets.h"

namespace revpatch_fuzz {
namespace {

using revpatch::ErrorCode;
using revpatch::Status;

constexpr uint32_t kMaxLimit = 1u << 22;
constexpr uint32_t kMaxOutput = 1u << 20;

void CheckExpand(const Bytes& stream, uint32_t limit) {
  const Bytes before = {0xA5, 0x5A};
  Bytes out = before;
  Status s = revpatch::DeflateExpand(stream.data(), stream.size(), limit, &out);
  if (!s.ok()) {
    FUZZ_CHECK(s.code() == ErrorCode::kCorrupt, s.ToString());
    FUZZ_CHECK(out == before, "a failed expand changed its output");
    return;
  }
  FUZZ_CHECK(out.size() - before.size() <= limit, "expansion past the limit");
  FUZZ_CHECK(std::equal(before.begin(), before.end(), out.begin()), "expand overwrote its output");
  const Bytes expanded(out.begin() + before.size(), out.end());
  uint64_t data_size = 0;
  s = revpatch::DeflateExpansionDataSize(expanded.data(), expanded.size(), &data_size);
  FUZZ_CHECK(s.ok(), s.ToString());

  Bytes rebuilt(stream.size() + 1, 0xCC);
  s = revpatch::DeflateRebuild(expanded.data(), expanded.size(), rebuilt.data(), stream.size());
  FUZZ_CHECK(s.ok(), "rebuild of an expansion: " + s.ToString());
  FUZZ_CHECK(std::equal(stream.begin(), stream.end(), rebuilt.begin()), "rebuild is not exact");
  FUZZ_CHECK(rebuilt.back() == 0xCC, "rebuild wrote past its length");
  s = revpatch::DeflateRebuild(expanded.data(), expanded.size(), rebuilt.data(), stream.size() + 1);
  FUZZ_CHECK(s.code() == ErrorCode::kCorrupt, "rebuild into a longer buffer: " + s.ToString());
  if (!stream.empty()) {
    s = revpatch::DeflateRebuild(expanded.data(), expanded.size(), rebuilt.data(), stream.size() - 1);
    FUZZ_CHECK(s.code() == ErrorCode::kCorrupt, "rebuild into a shorter buffer: " + s.ToString());
  }

  Bytes again;
  size_t consumed = 0;
  s = revpatch::DeflateExpandPrefix(stream.data(), stream.size(), limit, &again, &consumed);
  FUZZ_CHECK(s.ok() && consumed == stream.size() && again == expanded,
             "the prefix form disagrees: " + s.ToString());
}

void CheckRebuild(const Bytes& expanded, uint32_t out_size) {
  Bytes out(out_size, 0xA5);
  const Status s = revpatch::DeflateRebuild(expanded.data(), expanded.size(), out.data(), out.size());
  if (!s.ok()) {
    FUZZ_CHECK(s.code() == ErrorCode::kCorrupt || s.code() == ErrorCode::kUnsupported, s.ToString());
    return;
  }
  Bytes other(out_size, 0x5A);
  const Status s2 =
      revpatch::DeflateRebuild(expanded.data(), expanded.size(), other.data(), other.size());
  FUZZ_CHECK(s2.ok() && other == out, "rebuild depends on the output buffer's old bytes");
  Bytes again;
  const Status s3 = revpatch::DeflateExpand(out.data(), out.size(), expanded.size(), &again);
  FUZZ_CHECK(s3.ok(), "a rebuilt stream does not expand: " + s3.ToString());
  FUZZ_CHECK(again == expanded, "a rebuilt stream expands to another expansion");
}

void CheckScan(const Bytes& buf) {
  std::vector<revpatch::FoundStream> found;
  revpatch::FindDeflateStreams(buf.data(), buf.size(), &found);
  uint64_t end = 0;
  for (const revpatch::FoundStream& f : found) {
    FUZZ_CHECK(f.offset >= end && f.length <= buf.size() && f.offset <= buf.size() - f.length,
               "a stream out of order or outside the buffer");
    FUZZ_CHECK(f.codec == revpatch::StreamCodec::kDeflate && f.recipe.empty(), "not a deflate stream");
    end = f.offset + f.length;
    Bytes expanded;
    Status s = revpatch::DeflateExpand(buf.data() + f.offset, f.length, ~uint64_t{0}, &expanded);
    FUZZ_CHECK(s.ok(), "a found stream does not expand: " + s.ToString());
    Bytes rebuilt(f.length);
    s = revpatch::DeflateRebuild(expanded.data(), expanded.size(), rebuilt.data(), rebuilt.size());
    FUZZ_CHECK(s.ok() && std::equal(rebuilt.begin(), rebuilt.end(), buf.begin() + f.offset),
               "a found stream does not rebuild exactly");
  }
}

}  // namespace

int FuzzDeflate(const uint8_t* data, size_t size) {
  FuzzInput in(data, size);
  const uint8_t mode = in.Take<uint8_t>() % 3;
  if (mode == 0) {
    const uint32_t limit = in.Take<uint32_t>() % (kMaxLimit + 1);
    CheckExpand(in.TakeRest(), limit);
  } else if (mode == 1) {
    const uint32_t out_size = in.Take<uint32_t>() % (kMaxOutput + 1);
    CheckRebuild(in.TakeRest(), out_size);
  } else {
    CheckScan(in.TakeRest());
  }
  return 0;
}

}  // namespace revpatch_fuzz

REVPATCH_FUZZ_ENTRY(FuzzDeflate)
