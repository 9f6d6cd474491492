#include <algorithm>
#include <cstring>

#include "executable_spans.h"
#include "little_endian.h"

namespace revpatch {
namespace executable_spans {

// ELF64, little-endian, x86-64 or AArch64: the PT_LOAD segments. Returns
// the file bytes the executable spans (0: not one).
uint64_t ElfSpans(const uint8_t* e, uint64_t avail, uint64_t off, std::vector<ReferenceSpan>* spans) {
  constexpr uint64_t kEhdrSize = 64, kPhdrSize = 56, kMaxPhdrs = 64;
  if (avail < kEhdrSize || e[0] != 0x7F || e[1] != 'E' || e[2] != 'L' || e[3] != 'F' ||
      e[4] != 2 || e[5] != 1) {
    return 0;
  }
  const uint32_t machine = e[18] | e[19] << 8;
  if (machine != 62 && machine != 183) return 0;  // x86-64, AArch64
  const uint64_t phoff = GetU64(e + 32);
  const uint64_t phentsize = e[54] | e[55] << 8, phnum = e[56] | e[57] << 8;
  if (phentsize != kPhdrSize || phnum == 0 || phnum > kMaxPhdrs || phoff > avail ||
      phnum * kPhdrSize > avail - phoff) {
    return 0;
  }
  std::vector<Segment> pieces;
  bool have_bias = false;
  uint64_t bias = 0, low = UINT64_MAX, high = 0, file_end = 0;
  for (uint64_t i = 0; i < phnum; ++i) {
    const uint8_t* p = e + phoff + i * kPhdrSize;
    if (GetU32(p) != 1) continue;  // PT_LOAD only
    const uint64_t offset = GetU64(p + 8), vaddr = GetU64(p + 16), filesz = GetU64(p + 32),
                   memsz = GetU64(p + 40);
    if (offset > avail || filesz > avail - offset || memsz < filesz || vaddr < offset ||
        vaddr >= kMaxViewOffset || memsz >= kMaxViewOffset - vaddr ||
        (have_bias && vaddr - offset != bias)) {
      return 0;
    }
    bias = vaddr - offset;
    have_bias = true;
    low = std::min(low, vaddr);
    high = std::max(high, vaddr + memsz);
    file_end = std::max(file_end, offset + filesz);
    if (filesz > 0) pieces.push_back({(GetU32(p + 4) & 1) != 0, offset, filesz});
  }
  if (pieces.empty()) return 0;
  AddSpans(std::move(pieces), machine == 183, off, bias, low, high, spans);
  return file_end;
}

}  // namespace executable_spans
}  // namespace revpatch
