#include "executable_spans.h"

#include <algorithm>

namespace revpatch {
namespace executable_spans {

void AddSpans(std::vector<Segment> pieces, bool arm64, uint64_t off, uint64_t bias, uint64_t low,
              uint64_t high, std::vector<ReferenceSpan>* spans) {
  if (pieces.empty() || high <= low || off + (high - bias) >= kMaxViewOffset) return;
  std::sort(pieces.begin(), pieces.end(),
            [](const Segment& a, const Segment& b) { return a.offset < b.offset; });
  // Targets, as view offsets: the whole memory image of the executable.
  const uint64_t target_low = off + (low - bias), target_high = off + (high - bias);
  uint64_t covered = off;
  for (const Segment& piece : pieces) {
    ReferenceSpan s;
    s.start = std::max<uint64_t>(off + piece.offset, covered);
    const uint64_t end = off + piece.offset + piece.size;
    if (s.start >= end) continue;
    s.bias = bias - off;  // address = view offset + bias, mod 2^64
    if (piece.exec) {
      s.kind = arm64 ? ReferenceKind::kArm64 : ReferenceKind::kRel32;
      s.low = target_low;
      s.high = target_high;
      if (!arm64) s.bias = 0;
    } else {
      s.kind = ReferenceKind::kAbs64;
      s.start = (s.start - off + 7) / 8 * 8 + off;  // pointers are 8-aligned in the file
      if (s.start >= end) continue;
      s.low = low;
      s.high = high;
    }
    s.length = end - s.start;
    spans->push_back(s);
    covered = end;
  }
}

}  // namespace executable_spans

void FindExecutableSpans(const uint8_t* view, size_t size, uint32_t block_size,
                         std::vector<ReferenceSpan>* spans) {
  if (block_size == 0) return;
  for (uint64_t off = 0; off < size; off += block_size) {
    const uint64_t avail = size - off;
    uint64_t file_end = executable_spans::ElfSpans(view + off, avail, off, spans);
    if (file_end == 0) file_end = executable_spans::MachOSpans(view + off, avail, off, spans);
    if (file_end == 0) file_end = executable_spans::PeSpans(view + off, avail, off, spans);
    // Skip past an executable: nothing inside it is another one.
    if (file_end > block_size) off += (file_end - 1) / block_size * block_size;
  }
}

}  // namespace revpatch
