#include <algorithm>
#include <cstring>

#include "executable_spans.h"
#include "little_endian.h"
#include "page_digest_scan.h"

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

// The same headers for version 4: every segment with file bytes is a map
// entry (__LINKEDIT too: its own bias is no longer a problem), every
// section a part.
bool ParseMachO(const ByteSource& view, uint64_t off, Executable* out) {
  constexpr uint64_t kHeaderSize = 32, kSegmentSize = 72, kSectionSize = 80, kMaxCommands = 256;
  if (off > view.size()) return false;
  const uint64_t avail = view.size() - off;
  uint8_t header[kHeaderSize];
  if (avail < kHeaderSize || !view.Read(off, kHeaderSize, header) || GetU32(header) != 0xFEEDFACF) {
    return false;
  }
  const uint32_t cpu = GetU32(header + 4);
  if (cpu != 0x01000007 && cpu != 0x0100000C) return false;  // x86-64, arm64
  const uint64_t ncmds = GetU32(header + 16), sizeofcmds = GetU32(header + 20);
  if (ncmds > kMaxCommands || sizeofcmds > (uint64_t{1} << 20) || sizeofcmds > avail - kHeaderSize) {
    return false;
  }
  std::vector<uint8_t> cmds(sizeofcmds);
  if (!view.Read(off + kHeaderSize, sizeofcmds, cmds.data())) return false;
  *out = Executable();
  out->arm64 = cpu == 0x0100000C;
  out->view_offset = off;
  out->low = UINT64_MAX;
  out->high = 0;
  for (uint64_t c = 0, at = 0; c < ncmds; ++c) {
    if (sizeofcmds - at < 8) return false;
    const uint32_t cmd = GetU32(&cmds[at]), cmdsize = GetU32(&cmds[at + 4]);
    if (cmdsize < 8 || cmdsize > sizeofcmds - at) return false;
    const uint8_t* seg = &cmds[at];
    at += cmdsize;
    if (cmd != 0x19) continue;  // LC_SEGMENT_64
    if (cmdsize < kSegmentSize) return false;
    char segname[17] = {};
    std::memcpy(segname, seg + 8, 16);
    const uint64_t vmaddr = GetU64(seg + 24), vmsize = GetU64(seg + 32),
                   fileoff = GetU64(seg + 40), filesize = GetU64(seg + 48);
    const uint64_t nsects = GetU32(seg + 64);
    const uint32_t initprot = GetU32(seg + 60);
    if (fileoff > avail || filesize > avail - fileoff || vmaddr >= kMaxViewOffset ||
        vmsize >= kMaxViewOffset - vmaddr || filesize > vmsize ||
        nsects > (cmdsize - kSegmentSize) / kSectionSize) {
      return false;
    }
    out->file_size = std::max(out->file_size, fileoff + filesize);
    if (filesize == 0 && initprot == 0) continue;  // __PAGEZERO: no memory at all
    if (vmsize > 0) {
      out->low = std::min(out->low, vmaddr);
      out->high = std::max(out->high, vmaddr + vmsize);
    }
    if (filesize > 0) out->map.push_back({vmaddr, off + fileoff, filesize});
    for (uint64_t k = 0; k < nsects; ++k) {
      const uint8_t* sect = seg + kSegmentSize + k * kSectionSize;
      char sectname[17] = {};
      std::memcpy(sectname, sect, 16);
      const uint64_t addr = GetU64(sect + 32), size = GetU64(sect + 40), offset = GetU32(sect + 48);
      const uint32_t flags = GetU32(sect + 64), type = flags & 0xFF;
      if (size == 0) continue;
      if (addr < vmaddr || addr - vmaddr > vmsize || size > vmsize - (addr - vmaddr)) return false;
      ExecutablePart part;
      part.name = std::string(segname) + "," + sectname;
      part.address = addr;
      part.size = size;
      if (type == 0x01 || type == 0x0C || type == 0x12) {  // zero fill
        part.file_bytes = false;
      } else {
        // File bytes: where the segment's bias puts them.
        if (offset < fileoff || offset - fileoff != addr - vmaddr || addr - vmaddr >= filesize ||
            size > filesize - (addr - vmaddr)) {
          return false;
        }
        // S_ATTR_PURE_INSTRUCTIONS, S_ATTR_SOME_INSTRUCTIONS
        part.kind = (flags & 0x80000400u) != 0 ? PartKind::kCode : PartKind::kPointers;
      }
      out->parts.push_back(part);
    }
  }
  if (out->map.empty() || out->high <= out->low || !SortDisjointMap(&out->map)) return false;
  return off + out->file_size < kMaxViewOffset;
}

namespace {

uint32_t GetBe32(const uint8_t* p) {
  return uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | p[3];
}

constexpr uint32_t kMachO64 = 0xFEEDFACF;
constexpr uint64_t kMaxLoadCommands = 1u << 20;     // sizeofcmds
constexpr uint64_t kMaxSignatureBytes = 64u << 20;  // a 16 GiB image's hashes

}  // namespace

// A code signature is a SuperBlob (big-endian, unlike the rest of the
// file): magic 0xFADE0CC0, length, count, then (type, offset) per blob. A
// CodeDirectory (magic 0xFADE0C02) holds, from its start: version, flags,
// hashOffset, identOffset, nSpecialSlots, nCodeSlots, codeLimit (u32 each),
// then hashSize, hashType, platform, pageSize (log2) (u8 each). Its code
// slot i, at hashOffset + i * hashSize, is the hash of file bytes
// [i * 2^pageSize, min(+2^pageSize, codeLimit)).
void MachOPageDigests(const ImageReadFn& read, uint64_t off, uint64_t avail,
                      std::vector<PageDigests>* runs) {
  std::vector<uint8_t> head;
  if (avail < 32 || !read(off, 32, &head) || GetU32(head.data()) != kMachO64) return;
  const uint32_t cpu = GetU32(head.data() + 4);
  if (cpu != 0x01000007 && cpu != 0x0100000C) return;  // x86-64, arm64
  const uint64_t ncmds = GetU32(head.data() + 16), sizeofcmds = GetU32(head.data() + 20);
  if (sizeofcmds > kMaxLoadCommands || sizeofcmds > avail - 32 || !read(off, 32 + sizeofcmds, &head)) {
    return;
  }
  uint64_t sig_off = 0, sig_size = 0;
  for (uint64_t c = 0, at = 32; c < ncmds; ++c) {
    if (head.size() - at < 8) return;
    const uint32_t cmd = GetU32(head.data() + at), cmdsize = GetU32(head.data() + at + 4);
    if (cmdsize < 8 || cmdsize > head.size() - at) return;
    if (cmd == 0x1D && cmdsize >= 16) {  // LC_CODE_SIGNATURE
      sig_off = GetU32(head.data() + at + 8);
      sig_size = GetU32(head.data() + at + 12);
    }
    at += cmdsize;
  }
  if (sig_size < 12 || sig_size > kMaxSignatureBytes || sig_off > avail ||
      sig_size > avail - sig_off) {
    return;
  }
  std::vector<uint8_t> sig;
  if (!read(off + sig_off, sig_size, &sig) || GetBe32(sig.data()) != 0xFADE0CC0) return;
  const uint64_t count = GetBe32(sig.data() + 8);
  if (count > (sig_size - 12) / 8) return;
  for (uint64_t k = 0; k < count && runs->size() < kMaxPageDigestRuns; ++k) {
    const uint64_t at = GetBe32(sig.data() + 12 + 8 * k + 4);
    if (at > sig_size || sig_size - at < 44 || GetBe32(sig.data() + at) != 0xFADE0C02) continue;
    const uint8_t* cd = sig.data() + at;
    const uint64_t length = GetBe32(cd + 4), hash_offset = GetBe32(cd + 16),
                   code_slots = GetBe32(cd + 28), code_limit = GetBe32(cd + 32);
    const uint8_t hash_size = cd[36], hash_type = cd[37], page_shift = cd[39];
    const bool sha256 = (hash_type == 2 && hash_size == 32) || (hash_type == 3 && hash_size == 20);
    if (!sha256 || length > sig_size - at || page_shift < 9 || page_shift > 16 ||
        code_limit == 0 || code_limit > sig_off) {
      continue;
    }
    PageDigests r;
    r.pages = off;
    r.limit = off + code_limit;
    r.page_shift = page_shift;
    r.hash_size = hash_size;
    r.count = (code_limit + (uint64_t{1} << page_shift) - 1) >> page_shift;
    r.slots = off + sig_off + at + hash_offset;
    if (r.count != code_slots || hash_offset > length || (length - hash_offset) / hash_size < r.count) {
      continue;
    }
    runs->push_back(r);
  }
}

}  // namespace executable_spans

void FindPageDigests(const ImageReadFn& read, uint64_t size, uint32_t block_size,
                     std::vector<PageDigests>* runs) {
  if (block_size == 0) return;
  std::vector<PageDigests> found;
  std::vector<uint8_t> magic;
  for (uint64_t off = 0; off + 32 <= size && found.size() < kMaxPageDigestRuns; off += block_size) {
    if (!read(off, 4, &magic) || GetU32(magic.data()) != 0xFEEDFACF) continue;  // MH_MAGIC_64
    executable_spans::MachOPageDigests(read, off, size - off, &found);
  }
  std::sort(found.begin(), found.end(),
            [](const PageDigests& a, const PageDigests& b) { return a.slots < b.slots; });
  // Keep the runs that satisfy the order rules (page_digests.h), first come.
  for (const PageDigests& r : found) {
    runs->push_back(r);
    if (!ValidPageDigests(*runs)) runs->pop_back();
  }
}

void FindPageDigests(const uint8_t* image, size_t size, uint32_t block_size,
                     std::vector<PageDigests>* runs) {
  FindPageDigests(
      [&](uint64_t offset, uint64_t length, std::vector<uint8_t>* out) {
        if (offset > size || length > size - offset) return false;
        out->assign(image + offset, image + offset + length);
        return true;
      },
      size, block_size, runs);
}

}  // namespace revpatch
