#include "references.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "little_endian.h"

namespace revpatch {
namespace {

constexpr size_t kMaxVarint = 10;

Status Corrupt(const std::string& what) {
  return Status(ErrorCode::kCorrupt, "delta references: " + what);
}

void PutVarint(uint64_t v, std::vector<uint8_t>* out) {
  while (v >= 0x80) {
    out->push_back(static_cast<uint8_t>(v | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<uint8_t>(v));
}

class VarintReader {
 public:
  VarintReader(const uint8_t* data, size_t size) : p_(data), end_(data + size) {}

  Status Next(uint64_t* out) {
    uint64_t value = 0;
    for (size_t i = 0; i < kMaxVarint; ++i) {
      if (p_ == end_) return Corrupt("truncated");
      const uint8_t b = *p_++;
      if (i == kMaxVarint - 1 && b > 1) return Corrupt("varint past 64 bits");
      value |= uint64_t{b & 0x7Fu} << (7 * i);
      if ((b & 0x80) == 0) {
        *out = value;
        return Status::Ok();
      }
    }
    return Corrupt("varint too long");
  }

  // A view offset or length: below 2^62, so sums of two never overflow.
  Status Offset(uint64_t* out) {
    REVPATCH_RETURN_IF_ERROR(Next(out));
    if (*out >= kMaxViewOffset) return Corrupt("offset out of range");
    return Status::Ok();
  }

  bool done() const { return p_ == end_; }
  size_t remaining() const { return static_cast<size_t>(end_ - p_); }

 private:
  const uint8_t* p_;
  const uint8_t* end_;
};

// One contiguous run of a buffer in its view.
struct Run {
  uint64_t buffer_start;
  uint64_t view_start;
  uint64_t length;
};

// Buffer offset -> view offset, for a buffer laid out by extents.
class ViewMap {
 public:
  Status Init(const std::vector<Extent>* extents, uint32_t block_size, size_t buffer_size) {
    runs_.clear();
    if (extents == nullptr) {
      if (buffer_size > 0) runs_.push_back({0, 0, buffer_size});
      return Status::Ok();
    }
    uint64_t at = 0;
    for (const Extent& e : *extents) {
      if (at >= buffer_size) break;
      uint64_t view = 0, length = 0;
      if (__builtin_mul_overflow(e.start_block, uint64_t{block_size}, &view) ||
          __builtin_mul_overflow(e.num_blocks, uint64_t{block_size}, &length) ||
          view >= kMaxViewOffset || length >= kMaxViewOffset - view) {
        return Corrupt("extent out of range");
      }
      length = std::min<uint64_t>(length, buffer_size - at);
      if (length == 0) continue;
      runs_.push_back({at, view, length});
      at += length;
    }
    if (at < buffer_size) return Corrupt("extents do not cover the buffer");
    return Status::Ok();
  }

  // The run holding buffer offset `at` (which must be inside the buffer).
  const Run& Locate(uint64_t at) const {
    auto it = std::upper_bound(runs_.begin(), runs_.end(), at,
                               [](uint64_t v, const Run& r) { return v < r.buffer_start; });
    return *(it - 1);
  }

 private:
  std::vector<Run> runs_;
};

// Old view offset -> new view offset through a set of equivalences.
class OffsetMapper {
 public:
  void Build(std::vector<Equivalence> all) {
    std::sort(all.begin(), all.end(), [](const Equivalence& a, const Equivalence& b) {
      return a.old_start != b.old_start ? a.old_start < b.old_start : a.length > b.length;
    });
    table_.clear();
    for (Equivalence e : all) {
      if (!table_.empty()) {
        const uint64_t end = table_.back().old_start + table_.back().length;
        if (e.old_start + e.length <= end) continue;
        if (e.old_start < end) {
          const uint64_t cut = end - e.old_start;
          e.old_start += cut;
          e.new_start += cut;
          e.length -= cut;
        }
      }
      table_.push_back(e);
    }
  }

  // Where old view offset `t` went: inside an equivalence it moves with
  // it, outside all of them with the nearest one.
  int64_t Map(uint64_t t) const {
    if (table_.empty()) return static_cast<int64_t>(t);
    auto it = std::upper_bound(table_.begin(), table_.end(), t,
                               [](uint64_t v, const Equivalence& e) { return v < e.old_start; });
    const Equivalence* e = nullptr;
    if (it == table_.begin()) {
      e = &*it;
    } else {
      const Equivalence& before = *(it - 1);
      e = &before;
      const uint64_t end = before.old_start + before.length;
      if (t >= end && it != table_.end() && it->old_start - t < t - end + 1) e = &*it;
    }
    return static_cast<int64_t>(t) + (static_cast<int64_t>(e->new_start) -
                                      static_cast<int64_t>(e->old_start));
  }

 private:
  std::vector<Equivalence> table_;
};

struct RipOpcodes {
  bool table[256] = {};
  constexpr RipOpcodes() {
    for (uint8_t op : {0x03, 0x2B, 0x39, 0x3B, 0x63, 0x85, 0x89, 0x8B, 0x8D}) table[op] = true;
  }
};
// add, sub, cmp (both ways), movsxd, test, mov (both ways), lea: with a
// REX prefix and a RIP-relative ModRM, the loads, stores and address
// computations of 64-bit code.
constexpr RipOpcodes kRipOpcodes;

// The offset of the rel32 field of an instruction starting at p[0], or 0
// when p does not start one of the forms scanned for: call and jmp (E8,
// E9), jcc (0F 8x), call/jmp through [rip+d] (FF 15, FF 25), and REX +
// kRipOpcodes + ModRM with mod 00, r/m 101. Reads p[0..2]. Branch-free:
// about one byte in six of x86-64 code starts one of the candidates (REX
// prefixes mostly), too many, and too random, to branch on each.
inline size_t Rel32Field(const uint8_t* p) {
  const uint8_t b0 = p[0], b1 = p[1], b2 = p[2];
  const size_t call = (b0 & 0xFE) == 0xE8;
  const size_t two = ((b0 == 0x0F) & ((b1 & 0xF0) == 0x80)) |
                     ((b0 == 0xFF) & ((b1 == 0x15) | (b1 == 0x25)));
  const size_t rip = ((b0 & 0xF0) == 0x40) & kRipOpcodes.table[b1] & ((b2 & 0xC7) == 0x05);
  return call | two << 1 | rip * 3;
}

// The lanes (bit 7 of each byte) of `x` that are zero; may also flag a
// lane above a zero one (a borrow), never misses one.
constexpr uint64_t kOnes = 0x0101010101010101ull, kHighs = 0x8080808080808080ull;
inline uint64_t ZeroLanes(uint64_t x) { return (x - kOnes) & ~x & kHighs; }

// For the 8 positions p[0..7] (reading p[0..9]): bit 7 of lane k set when
// Rel32Field(p + k) may be nonzero (a superset: it only lets the scan skip
// the words where none is, most of them).
inline uint64_t CandidateLanes(const uint8_t* p) {
  const uint64_t b0 = GetU64(p), b1 = GetU64(p + 1), b2 = GetU64(p + 2);
  return ZeroLanes((b0 & (0xFE * kOnes)) ^ (0xE8 * kOnes)) |
         (ZeroLanes(b0 ^ (0x0F * kOnes)) & ZeroLanes((b1 & (0xF0 * kOnes)) ^ (0x80 * kOnes))) |
         ZeroLanes(b0 ^ (0xFF * kOnes)) |
         (ZeroLanes((b0 & (0xF0 * kOnes)) ^ (0x40 * kOnes)) &
          ZeroLanes((b2 & (0xC7 * kOnes)) ^ (0x05 * kOnes)));
}

// AArch64. A branch keeps a signed word offset from its own address in
// `bits` bits at bit `shift`; ADRP keeps a signed page offset (21 bits,
// split immlo 30:29 / immhi 23:5) that the next instruction completes
// with the low 12 bits of the address (ADD immediate, or a load or store
// whose unsigned offset is scaled by its access size).
struct Arm64Branch {
  uint32_t mask, value;
  int shift, bits;
};
constexpr Arm64Branch kArm64Branches[] = {
    {0x7C000000, 0x14000000, 0, 26},  // B, BL
    {0xFF000010, 0x54000000, 5, 19},  // B.cond
    {0x7E000000, 0x34000000, 5, 19},  // CBZ, CBNZ
    {0x7E000000, 0x36000000, 5, 14},  // TBZ, TBNZ
};

inline int64_t SignExtend(uint64_t v, int bits) {
  return static_cast<int64_t>(v << (64 - bits)) >> (64 - bits);
}

// The scale of the low-12-bit operand of `w` when it completes an ADRP
// into register `rd` (Rn == rd), or 0.
inline int64_t Lo12Scale(uint32_t w, uint32_t rd) {
  if (((w >> 5) & 31) != rd) return 0;
  switch (w & 0xFFC00000) {
    case 0x91000000: return 1;  // ADD Xd, Xn, #imm
    case 0x39000000: case 0x39400000: return 1;  // STRB, LDRB
    case 0x79000000: case 0x79400000: return 2;  // STRH, LDRH
    case 0xB9000000: case 0xB9400000: return 4;  // STR, LDR (32-bit)
    case 0xF9000000: case 0xF9400000: return 8;  // STR, LDR (64-bit)
    default: return 0;
  }
}

void PredictArm64(const ReferenceSpan& span, const OffsetMapper& mapper, const uint8_t* old,
                  uint64_t old_view, uint64_t new_view, uint64_t length, uint8_t* pred) {
  auto inside = [&](int64_t t) {
    return t >= static_cast<int64_t>(span.low) && t < static_cast<int64_t>(span.high);
  };
  // Instructions are 4-aligned from the span's start.
  for (uint64_t i = (4 - (old_view - span.start) % 4) % 4; i + 4 <= length; i += 4) {
    const uint32_t w = GetU32(old + i);
    const int64_t pc = static_cast<int64_t>(old_view + i);
    const int64_t new_pc = static_cast<int64_t>(new_view + i);
    bool done = false;
    for (const Arm64Branch& b : kArm64Branches) {
      if ((w & b.mask) != b.value) continue;
      done = true;
      const uint32_t field = ((uint32_t{1} << b.bits) - 1) << b.shift;
      const int64_t target = pc + 4 * SignExtend((w & field) >> b.shift, b.bits);
      if (!inside(target)) break;
      const int64_t distance = mapper.Map(static_cast<uint64_t>(target)) - new_pc;
      const int64_t limit = int64_t{1} << (b.bits - 1);
      if (distance % 4 == 0 && distance / 4 >= -limit && distance / 4 < limit) {
        PutU32(pred + i,
               (w & ~field) | ((static_cast<uint32_t>(distance / 4) << b.shift) & field));
      }
      break;
    }
    if (done || (w & 0x9F000000) != 0x90000000 || i + 8 > length) continue;
    // ADRP and the instruction completing it.
    const uint32_t next = GetU32(old + i + 4);
    const int64_t scale = Lo12Scale(next, w & 31);
    if (scale == 0) continue;
    // Unsigned arithmetic: a hostile bias may wrap, and inside() refuses
    // whatever that makes.
    const uint64_t bias = span.bias;
    const uint64_t pages = static_cast<uint64_t>(
        SignExtend(((w >> 5) & 0x7FFFF) << 2 | ((w >> 29) & 3), 21));
    const uint64_t page = (static_cast<uint64_t>(pc) + bias) & ~uint64_t{0xFFF};
    const int64_t target = static_cast<int64_t>(
        page + pages * 4096 + ((next >> 10) & 0xFFF) * static_cast<uint64_t>(scale) - bias);
    if (!inside(target)) continue;
    const uint64_t moved = static_cast<uint64_t>(mapper.Map(static_cast<uint64_t>(target))) + bias;
    const int64_t new_pages = static_cast<int64_t>(moved >> 12) -
                              static_cast<int64_t>((static_cast<uint64_t>(new_pc) + bias) >> 12);
    // (Both shifted values are below 2^52, so the difference cannot wrap.)
    const uint64_t low12 = moved & 0xFFF;
    if (low12 % static_cast<uint64_t>(scale) == 0 && new_pages >= -(int64_t{1} << 20) &&
        new_pages < (int64_t{1} << 20)) {
      const uint32_t imm = static_cast<uint32_t>(new_pages) & 0x1FFFFF;
      PutU32(pred + i, (w & 0x9F00001F) | (imm & 3) << 29 | (imm >> 2) << 5);
      PutU32(pred + i + 4, (next & ~(0xFFFu << 10)) |
                               static_cast<uint32_t>(low12 / static_cast<uint64_t>(scale)) << 10);
    }
    i += 4;  // the pair is one reference
  }
}

// Calls visit(at) for the rel32 field at old[at, at + 4) of each candidate
// instruction in old[0, length) (Rel32Field); visit returns true when the
// field was a reference, and the scan goes on after it, else one byte on.
template <typename Visit>
void ScanRel32Fields(const uint8_t* old, uint64_t length, Visit visit) {
  // A field ends at least 5 bytes after its instruction starts, so the
  // three bytes Rel32Field reads are there whenever one can fit.
  for (uint64_t i = 0; i + 5 <= length;) {
    if (i + 10 <= length) {
      // Words with no candidate are skipped whole; GetU64 assembles
      // little-endian lanes on any host.
      const uint64_t lanes = CandidateLanes(old + i);
      if (lanes == 0) {
        i += 8;
        continue;
      }
      i += static_cast<uint64_t>(__builtin_ctzll(lanes) >> 3);
      if (i + 5 > length) break;
    }
    const size_t field = Rel32Field(old + i);
    if (field == 0 || i + field + 4 > length) {
      ++i;
      continue;
    }
    const uint64_t at = i + field;
    i = visit(at) ? at + 4 : i + 1;
  }
}

// The references of one span inside one piece of an add: old bytes
// old[0, length) at old view offset `old_view`, predicted bytes pred[...]
// at new view offset `new_view`.
void PredictPiece(const ReferenceSpan& span, const OffsetMapper& mapper, const uint8_t* old,
                  uint64_t old_view, uint64_t new_view, uint64_t length, uint8_t* pred) {
  if (span.kind == ReferenceKind::kArm64) {
    PredictArm64(span, mapper, old, old_view, new_view, length, pred);
    return;
  }
  if (span.kind == ReferenceKind::kRel32) {
    ScanRel32Fields(old, length, [&](uint64_t at) {
      const int64_t disp = static_cast<int32_t>(GetU32(old + at));
      const int64_t target = static_cast<int64_t>(old_view + at + 4) + disp;
      if (target < static_cast<int64_t>(span.low) || target >= static_cast<int64_t>(span.high)) {
        return false;
      }
      const int64_t moved = mapper.Map(static_cast<uint64_t>(target));
      const int64_t d = moved - static_cast<int64_t>(new_view + at + 4);
      if (d >= INT32_MIN && d <= INT32_MAX) PutU32(pred + at, static_cast<uint32_t>(d));
      return true;
    });
    return;
  }
  // kAbs64: 8-aligned from the span's start.
  uint64_t i = (8 - (old_view - span.start) % 8) % 8;
  for (; i + 8 <= length; i += 8) {
    const uint64_t value = GetU64(old + i);
    if (value < span.low || value >= span.high) continue;
    const uint64_t target = value - span.bias;
    if (target >= kMaxViewOffset) continue;
    PutU64(pred + i, static_cast<uint64_t>(mapper.Map(target)) + span.bias);
  }
}

}  // namespace

namespace {

void EncodeEquivalences(const std::vector<Equivalence>& equivalences, std::vector<uint8_t>* out) {
  PutVarint(equivalences.size(), out);
  for (const Equivalence& e : equivalences) {
    PutVarint(e.old_start, out);
    PutVarint(e.new_start, out);
    PutVarint(e.length, out);
  }
}

Status DecodeEquivalences(VarintReader* in, std::vector<Equivalence>* out) {
  uint64_t count = 0;
  REVPATCH_RETURN_IF_ERROR(in->Next(&count));
  if (count > kMaxEquivalences) return Corrupt("too many equivalences");
  for (uint64_t i = 0; i < count; ++i) {
    Equivalence e;
    REVPATCH_RETURN_IF_ERROR(in->Offset(&e.old_start));
    REVPATCH_RETURN_IF_ERROR(in->Offset(&e.new_start));
    REVPATCH_RETURN_IF_ERROR(in->Offset(&e.length));
    if (e.length == 0 || e.length > kMaxViewOffset - e.old_start ||
        e.length > kMaxViewOffset - e.new_start) {
      return Corrupt("equivalence out of range");
    }
    out->push_back(e);
  }
  return Status::Ok();
}

uint64_t Zigzag(uint64_t delta) {
  return (delta << 1) ^ static_cast<uint64_t>(static_cast<int64_t>(delta) >> 63);
}
uint64_t Unzigzag(uint64_t z) { return (z >> 1) ^ (~(z & 1) + 1); }

// Entries are sorted by address: each address is a difference from the
// previous entry's end, each offset from the previous entry's offset end
// (zigzag, as a map's offsets need not be in address order).
void EncodeMap(const std::vector<AddressMapping>& map, std::vector<uint8_t>* out) {
  PutVarint(map.size(), out);
  uint64_t address_end = 0, offset_end = 0;
  for (const AddressMapping& m : map) {
    PutVarint(m.address - address_end, out);
    PutVarint(Zigzag(m.offset - offset_end), out);
    PutVarint(m.length, out);
    address_end = m.address + m.length;
    offset_end = m.offset + m.length;
  }
}

// An address range [address, +length) that does not wrap past 2^64.
bool AddressRangeOk(uint64_t address, uint64_t length) {
  return length != 0 && length - 1 <= ~address;
}

Status DecodeMap(VarintReader* in, size_t* budget, std::vector<AddressMapping>* out) {
  uint64_t count = 0;
  REVPATCH_RETURN_IF_ERROR(in->Next(&count));
  if (count > *budget) return Corrupt("too many address map entries");
  *budget -= count;
  uint64_t address_end = 0, offset_end = 0;
  bool wrapped = false;  // the previous entry ended at 2^64
  for (uint64_t i = 0; i < count; ++i) {
    AddressMapping m;
    uint64_t gap = 0, offset_delta = 0;
    REVPATCH_RETURN_IF_ERROR(in->Next(&gap));
    REVPATCH_RETURN_IF_ERROR(in->Next(&offset_delta));
    REVPATCH_RETURN_IF_ERROR(in->Offset(&m.length));
    if (wrapped || gap > ~address_end) return Corrupt("address map entries out of order");
    m.address = address_end + gap;
    m.offset = offset_end + Unzigzag(offset_delta);
    if (m.offset >= kMaxViewOffset || !AddressRangeOk(m.address, m.length) ||
        m.length > kMaxViewOffset - m.offset) {
      return Corrupt("address map entry out of range");
    }
    address_end = m.address + m.length;  // 0 when it ends at 2^64
    wrapped = address_end == 0;
    offset_end = m.offset + m.length;
    out->push_back(m);
  }
  std::vector<AddressMapping> by_offset(*out);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const AddressMapping& a, const AddressMapping& b) { return a.offset < b.offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    if (by_offset[i].offset - by_offset[i - 1].offset < by_offset[i - 1].length) {
      return Corrupt("address map entries share view bytes");
    }
  }
  return Status::Ok();
}

Status DecodeAddressEquivalences(VarintReader* in, size_t* budget,
                                 std::vector<AddressEquivalence>* out) {
  uint64_t count = 0;
  REVPATCH_RETURN_IF_ERROR(in->Next(&count));
  if (count > *budget) return Corrupt("too many address map entries");
  *budget -= count;
  for (uint64_t i = 0; i < count; ++i) {
    AddressEquivalence e;
    REVPATCH_RETURN_IF_ERROR(in->Next(&e.old_address));
    REVPATCH_RETURN_IF_ERROR(in->Next(&e.new_address));
    REVPATCH_RETURN_IF_ERROR(in->Next(&e.length));
    if (!AddressRangeOk(e.old_address, e.length) || !AddressRangeOk(e.new_address, e.length)) {
      return Corrupt("address equivalence out of range");
    }
    if (!out->empty() && (e.old_address < out->back().old_address ||
                          e.old_address - out->back().old_address < out->back().length)) {
      return Corrupt("address equivalences overlap or are out of order");
    }
    out->push_back(e);
  }
  return Status::Ok();
}

Status DecodeKind(uint64_t kind, ReferenceKind* out) {
  if (kind == static_cast<uint64_t>(ReferenceKind::kRel32)) {
    *out = ReferenceKind::kRel32;
  } else if (kind == static_cast<uint64_t>(ReferenceKind::kAbs64)) {
    *out = ReferenceKind::kAbs64;
  } else if (kind == static_cast<uint64_t>(ReferenceKind::kArm64)) {
    *out = ReferenceKind::kArm64;
  } else {
    return Corrupt("unknown span kind");
  }
  return Status::Ok();
}

void EncodeV4(const ReferenceInfo& info, std::vector<uint8_t>* out) {
  PutVarint(info.images.size(), out);
  for (const ImageMaps& image : info.images) {
    EncodeMap(image.old_map, out);
    EncodeMap(image.new_map, out);
    PutVarint(image.address_equivalences.size(), out);
    for (const AddressEquivalence& e : image.address_equivalences) {
      PutVarint(e.old_address, out);
      PutVarint(e.new_address, out);
      PutVarint(e.length, out);
    }
  }
  PutVarint(info.spans.size(), out);
  uint64_t end = 0, low = 0, high = 0;
  for (const ReferenceSpan& s : info.spans) {
    out->push_back(static_cast<uint8_t>(s.kind));
    PutVarint(s.image, out);
    PutVarint(s.start - end, out);
    PutVarint(s.length, out);
    PutVarint(Zigzag(s.low - low), out);
    PutVarint(Zigzag(s.high - high), out);
    end = s.start + s.length;
    low = s.low;
    high = s.high;
  }
  EncodeEquivalences(info.equivalences, out);
}

Status DecodeV4(VarintReader* in, ReferenceInfo* got) {
  got->version = kAddressReferenceVersion;
  uint64_t count = 0;
  REVPATCH_RETURN_IF_ERROR(in->Next(&count));
  if (count > kMaxReferenceImages) return Corrupt("too many images");
  size_t budget = kMaxAddressMapEntries;
  got->images.resize(count);
  for (ImageMaps& image : got->images) {
    REVPATCH_RETURN_IF_ERROR(DecodeMap(in, &budget, &image.old_map));
    REVPATCH_RETURN_IF_ERROR(DecodeMap(in, &budget, &image.new_map));
    REVPATCH_RETURN_IF_ERROR(DecodeAddressEquivalences(in, &budget, &image.address_equivalences));
  }
  REVPATCH_RETURN_IF_ERROR(in->Next(&count));
  if (count > kMaxReferenceSpans) return Corrupt("too many spans");
  uint64_t end = 0, low = 0, high = 0;
  for (uint64_t i = 0; i < count; ++i) {
    uint64_t kind = 0, image = 0, gap = 0, low_delta = 0, high_delta = 0;
    ReferenceSpan s;
    REVPATCH_RETURN_IF_ERROR(in->Next(&kind));
    REVPATCH_RETURN_IF_ERROR(DecodeKind(kind, &s.kind));
    REVPATCH_RETURN_IF_ERROR(in->Next(&image));
    if (image >= got->images.size()) return Corrupt("span of no image");
    s.image = static_cast<uint32_t>(image);
    REVPATCH_RETURN_IF_ERROR(in->Offset(&gap));
    REVPATCH_RETURN_IF_ERROR(in->Offset(&s.length));
    s.start = end + gap;
    if (s.length == 0 || s.start >= kMaxViewOffset || s.length > kMaxViewOffset - s.start) {
      return Corrupt("span out of range");
    }
    REVPATCH_RETURN_IF_ERROR(in->Next(&low_delta));
    REVPATCH_RETURN_IF_ERROR(in->Next(&high_delta));
    s.low = low + Unzigzag(low_delta);  // mod 2^64
    s.high = high + Unzigzag(high_delta);
    if (s.high < s.low) return Corrupt("address range reversed");
    end = s.start + s.length;
    low = s.low;
    high = s.high;
    got->spans.push_back(s);
  }
  return DecodeEquivalences(in, &got->equivalences);
}

}  // namespace

void EncodeReferenceInfo(const ReferenceInfo& info, std::vector<uint8_t>* out) {
  out->clear();
  if (info.version == kAddressReferenceVersion) {
    EncodeV4(info, out);
    if (!info.digests.empty()) EncodePageDigests(info.digests, out);
    return;
  }
  PutVarint(info.spans.size(), out);
  uint64_t end = 0;
  for (const ReferenceSpan& s : info.spans) {
    out->push_back(static_cast<uint8_t>(s.kind));
    PutVarint(s.start - end, out);
    PutVarint(s.length, out);
    PutVarint(s.low, out);
    PutVarint(s.high - s.low, out);
    if (s.kind != ReferenceKind::kRel32) PutVarint(s.bias, out);
    end = s.start + s.length;
  }
  EncodeEquivalences(info.equivalences, out);
}

Status DecodeReferenceInfo(const uint8_t* data, size_t size, ReferenceInfo* info,
                           uint32_t version) {
  VarintReader in(data, size);
  ReferenceInfo got;
  if (version == kAddressReferenceVersion) {
    REVPATCH_RETURN_IF_ERROR(DecodeV4(&in, &got));
    if (!in.done()) {
      REVPATCH_RETURN_IF_ERROR(
          DecodePageDigests(data + (size - in.remaining()), in.remaining(), &got.digests));
      if (got.digests.empty()) return Corrupt("bytes after the equivalences");
    }
    *info = std::move(got);
    return Status::Ok();
  }
  if (version != kViewReferenceVersion) {
    return Status(ErrorCode::kUnsupported, "delta references: version " + std::to_string(version));
  }
  uint64_t count = 0;
  REVPATCH_RETURN_IF_ERROR(in.Next(&count));
  if (count > kMaxReferenceSpans) return Corrupt("too many spans");
  uint64_t end = 0;
  for (uint64_t i = 0; i < count; ++i) {
    uint64_t kind = 0, gap = 0, span = 0;
    REVPATCH_RETURN_IF_ERROR(in.Next(&kind));
    ReferenceSpan s;
    REVPATCH_RETURN_IF_ERROR(DecodeKind(kind, &s.kind));
    REVPATCH_RETURN_IF_ERROR(in.Offset(&gap));
    REVPATCH_RETURN_IF_ERROR(in.Offset(&s.length));
    s.start = end + gap;
    if (s.length == 0 || s.start >= kMaxViewOffset || s.length > kMaxViewOffset - s.start) {
      return Corrupt("span out of range");
    }
    if (s.kind != ReferenceKind::kAbs64) {
      REVPATCH_RETURN_IF_ERROR(in.Offset(&s.low));
      REVPATCH_RETURN_IF_ERROR(in.Offset(&span));
    } else {
      REVPATCH_RETURN_IF_ERROR(in.Next(&s.low));
      REVPATCH_RETURN_IF_ERROR(in.Next(&span));
      if (span > ~s.low) return Corrupt("value range overflows");
    }
    s.high = s.low + span;
    if (s.kind != ReferenceKind::kRel32) REVPATCH_RETURN_IF_ERROR(in.Next(&s.bias));
    end = s.start + s.length;
    got.spans.push_back(s);
  }
  REVPATCH_RETURN_IF_ERROR(DecodeEquivalences(&in, &got.equivalences));
  if (!in.done()) return Corrupt("bytes after the equivalences");
  *info = std::move(got);
  return Status::Ok();
}

namespace {

// Version 4: one image's maps, for lookups both ways.
class ImageLookup {
 public:
  explicit ImageLookup(const ImageMaps& maps) : maps_(&maps) {
    old_by_offset_ = maps.old_map;
    new_by_offset_ = maps.new_map;
    auto by_offset = [](const AddressMapping& a, const AddressMapping& b) {
      return a.offset < b.offset;
    };
    std::sort(old_by_offset_.begin(), old_by_offset_.end(), by_offset);
    std::sort(new_by_offset_.begin(), new_by_offset_.end(), by_offset);
  }

  const std::vector<AddressMapping>& old_by_offset() const { return old_by_offset_; }

  // The address the new view offset `v` holds.
  bool NewAddress(uint64_t v, uint64_t* address) const {
    const AddressMapping* m = Containing(new_by_offset_, v);
    if (m == nullptr) return false;
    *address = m->address + (v - m->offset);
    return true;
  }

  // Where old address `t` went (see references.h).
  bool Translate(uint64_t t, const OffsetMapper& mapper, uint64_t* moved) const {
    const std::vector<AddressEquivalence>& same = maps_->address_equivalences;
    auto e = std::upper_bound(same.begin(), same.end(), t,
                              [](uint64_t v, const AddressEquivalence& x) { return v < x.old_address; });
    if (e != same.begin() && t - (e - 1)->old_address < (e - 1)->length) {
      *moved = (e - 1)->new_address + (t - (e - 1)->old_address);
      return true;
    }
    const std::vector<AddressMapping>& old_map = maps_->old_map;
    auto m = std::upper_bound(old_map.begin(), old_map.end(), t,
                              [](uint64_t v, const AddressMapping& x) { return v < x.address; });
    if (m == old_map.begin() || t - (m - 1)->address >= (m - 1)->length) return false;
    const uint64_t old_view = (m - 1)->offset + (t - (m - 1)->address);
    const int64_t new_view = mapper.Map(old_view);
    if (new_view < 0) return false;
    return NewAddress(static_cast<uint64_t>(new_view), moved);
  }

 private:
  static const AddressMapping* Containing(const std::vector<AddressMapping>& by_offset,
                                          uint64_t v) {
    auto it = std::upper_bound(by_offset.begin(), by_offset.end(), v,
                               [](uint64_t x, const AddressMapping& m) { return x < m.offset; });
    if (it == by_offset.begin() || v - (it - 1)->offset >= (it - 1)->length) return nullptr;
    return &*(it - 1);
  }

  const ImageMaps* maps_;
  std::vector<AddressMapping> old_by_offset_, new_by_offset_;
};

// One stretch of old bytes, all of one span and one old map entry: old
// bytes old[0, length) at old address `old_address`, predicted bytes
// pred[...] at new view offset `new_view`.
struct Stretch {
  const uint8_t* old;
  uint64_t old_address;
  uint64_t old_view;
  uint64_t new_view;
  uint64_t length;
  uint8_t* pred;
};

void PredictArm64V4(const ReferenceSpan& span, const ImageLookup& image, const OffsetMapper& mapper,
                    const Stretch& st) {
  auto inside = [&](uint64_t t) { return t >= span.low && t < span.high; };
  for (uint64_t i = (4 - (st.old_view - span.start) % 4) % 4; i + 4 <= st.length; i += 4) {
    const uint32_t w = GetU32(st.old + i);
    const uint64_t pc = st.old_address + i;
    bool done = false;
    for (const Arm64Branch& b : kArm64Branches) {
      if ((w & b.mask) != b.value) continue;
      done = true;
      const uint32_t field = ((uint32_t{1} << b.bits) - 1) << b.shift;
      const uint64_t target =
          pc + 4 * static_cast<uint64_t>(SignExtend((w & field) >> b.shift, b.bits));
      uint64_t moved = 0, new_pc = 0;
      if (!inside(target) || !image.Translate(target, mapper, &moved) ||
          !image.NewAddress(st.new_view + i, &new_pc)) {
        break;
      }
      const int64_t distance = static_cast<int64_t>(moved - new_pc);
      const int64_t limit = int64_t{1} << (b.bits - 1);
      if (distance % 4 == 0 && distance / 4 >= -limit && distance / 4 < limit) {
        PutU32(st.pred + i,
               (w & ~field) | ((static_cast<uint32_t>(distance / 4) << b.shift) & field));
      }
      break;
    }
    if (done || (w & 0x9F000000) != 0x90000000 || i + 8 > st.length) continue;
    const uint32_t next = GetU32(st.old + i + 4);
    const int64_t scale = Lo12Scale(next, w & 31);
    if (scale == 0) continue;
    const uint64_t pages = static_cast<uint64_t>(
        SignExtend(((w >> 5) & 0x7FFFF) << 2 | ((w >> 29) & 3), 21));
    const uint64_t target = (pc & ~uint64_t{0xFFF}) + pages * 4096 +
                            ((next >> 10) & 0xFFF) * static_cast<uint64_t>(scale);
    uint64_t moved = 0, new_pc = 0;
    if (inside(target) && image.Translate(target, mapper, &moved) &&
        image.NewAddress(st.new_view + i, &new_pc)) {
      const int64_t new_pages = static_cast<int64_t>((moved >> 12) - (new_pc >> 12));
      const uint64_t low12 = moved & 0xFFF;
      if (low12 % static_cast<uint64_t>(scale) == 0 && new_pages >= -(int64_t{1} << 20) &&
          new_pages < (int64_t{1} << 20)) {
        const uint32_t imm = static_cast<uint32_t>(new_pages) & 0x1FFFFF;
        PutU32(st.pred + i, (w & 0x9F00001F) | (imm & 3) << 29 | (imm >> 2) << 5);
        PutU32(st.pred + i + 4,
               (next & ~(0xFFFu << 10)) |
                   static_cast<uint32_t>(low12 / static_cast<uint64_t>(scale)) << 10);
      }
    }
    i += 4;  // the pair is one reference
  }
}

void PredictRel32V4(const ReferenceSpan& span, const ImageLookup& image, const OffsetMapper& mapper,
                    const Stretch& st) {
  ScanRel32Fields(st.old, st.length, [&](uint64_t at) {
    const uint64_t disp =
        static_cast<uint64_t>(static_cast<int64_t>(static_cast<int32_t>(GetU32(st.old + at))));
    const uint64_t target = st.old_address + at + 4 + disp;
    uint64_t moved = 0, new_field = 0;
    if (target < span.low || target >= span.high || !image.Translate(target, mapper, &moved) ||
        !image.NewAddress(st.new_view + at, &new_field)) {
      return false;
    }
    const int64_t d = static_cast<int64_t>(moved - (new_field + 4));
    if (d >= INT32_MIN && d <= INT32_MAX) PutU32(st.pred + at, static_cast<uint32_t>(d));
    return true;
  });
}

void PredictAbs64V4(const ReferenceSpan& span, const ImageLookup& image, const OffsetMapper& mapper,
                    const Stretch& st) {
  for (uint64_t i = (8 - (st.old_view - span.start) % 8) % 8; i + 8 <= st.length; i += 8) {
    const uint64_t value = GetU64(st.old + i);
    uint64_t moved = 0;
    if (value < span.low || value >= span.high || !image.Translate(value, mapper, &moved)) continue;
    PutU64(st.pred + i, moved);
  }
}

// Version 4: pieces of adds (view coordinates, buffer offsets) through the
// spans and the old map of each span's image.
template <typename Piece>
void PredictAddressPieces(const ReferenceInfo& info, const std::vector<Piece>& pieces,
                          const OffsetMapper& mapper, const uint8_t* old_data, uint8_t* pred) {
  std::vector<ImageLookup> images;
  images.reserve(info.images.size());
  for (const ImageMaps& m : info.images) images.emplace_back(m);
  for (const Piece& p : pieces) {
    const uint64_t lo = p.view.old_start, hi = lo + p.view.length;
    auto it = std::upper_bound(info.spans.begin(), info.spans.end(), lo,
                               [](uint64_t v, const ReferenceSpan& s) { return v < s.start + s.length; });
    for (; it != info.spans.end() && it->start < hi; ++it) {
      const ImageLookup& image = images[it->image];
      const uint64_t a = std::max(lo, it->start), b = std::min(hi, it->start + it->length);
      const std::vector<AddressMapping>& by_offset = image.old_by_offset();
      auto m = std::upper_bound(by_offset.begin(), by_offset.end(), a,
                                [](uint64_t v, const AddressMapping& x) { return v < x.offset; });
      if (m != by_offset.begin()) --m;
      for (; m != by_offset.end() && m->offset < b; ++m) {
        const uint64_t c = std::max(a, m->offset), d = std::min(b, m->offset + m->length);
        if (c >= d) continue;
        const Stretch st{old_data + p.old_at + (c - lo), m->address + (c - m->offset), c,
                         p.view.new_start + (c - lo), d - c, pred + p.new_at + (c - lo)};
        switch (it->kind) {
          case ReferenceKind::kRel32: PredictRel32V4(*it, image, mapper, st); break;
          case ReferenceKind::kArm64: PredictArm64V4(*it, image, mapper, st); break;
          case ReferenceKind::kAbs64: PredictAbs64V4(*it, image, mapper, st); break;
        }
      }
    }
  }
}

}  // namespace

Status PredictReferences(const ReferenceInfo& info, const DeltaLayout& layout,
                         const uint8_t* old_data, size_t old_size,
                         const std::vector<Equivalence>& adds, uint8_t* pred,
                         size_t pred_size) {
  if (info.spans.empty()) return Status::Ok();
  if (info.version == kAddressReferenceVersion) {
    for (const ReferenceSpan& s : info.spans) {
      if (s.image >= info.images.size()) return Corrupt("span of no image");
    }
  }
  ViewMap old_map, new_map;
  REVPATCH_RETURN_IF_ERROR(old_map.Init(layout.source, layout.block_size, old_size));
  REVPATCH_RETURN_IF_ERROR(new_map.Init(layout.target, layout.block_size, pred_size));

  // Each add, cut where either buffer's run ends, in both coordinates.
  struct Piece {
    uint64_t old_at, new_at;  // buffer offsets
    Equivalence view;
  };
  std::vector<Piece> pieces;
  for (const Equivalence& a : adds) {
    uint64_t o = a.old_start, n = a.new_start, left = a.length;
    while (left > 0) {
      const Run& ro = old_map.Locate(o);
      const Run& rn = new_map.Locate(n);
      const uint64_t k = std::min({left, ro.buffer_start + ro.length - o,
                                   rn.buffer_start + rn.length - n});
      pieces.push_back({o, n, {ro.view_start + (o - ro.buffer_start),
                               rn.view_start + (n - rn.buffer_start), k}});
      o += k;
      n += k;
      left -= k;
    }
  }
  std::vector<Equivalence> all(info.equivalences);
  all.reserve(all.size() + pieces.size());
  for (const Piece& p : pieces) all.push_back(p.view);
  OffsetMapper mapper;
  mapper.Build(std::move(all));

  if (info.version == kAddressReferenceVersion) {
    PredictAddressPieces(info, pieces, mapper, old_data, pred);
    return Status::Ok();
  }
  for (const Piece& p : pieces) {
    const uint64_t lo = p.view.old_start, hi = lo + p.view.length;
    auto it = std::upper_bound(info.spans.begin(), info.spans.end(), lo,
                               [](uint64_t v, const ReferenceSpan& s) { return v < s.start + s.length; });
    for (; it != info.spans.end() && it->start < hi; ++it) {
      const uint64_t a = std::max(lo, it->start), b = std::min(hi, it->start + it->length);
      PredictPiece(*it, mapper, old_data + p.old_at + (a - lo), a, p.view.new_start + (a - lo),
                   b - a, pred + p.new_at + (a - lo));
    }
  }
  return Status::Ok();
}

}  // namespace revpatch
