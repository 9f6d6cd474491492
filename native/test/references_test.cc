// Reference prediction (references.h) and the version 3 deltas built on it:
// a synthetic executable whose code moves is predicted exactly, the deltas
// round trip through the views' layout, the reference part is refused when
// damaged, and the ELF scan finds what a linker lays out.
#include "../engine/references.h"

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "../engine/diff.h"
#include "../engine/generator/diff_encoder.h"
#include "../engine/generator/executable_spans.h"
#include "../engine/little_endian.h"
#include "testing.h"

using namespace revpatch;

namespace {

using Bytes = std::vector<uint8_t>;

constexpr uint64_t kBias = 0x400000;  // value of view offset 0

// A toy executable: `functions` bodies of filler (bytes no scan pattern
// starts with) and calls (E8 rel32) to other functions' starts, then a
// table of absolute pointers to the function starts. Function `grown`
// gets `growth` more bytes of body, so everything after it moves.
struct Program {
  Bytes bytes;
  uint64_t code_size = 0;  // [0, code_size) is code, then the pointers
  std::vector<uint64_t> starts;
};

Program MakeProgram(uint32_t seed, size_t functions, size_t grown, size_t growth) {
  std::mt19937 rng(seed);
  std::vector<size_t> lengths(functions);
  for (size_t& n : lengths) n = 64 + rng() % 200;
  if (grown < functions) lengths[grown] += growth;
  Program p;
  uint64_t at = 0;
  for (size_t n : lengths) {
    p.starts.push_back(at);
    at += n;
  }
  p.code_size = (at + 7) / 8 * 8;
  p.bytes.assign(p.code_size, 0x90);
  std::mt19937 body(seed + 1);  // the same calls in both versions
  for (size_t f = 0; f < functions; ++f) {
    const uint64_t s = p.starts[f];
    for (uint64_t i = s; i + 5 <= s + lengths[f] - (f == grown ? growth : 0);) {
      if (body() % 8 == 0) {
        const uint64_t callee = p.starts[body() % functions];
        p.bytes[i] = 0xE8;
        PutU32(p.bytes.data() + i + 1, static_cast<uint32_t>(static_cast<int64_t>(callee) -
                                                              static_cast<int64_t>(i + 5)));
        i += 5;
      } else {
        p.bytes[i] = static_cast<uint8_t>(0x90 + body() % 8);
        ++i;
      }
    }
  }
  for (uint64_t s : p.starts) {
    uint8_t word[8];
    PutU64(word, s + kBias);
    p.bytes.insert(p.bytes.end(), word, word + 8);
  }
  return p;
}

ReferenceInfo InfoFor(const Program& p) {
  ReferenceInfo info;
  ReferenceSpan code;
  code.kind = ReferenceKind::kRel32;
  code.start = 0;
  code.length = p.code_size;
  code.low = 0;
  code.high = p.bytes.size() + (1 << 20);
  ReferenceSpan data;
  data.kind = ReferenceKind::kAbs64;
  data.start = p.code_size;
  data.length = p.bytes.size() - p.code_size;
  data.low = kBias;
  data.high = kBias + p.bytes.size() + (1 << 20);
  data.bias = kBias;
  info.spans = {code, data};
  return info;
}

std::vector<DeltaRecord> Records(const Bytes& old_data, const Bytes& new_data) {
  DeltaMatcher matcher;
  if (!matcher.Init(old_data.data(), old_data.size()).ok()) std::abort();
  std::vector<DeltaRecord> records;
  matcher.Match(new_data.data(), new_data.size(), &records);
  return records;
}

Bytes Decode(const Bytes& old_data, const Bytes& delta, size_t size, const DeltaLayout* layout,
             Status* status) {
  Bytes out(size);
  *status = DecodeDiff(old_data.data(), old_data.size(), delta.data(), delta.size(), out.data(),
                       out.size(), layout);
  return out;
}

TEST(moved_calls_and_pointers_are_predicted_exactly) {
  // Function 80 grows by 40 bytes (a multiple of 8: the pointer table
  // moves by as much as the code after it).
  const Program old_p = MakeProgram(1, 200, 80, 0), new_p = MakeProgram(1, 200, 80, 40);
  const Bytes& old_data = old_p.bytes;
  const Bytes& new_data = new_p.bytes;
  const uint64_t cut = old_p.starts[81];  // the first byte that moves
  // Adds: everything up to the cut in place, the rest 40 bytes later.
  std::vector<Equivalence> adds = {{0, 0, cut}, {cut, cut + 40, old_data.size() - cut}};
  ASSERT_EQ(new_data.size(), old_data.size() + 40);
  Bytes pred(new_data.size(), 0);
  for (const Equivalence& a : adds) {
    std::memcpy(pred.data() + a.new_start, old_data.data() + a.old_start, a.length);
  }
  ReferenceInfo info = InfoFor(old_p);
  ASSERT_OK(PredictReferences(info, DeltaLayout{}, old_data.data(), old_data.size(), adds,
                              pred.data(), pred.size()));
  size_t wrong_plain = 0, wrong_predicted = 0;
  for (const Equivalence& a : adds) {
    for (uint64_t k = 0; k < a.length; ++k) {
      wrong_plain += old_data[a.old_start + k] != new_data[a.new_start + k];
      wrong_predicted += pred[a.new_start + k] != new_data[a.new_start + k];
    }
  }
  EXPECT_TRUE(wrong_plain > 100);  // calls across the cut and every moved pointer
  EXPECT_EQ(wrong_predicted, 0u);
}

// The scan, written out plainly from its specification (references.h and
// docs/on-disk-format.md): the engine's word-at-a-time skipping must find
// exactly the same references on bytes dense with near-misses.
size_t SpecField(const Bytes& b, uint64_t i, uint64_t end) {
  auto at = [&](uint64_t k) { return k < end ? b[k] : 0; };
  if (i + 5 > end) return 0;
  const uint8_t b0 = at(i), b1 = at(i + 1), b2 = at(i + 2);
  if (b0 == 0xE8 || b0 == 0xE9) return 1;
  if (b0 == 0x0F && b1 >= 0x80 && b1 <= 0x8F) return 2;
  if (b0 == 0xFF && (b1 == 0x15 || b1 == 0x25)) return 2;
  const uint8_t ops[] = {0x03, 0x2B, 0x39, 0x3B, 0x63, 0x85, 0x89, 0x8B, 0x8D};
  if (b0 >= 0x40 && b0 <= 0x4F && std::memchr(ops, b1, sizeof(ops)) && (b2 & 0xC7) == 0x05) {
    return 3;
  }
  return 0;
}

TEST(the_scan_finds_exactly_the_specified_references) {
  std::mt19937 rng(9);
  const uint8_t common[] = {0xE8, 0xE9, 0x0F, 0x80, 0x8F, 0xFF, 0x15, 0x25, 0x48, 0x4C, 0x40,
                            0x8D, 0x8B, 0x89, 0x63, 0x05, 0x0D, 0x3D, 0x00, 0x01};
  for (int round = 0; round < 20; ++round) {
    // Instructions of every form with small displacements (so most
    // targets fall inside [low, high)) among filler of near-misses.
    const size_t size = 4000 + rng() % 3000;
    Bytes old_data;
    while (old_data.size() < size) {
      if (rng() % 4 != 0) {
        old_data.push_back(rng() % 3 ? common[rng() % sizeof(common)] : static_cast<uint8_t>(rng()));
        continue;
      }
      switch (rng() % 4) {
        case 0: old_data.push_back(0xE8 | (rng() & 1)); break;
        case 1: old_data.insert(old_data.end(), {0x0F, static_cast<uint8_t>(0x80 | (rng() & 15))}); break;
        case 2: old_data.insert(old_data.end(), {0xFF, rng() & 1 ? uint8_t{0x15} : uint8_t{0x25}}); break;
        default:
          old_data.insert(old_data.end(), {static_cast<uint8_t>(0x40 | (rng() & 15)), uint8_t{0x8D},
                                           static_cast<uint8_t>(0x05 | (rng() & 0x38))});
      }
      uint8_t disp[4];
      PutU32(disp, static_cast<uint32_t>(rng() % 6000) - 3000);
      old_data.insert(old_data.end(), disp, disp + 4);
    }
    old_data.resize(size);
    const uint64_t cut = 1000 + rng() % 2000, shift = rng() % 50;
    const std::vector<Equivalence> adds = {{0, 0, cut}, {cut, cut + shift, size - cut}};
    ReferenceInfo info;
    info.spans.push_back({ReferenceKind::kRel32, 0, size, 0, size - 100, 0});
    Bytes pred(size + shift, 0);
    for (const Equivalence& a : adds) {
      std::memcpy(pred.data() + a.new_start, old_data.data() + a.old_start, a.length);
    }
    Bytes want = pred;
    ASSERT_OK(PredictReferences(info, DeltaLayout{}, old_data.data(), old_data.size(), adds,
                                pred.data(), pred.size()));
    size_t found = 0;
    for (const Equivalence& a : adds) {
      const uint64_t end = a.old_start + a.length;
      for (uint64_t i = a.old_start; i < end;) {
        const size_t field = SpecField(old_data, i, end);
        if (field == 0 || i + field + 4 > end) {
          ++i;
          continue;
        }
        const uint64_t f = i + field;
        const int64_t target = static_cast<int64_t>(f + 4) + static_cast<int32_t>(GetU32(&old_data[f]));
        if (target < 0 || target >= static_cast<int64_t>(size - 100)) {
          ++i;
          continue;
        }
        const int64_t moved = target < static_cast<int64_t>(cut) ? target : target + shift;
        const int64_t new_end = static_cast<int64_t>(f - a.old_start + a.new_start + 4);
        PutU32(&want[f - a.old_start + a.new_start], static_cast<uint32_t>(moved - new_end));
        ++found;
        i = f + 4;
      }
    }
    EXPECT_TRUE(found > 200);
    EXPECT_TRUE(pred == want);
  }
}

TEST(a_predicted_delta_round_trips_and_is_smaller) {
  for (uint32_t seed : {2u, 3u, 4u}) {
    const Program old_p = MakeProgram(seed, 400, 150, 0);
    const Program new_p = MakeProgram(seed, 400, 150, 123);
    const std::vector<DeltaRecord> records = Records(old_p.bytes, new_p.bytes);
    const ReferenceInfo info = InfoFor(old_p);
    Bytes plain, predicted;
    ASSERT_OK(WriteDelta(old_p.bytes.data(), old_p.bytes.size(), new_p.bytes.data(),
                         new_p.bytes.size(), records, &plain));
    ASSERT_OK(WriteDelta(old_p.bytes.data(), old_p.bytes.size(), new_p.bytes.data(),
                         new_p.bytes.size(), records, &predicted, &info));
    EXPECT_EQ(GetU32(plain.data() + 4), 2u);
    EXPECT_EQ(GetU32(predicted.data() + 4), 3u);
    Status s;
    EXPECT_TRUE(Decode(old_p.bytes, predicted, new_p.bytes.size(), nullptr, &s) == new_p.bytes);
    EXPECT_OK(s);
    EXPECT_TRUE(Decode(old_p.bytes, plain, new_p.bytes.size(), nullptr, &s) == new_p.bytes);
    EXPECT_OK(s);
    EXPECT_TRUE(predicted.size() * 2 < plain.size());
  }
}

// The op's buffers are its blocks in extent order; references are in view
// coordinates. A layout that permutes the source blocks must still round
// trip, and predict as well as the same bytes in view order.
TEST(the_layout_places_buffers_in_their_views) {
  constexpr uint32_t kBlock = 256;
  Program old_p = MakeProgram(5, 300, 100, 0), new_p = MakeProgram(5, 300, 100, 45);
  old_p.bytes.resize((old_p.bytes.size() + kBlock - 1) / kBlock * kBlock, 0);
  new_p.bytes.resize((new_p.bytes.size() + kBlock - 1) / kBlock * kBlock, 0);
  const uint64_t blocks = old_p.bytes.size() / kBlock;
  // Source buffer: the second half of the blocks, then the first.
  const uint64_t half = blocks / 2;
  const std::vector<Extent> source = {{half, blocks - half}, {0, half}};
  const std::vector<Extent> target = {{0, new_p.bytes.size() / kBlock}};
  Bytes buffer(old_p.bytes.begin() + half * kBlock, old_p.bytes.end());
  buffer.insert(buffer.end(), old_p.bytes.begin(), old_p.bytes.begin() + half * kBlock);
  const DeltaLayout layout{kBlock, &source, &target};
  const ReferenceInfo info = InfoFor(old_p);

  Bytes in_view, permuted, unplaced;
  ASSERT_OK(WriteDelta(old_p.bytes.data(), old_p.bytes.size(), new_p.bytes.data(),
                       new_p.bytes.size(), Records(old_p.bytes, new_p.bytes), &in_view, &info));
  const std::vector<DeltaRecord> records = Records(buffer, new_p.bytes);
  ASSERT_OK(WriteDelta(buffer.data(), buffer.size(), new_p.bytes.data(), new_p.bytes.size(),
                       records, &permuted, &info, &layout));
  ASSERT_OK(WriteDelta(buffer.data(), buffer.size(), new_p.bytes.data(), new_p.bytes.size(),
                       records, &unplaced, &info));
  Status s;
  EXPECT_TRUE(Decode(buffer, permuted, new_p.bytes.size(), &layout, &s) == new_p.bytes);
  EXPECT_OK(s);
  // Decoded without its layout, the prediction differs: the diff no
  // longer fits it (the op's target hash would refuse the result).
  const Bytes wrong = Decode(buffer, permuted, new_p.bytes.size(), nullptr, &s);
  EXPECT_TRUE(!s.ok() || wrong != new_p.bytes);
  EXPECT_TRUE(permuted.size() < unplaced.size());
  EXPECT_TRUE(permuted.size() < in_view.size() + in_view.size() / 4);

  // A layout shorter than the buffers is corrupt, not an overrun.
  const std::vector<Extent> short_source = {{half, blocks - half}};
  const DeltaLayout bad{kBlock, &short_source, &target};
  Decode(buffer, permuted, new_p.bytes.size(), &bad, &s);
  EXPECT_CODE(s, ErrorCode::kCorrupt);
}

TEST(the_reference_part_round_trips) {
  ReferenceInfo info;
  info.spans.push_back({ReferenceKind::kRel32, 4096, 8192, 4096, 40960, 0});
  info.spans.push_back({ReferenceKind::kAbs64, 12288, 800, kBias, kBias + 40960, kBias - 4096});
  info.spans.push_back({ReferenceKind::kAbs64, 20000, 8, 0, ~uint64_t{0}, ~uint64_t{0}});
  info.spans.push_back({ReferenceKind::kArm64, 20008, 4096, 0, 40960, 0x100000000});
  info.equivalences.push_back({0, 0, 4096});
  info.equivalences.push_back({1 << 20, 5, 77});
  Bytes encoded;
  EncodeReferenceInfo(info, &encoded);
  ReferenceInfo back;
  ASSERT_OK(DecodeReferenceInfo(encoded.data(), encoded.size(), &back));
  ASSERT_EQ(back.spans.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_TRUE(back.spans[i].kind == info.spans[i].kind);
    EXPECT_EQ(back.spans[i].start, info.spans[i].start);
    EXPECT_EQ(back.spans[i].length, info.spans[i].length);
    EXPECT_EQ(back.spans[i].low, info.spans[i].low);
    EXPECT_EQ(back.spans[i].high, info.spans[i].high);
    EXPECT_EQ(back.spans[i].bias, info.spans[i].bias);
  }
  ASSERT_EQ(back.equivalences.size(), 2u);
  EXPECT_EQ(back.equivalences[1].old_start, uint64_t{1} << 20);
  EXPECT_EQ(back.equivalences[1].new_start, 5u);
  EXPECT_EQ(back.equivalences[1].length, 77u);
  // Every truncation, and a trailing byte, is refused.
  for (size_t n = 0; n < encoded.size(); ++n) {
    EXPECT_CODE(DecodeReferenceInfo(encoded.data(), n, &back), ErrorCode::kCorrupt);
  }
  Bytes longer = encoded;
  longer.push_back(0);
  EXPECT_CODE(DecodeReferenceInfo(longer.data(), longer.size(), &back), ErrorCode::kCorrupt);
}

TEST(hostile_reference_parts_are_refused) {
  auto varints = [](std::initializer_list<uint64_t> values) {
    Bytes out;
    for (uint64_t v : values) {
      while (v >= 0x80) {
        out.push_back(static_cast<uint8_t>(v | 0x80));
        v >>= 7;
      }
      out.push_back(static_cast<uint8_t>(v));
    }
    return out;
  };
  ReferenceInfo info;
  auto decode = [&](const Bytes& b) { return DecodeReferenceInfo(b.data(), b.size(), &info); };
  EXPECT_OK(decode(varints({1, 1, 0, 10, 0, 100, 0})));
  EXPECT_CODE(decode(varints({1, 4, 0, 10, 0, 100, 0})), ErrorCode::kCorrupt);   // kind
  EXPECT_OK(decode(varints({1, 3, 0, 10, 0, 100, 7, 0})));                      // arm64, bias 7
  EXPECT_CODE(decode(varints({1, 3, 0, 10, uint64_t{1} << 62, 100, 7, 0})),
              ErrorCode::kCorrupt);  // arm64 targets are view offsets
  EXPECT_CODE(decode(varints({1, 1, 0, 0, 0, 100, 0})), ErrorCode::kCorrupt);    // empty span
  EXPECT_CODE(decode(varints({1, 1, uint64_t{1} << 62, 10, 0, 100, 0})), ErrorCode::kCorrupt);
  EXPECT_CODE(decode(varints({2, 1, (uint64_t{1} << 62) - 10, 8, 0, 100, 1, 0, 10, 0, 1, 0})),
              ErrorCode::kCorrupt);  // the second span ends past 2^62
  EXPECT_CODE(decode(varints({1, 2, 0, 8, 5, ~uint64_t{0}, 0, 0})),
              ErrorCode::kCorrupt);  // value range overflows
  EXPECT_CODE(decode(varints({kMaxReferenceSpans + 1})), ErrorCode::kCorrupt);
  EXPECT_CODE(decode(varints({0, kMaxEquivalences + 1})), ErrorCode::kCorrupt);
  EXPECT_CODE(decode(varints({0, 1, 0, 0, 0})), ErrorCode::kCorrupt);  // empty equivalence
  EXPECT_CODE(decode(varints({0, 1, 0, uint64_t{1} << 62, 1})), ErrorCode::kCorrupt);
  Bytes too_long(11, 0x80);
  EXPECT_CODE(decode(too_long), ErrorCode::kCorrupt);
}

// A minimal ELF64 x86-64 header with the given PT_LOAD segments.
struct Load {
  uint32_t flags;
  uint64_t offset, vaddr, filesz, memsz;
};
Bytes Elf(const std::vector<Load>& loads, uint16_t machine = 62) {
  Bytes e(64 + 56 * loads.size(), 0);
  const uint8_t ident[] = {0x7F, 'E', 'L', 'F', 2, 1, 1};
  std::memcpy(e.data(), ident, sizeof(ident));
  e[18] = static_cast<uint8_t>(machine);
  e[19] = static_cast<uint8_t>(machine >> 8);
  PutU64(e.data() + 32, 64);
  e[54] = 56;
  e[56] = static_cast<uint8_t>(loads.size());
  for (size_t i = 0; i < loads.size(); ++i) {
    uint8_t* p = e.data() + 64 + 56 * i;
    PutU32(p, 1);
    PutU32(p + 4, loads[i].flags);
    PutU64(p + 8, loads[i].offset);
    PutU64(p + 16, loads[i].vaddr);
    PutU64(p + 32, loads[i].filesz);
    PutU64(p + 40, loads[i].memsz);
  }
  return e;
}

void ExpectSpan(const ReferenceSpan& got, const ReferenceSpan& want) {
  EXPECT_TRUE(got.kind == want.kind);
  EXPECT_EQ(got.start, want.start);
  EXPECT_EQ(got.length, want.length);
  EXPECT_EQ(got.low, want.low);
  EXPECT_EQ(got.high, want.high);
  EXPECT_EQ(got.bias, want.bias);
}

std::vector<ReferenceSpan> SpansOf(const Bytes& elf, size_t at, size_t view_size) {
  Bytes view(view_size, 0);
  std::memcpy(view.data() + at, elf.data(), elf.size());
  std::vector<ReferenceSpan> spans;
  FindExecutableSpans(view.data(), view.size(), 4096, &spans);
  return spans;
}

TEST(executables_are_found_at_block_boundaries) {
  const std::vector<Load> loads = {{5, 0, 0x400000, 0x1000, 0x1000},
                                   {4, 0x1000, 0x401000, 0x804, 0x3000}};
  const std::vector<ReferenceSpan> spans = SpansOf(Elf(loads), 8192, 32768);
  ASSERT_EQ(spans.size(), 2u);
  ExpectSpan(spans[0], {ReferenceKind::kRel32, 8192, 0x1000, 8192, 8192 + 0x4000, 0});
  ExpectSpan(spans[1], {ReferenceKind::kAbs64, 8192 + 0x1000, 0x804, 0x400000, 0x404000,
                        0x400000 - 8192});

  // Not at a block boundary, another machine, segments at different
  // biases, or a segment past the view: nothing.
  EXPECT_TRUE(SpansOf(Elf(loads), 100, 32768).empty());
  EXPECT_TRUE(SpansOf(Elf(loads, 40), 8192, 32768).empty());  // 32-bit Arm
  // AArch64: the code span is arm64's, with the address bias its ADRP
  // pages need.
  const std::vector<ReferenceSpan> arm = SpansOf(Elf(loads, 183), 8192, 32768);
  ASSERT_EQ(arm.size(), 2u);
  EXPECT_TRUE(arm[0].kind == ReferenceKind::kArm64);
  EXPECT_EQ(arm[0].bias, 0x400000u - 8192);
  EXPECT_EQ(arm[0].low, 8192u);
  EXPECT_TRUE(arm[1].kind == ReferenceKind::kAbs64);
  EXPECT_TRUE(SpansOf(Elf({{5, 0, 0x400000, 0x1000, 0x1000}, {4, 0x1000, 0x402000, 8, 8}}), 0,
                      32768)
                  .empty());
  EXPECT_TRUE(SpansOf(Elf(loads), 28672, 32768).empty());
}

}  // namespace

namespace {

// A Mach-O 64-bit header: __PAGEZERO, __TEXT with a code and a data
// section, and __LINKEDIT at a bias of its own.
Bytes MachO(uint32_t cpu) {
  Bytes m(32 + 72 + (72 + 2 * 80) + 72, 0);
  PutU32(m.data(), 0xFEEDFACF);
  PutU32(m.data() + 4, cpu);
  PutU32(m.data() + 16, 3);
  PutU32(m.data() + 20, static_cast<uint32_t>(m.size() - 32));
  auto segment = [&](size_t at, const char* name, uint64_t vmaddr, uint64_t vmsize,
                     uint64_t fileoff, uint64_t filesize, uint32_t nsects) {
    PutU32(&m[at], 0x19);
    PutU32(&m[at + 4], 72 + 80 * nsects);
    std::memcpy(&m[at + 8], name, std::strlen(name));
    PutU64(&m[at + 24], vmaddr);
    PutU64(&m[at + 32], vmsize);
    PutU64(&m[at + 40], fileoff);
    PutU64(&m[at + 48], filesize);
    PutU32(&m[at + 64], nsects);
  };
  auto section = [&](size_t at, uint64_t size, uint32_t offset, uint32_t flags) {
    PutU64(&m[at + 40], size);
    PutU32(&m[at + 48], offset);
    PutU32(&m[at + 64], flags);
  };
  segment(32, "__PAGEZERO", 0, 0x100000000, 0, 0, 0);
  segment(104, "__TEXT", 0x100000000, 0x3000, 0, 0x2000, 2);
  section(176, 0x800, 0x400, 0x80000400);  // __text
  section(256, 0x400, 0xC00, 0);           // __rodata
  segment(336, "__LINKEDIT", 0x100004000, 0x100, 0x2000, 0x100, 0);
  return m;
}

}  // namespace

TEST(mach_o_executables_are_found_by_their_sections) {
  for (uint32_t cpu : {0x0100000Cu, 0x01000007u}) {
    const std::vector<ReferenceSpan> spans = SpansOf(MachO(cpu), 4096, 32768);
    ASSERT_EQ(spans.size(), 2u);
    const bool arm64 = cpu == 0x0100000C;
    ExpectSpan(spans[0], {arm64 ? ReferenceKind::kArm64 : ReferenceKind::kRel32, 4096 + 0x400,
                          0x800, 4096, 4096 + 0x3000, arm64 ? uint64_t{0x100000000 - 4096} : 0});
    ExpectSpan(spans[1], {ReferenceKind::kAbs64, 4096 + 0xC00, 0x400, 0x100000000,
                          0x100003000, 0x100000000 - 4096});
  }
  EXPECT_TRUE(SpansOf(MachO(0x00000012), 4096, 32768).empty());  // PowerPC
  EXPECT_TRUE(SpansOf(MachO(0x0100000C), 24576, 32768).empty());  // runs past the view
}

namespace {

// A toy arm64 program: functions of filler (NOP, MOVZ) with every branch
// form to function starts and ADRP pairs (ADD, 64-bit LDR) to 8-aligned
// words of a data table after the code, at address bias kArmBias; function
// `grown` gets `growth` more bytes (a multiple of 8), so all after it moves
// and most ADRP pairs change page and low bits.
constexpr uint64_t kArmBias = 0x100000;

Bytes MakeArm64Program(uint32_t seed, size_t functions, size_t grown, size_t growth,
                       uint64_t* code_size, std::vector<uint64_t>* function_starts) {
  std::mt19937 rng(seed);
  std::vector<uint64_t> lengths(functions), starts;
  for (uint64_t& n : lengths) n = 4 * (16 + rng() % 64);
  lengths[grown] += growth;
  uint64_t at = 0;
  for (uint64_t n : lengths) {
    starts.push_back(at);
    at += n;
  }
  *code_size = at;
  *function_starts = starts;
  const uint64_t data_words = 512;
  Bytes out(at + 8 * data_words, 0);
  std::mt19937 body(seed + 1);
  auto word = [&](uint64_t pc, uint32_t w) { PutU32(&out[pc], w); };
  for (size_t f = 0; f < functions; ++f) {
    const uint64_t end = starts[f] + lengths[f] - (f == grown ? growth : 0);
    for (uint64_t pc = starts[f]; pc + 8 <= end;) {
      const uint32_t kind = body() % 10;
      const uint64_t callee = starts[body() % functions];
      const uint64_t near = starts[std::min(functions - 1, f + body() % 3)];
      const uint64_t datum = at + 8 * (body() % data_words);
      const int64_t words = (static_cast<int64_t>(callee) - static_cast<int64_t>(pc)) / 4;
      const uint32_t reg = body() % 31;
      switch (kind) {
        case 0: word(pc, 0x94000000 | (static_cast<uint32_t>(words) & 0x3FFFFFF)); break;
        case 1: word(pc, 0x54000000 | (static_cast<uint32_t>(words) & 0x7FFFF) << 5 | body() % 16); break;
        case 2: word(pc, 0xB4000000 | (static_cast<uint32_t>(words) & 0x7FFFF) << 5 | reg); break;
        case 3: {
          const int64_t near_words = (static_cast<int64_t>(near) - static_cast<int64_t>(pc)) / 4;
          word(pc, 0x36000000 | (static_cast<uint32_t>(near_words) & 0x3FFF) << 5 | reg);
          break;
        }
        case 4:
        case 5: {
          const uint64_t va = datum + kArmBias;
          const int64_t pages = static_cast<int64_t>(va >> 12) -
                                static_cast<int64_t>((pc + kArmBias) >> 12);
          const uint32_t imm = static_cast<uint32_t>(pages) & 0x1FFFFF;
          word(pc, 0x90000000 | (imm & 3) << 29 | (imm >> 2) << 5 | reg);
          const uint32_t low = static_cast<uint32_t>(va & 0xFFF);
          word(pc + 4, kind == 4 ? 0x91000000 | low << 10 | reg << 5 | reg
                                 : 0xF9400000 | (low / 8) << 10 | reg << 5 | (reg + 1) % 31);
          pc += 4;
          break;
        }
        default: word(pc, body() % 2 ? 0xD503201F : 0xD2800000 | (body() & 0xFFFF) << 5 | reg);
      }
      pc += 4;
    }
    for (uint64_t pc = end - (end - starts[f]) % 4; pc < starts[f] + lengths[f]; pc += 4) {
      if (pc + 4 <= starts[f] + lengths[f]) word(pc, 0xD503201F);
    }
  }
  return out;
}

}  // namespace

TEST(moved_arm64_branches_and_adrp_pairs_are_predicted_exactly) {
  for (uint32_t seed : {21u, 22u, 23u}) {
    uint64_t old_code = 0, new_code = 0;
    std::vector<uint64_t> starts, new_starts;
    const Bytes old_data = MakeArm64Program(seed, 300, 120, 0, &old_code, &starts);
    const Bytes new_data = MakeArm64Program(seed, 300, 120, 40, &new_code, &new_starts);
    ASSERT_EQ(new_data.size(), old_data.size() + 40);
    // Adds: up to function 121 in place, the rest 40 bytes later (the NOPs
    // ending function 120 are new). The prediction must rewrite every
    // moved reference so that both adds match exactly.
    const uint64_t cut = starts[121];
    ASSERT_EQ(new_starts[121], cut + 40);
    const std::vector<Equivalence> adds = {{0, 0, cut}, {cut, cut + 40, old_data.size() - cut}};
    ReferenceInfo info;
    info.spans.push_back({ReferenceKind::kArm64, 0, old_code, 0, old_data.size() + 4096, kArmBias});
    Bytes pred(new_data.size(), 0);
    for (const Equivalence& a : adds) {
      std::memcpy(pred.data() + a.new_start, old_data.data() + a.old_start, a.length);
    }
    ASSERT_OK(PredictReferences(info, DeltaLayout{}, old_data.data(), old_data.size(), adds,
                                pred.data(), pred.size()));
    size_t wrong_plain = 0, wrong_predicted = 0;
    for (const Equivalence& a : adds) {
      for (uint64_t k = 0; k < a.length; ++k) {
        wrong_plain += old_data[a.old_start + k] != new_data[a.new_start + k];
        wrong_predicted += pred[a.new_start + k] != new_data[a.new_start + k];
      }
    }
    EXPECT_TRUE(wrong_plain > 1000);
    EXPECT_EQ(wrong_predicted, 0u);
  }
}


// Version 4: references in addresses, through the old and new maps.

// A toy executable laid out as LLD does: code at one bias, a pointer table
// at another, .bss after it without file bytes. Code calls functions (E8
// rel32) and loads table entries (lea rip+d); the table holds pointers to
// function starts and into .bss.
struct MappedProgram {
  Bytes bytes;
  uint64_t code_size = 0;  // view [0, code_size) is code, then the table
  uint64_t code_address = 0, table_address = 0, bss_address = 0;
  std::vector<uint64_t> starts;  // view offsets
  uint64_t table_entries = 0;
};

MappedProgram MakeMapped(uint32_t seed, size_t functions, size_t grown, size_t growth,
                         uint64_t table_address, uint64_t bss_address) {
  std::mt19937 rng(seed);
  std::vector<size_t> lengths(functions);
  for (size_t& n : lengths) n = 64 + rng() % 200;
  if (grown < functions) lengths[grown] += growth;
  MappedProgram p;
  p.code_address = 0x201000;
  p.table_address = table_address;
  p.bss_address = bss_address;
  p.table_entries = 2 * functions;
  uint64_t at = 0;
  for (size_t n : lengths) {
    p.starts.push_back(at);
    at += n;
  }
  p.code_size = (at + 7) / 8 * 8;
  p.bytes.assign(p.code_size, 0x90);
  std::mt19937 body(seed + 1);
  for (size_t f = 0; f < functions; ++f) {
    const uint64_t s = p.starts[f];
    for (uint64_t i = s; i + 7 <= s + lengths[f] - (f == grown ? growth : 0);) {
      const uint32_t choice = body() % 10;
      if (choice == 0) {
        const uint64_t callee = p.starts[body() % functions];
        p.bytes[i] = 0xE8;
        PutU32(&p.bytes[i + 1], static_cast<uint32_t>(callee - (i + 5)));
        i += 5;
      } else if (choice == 1) {
        const uint64_t entry = table_address + 8 * (body() % p.table_entries);
        p.bytes[i] = 0x48;
        p.bytes[i + 1] = 0x8D;
        p.bytes[i + 2] = 0x05;
        PutU32(&p.bytes[i + 3], static_cast<uint32_t>(entry - (p.code_address + i + 7)));
        i += 7;
      } else {
        p.bytes[i] = static_cast<uint8_t>(0x90 + body() % 8);
        ++i;
      }
    }
  }
  for (size_t f = 0; f < functions; ++f) {
    uint8_t word[8];
    PutU64(word, p.code_address + p.starts[f]);
    p.bytes.insert(p.bytes.end(), word, word + 8);
    PutU64(word, bss_address + 16 * f);
    p.bytes.insert(p.bytes.end(), word, word + 8);
  }
  return p;
}

ImageMaps MapsOf(const MappedProgram& old_p, const MappedProgram& new_p) {
  ImageMaps m;
  m.old_map = {{old_p.code_address, 0, old_p.code_size},
               {old_p.table_address, old_p.code_size, old_p.bytes.size() - old_p.code_size}};
  m.new_map = {{new_p.code_address, 0, new_p.code_size},
               {new_p.table_address, new_p.code_size, new_p.bytes.size() - new_p.code_size}};
  m.address_equivalences = {{old_p.bss_address, new_p.bss_address, 0x10000}};
  return m;
}

ReferenceInfo AddressInfoFor(const MappedProgram& old_p, const MappedProgram& new_p) {
  ReferenceInfo info;
  info.version = kAddressReferenceVersion;
  info.images.push_back(MapsOf(old_p, new_p));
  ReferenceSpan code;
  code.kind = ReferenceKind::kRel32;
  code.start = 0;
  code.length = old_p.code_size;
  code.low = old_p.code_address;
  code.high = old_p.bss_address + 0x10000;
  ReferenceSpan data = code;
  data.kind = ReferenceKind::kAbs64;
  data.start = old_p.code_size;
  data.length = old_p.bytes.size() - old_p.code_size;
  info.spans = {code, data};
  return info;
}

TEST(references_across_several_biases_are_predicted_exactly) {
  // Function 50 grows by 24 bytes; the table moves to another page and
  // .bss by 0x100, as a relinked executable's would.
  const MappedProgram old_p = MakeMapped(7, 120, 50, 0, 0x400000, 0x500000);
  const MappedProgram new_p = MakeMapped(7, 120, 50, 24, 0x401000, 0x500100);
  ASSERT_EQ(new_p.bytes.size(), old_p.bytes.size() + 24);
  const uint64_t cut = old_p.starts[51];
  const std::vector<Equivalence> adds = {{0, 0, cut},
                                         {cut, cut + 24, old_p.bytes.size() - cut}};
  // The 24 new bytes no add covers are the delta's copy: taken as they are.
  Bytes pred = new_p.bytes;
  for (const Equivalence& a : adds) {
    std::memcpy(pred.data() + a.new_start, old_p.bytes.data() + a.old_start, a.length);
  }
  size_t wrong_plain = 0;
  for (size_t i = 0; i < pred.size(); ++i) wrong_plain += pred[i] != new_p.bytes[i];
  const ReferenceInfo info = AddressInfoFor(old_p, new_p);
  ASSERT_OK(PredictReferences(info, DeltaLayout{}, old_p.bytes.data(), old_p.bytes.size(), adds,
                              pred.data(), pred.size()));
  size_t wrong = 0;
  for (size_t i = 0; i < pred.size(); ++i) wrong += pred[i] != new_p.bytes[i];
  EXPECT_TRUE(wrong_plain > 300);  // every lea, the moved calls, every pointer
  EXPECT_EQ(wrong, 0u);


  // Without the address equivalence, pointers into .bss are left alone
  // (they have no file bytes to follow), and only they are wrong.
  ReferenceInfo no_bss = info;
  no_bss.images[0].address_equivalences.clear();
  for (const Equivalence& a : adds) {
    std::memcpy(pred.data() + a.new_start, old_p.bytes.data() + a.old_start, a.length);
  }
  ASSERT_OK(PredictReferences(no_bss, DeltaLayout{}, old_p.bytes.data(), old_p.bytes.size(), adds,
                              pred.data(), pred.size()));
  size_t wrong_words = 0;
  for (size_t i = 0; i < pred.size(); i += 8) {
    wrong_words += std::memcmp(&pred[i], &new_p.bytes[i], std::min<size_t>(8, pred.size() - i)) != 0;
  }
  EXPECT_TRUE(wrong_words > 0 && wrong_words <= 120);
}

TEST(a_version_4_delta_round_trips_and_beats_version_3) {
  const MappedProgram old_p = MakeMapped(8, 300, 100, 0, 0x400000, 0x500000);
  const MappedProgram new_p = MakeMapped(8, 300, 100, 40, 0x402000, 0x500040);
  const std::vector<DeltaRecord> records = Records(old_p.bytes, new_p.bytes);
  const ReferenceInfo info = AddressInfoFor(old_p, new_p);
  Bytes plain, predicted;
  ASSERT_OK(WriteDelta(old_p.bytes.data(), old_p.bytes.size(), new_p.bytes.data(),
                       new_p.bytes.size(), records, &plain));
  ASSERT_OK(WriteDelta(old_p.bytes.data(), old_p.bytes.size(), new_p.bytes.data(),
                       new_p.bytes.size(), records, &predicted, &info));
  EXPECT_EQ(GetU32(predicted.data() + 4), 4u);
  Status s;
  EXPECT_TRUE(Decode(old_p.bytes, predicted, new_p.bytes.size(), nullptr, &s) == new_p.bytes);
  EXPECT_OK(s);
  EXPECT_TRUE(predicted.size() * 3 < plain.size());
  // A damaged reference part is refused, never applied.
  Bytes damaged = predicted;
  damaged[damaged.size() - GetU64(predicted.data() + 40)] = 0x7F;  // image count
  Decode(old_p.bytes, damaged, new_p.bytes.size(), nullptr, &s);
  EXPECT_CODE(s, ErrorCode::kCorrupt);
}

TEST(the_version_4_reference_part_round_trips_and_refuses_damage) {
  ReferenceInfo info;
  info.version = kAddressReferenceVersion;
  ImageMaps a;
  a.old_map = {{0x200000, 0, 0x1000}, {0x201000, 0x1000, 0x5000}, {0x207000, 0x6000, 0x800}};
  a.new_map = {{0x200000, 0, 0x1000}, {0x201000, 0x1000, 0x5400}};
  a.address_equivalences = {{0x208000, 0x208400, 0x900}};
  ImageMaps b;
  b.old_map = {{~uint64_t{0} - 0xFFF, 0x10000, 0x1000}};
  info.images = {a, b};
  ReferenceSpan s1;
  s1.kind = ReferenceKind::kRel32;
  s1.start = 0x1000;
  s1.length = 0x5000;
  s1.low = 0x200000;
  s1.high = 0x209000;
  ReferenceSpan s2 = s1;
  s2.kind = ReferenceKind::kAbs64;
  s2.start = 0x6000;
  s2.length = 0x800;
  ReferenceSpan s3 = s1;
  s3.kind = ReferenceKind::kArm64;
  s3.image = 1;
  s3.start = 0x10000;
  s3.length = 0x1000;
  s3.low = ~uint64_t{0} - 0xFFF;
  s3.high = ~uint64_t{0};
  info.spans = {s1, s2, s3};
  info.equivalences = {{0, 0, 0x1000}};
  Bytes encoded;
  EncodeReferenceInfo(info, &encoded);
  ReferenceInfo back;
  ASSERT_OK(DecodeReferenceInfo(encoded.data(), encoded.size(), &back, kAddressReferenceVersion));
  EXPECT_EQ(back.version, kAddressReferenceVersion);
  ASSERT_EQ(back.images.size(), 2u);
  ASSERT_EQ(back.images[0].old_map.size(), 3u);
  EXPECT_EQ(back.images[0].old_map[2].address, 0x207000u);
  EXPECT_EQ(back.images[0].old_map[2].offset, 0x6000u);
  EXPECT_EQ(back.images[0].new_map[1].length, 0x5400u);
  EXPECT_EQ(back.images[0].address_equivalences[0].new_address, 0x208400u);
  EXPECT_EQ(back.images[1].old_map[0].address, ~uint64_t{0} - 0xFFF);
  ASSERT_EQ(back.spans.size(), 3u);
  EXPECT_EQ(back.spans[2].image, 1u);
  EXPECT_EQ(back.spans[2].high, ~uint64_t{0});
  EXPECT_TRUE(back.spans[1].kind == ReferenceKind::kAbs64);
  ASSERT_EQ(back.equivalences.size(), 1u);
  for (size_t n = 0; n < encoded.size(); ++n) {
    EXPECT_CODE(DecodeReferenceInfo(encoded.data(), n, &back, kAddressReferenceVersion),
                ErrorCode::kCorrupt);
  }
  // Read as version 3 it is not what it claims.
  EXPECT_TRUE(!DecodeReferenceInfo(encoded.data(), encoded.size(), &back).ok() ||
              back.images.empty());
  EXPECT_CODE(DecodeReferenceInfo(encoded.data(), encoded.size(), &back, 9),
              ErrorCode::kUnsupported);

  auto refused = [&](const ReferenceInfo& bad) {
    Bytes e;
    EncodeReferenceInfo(bad, &e);
    ReferenceInfo out;
    return DecodeReferenceInfo(e.data(), e.size(), &out, kAddressReferenceVersion).code() ==
           ErrorCode::kCorrupt;
  };
  ReferenceInfo bad = info;
  bad.images[0].old_map[1].address = 0x200800;  // overlaps the first in addresses
  EXPECT_TRUE(refused(bad));
  bad = info;
  bad.images[0].old_map[1].offset = 0x800;  // shares view bytes with the first
  EXPECT_TRUE(refused(bad));
  bad = info;
  std::swap(bad.images[0].old_map[0], bad.images[0].old_map[2]);  // out of order
  EXPECT_TRUE(refused(bad));
  bad = info;
  bad.images[1].old_map[0].length = 0x1001;  // wraps past 2^64
  EXPECT_TRUE(refused(bad));
  bad = info;
  bad.images[0].new_map[0].length = 0;
  EXPECT_TRUE(refused(bad));
  bad = info;
  bad.images[0].address_equivalences.push_back({0x208100, 0, 4});  // overlaps
  EXPECT_TRUE(refused(bad));
  bad = info;
  bad.spans[2].image = 2;  // no such image
  EXPECT_TRUE(refused(bad));
  bad = info;
  bad.images.assign(kMaxReferenceImages + 1, ImageMaps{});
  bad.spans.clear();
  EXPECT_TRUE(refused(bad));
  bad = info;
  bad.images[1].old_map.assign(kMaxAddressMapEntries + 1, AddressMapping{});
  EXPECT_TRUE(refused(bad));
  // A span naming a missing image is refused by the prediction too.
  bad = info;
  bad.spans[2].image = 5;
  Bytes old_data(0x11000, 0), pred(0x11000, 0);
  EXPECT_CODE(PredictReferences(bad, DeltaLayout{}, old_data.data(), old_data.size(),
                                {{0, 0, 0x11000}}, pred.data(), pred.size()),
              ErrorCode::kCorrupt);
}

// An ELF as LLD lays one out: four PT_LOADs at four address-minus-offset
// biases, RELRO ending in .relro_padding (NOBITS, its sh_offset that of
// .data, which follows it in the file), .bss after .data. `shift` moves the
// writable segments' addresses (a relinked version).
Bytes LldElf(uint64_t shift, uint16_t machine = 62) {
  Bytes e(0x2200 + 9 * 64, 0);
  const uint8_t ident[] = {0x7F, 'E', 'L', 'F', 2, 1, 1};
  std::memcpy(e.data(), ident, sizeof(ident));
  e[16] = 3;  // ET_DYN
  e[18] = static_cast<uint8_t>(machine);
  e[19] = static_cast<uint8_t>(machine >> 8);
  PutU64(&e[32], 64);
  PutU64(&e[40], 0x2200);
  e[54] = 56;
  e[56] = 4;
  e[58] = 64;
  e[60] = 9;
  e[62] = 8;
  const Load loads[] = {{4, 0, 0, 0x1000, 0x1000},
                        {5, 0x1000, 0x2000, 0x1000, 0x1000},
                        {6, 0x2000, 0x4000 + shift, 0x100, 0x1000},
                        {6, 0x2100, 0x5100 + shift, 0x80, 0x200}};
  for (size_t i = 0; i < 4; ++i) {
    uint8_t* p = &e[64 + 56 * i];
    PutU32(p, 1);
    PutU32(p + 4, loads[i].flags);
    PutU64(p + 8, loads[i].offset);
    PutU64(p + 16, loads[i].vaddr);
    PutU64(p + 32, loads[i].filesz);
    PutU64(p + 40, loads[i].memsz);
  }
  const char names[] = "\0.rela.dyn\0.rodata\0.text\0.data.rel.ro\0.relro_padding\0.data\0.bss\0.shstrtab";
  std::memcpy(&e[0x2180], names, sizeof(names));
  struct Sh {
    uint32_t name, type;
    uint64_t flags, addr, offset, size;
  };
  const Sh sh[] = {{0, 0, 0, 0, 0, 0},
                   {1, 4, 2, 0x400, 0x400, 0x30},
                   {11, 1, 2, 0x800, 0x800, 0x100},
                   {19, 1, 6, 0x2000, 0x1000, 0x1000},
                   {25, 1, 3, 0x4000 + shift, 0x2000, 0x100},
                   {38, 8, 3, 0x4100 + shift, 0x2100, 0xF00},
                   {53, 1, 3, 0x5100 + shift, 0x2100, 0x80},
                   {59, 8, 3, 0x5180 + shift, 0x2180, 0x180},
                   {64, 3, 0, 0, 0x2180, sizeof(names)}};
  for (size_t i = 0; i < 9; ++i) {
    uint8_t* p = &e[0x2200 + 64 * i];
    PutU32(p, sh[i].name);
    PutU32(p + 4, sh[i].type);
    PutU64(p + 8, sh[i].flags);
    PutU64(p + 16, sh[i].addr);
    PutU64(p + 24, sh[i].offset);
    PutU64(p + 32, sh[i].size);
  }
  return e;
}

TEST(an_lld_layout_maps_file_bytes_only_and_nobits_never_break_the_map) {
  Bytes view(0x8000, 0);
  const Bytes elf = LldElf(0);
  std::memcpy(&view[0x1000], elf.data(), elf.size());
  const MemoryByteSource source(view.data(), view.size());
  std::vector<Executable> found;
  FindExecutables(source, 0x1000, &found);
  ASSERT_EQ(found.size(), 1u);
  const Executable& x = found[0];
  EXPECT_EQ(x.view_offset, 0x1000u);
  EXPECT_EQ(x.file_size, elf.size());
  EXPECT_EQ(x.low, 0u);
  EXPECT_EQ(x.high, 0x5300u);
  ASSERT_EQ(x.map.size(), 4u);
  const uint64_t want[4][3] = {{0, 0x1000, 0x1000}, {0x2000, 0x2000, 0x1000},
                               {0x4000, 0x3000, 0x100}, {0x5100, 0x3100, 0x80}};
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(x.map[i].address, want[i][0]);
    EXPECT_EQ(x.map[i].offset, want[i][1]);
    EXPECT_EQ(x.map[i].length, want[i][2]);
  }
  size_t nobits = 0;
  for (const ExecutablePart& part : x.parts) {
    if (part.name == ".relro_padding" || part.name == ".bss") {
      EXPECT_TRUE(!part.file_bytes);
      ++nobits;
    }
    if (part.name == ".text") EXPECT_TRUE(part.kind == PartKind::kCode);
    if (part.name == ".rela.dyn" || part.name == ".data.rel.ro" || part.name == ".data") {
      EXPECT_TRUE(part.kind == PartKind::kPointers);
    }
    if (part.name == ".rodata") EXPECT_TRUE(part.kind == PartKind::kOther);  // a PIE's
  }
  EXPECT_EQ(nobits, 2u);

  // Against a relinked version whose writable segments moved: one image,
  // spans over .rela.dyn, .text, and .data.rel.ro with .data; .bss and
  // .relro_padding equivalent by name; the info is one the device accepts.
  Bytes new_view(0x8000, 0);
  const Bytes new_elf = LldElf(0x3000);
  std::memcpy(&new_view[0x1000], new_elf.data(), new_elf.size());
  std::vector<Executable> new_found;
  FindExecutables(MemoryByteSource(new_view.data(), new_view.size()), 0x1000, &new_found);
  ASSERT_EQ(new_found.size(), 1u);
  ReferenceInfo info;
  BuildAddressReferences(found, new_found, &info);
  EXPECT_EQ(info.version, kAddressReferenceVersion);
  ASSERT_EQ(info.images.size(), 1u);
  ASSERT_EQ(info.spans.size(), 3u);
  EXPECT_TRUE(info.spans[0].kind == ReferenceKind::kAbs64);
  EXPECT_EQ(info.spans[0].start, 0x1400u);
  EXPECT_EQ(info.spans[0].length, 0x30u);
  EXPECT_TRUE(info.spans[1].kind == ReferenceKind::kRel32);
  EXPECT_EQ(info.spans[1].start, 0x2000u);
  EXPECT_TRUE(info.spans[2].kind == ReferenceKind::kAbs64);
  EXPECT_EQ(info.spans[2].start, 0x3000u);
  EXPECT_EQ(info.spans[2].length, 0x180u);  // .data.rel.ro and .data, adjacent in the file
  const std::vector<AddressEquivalence>& same = info.images[0].address_equivalences;
  ASSERT_EQ(same.size(), 2u);
  EXPECT_EQ(same[0].old_address, 0x4100u);
  EXPECT_EQ(same[0].new_address, 0x7100u);
  EXPECT_EQ(same[1].old_address, 0x5180u);
  EXPECT_EQ(same[1].new_address, 0x8180u);
  Bytes encoded;
  EncodeReferenceInfo(info, &encoded);
  ReferenceInfo back;
  EXPECT_OK(DecodeReferenceInfo(encoded.data(), encoded.size(), &back, kAddressReferenceVersion));

  // A RELATIVE entry (r_offset, r_info 8, r_addend) and a pointer in
  // .data.rel.ro are rewritten to the moved addresses.
  PutU64(&view[0x1400], 0x4010);
  PutU64(&view[0x1408], 8);
  PutU64(&view[0x1410], 0x5108);
  PutU64(&view[0x3008], 0x5190);  // into .bss
  std::vector<Equivalence> adds = {{0, 0, view.size()}};
  Bytes pred = view;
  ASSERT_OK(PredictReferences(info, DeltaLayout{}, view.data(), view.size(), adds, pred.data(),
                              pred.size()));
  EXPECT_EQ(GetU64(&pred[0x1400]), 0x7010u);
  EXPECT_EQ(GetU64(&pred[0x1408]), 8u);
  EXPECT_EQ(GetU64(&pred[0x1410]), 0x8108u);
  EXPECT_EQ(GetU64(&pred[0x3008]), 0x8190u);
}

TEST(damaged_elf_headers_are_skipped_never_overread) {
  const Bytes elf = LldElf(0);
  // Every truncation: nothing found, or one that lies within the bytes.
  for (size_t n = 0; n <= elf.size(); n += 7) {
    Bytes cut(elf.begin(), elf.begin() + n);
    std::vector<Executable> found;
    FindExecutables(MemoryByteSource(cut.data(), cut.size()), 4096, &found);
    for (const Executable& x : found) EXPECT_TRUE(x.file_size <= n);
  }
  // Segments overlapping in addresses: not an executable a loader takes.
  Bytes bad = elf;
  PutU64(&bad[64 + 56 * 2 + 16], 0x2800);
  std::vector<Executable> found;
  FindExecutables(MemoryByteSource(bad.data(), bad.size()), 4096, &found);
  EXPECT_TRUE(found.empty());
  // Section headers past the file: the segments still serve.
  bad = elf;
  PutU64(&bad[40], 0x100000);
  FindExecutables(MemoryByteSource(bad.data(), bad.size()), 4096, &found);
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0].map.size(), 4u);
  bool load_bss = false;
  for (const ExecutablePart& part : found[0].parts) load_bss |= !part.file_bytes;
  EXPECT_TRUE(load_bss);
}
