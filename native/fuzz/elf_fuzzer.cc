// elf_fuzzer: the publisher's executable parsing (executable_spans.h:
// FindExecutables, ParseElf, BuildAddressReferences) on two fuzzed views,
// and the device's version 4 reference info (references.h) on fuzzed
// bytes.
//
// Input: u8 mode, u8 block size exponent (64 << (e % 7) bytes), u32 old
// view length, the old view, then the new view (the rest). With mode bit 0
// set, the new view is also decoded as a version 4 reference part and, when
// it decodes, predicted over the old view.
//
// Checks, besides the sanitizers (each view is a heap buffer of exactly its
// size, so a read past it is caught):
//  - every executable found starts at a block boundary, lies inside its
//    view, and its map is sorted, disjoint in addresses and in view bytes,
//    inside the executable's bytes;
//  - the info BuildAddressReferences makes encodes to bytes the device's
//    decoder accepts, and predicting with it over the old view succeeds;
//  - a fuzzed reference part is accepted or refused with kCorrupt only,
//    and what is accepted predicts without error.
#include <algorithm>
#include <string>
#include <vector>

#include "executable_spans.h"
#include "fuzz_input.h"
#include "fuzz_support.h"
#include "fuzz_targets.h"
#include "references.h"

namespace revpatch_fuzz {
namespace {

using revpatch::AddressMapping;
using revpatch::ErrorCode;
using revpatch::Executable;

void CheckExecutables(const std::vector<Executable>& found, uint64_t size, uint32_t block) {
  uint64_t previous_end = 0;
  for (const Executable& x : found) {
    FUZZ_CHECK(x.view_offset % block == 0, "executable off a block boundary");
    FUZZ_CHECK(x.view_offset >= previous_end, "executables overlap");
    FUZZ_CHECK(x.file_size > 0 && x.file_size <= size - x.view_offset, "executable past the view");
    previous_end = x.view_offset + x.file_size;
    FUZZ_CHECK(!x.map.empty(), "executable without a map");
    for (size_t i = 0; i < x.map.size(); ++i) {
      const AddressMapping& m = x.map[i];
      FUZZ_CHECK(m.length > 0 && m.length - 1 <= ~m.address, "map entry wraps");
      FUZZ_CHECK(m.offset >= x.view_offset && m.offset + m.length <= previous_end,
                 "map entry outside the executable");
      if (i > 0) {
        FUZZ_CHECK(m.address - x.map[i - 1].address >= x.map[i - 1].length &&
                       m.address > x.map[i - 1].address,
                   "map entries overlap in addresses");
      }
    }
    std::vector<AddressMapping> by_offset = x.map;
    std::sort(by_offset.begin(), by_offset.end(),
              [](const AddressMapping& a, const AddressMapping& b) { return a.offset < b.offset; });
    for (size_t i = 1; i < by_offset.size(); ++i) {
      FUZZ_CHECK(by_offset[i].offset >= by_offset[i - 1].offset + by_offset[i - 1].length,
                 "map entries share view bytes");
    }
  }
}

}  // namespace

int FuzzElf(const uint8_t* data, size_t size) {
  FuzzInput in(data, size);
  const uint8_t mode = in.Take<uint8_t>();
  const uint32_t block = uint32_t{64} << (in.Take<uint8_t>() % 7);
  const Bytes old_view = in.TakeBytes(in.Take<uint32_t>());
  const Bytes new_view = in.TakeRest();
  // Exactly sized heap copies: an overread is ASan's.
  const std::vector<uint8_t> old_copy(old_view), new_copy(new_view);
  const revpatch::MemoryByteSource old_source(old_copy.data(), old_copy.size());
  const revpatch::MemoryByteSource new_source(new_copy.data(), new_copy.size());
  std::vector<Executable> old_execs, new_execs;
  revpatch::FindExecutables(old_source, block, &old_execs);
  revpatch::FindExecutables(new_source, block, &new_execs);
  CheckExecutables(old_execs, old_copy.size(), block);
  CheckExecutables(new_execs, new_copy.size(), block);

  revpatch::ReferenceInfo info;
  revpatch::BuildAddressReferences(old_execs, new_execs, &info);
  Bytes encoded;
  revpatch::EncodeReferenceInfo(info, &encoded);
  revpatch::ReferenceInfo back;
  const revpatch::Status decoded = revpatch::DecodeReferenceInfo(
      encoded.data(), encoded.size(), &back, revpatch::kAddressReferenceVersion);
  FUZZ_CHECK(decoded.ok(), "the device refuses generated info: " + decoded.message());

  // Predict over the old view as one add onto a buffer of the new size.
  const size_t common = std::min(old_copy.size(), new_copy.size());
  std::vector<revpatch::Equivalence> adds;
  if (common > 0) adds.push_back({0, 0, common});
  Bytes pred(new_copy.size(), 0);
  std::copy(old_copy.begin(), old_copy.begin() + common, pred.begin());
  revpatch::Status s = revpatch::PredictReferences(back, revpatch::DeltaLayout{}, old_copy.data(),
                                                   old_copy.size(), adds, pred.data(), pred.size());
  FUZZ_CHECK(s.ok(), "prediction with generated info fails: " + s.message());

  if ((mode & 1) != 0) {
    revpatch::ReferenceInfo fuzzed;
    s = revpatch::DecodeReferenceInfo(new_copy.data(), new_copy.size(), &fuzzed,
                                      revpatch::kAddressReferenceVersion);
    FUZZ_CHECK(s.ok() || s.code() == ErrorCode::kCorrupt, "unexpected code: " + s.message());
    if (s.ok()) {
      Bytes pred2(old_copy.begin(), old_copy.end());
      std::vector<revpatch::Equivalence> all;
      if (!old_copy.empty()) all.push_back({0, 0, old_copy.size()});
      s = revpatch::PredictReferences(fuzzed, revpatch::DeltaLayout{}, old_copy.data(),
                                      old_copy.size(), all, pred2.data(), pred2.size());
      FUZZ_CHECK(s.ok(), "prediction with decoded info fails: " + s.message());
    }
  }
  return 0;
}

REVPATCH_FUZZ_ENTRY(FuzzElf)

}  // namespace revpatch_fuzz
