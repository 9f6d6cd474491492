#include <algorithm>
#include <cstring>

#include "executable_spans.h"
#include "little_endian.h"

namespace revpatch {
namespace executable_spans {

// Mach-O 64-bit, x86-64 or arm64: the sections of its LC_SEGMENT_64s but
// __LINKEDIT (signatures and symbols, at a bias of its own); sections of
// instructions are code, the rest data. Returns the file bytes it spans.
uint64_t MachOSpans(const uint8_t* m, uint64_t avail, uint64_t off,
                    std::vector<ReferenceSpan>* spans) {
  constexpr uint64_t kHeaderSize = 32, kSegmentSize = 72, kSectionSize = 80, kMaxCommands = 256;
  if (avail < kHeaderSize || GetU32(m) != 0xFEEDFACF) return 0;
  const uint32_t cpu = GetU32(m + 4);
  if (cpu != 0x01000007 && cpu != 0x0100000C) return 0;  // x86-64, arm64
  const uint64_t ncmds = GetU32(m + 16), sizeofcmds = GetU32(m + 20);
  if (ncmds > kMaxCommands || sizeofcmds > avail - kHeaderSize) return 0;
  std::vector<Segment> pieces;
  bool have_bias = false;
  uint64_t bias = 0, low = UINT64_MAX, high = 0, file_end = 0;
  uint64_t at = kHeaderSize;
  const uint64_t end = kHeaderSize + sizeofcmds;
  for (uint64_t c = 0; c < ncmds; ++c) {
    if (end - at < 8) return 0;
    const uint32_t cmd = GetU32(m + at), cmdsize = GetU32(m + at + 4);
    if (cmdsize < 8 || cmdsize > end - at) return 0;
    const uint8_t* seg = m + at;
    at += cmdsize;
    if (cmd != 0x19) continue;  // LC_SEGMENT_64
    if (cmdsize < kSegmentSize) return 0;
    const uint64_t vmaddr = GetU64(seg + 24), vmsize = GetU64(seg + 32),
                   fileoff = GetU64(seg + 40), filesize = GetU64(seg + 48);
    const uint64_t nsects = GetU32(seg + 64);
    if (fileoff > avail || filesize > avail - fileoff) return 0;
    file_end = std::max(file_end, fileoff + filesize);
    if (filesize == 0 || std::memcmp(seg + 8, "__LINKEDIT", 11) == 0) continue;
    if (vmaddr < fileoff || vmaddr >= kMaxViewOffset || vmsize >= kMaxViewOffset - vmaddr ||
        vmsize < filesize || (have_bias && vmaddr - fileoff != bias) ||
        nsects > (cmdsize - kSegmentSize) / kSectionSize) {
      return 0;
    }
    bias = vmaddr - fileoff;
    have_bias = true;
    low = std::min(low, vmaddr);
    high = std::max(high, vmaddr + vmsize);
    for (uint64_t k = 0; k < nsects; ++k) {
      const uint8_t* sect = seg + kSegmentSize + k * kSectionSize;
      const uint64_t size = GetU64(sect + 40), offset = GetU32(sect + 48);
      const uint32_t flags = GetU32(sect + 64), type = flags & 0xFF;
      if (type == 0x01 || type == 0x0C || type == 0x12 || size == 0) continue;  // zero fill
      if (offset < fileoff || offset > fileoff + filesize || size > fileoff + filesize - offset) {
        return 0;
      }
      // S_ATTR_PURE_INSTRUCTIONS, S_ATTR_SOME_INSTRUCTIONS
      pieces.push_back({(flags & 0x80000400u) != 0, offset, size});
    }
  }
  if (pieces.empty()) return 0;
  AddSpans(std::move(pieces), cpu == 0x0100000C, off, bias, low, high, spans);
  return file_end;
}

}  // namespace executable_spans
}  // namespace revpatch
