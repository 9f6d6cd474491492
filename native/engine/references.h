// Reference prediction for DIFF deltas of executables (delta versions 3
// and 4, diff.h).
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
// Version 3 reference info encoding (the delta's fourth part; all LEB128
// varints):
//   span_count, then per span: kind (1, 2 or 3), start - previous span's
//     end, length, low, high - low, bias (kAbs64 and kArm64)
//   equivalence_count, then per one: old_start, new_start, length
// Spans are sorted and disjoint, lengths nonzero, every view offset and
// end below 2^62, at most kMaxReferenceSpans spans and
// kMaxEquivalences equivalences; anything else is kCorrupt.
//
// Version 4 (delta version 4) works in addresses, so an executable whose
// loadable parts sit at several address-minus-offset biases (LLD's
// layout, PE sections, Mach-O __LINKEDIT) and one whose bytes moved
// between versions are both described exactly. Per executable ("image")
// the publisher, which parses both the source and the target, sends
//   an old map: address ranges -> old view offsets (only bytes the file
//     holds: a segment's file bytes, never .bss, .tbss or .relro_padding),
//   a new map: the same for the target executable, in new view offsets,
//   address equivalences: old address range -> new address range for
//     parts without file bytes (old .bss -> new .bss).
// Spans are as in version 3 but carry the image they belong to, and low,
// high are addresses for every kind (no bias). A reference in an add at old
// view p, whose target address is T, is predicted so:
//   T inside an address equivalence -> moved with it; else T in the old
//   map -> old view offset -> the delta's equivalences (as in version 3)
//   -> new view offset -> the new map -> new T; else left as it is.
//   The field's own new address is the new map's address of its new view
//   offset (rel32 and arm64 encode T relative to it; kAbs64 stores T).
// A byte whose old view offset is in no old map entry, or whose new view
// offset is in no new map entry, is left as it is: that costs diff bytes,
// never correctness.
//
// Version 4 reference info encoding (LEB128 varints):
//   image_count, then per image:
//     old_count, per entry: address - previous entry's address end,
//       zigzag(offset - previous entry's offset end), length  (old view)
//     new_count, the same for the new view
//     bss_count, per entry: old_address, new_address, length
//   span_count, then per span: kind, image, start - previous span's end,
//     length, zigzag(low - previous low), zigzag(high - previous high)
//     (differences mod 2^64; the first entry's and span's from 0)
//   equivalence_count, then per one: old_start, new_start, length
//   and, only when the target's page digests are rebuilt, their runs
//     (page_digests.h's encoding, at least one run)
// Each map is sorted by address, its entries disjoint in addresses and in
// offsets, offsets below 2^62, addresses and ends within 64 bits, lengths
// nonzero; address equivalences sorted by old address and disjoint. At
// most kMaxReferenceImages images and kMaxAddressMapEntries entries of
// maps and address equivalences together; spans as in version 3, each
// naming an existing image. Anything else is kCorrupt.
#ifndef REVPATCH_ENGINE_REFERENCES_H_
#define REVPATCH_ENGINE_REFERENCES_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "operation.h"
#include "page_digests.h"
#include "status.h"

namespace revpatch {

constexpr size_t kMaxReferenceSpans = 4096;
constexpr size_t kMaxEquivalences = size_t{1} << 18;
constexpr uint64_t kMaxViewOffset = uint64_t{1} << 62;
constexpr size_t kMaxReferenceImages = 256;
constexpr size_t kMaxAddressMapEntries = 1 << 16;

// The reference info versions (the delta version that carries each).
constexpr uint32_t kViewReferenceVersion = 3;
constexpr uint32_t kAddressReferenceVersion = 4;

enum class ReferenceKind : uint8_t { kRel32 = 1, kAbs64 = 2, kArm64 = 3 };

struct ReferenceSpan {
  ReferenceKind kind = ReferenceKind::kRel32;
  uint64_t start = 0;   // source view byte offset
  uint64_t length = 0;
  uint64_t low = 0;     // kRel32: targets (view offsets); kAbs64: values
  uint64_t high = 0;
  uint64_t bias = 0;    // version 3 kAbs64, kArm64: address = view offset + bias
  uint32_t image = 0;   // version 4: index into ReferenceInfo::images
};

// Version 4: address [address, +length) is held by view bytes
// [offset, +length).
struct AddressMapping {
  uint64_t address = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
};

// Version 4: old address [old_address, +length) became new address
// [new_address, +length) (ranges without file bytes: .bss and the like).
struct AddressEquivalence {
  uint64_t old_address = 0;
  uint64_t new_address = 0;
  uint64_t length = 0;
};

// Version 4: one executable of the old view and its counterpart in the new.
struct ImageMaps {
  std::vector<AddressMapping> old_map;  // sorted by address
  std::vector<AddressMapping> new_map;  // sorted by address
  std::vector<AddressEquivalence> address_equivalences;  // sorted by old_address
};

// old[old_start, +length) became new[new_start, +length).
struct Equivalence {
  uint64_t old_start = 0;
  uint64_t new_start = 0;
  uint64_t length = 0;
};

struct ReferenceInfo {
  uint32_t version = kViewReferenceVersion;  // 3 or 4: which encoding, which prediction
  std::vector<ReferenceSpan> spans;
  std::vector<Equivalence> equivalences;  // view coordinates
  std::vector<ImageMaps> images;          // version 4
  // Version 4: hashes the target holds of its own pages (code signatures),
  // rebuilt after the delta is decoded (page_digests.h).
  std::vector<PageDigests> digests;
  bool empty() const { return spans.empty() && digests.empty(); }
};

// Encodes in info.version's encoding (the caller keeps info valid: sorted,
// in range, as the decoder demands).
void EncodeReferenceInfo(const ReferenceInfo& info, std::vector<uint8_t>* out);
// Decodes the encoding of `version` (3 or 4; kCorrupt on anything the
// encoding forbids); leaves `info` untouched on failure.
Status DecodeReferenceInfo(const uint8_t* data, size_t size, ReferenceInfo* info,
                           uint32_t version = kViewReferenceVersion);

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
