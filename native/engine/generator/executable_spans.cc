#include "executable_spans.h"

#include <algorithm>
#include <cstring>

#include "little_endian.h"

namespace revpatch {

bool MemoryByteSource::Read(uint64_t offset, size_t length, uint8_t* out) const {
  if (offset > size_ || length > size_ - offset) return false;
  if (length > 0) std::memcpy(out, data_ + offset, length);
  return true;
}

namespace executable_spans {

bool SortDisjointMap(std::vector<AddressMapping>* map) {
  std::sort(map->begin(), map->end(),
            [](const AddressMapping& a, const AddressMapping& b) { return a.address < b.address; });
  for (size_t i = 1; i < map->size(); ++i) {
    if ((*map)[i].address < (*map)[i - 1].address + (*map)[i - 1].length) return false;
  }
  std::vector<AddressMapping> by_offset = *map;
  std::sort(by_offset.begin(), by_offset.end(),
            [](const AddressMapping& a, const AddressMapping& b) { return a.offset < b.offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    if (by_offset[i].offset < by_offset[i - 1].offset + by_offset[i - 1].length) return false;
  }
  return true;
}
namespace {

constexpr uint64_t kMergeGap = 256;

struct ViewRange {
  ReferenceKind kind;
  uint64_t start, end;  // view offsets
};

// The view ranges of an executable's parts that hold references, by kind,
// through its map; sorted, disjoint, ones of a kind at most kMergeGap
// apart merged.
std::vector<ViewRange> PartRanges(const Executable& x) {
  std::vector<ViewRange> ranges;
  for (const ExecutablePart& part : x.parts) {
    if (!part.file_bytes || part.kind == PartKind::kOther) continue;
    const ReferenceKind kind = part.kind == PartKind::kPointers ? ReferenceKind::kAbs64
                               : x.arm64                        ? ReferenceKind::kArm64
                                                                : ReferenceKind::kRel32;
    const uint64_t lo = part.address, hi = part.address + part.size;  // checked not to wrap
    for (const AddressMapping& m : x.map) {
      const uint64_t a = std::max(lo, m.address), b = std::min(hi, m.address + m.length);
      if (a >= b) continue;
      uint64_t start = m.offset + (a - m.address);
      const uint64_t end = m.offset + (b - m.address);
      if (kind == ReferenceKind::kAbs64) {
        // Pointers are 8-aligned in addresses.
        const uint64_t skip = (8 - a % 8) % 8;
        if (skip >= end - start) continue;
        start += skip;
      }
      ranges.push_back({kind, start, end});
    }
  }
  std::sort(ranges.begin(), ranges.end(),
            [](const ViewRange& a, const ViewRange& b) { return a.start < b.start; });
  std::vector<ViewRange> out;
  for (ViewRange r : ranges) {
    if (!out.empty()) {
      ViewRange& last = out.back();
      if (r.end <= last.end) continue;
      if (r.start < last.end) r.start = last.end;  // overlapping sections: the first wins
      if (r.kind == ReferenceKind::kAbs64) {
        const uint64_t skip = (8 - (r.start - x.view_offset) % 8) % 8;
        if (skip >= r.end - r.start) continue;
        r.start += skip;
      }
      // Adjacent or nearly so (padding, a small table between): one span,
      // which costs fewer bytes than two.
      if (r.kind == last.kind && r.start - last.end <= kMergeGap &&
          (r.kind != ReferenceKind::kAbs64 || (r.start - last.start) % 8 == 0)) {
        last.end = r.end;
        continue;
      }
    }
    out.push_back(r);
  }
  return out;
}

// Old parts without file bytes -> the new part of the same name.
std::vector<AddressEquivalence> NobitsEquivalences(const Executable& old_x,
                                                   const Executable& new_x) {
  std::vector<AddressEquivalence> out;
  std::vector<bool> used(new_x.parts.size(), false);
  for (const ExecutablePart& o : old_x.parts) {
    if (o.file_bytes) continue;
    for (size_t k = 0; k < new_x.parts.size(); ++k) {
      const ExecutablePart& n = new_x.parts[k];
      if (used[k] || n.file_bytes || n.name != o.name) continue;
      used[k] = true;
      out.push_back({o.address, n.address, std::min(o.size, n.size)});
      break;
    }
  }
  std::sort(out.begin(), out.end(), [](const AddressEquivalence& a, const AddressEquivalence& b) {
    return a.old_address < b.old_address;
  });
  std::vector<AddressEquivalence> disjoint;
  for (const AddressEquivalence& e : out) {
    if (!disjoint.empty() &&
        e.old_address - disjoint.back().old_address < disjoint.back().length) {
      continue;
    }
    disjoint.push_back(e);
  }
  return disjoint;
}

}  // namespace

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

void FindExecutables(const ByteSource& view, uint32_t block_size, std::vector<Executable>* out) {
  if (block_size == 0) return;
  const uint64_t size = view.size();
  for (uint64_t off = 0; off < size; off += block_size) {
    uint8_t magic[4];
    if (size - off < sizeof(magic) || !view.Read(off, sizeof(magic), magic)) break;
    Executable x;
    bool found = false;
    if (magic[0] == 0x7F && magic[1] == 'E' && magic[2] == 'L' && magic[3] == 'F') {
      found = executable_spans::ParseElf(view, off, &x);
    } else if (GetU32(magic) == 0xFEEDFACF) {  // MH_MAGIC_64
      found = executable_spans::ParseMachO(view, off, &x);
    } else if (magic[0] == 'M' && magic[1] == 'Z') {
      found = executable_spans::ParsePe(view, off, &x);
    }
    if (!found) continue;
    const uint64_t file_end = x.file_size;
    out->push_back(std::move(x));
    // Skip past an executable: nothing inside it is another one.
    if (file_end > block_size) off += (file_end - 1) / block_size * block_size;
  }
}

void BuildAddressReferences(const std::vector<Executable>& old_execs,
                            const std::vector<Executable>& new_execs, ReferenceInfo* info) {
  info->version = kAddressReferenceVersion;
  info->spans.clear();
  info->images.clear();
  size_t entries = 0;
  const size_t pairs = std::min(old_execs.size(), new_execs.size());
  for (size_t i = 0; i < pairs && info->images.size() < kMaxReferenceImages; ++i) {
    const Executable& o = old_execs[i];
    const Executable& n = new_execs[i];
    if (o.arm64 != n.arm64 || o.high <= o.low) continue;
    ImageMaps maps;
    maps.old_map = o.map;
    maps.new_map = n.map;
    maps.address_equivalences = executable_spans::NobitsEquivalences(o, n);
    const size_t need =
        maps.old_map.size() + maps.new_map.size() + maps.address_equivalences.size();
    if (need > kMaxAddressMapEntries - entries) break;
    const std::vector<executable_spans::ViewRange> ranges = executable_spans::PartRanges(o);
    if (ranges.empty()) continue;
    if (ranges.size() > kMaxReferenceSpans - info->spans.size()) break;
    // Spans must follow the previous image's (views hold executables in
    // order, disjoint).
    if (!info->spans.empty() &&
        ranges.front().start < info->spans.back().start + info->spans.back().length) {
      continue;
    }
    entries += need;
    const uint32_t image = static_cast<uint32_t>(info->images.size());
    info->images.push_back(std::move(maps));
    for (const executable_spans::ViewRange& r : ranges) {
      ReferenceSpan s;
      s.kind = r.kind;
      s.image = image;
      s.start = r.start;
      s.length = r.end - r.start;
      s.low = o.low;
      s.high = o.high;
      info->spans.push_back(s);
    }
  }
}

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
