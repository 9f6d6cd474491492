#include <algorithm>
#include <cstring>

#include "executable_spans.h"
#include "little_endian.h"

namespace revpatch {
namespace executable_spans {
namespace {

// PE32+ (x86-64, arm64), as the MSVC, LLD and Go linkers write it: an
// MS-DOS stub whose e_lfanew (at 0x3C) locates "PE\0\0", the COFF header
// (machine, section count, optional header size), the optional header
// (magic 0x20B, ImageBase, SizeOfImage, data directories) and the section
// table. Each section sits at its own RVA and its own file offset:
// FileAlignment (512) is finer than SectionAlignment (4096), so sections
// are at different address-minus-offset biases.
struct PeSection {
  char name[9] = {};
  uint64_t rva = 0;
  uint64_t offset = 0;       // file offset of its bytes, from the image's start
  uint64_t size = 0;         // file bytes loaded (0: none)
  uint64_t memory_size = 0;  // bytes in memory from rva
  uint32_t flags = 0;
  bool exec() const { return (flags & 0x20000020u) != 0; }  // MEM_EXECUTE, CNT_CODE
};

struct PeImage {
  bool arm64 = false;
  uint64_t image_base = 0;
  uint64_t image_size = 0;
  std::vector<PeSection> sections;  // in table order
  uint64_t file_end = 0;            // headers and every section's raw data
};

class BufferSource : public ByteSource {
 public:
  BufferSource(const uint8_t* data, uint64_t size) : data_(data), size_(size) {}
  uint64_t size() const override { return size_; }
  bool Read(uint64_t offset, size_t length, uint8_t* out) const override {
    if (offset > size_ || length > size_ - offset) return false;
    std::memcpy(out, data_ + offset, length);
    return true;
  }

 private:
  const uint8_t* data_;
  uint64_t size_;
};

bool ReadPe(const ByteSource& view, uint64_t off, PeImage* image) {
  constexpr uint64_t kSectionHeader = 40, kMaxSections = 96, kMaxHeaders = 1 << 16;
  if (off > view.size()) return false;
  const uint64_t avail = view.size() - off;
  uint8_t dos[0x40];
  if (avail < sizeof(dos) || !view.Read(off, sizeof(dos), dos) || dos[0] != 'M' || dos[1] != 'Z') {
    return false;
  }
  const uint64_t pe = GetU32(dos + 0x3C);
  if (pe > kMaxHeaders || pe + 24 > avail) return false;
  uint8_t coff[24];
  if (!view.Read(off + pe, sizeof(coff), coff) || std::memcmp(coff, "PE\0\0", 4) != 0) return false;
  const uint32_t machine = coff[4] | coff[5] << 8;
  if (machine != 0x8664 && machine != 0xAA64) return false;  // x86-64, arm64
  const uint64_t sections = coff[6] | coff[7] << 8, optional_size = coff[20] | coff[21] << 8;
  const uint64_t opt = pe + 24, table = opt + optional_size;
  const uint64_t headers = table + sections * kSectionHeader;
  if (sections == 0 || sections > kMaxSections || optional_size < 112 || headers > avail) {
    return false;
  }
  std::vector<uint8_t> h(headers);
  if (!view.Read(off, headers, h.data()) || (h[opt] | h[opt + 1] << 8) != 0x20B) return false;
  image->arm64 = machine == 0xAA64;
  image->image_base = GetU64(&h[opt + 24]);
  image->image_size = GetU32(&h[opt + 56]);
  image->sections.clear();
  image->file_end = headers;
  if (image->image_base >= kMaxViewOffset || image->image_size == 0) return false;
  for (uint64_t i = 0; i < sections; ++i) {
    const uint8_t* s = &h[table + i * kSectionHeader];
    PeSection section;
    std::memcpy(section.name, s, 8);
    const uint64_t virtual_size = GetU32(s + 8);
    section.rva = GetU32(s + 12);
    const uint64_t raw_size = GetU32(s + 16);
    section.offset = GetU32(s + 20);
    section.flags = GetU32(s + 36);
    // Raw data is padded to FileAlignment; past VirtualSize it is not loaded.
    section.size = virtual_size == 0 ? raw_size : std::min(raw_size, virtual_size);
    section.memory_size = std::max(virtual_size, section.size);
    if (section.offset == 0) section.size = 0;  // no file bytes (.bss)
    if (section.size > 0 && (section.offset > avail || section.size > avail - section.offset)) {
      return false;
    }
    if (section.rva + section.memory_size > image->image_size) return false;
    if (section.size > 0) {
      image->file_end = std::max(image->file_end,
                                 section.offset + std::min(raw_size, avail - section.offset));
    }
    image->sections.push_back(section);
  }
  return true;
}

// Sections whose words are pointers where they fall in the image: not the
// tables of RVAs (.pdata unwind entries, .xdata, .reloc, the import and
// export directories) nor resources.
bool HoldsPointers(const PeSection& s) {
  for (const char* name : {".reloc", ".pdata", ".xdata", ".idata", ".edata", ".rsrc", ".symtab"}) {
    if (std::strcmp(s.name, name) == 0) return false;
  }
  return true;
}

}  // namespace

bool ParsePe(const ByteSource& view, uint64_t off, Executable* out) {
  PeImage image;
  if (!ReadPe(view, off, &image) || off + image.file_end >= kMaxViewOffset) return false;
  *out = Executable();
  out->arm64 = image.arm64;
  out->view_offset = off;
  out->file_size = image.file_end;
  out->low = image.image_base;
  out->high = image.image_base + image.image_size;
  for (const PeSection& s : image.sections) {
    const uint64_t address = image.image_base + s.rva;
    if (s.size > 0) {
      out->map.push_back({address, off + s.offset, s.size});
      ExecutablePart part;
      part.name = s.name;
      part.address = address;
      part.size = s.size;
      part.kind = s.exec() ? PartKind::kCode : HoldsPointers(s) ? PartKind::kPointers : PartKind::kOther;
      out->parts.push_back(part);
    }
    if (s.memory_size > s.size) {
      ExecutablePart part;
      part.name = std::string(s.name) + ".bss";
      part.address = address + s.size;
      part.size = s.memory_size - s.size;
      part.file_bytes = false;
      out->parts.push_back(part);
    }
  }
  return !out->map.empty() && SortDisjointMap(&out->map);
}

// Without address maps (reference info version 3) a span can only say
// "address = view offset + one bias", so only references inside the code
// section are predicted: calls and branches in it, and pointers to it
// (function tables, Go's itabs and funcdata) in the data sections.
uint64_t PeSpans(const uint8_t* p, uint64_t avail, uint64_t off, std::vector<ReferenceSpan>* spans) {
  PeImage image;
  const BufferSource source(p, avail);
  if (!ReadPe(source, 0, &image)) return 0;
  const PeSection* code = nullptr;
  for (const PeSection& s : image.sections) {
    if (s.exec() && s.size > 0 && (code == nullptr || s.size > code->size)) code = &s;
  }
  if (code == nullptr || off + image.file_end >= kMaxViewOffset) return 0;
  // address = view offset + bias, for the code section's bytes.
  const uint64_t bias = image.image_base + code->rva - code->offset - off;
  const uint64_t code_low = off + code->offset, code_high = code_low + code->size;
  std::vector<ReferenceSpan> found;
  for (const PeSection& s : image.sections) {
    if (s.size == 0) continue;
    ReferenceSpan span;
    span.start = off + s.offset;
    span.length = s.size;
    if (&s == code) {
      span.kind = image.arm64 ? ReferenceKind::kArm64 : ReferenceKind::kRel32;
      span.low = code_low;
      span.high = code_high;
      span.bias = image.arm64 ? bias : 0;
    } else if (!s.exec() && HoldsPointers(s)) {
      // Sections start page-aligned in memory and 512-aligned in the file,
      // so pointers are 8-aligned from the span's start.
      span.kind = ReferenceKind::kAbs64;
      span.low = code_low + bias;
      span.high = code_high + bias;
      span.bias = bias;
    } else {
      continue;
    }
    found.push_back(span);
  }
  std::sort(found.begin(), found.end(),
            [](const ReferenceSpan& a, const ReferenceSpan& b) { return a.start < b.start; });
  uint64_t end = 0;
  for (const ReferenceSpan& s : found) {
    if (s.start < end) continue;  // overlapping raw data: odd or hostile, skipped
    spans->push_back(s);
    end = s.start + s.length;
  }
  return image.file_end;
}

}  // namespace executable_spans
}  // namespace revpatch
