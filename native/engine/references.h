// Reference prediction for DIFF deltas of executables (delta version 3,
// diff.h).
//
// When a function grows, every call, jump and RIP-relative access that
// crosses it changes its displacement, and every absolute pointer to data
// after it changes its value. In a Go or C++ executable that is a large
// share of a delta's changed bytes: on esbuild 0.24.0 -> 0.24.1, 140k of
// 378k. Both sides can predict those changes. The device holds the old
// bytes, and the delta's control records say where every run of old bytes
// went; so before the diff bytes are added, each reference found in the old
// bytes of an add is rewritten to point where its target went (the idea of
// Courgette and Zucchini, without their disassemblers), and the diff carries
// only what the prediction got wrong.
//
// The device parses no executable format. The publisher, which parsed the
// ELF or Mach-O headers of the source, sends spans (source view
// coordinates):
//   kRel32  code: at each x86-64 call, jmp, jcc, or RIP-relative load,
//           store, lea or compare (found by a byte scan, ScanRel32 below),
//           a signed 32-bit displacement from the end of its field; a
//           reference when its target lies in [low, high).
//   kAbs64  data: at each offset 8-aligned from the span's start, a
//           little-endian u64 in [low, high) is a pointer to view offset
//           value - bias (mod 2^64).
//   kArm64  code: at each word 4-aligned from the span's start, a B, BL,
//           B.cond, CBZ/CBNZ or TBZ/TBNZ offset, or an ADRP page with the
//           low 12 bits the next instruction (ADD, or a load or store of
//           an unsigned scaled offset into the ADRP's register) adds; a
//           reference when its target lies in [low, high). ADRP pages are
//           of addresses, view offset + bias.
// and the equivalences (old view range -> new view range) the adds do not
// already give, such as blocks unchanged in place. A byte scan finds some
// references that are not (an E8 inside an immediate): that costs a few
// diff bytes, never correctness, since the diff corrects every byte and the
// op's target hash is checked after.
//
// Mapping a target: the equivalences (the adds, cut where the op's extents
// break, and the sent ones) are sorted by old start, longer first, and
// clipped so none overlap; a target inside one moves with it, one outside
// all moves with the nearest. Everything here is deterministic in the old
// bytes, the records and the sent spans, so publisher and device predict
// the same bytes.
//
// Reference info encoding (the delta's fourth part; all LEB128 varints):
//   span_count, then per span: kind (1, 2 or 3), start - previous span's
//     end, length, low, high - low, bias (kAbs64 and kArm64)
//   equivalence_count, then per one: old_start, new_start, length
// Spans are sorted and disjoint, lengths nonzero, every view offset and
// end below 2^62, at most kMaxReferenceSpans spans and
// kMaxEquivalences equivalences; anything else is kCorrupt.
#ifndef REVPATCH_ENGINE_REFERENCES_H_
#define REVPATCH_ENGINE_REFERENCES_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "operation.h"
#include "status.h"

namespace revpatch {

constexpr size_t kMaxReferenceSpans = 4096;
constexpr size_t kMaxEquivalences = size_t{1} << 18;
constexpr uint64_t kMaxViewOffset = uint64_t{1} << 62;

enum class ReferenceKind : uint8_t { kRel32 = 1, kAbs64 = 2, kArm64 = 3 };

struct ReferenceSpan {
  ReferenceKind kind = ReferenceKind::kRel32;
  uint64_t start = 0;   // source view byte offset
  uint64_t length = 0;
  uint64_t low = 0;     // kRel32: targets (view offsets); kAbs64: values
  uint64_t high = 0;
  uint64_t bias = 0;    // kAbs64, kArm64: address = view offset + bias
};

// old[old_start, +length) became new[new_start, +length).
struct Equivalence {
  uint64_t old_start = 0;
  uint64_t new_start = 0;
  uint64_t length = 0;
};

struct ReferenceInfo {
  std::vector<ReferenceSpan> spans;
  std::vector<Equivalence> equivalences;  // view coordinates
  bool empty() const { return spans.empty(); }
};

void EncodeReferenceInfo(const ReferenceInfo& info, std::vector<uint8_t>* out);
// Appends nothing to `info` on failure.
Status DecodeReferenceInfo(const uint8_t* data, size_t size, ReferenceInfo* info);

// Where a delta's buffers sit in the views: the op's source extents for
// old, its target extents for new. Null extents mean the buffer is the view
// from offset 0.
struct DeltaLayout {
  uint32_t block_size = 0;
  const std::vector<Extent>* source = nullptr;
  const std::vector<Extent>* target = nullptr;
};

// `adds` are the delta's adds in buffer coordinates (old_start into old,
// new_start into pred). pred already holds, at each add, the old bytes it
// starts from; rewrites the references found in them. Every add must lie
// inside old and pred (the decoder has checked); kCorrupt when the layout
// does not cover the buffers.
Status PredictReferences(const ReferenceInfo& info, const DeltaLayout& layout,
                         const uint8_t* old_data, size_t old_size,
                         const std::vector<Equivalence>& adds, uint8_t* pred,
                         size_t pred_size);

// The publisher finds the spans: generator/executable_spans.h.

}  // namespace revpatch

#endif  // REVPATCH_ENGINE_REFERENCES_H_
