#include <algorithm>
#include <cstring>

#include "executable_spans.h"
#include "little_endian.h"

namespace revpatch {
namespace executable_spans {
namespace {

constexpr uint64_t kEhdrSize = 64, kPhdrSize = 56, kShdrSize = 64;
constexpr uint64_t kMaxPhdrs = 64;
constexpr uint64_t kMaxSections = 4096;
constexpr uint64_t kMaxNames = 1 << 20;  // bytes of section names read

constexpr uint32_t kPtLoad = 1;
constexpr uint32_t kShtRela = 4, kShtDynamic = 6, kShtNobits = 8, kShtDynsym = 11,
                   kShtInitArray = 14, kShtFiniArray = 15, kShtPreinitArray = 16, kShtRelr = 19;
constexpr uint64_t kShfWrite = 1, kShfAlloc = 2, kShfExecinstr = 4, kShfTls = 0x400;

bool IsElf(const uint8_t* e) {
  return e[0] == 0x7F && e[1] == 'E' && e[2] == 'L' && e[3] == 'F' && e[4] == 2 && e[5] == 1;
}

}  // namespace

// ELF64, little-endian, x86-64 or AArch64. The map comes from the PT_LOAD
// segments' file bytes (filesz, never memsz: what a segment has beyond
// its file bytes, .bss and LLD's .relro_padding, has no bytes to map);
// the parts from the allocated sections, or from the segments when the
// file has no section headers.
//
// Which data holds pointers: in any file the writable sections
// (.data.rel.ro, .init_array, .got, .data; RELRO ones are writable in the
// file), the dynamic relocations (a RELATIVE entry's r_offset and r_addend
// are addresses: a PIE's .data.rel.ro holds zeros where RELA names its
// pointers), .dynsym and .dynamic; in a fixed-address executable (ET_EXEC)
// also the read-only data (jump tables, Go's tables), which a PIE cannot
// hold pointers in without relocations.
bool ParseElf(const ByteSource& view, uint64_t off, Executable* out) {
  if (off >= view.size() || view.size() - off < kEhdrSize) return false;
  const uint64_t avail = view.size() - off;
  uint8_t e[kEhdrSize];
  if (!view.Read(off, kEhdrSize, e) || !IsElf(e)) return false;
  const uint16_t type = static_cast<uint16_t>(e[16] | e[17] << 8);
  const uint32_t machine = e[18] | e[19] << 8;
  if (machine != 62 && machine != 183) return false;  // x86-64, AArch64
  const uint64_t phoff = GetU64(e + 32), shoff = GetU64(e + 40);
  const uint64_t phentsize = e[54] | e[55] << 8, phnum = e[56] | e[57] << 8;
  const uint64_t shentsize = e[58] | e[59] << 8, shnum = e[60] | e[61] << 8,
                 shstrndx = e[62] | e[63] << 8;
  if (phentsize != kPhdrSize || phnum == 0 || phnum > kMaxPhdrs || phoff > avail ||
      phnum * kPhdrSize > avail - phoff) {
    return false;
  }
  std::vector<uint8_t> ph(phnum * kPhdrSize);
  if (!view.Read(off + phoff, ph.size(), ph.data())) return false;

  Executable x;
  x.arm64 = machine == 183;
  x.view_offset = off;
  x.low = UINT64_MAX;
  uint64_t file_end = std::max(phoff + phnum * kPhdrSize, kEhdrSize);
  struct Load {
    bool exec;
    uint64_t offset, vaddr, filesz, memsz;
  };
  std::vector<Load> loads;
  for (uint64_t i = 0; i < phnum; ++i) {
    const uint8_t* p = ph.data() + i * kPhdrSize;
    if (GetU32(p) != kPtLoad) continue;
    Load l{(GetU32(p + 4) & 1) != 0, GetU64(p + 8), GetU64(p + 16), GetU64(p + 32),
           GetU64(p + 40)};
    if (l.offset > avail || l.filesz > avail - l.offset || l.memsz < l.filesz ||
        l.memsz - 1 > ~l.vaddr || off + l.offset >= kMaxViewOffset) {
      return false;
    }
    if (l.memsz == 0) continue;
    x.low = std::min(x.low, l.vaddr);
    x.high = std::max(x.high, l.vaddr + l.memsz);
    file_end = std::max(file_end, l.offset + l.filesz);
    loads.push_back(l);
    if (l.filesz > 0) x.map.push_back({l.vaddr, off + l.offset, l.filesz});
  }
  if (x.map.empty()) return false;

  // The map: disjoint in addresses (else the file is not one a loader
  // takes), and in file bytes (two segments sharing a page's bytes: the
  // later one starts after the earlier one's).
  std::sort(x.map.begin(), x.map.end(),
            [](const AddressMapping& a, const AddressMapping& b) { return a.address < b.address; });
  for (size_t i = 1; i < x.map.size(); ++i) {
    if (x.map[i].address - x.map[i - 1].address < x.map[i - 1].length) return false;
  }
  std::sort(x.map.begin(), x.map.end(),
            [](const AddressMapping& a, const AddressMapping& b) { return a.offset < b.offset; });
  std::vector<AddressMapping> clipped;
  for (AddressMapping m : x.map) {
    if (!clipped.empty()) {
      const uint64_t end = clipped.back().offset + clipped.back().length;
      if (m.offset + m.length <= end) continue;
      if (m.offset < end) {
        const uint64_t cut = end - m.offset;
        m.offset += cut;
        m.address += cut;
        m.length -= cut;
      }
    }
    clipped.push_back(m);
  }
  std::sort(clipped.begin(), clipped.end(),
            [](const AddressMapping& a, const AddressMapping& b) { return a.address < b.address; });
  x.map = std::move(clipped);

  // Sections, when there are headers and they are sound.
  bool have_sections = false;
  if (shentsize == kShdrSize && shnum > 0 && shnum <= kMaxSections && shstrndx < shnum &&
      shoff <= avail && shnum * kShdrSize <= avail - shoff) {
    std::vector<uint8_t> sh(shnum * kShdrSize);
    const uint8_t* names_hdr = nullptr;
    std::vector<uint8_t> names;
    if (view.Read(off + shoff, sh.size(), sh.data())) {
      names_hdr = sh.data() + shstrndx * kShdrSize;
      const uint64_t names_off = GetU64(names_hdr + 24), names_size = GetU64(names_hdr + 32);
      if (names_size <= kMaxNames && names_off <= avail && names_size <= avail - names_off) {
        names.resize(names_size);
        if (names_size == 0 || view.Read(off + names_off, names_size, names.data())) {
          have_sections = true;
          file_end = std::max(file_end, shoff + shnum * kShdrSize);
        }
      }
    }
    for (uint64_t i = 0; have_sections && i < shnum; ++i) {
      const uint8_t* s = sh.data() + i * kShdrSize;
      const uint32_t name = GetU32(s), stype = GetU32(s + 4);
      const uint64_t flags = GetU64(s + 8), addr = GetU64(s + 16), size = GetU64(s + 32);
      if ((flags & kShfAlloc) == 0 || size == 0 || size - 1 > ~addr) continue;
      ExecutablePart part;
      if (name < names.size()) {
        const char* n = reinterpret_cast<const char*>(names.data()) + name;
        part.name.assign(n, strnlen(n, names.size() - name));
      }
      part.address = addr;
      part.size = size;
      part.file_bytes = stype != kShtNobits;
      if ((flags & kShfTls) != 0 && !part.file_bytes) continue;  // .tbss: no addresses of its own
      if (!part.file_bytes) {
        part.kind = PartKind::kOther;
      } else if ((flags & kShfExecinstr) != 0) {
        part.kind = PartKind::kCode;
      } else if ((flags & kShfWrite) != 0 || stype == kShtRela || stype == kShtRelr ||
                 stype == kShtDynamic || stype == kShtDynsym || stype == kShtInitArray ||
                 stype == kShtFiniArray || stype == kShtPreinitArray || type == 2 /* ET_EXEC */) {
        part.kind = PartKind::kPointers;
      } else {
        part.kind = PartKind::kOther;
      }
      x.parts.push_back(std::move(part));
    }
    if (!have_sections) x.parts.clear();
  }
  if (!have_sections) {
    // No sections: each segment is code or pointers; its memory past its
    // file bytes has none.
    for (size_t i = 0; i < loads.size(); ++i) {
      const Load& l = loads[i];
      if (l.filesz > 0) {
        x.parts.push_back({"load" + std::to_string(i), l.vaddr, l.filesz,
                           l.exec ? PartKind::kCode : PartKind::kPointers, true});
      }
      if (l.memsz > l.filesz) {
        x.parts.push_back({"load" + std::to_string(i) + ".bss", l.vaddr + l.filesz,
                           l.memsz - l.filesz, PartKind::kOther, false});
      }
    }
  }
  x.file_size = file_end;
  *out = std::move(x);
  return true;
}

// ELF64, little-endian, x86-64 or AArch64: the PT_LOAD segments. Returns
// the file bytes the executable spans (0: not one).
uint64_t ElfSpans(const uint8_t* e, uint64_t avail, uint64_t off, std::vector<ReferenceSpan>* spans) {
  if (avail < kEhdrSize || !IsElf(e)) return 0;
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
    if (GetU32(p) != kPtLoad) continue;
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
