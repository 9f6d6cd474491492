// The executable formats beside ELF: Mach-O code signatures as page digests
// (page_digests.h: found by the publisher, rebuilt by the device), Mach-O
// and PE32+ address maps (version 4) and PE spans (version 3), and the
// refusals of damaged headers.
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "../engine/diff.h"
#include "../engine/generator/diff_encoder.h"
#include "../engine/generator/executable_spans.h"
#include "../engine/generator/page_digest_scan.h"
#include "../engine/little_endian.h"
#include "../engine/page_digests.h"
#include "../engine/sha256.h"
#include "testing.h"

using namespace revpatch;

namespace {

using Bytes = std::vector<uint8_t>;

void PutBe32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 24);
  p[1] = static_cast<uint8_t>(v >> 16);
  p[2] = static_cast<uint8_t>(v >> 8);
  p[3] = static_cast<uint8_t>(v);
}

// A signed 64-bit arm64 Mach-O as ld64 and Go's linker lay it out: header,
// __TEXT (with the header) of `text_pages` 4 KiB pages of random bytes,
// __LINKEDIT holding the code signature: a SuperBlob with one
// CodeDirectory whose slots are the SHA-256 (or, hash_type 3, its first 20
// bytes) of every page before the signature.
struct MachOFile {
  Bytes bytes;
  uint64_t sig_offset = 0;
  uint64_t slots = 0;  // file offset of the first code slot
  uint64_t count = 0;
};

constexpr uint64_t kHashOffset = 88;  // within the CodeDirectory

MachOFile MakeMachO(uint32_t seed, size_t text_pages, uint8_t hash_type = 2) {
  const uint8_t hash_size = hash_type == 3 ? 20 : 32;
  MachOFile f;
  const uint64_t text_size = text_pages * 4096;
  const uint64_t linkedit = text_size;
  const uint64_t extra = 1000;  // symbols before the signature
  f.sig_offset = linkedit + extra;
  f.count = (f.sig_offset + 4095) / 4096;
  const uint64_t cd_length = kHashOffset + f.count * hash_size;
  const uint64_t sig_size = 20 + cd_length;
  f.bytes.resize(f.sig_offset + sig_size);
  std::mt19937 rng(seed);
  for (uint64_t i = 0; i < f.sig_offset; ++i) f.bytes[i] = static_cast<uint8_t>(rng());
  uint8_t* m = f.bytes.data();
  std::memset(m, 0, 1024);
  PutU32(m, 0xFEEDFACF);
  PutU32(m + 4, 0x0100000C);
  PutU32(m + 12, 2);  // MH_EXECUTE
  PutU32(m + 16, 3);
  PutU32(m + 20, 72 * 2 + 80 + 16);
  uint8_t* seg = m + 32;
  PutU32(seg, 0x19);
  PutU32(seg + 4, 72 + 80);
  std::memcpy(seg + 8, "__TEXT", 6);
  PutU64(seg + 24, 0x100000000);
  PutU64(seg + 32, text_size);
  PutU64(seg + 40, 0);
  PutU64(seg + 48, text_size);
  PutU32(seg + 60, 5);  // initprot r-x
  PutU32(seg + 64, 1);
  uint8_t* sect = seg + 72;
  std::memcpy(sect, "__text", 6);
  std::memcpy(sect + 16, "__TEXT", 6);
  PutU64(sect + 32, 0x100000000 + 1024);
  PutU64(sect + 40, text_size - 1024);
  PutU32(sect + 48, 1024);
  PutU32(sect + 64, 0x80000400);
  seg += 72 + 80;
  PutU32(seg, 0x19);
  PutU32(seg + 4, 72);
  std::memcpy(seg + 8, "__LINKEDIT", 10);
  PutU64(seg + 24, 0x100000000 + text_size);
  PutU64(seg + 32, f.bytes.size() - linkedit);
  PutU64(seg + 40, linkedit);
  PutU64(seg + 48, f.bytes.size() - linkedit);
  seg += 72;
  PutU32(seg, 0x1D);  // LC_CODE_SIGNATURE
  PutU32(seg + 4, 16);
  PutU32(seg + 8, static_cast<uint32_t>(f.sig_offset));
  PutU32(seg + 12, static_cast<uint32_t>(sig_size));
  uint8_t* sig = m + f.sig_offset;
  PutBe32(sig, 0xFADE0CC0);
  PutBe32(sig + 4, static_cast<uint32_t>(sig_size));
  PutBe32(sig + 8, 1);
  PutBe32(sig + 12, 0);   // type: the CodeDirectory
  PutBe32(sig + 16, 20);  // its offset
  uint8_t* cd = sig + 20;
  std::memset(cd, 0, kHashOffset);
  PutBe32(cd, 0xFADE0C02);
  PutBe32(cd + 4, static_cast<uint32_t>(cd_length));
  PutBe32(cd + 8, 0x20400);
  PutBe32(cd + 12, 0x20002);
  PutBe32(cd + 16, kHashOffset);
  PutBe32(cd + 20, 44 + 44);
  PutBe32(cd + 28, static_cast<uint32_t>(f.count));
  PutBe32(cd + 32, static_cast<uint32_t>(f.sig_offset));
  cd[36] = hash_size;
  cd[37] = hash_type;
  cd[39] = 12;
  f.slots = f.sig_offset + 20 + kHashOffset;
  for (uint64_t i = 0; i < f.count; ++i) {
    const uint64_t start = i * 4096, end = std::min<uint64_t>(start + 4096, f.sig_offset);
    const Digest d = Sha256::Hash(m + start, end - start);
    std::memcpy(m + f.slots + i * hash_size, d.data(), hash_size);
  }
  return f;
}

bool AllZero(const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (p[i] != 0) return false;
  }
  return true;
}

TEST(FindPageDigestsDescribesAMachOCodeSignature) {
  const MachOFile f = MakeMachO(1, 5);
  std::vector<PageDigests> runs;
  FindPageDigests(f.bytes.data(), f.bytes.size(), 4096, &runs);
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0].pages, 0u);
  EXPECT_EQ(runs[0].limit, f.sig_offset);
  EXPECT_EQ(runs[0].slots, f.slots);
  EXPECT_EQ(runs[0].count, f.count);
  EXPECT_EQ(runs[0].hash_size, 32);
  EXPECT_EQ(runs[0].page_shift, 12);
  EXPECT_TRUE(ValidPageDigests(runs));
}

TEST(SubtractingTheDigestsOfASignedFileLeavesZerosAndAddingRestoresIt) {
  for (uint8_t type : {2, 3}) {
    const MachOFile f = MakeMachO(2, 7, type);
    std::vector<PageDigests> runs;
    FindPageDigests(f.bytes.data(), f.bytes.size(), 4096, &runs);
    ASSERT_EQ(runs.size(), 1u);
    Bytes b = f.bytes;
    ASSERT_OK(ApplyPageDigests(runs, 0, nullptr, DigestDirection::kSubtract, b.data(), b.size()));
    const size_t hash_size = type == 3 ? 20 : 32;
    EXPECT_TRUE(AllZero(b.data() + f.slots, f.count * hash_size));
    EXPECT_EQ(std::memcmp(b.data(), f.bytes.data(), f.slots), 0);  // pages untouched
    ASSERT_OK(ApplyPageDigests(runs, 0, nullptr, DigestDirection::kAdd, b.data(), b.size()));
    EXPECT_TRUE(b == f.bytes);
  }
}

TEST(OnlySlotsWhosePageAndSlotAreInTheBufferChange) {
  // The op's new buffer holds view blocks 1, 3 and 5 on (page 5 holds the
  // symbols and the signature), in that order: the slots of pages 1, 3 and
  // 5 are rebuilt, page 0's, 2's and 4's are left as they are.
  const MachOFile f = MakeMachO(3, 5);
  ASSERT_EQ(f.count, 6u);
  std::vector<PageDigests> runs;
  FindPageDigests(f.bytes.data(), f.bytes.size(), 4096, &runs);
  ASSERT_EQ(runs.size(), 1u);
  const uint64_t blocks = (f.bytes.size() + 4095) / 4096;
  Bytes view = f.bytes;
  view.resize(blocks * 4096, 0);
  std::vector<Extent> extents = {{1, 1}, {3, 1}, {5, blocks - 5}};
  Bytes buf;
  for (const Extent& e : extents) {
    buf.insert(buf.end(), view.begin() + e.start_block * 4096,
               view.begin() + (e.start_block + e.num_blocks) * 4096);
  }
  const Bytes before = buf;
  ASSERT_OK(ApplyPageDigests(runs, 4096, &extents, DigestDirection::kSubtract, buf.data(), buf.size()));
  const uint64_t slots_in_buf = 2 * 4096 + (f.slots - 5 * 4096);
  for (uint64_t i = 0; i < f.count; ++i) {
    const bool rebuilt = i == 1 || i == 3 || i == 5;
    EXPECT_EQ(AllZero(buf.data() + slots_in_buf + i * 32, 32), rebuilt);
    EXPECT_EQ(std::memcmp(buf.data() + slots_in_buf + i * 32, before.data() + slots_in_buf + i * 32,
                          32) == 0,
              !rebuilt);
  }
  ASSERT_OK(ApplyPageDigests(runs, 4096, &extents, DigestDirection::kAdd, buf.data(), buf.size()));
  EXPECT_TRUE(buf == before);
  // A layout that does not cover the buffer is refused.
  std::vector<Extent> short_extents = {{1, 1}};
  EXPECT_CODE(ApplyPageDigests(runs, 4096, &short_extents, DigestDirection::kAdd, buf.data(), buf.size()),
              ErrorCode::kCorrupt);
}

TEST(EverySliceAtABlockBoundaryGetsItsRun) {
  const MachOFile a = MakeMachO(4, 3), b = MakeMachO(5, 4, 3);
  Bytes image(16384, 0xAB);  // a universal header or anything else
  const uint64_t at_a = image.size();
  image.insert(image.end(), a.bytes.begin(), a.bytes.end());
  image.resize((image.size() + 16383) / 16384 * 16384, 0);
  const uint64_t at_b = image.size();
  image.insert(image.end(), b.bytes.begin(), b.bytes.end());
  std::vector<PageDigests> runs;
  FindPageDigests(image.data(), image.size(), 4096, &runs);
  ASSERT_EQ(runs.size(), 2u);
  EXPECT_EQ(runs[0].pages, at_a);
  EXPECT_EQ(runs[0].slots, at_a + a.slots);
  EXPECT_EQ(runs[1].pages, at_b);
  EXPECT_EQ(runs[1].slots, at_b + b.slots);
  EXPECT_EQ(runs[1].hash_size, 20);
  Bytes copy = image;
  ASSERT_OK(ApplyPageDigests(runs, 0, nullptr, DigestDirection::kSubtract, copy.data(), copy.size()));
  EXPECT_TRUE(AllZero(copy.data() + at_a + a.slots, a.count * 32));
  EXPECT_TRUE(AllZero(copy.data() + at_b + b.slots, b.count * 20));
  // Not at a block boundary: not an executable of the image.
  Bytes shifted(100, 0);
  shifted.insert(shifted.end(), a.bytes.begin(), a.bytes.end());
  runs.clear();
  FindPageDigests(shifted.data(), shifted.size(), 4096, &runs);
  EXPECT_TRUE(runs.empty());
}

TEST(DamagedSignaturesGiveNoRun) {
  struct Damage {
    const char* what;
    void (*apply)(MachOFile*);
  };
  const Damage damages[] = {
      {"sha-1", [](MachOFile* f) { f->bytes[f->sig_offset + 20 + 37] = 1; }},
      {"page size 1", [](MachOFile* f) { f->bytes[f->sig_offset + 20 + 39] = 0; }},
      {"slot count", [](MachOFile* f) { PutBe32(&f->bytes[f->sig_offset + 20 + 28], 1); }},
      {"code limit past the signature",
       [](MachOFile* f) { PutBe32(&f->bytes[f->sig_offset + 20 + 32], static_cast<uint32_t>(f->sig_offset + 1)); }},
      {"hash offset past the blob",
       [](MachOFile* f) { PutBe32(&f->bytes[f->sig_offset + 20 + 16], 0x7FFFFFF0); }},
      {"blob offset", [](MachOFile* f) { PutBe32(&f->bytes[f->sig_offset + 16], 0xFFFFFFF0); }},
      {"blob count", [](MachOFile* f) { PutBe32(&f->bytes[f->sig_offset + 8], 0x10000000); }},
      {"superblob magic", [](MachOFile* f) { f->bytes[f->sig_offset] = 0; }},
      {"signature past the file",
       [](MachOFile* f) { PutU32(&f->bytes[32 + 224 + 12], static_cast<uint32_t>(f->bytes.size())); }},
      {"load commands past the file", [](MachOFile* f) { PutU32(&f->bytes[20], 0xFFFFFF); }},
      {"command size", [](MachOFile* f) { PutU32(&f->bytes[32 + 4], 4); }},
      {"cpu", [](MachOFile* f) { PutU32(&f->bytes[4], 7); }},
      {"truncated", [](MachOFile* f) { f->bytes.resize(f->bytes.size() - 1); }},
  };
  for (const Damage& d : damages) {
    MachOFile f = MakeMachO(6, 3);
    d.apply(&f);
    std::vector<PageDigests> runs;
    FindPageDigests(f.bytes.data(), f.bytes.size(), 4096, &runs);
    if (!runs.empty()) std::fprintf(stderr, "  damage: %s\n", d.what);
    EXPECT_TRUE(runs.empty());
  }
}

TEST(PageDigestRunsRoundTripAndDamagedOnesAreCorrupt) {
  std::vector<PageDigests> runs(2);
  runs[0] = {100000, 0, 4096, 90000, 12, 32};
  runs[0].count = (90000 - 4096 + 4095) / 4096;
  runs[1] = {runs[0].slots + runs[0].count * 32 + 7, 0, 200000, 300000, 14, 20};
  runs[1].slots = 400000;
  runs[1].count = (300000 - 200000 + 16383) / 16384;
  ASSERT_TRUE(ValidPageDigests(runs));
  Bytes enc;
  EncodePageDigests(runs, &enc);
  std::vector<PageDigests> got;
  ASSERT_OK(DecodePageDigests(enc.data(), enc.size(), &got));
  ASSERT_EQ(got.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(got[i].slots, runs[i].slots);
    EXPECT_EQ(got[i].pages, runs[i].pages);
    EXPECT_EQ(got[i].limit, runs[i].limit);
    EXPECT_EQ(got[i].count, runs[i].count);
    EXPECT_EQ(got[i].page_shift, runs[i].page_shift);
    EXPECT_EQ(got[i].hash_size, runs[i].hash_size);
  }
  // Every truncation, and a byte after the runs.
  for (size_t n = 0; n < enc.size(); ++n) {
    EXPECT_CODE(DecodePageDigests(enc.data(), n, &got), ErrorCode::kCorrupt);
  }
  Bytes longer = enc;
  longer.push_back(0);
  EXPECT_CODE(DecodePageDigests(longer.data(), longer.size(), &got), ErrorCode::kCorrupt);
  // Field by field: count, then per run gap, before, hashed, shift, size.
  auto one = [](uint64_t gap, uint64_t before, uint64_t hashed, uint64_t shift, uint64_t size) {
    Bytes b = {1};
    for (uint64_t v : {gap, before, hashed, shift, size}) {
      while (v >= 0x80) {
        b.push_back(static_cast<uint8_t>(v | 0x80));
        v >>= 7;
      }
      b.push_back(static_cast<uint8_t>(v));
    }
    return b;
  };
  std::vector<PageDigests> ok;
  const Bytes good = one(5000, 100, 4000, 12, 32);
  EXPECT_OK(DecodePageDigests(good.data(), good.size(), &ok));
  const Bytes bad[] = {
      one(5000, 5001, 1, 12, 32),        // limit before 0
      one(5000, 100, 4901, 12, 32),      // pages before 0
      one(5000, 100, 0, 12, 32),         // nothing hashed
      one(5000, 100, 4000, 8, 32),       // page shift
      one(5000, 100, 4000, 17, 32),
      one(5000, 100, 4000, 12, 0),       // hash size
      one(5000, 100, 4000, 12, 33),
      one(uint64_t{1} << 62, 0, 1, 12, 32),  // offset range
      one((uint64_t{1} << 62) - 1, 100, (uint64_t{1} << 61), 9, 32),  // slots past 2^62
  };
  for (const Bytes& b : bad) EXPECT_CODE(DecodePageDigests(b.data(), b.size(), &got), ErrorCode::kCorrupt);
  Bytes many = {static_cast<uint8_t>(kMaxPageDigestRuns + 1)};
  EXPECT_CODE(DecodePageDigests(many.data(), many.size(), &got), ErrorCode::kCorrupt);
  EXPECT_EQ(got.size(), 2u);  // untouched by the failures
  // Runs out of order or overlapping are not valid.
  std::vector<PageDigests> swapped = {runs[1], runs[0]};
  EXPECT_TRUE(!ValidPageDigests(swapped));
  std::vector<PageDigests> own = runs;
  own[0].limit = own[0].slots + 1;  // hashing its own slots
  EXPECT_TRUE(!ValidPageDigests(own));
}

class Buffer : public ByteSource {
 public:
  explicit Buffer(const Bytes& b) : b_(b) {}
  uint64_t size() const override { return b_.size(); }
  bool Read(uint64_t offset, size_t length, uint8_t* out) const override {
    if (offset > b_.size() || length > b_.size() - offset) return false;
    std::memcpy(out, b_.data() + offset, length);
    return true;
  }

 private:
  const Bytes& b_;
};

TEST(ParseMachOMapsEachSegmentAndNamesEachSection) {
  const MachOFile f = MakeMachO(7, 4);
  Bytes view(8192, 0);
  view.insert(view.end(), f.bytes.begin(), f.bytes.end());
  const Buffer source(view);
  Executable e;
  ASSERT_TRUE(executable_spans::ParseMachO(source, 8192, &e));
  EXPECT_TRUE(e.arm64);
  EXPECT_EQ(e.view_offset, 8192u);
  EXPECT_EQ(e.file_size, f.bytes.size());
  EXPECT_EQ(e.low, 0x100000000u);
  EXPECT_EQ(e.high, 0x100000000u + f.bytes.size());
  ASSERT_EQ(e.map.size(), 2u);
  EXPECT_EQ(e.map[0].address, 0x100000000u);
  EXPECT_EQ(e.map[0].offset, 8192u);
  EXPECT_EQ(e.map[0].length, 4u * 4096);
  EXPECT_EQ(e.map[1].address, 0x100000000u + 4 * 4096);  // __LINKEDIT
  EXPECT_EQ(e.map[1].offset, 8192u + 4 * 4096);
  ASSERT_EQ(e.parts.size(), 1u);
  EXPECT_EQ(e.parts[0].name, std::string("__TEXT,__text"));
  EXPECT_TRUE(e.parts[0].kind == PartKind::kCode);
  EXPECT_EQ(e.parts[0].address, 0x100000000u + 1024);
  // Not at that offset, damaged, or cut short: not one.
  EXPECT_TRUE(!executable_spans::ParseMachO(source, 4096, &e));
  Bytes cut(view.begin(), view.begin() + 8192 + 3 * 4096);
  EXPECT_TRUE(!executable_spans::ParseMachO(Buffer(cut), 8192, &e));
  Bytes odd = view;
  PutU32(&odd[8192 + 32 + 72 + 48], 4096);  // the section's offset off its address's
  EXPECT_TRUE(!executable_spans::ParseMachO(Buffer(odd), 8192, &e));
}

// A PE32+ as Go's and MSVC's linkers lay it out: .text, .rdata, .data
// (longer in memory than in the file), .reloc; 512-byte file alignment,
// 4 KiB sections.
Bytes MakePe(bool arm64) {
  const uint64_t pe = 0x80, opt = pe + 24, table = opt + 240, sections = 4;
  Bytes p(0x400 + 4 * 0x600, 0);
  p[0] = 'M';
  p[1] = 'Z';
  PutU32(&p[0x3C], static_cast<uint32_t>(pe));
  std::memcpy(&p[pe], "PE\0\0", 4);
  p[pe + 4] = 0x64;
  p[pe + 5] = arm64 ? 0xAA : 0x86;
  p[pe + 6] = sections;
  p[pe + 20] = 240;
  p[opt] = 0x0B;
  p[opt + 1] = 0x02;
  PutU64(&p[opt + 24], 0x140000000);
  PutU32(&p[opt + 32], 4096);
  PutU32(&p[opt + 36], 512);
  PutU32(&p[opt + 56], 0x6000);  // SizeOfImage
  const char* names[] = {".text", ".rdata", ".data", ".reloc"};
  const uint32_t flags[] = {0x60000020, 0x40000040, 0xC0000040, 0x42000040};
  for (uint64_t i = 0; i < sections; ++i) {
    uint8_t* s = &p[table + i * 40];
    std::memcpy(s, names[i], std::strlen(names[i]));
    PutU32(s + 8, i == 2 ? 0x1000 : 0x5F0);                  // VirtualSize
    PutU32(s + 12, static_cast<uint32_t>(0x1000 * (i + 1)));  // RVA
    PutU32(s + 16, 0x600);                                    // SizeOfRawData
    PutU32(s + 20, static_cast<uint32_t>(0x400 + 0x600 * i)); // PointerToRawData
    PutU32(s + 36, flags[i]);
  }
  return p;
}

TEST(ParsePeMapsEverySectionAtItsOwnBias) {
  for (bool arm64 : {false, true}) {
    const Bytes p = MakePe(arm64);
    Executable e;
    ASSERT_TRUE(executable_spans::ParsePe(Buffer(p), 0, &e));
    EXPECT_EQ(e.arm64, arm64);
    EXPECT_EQ(e.low, 0x140000000u);
    EXPECT_EQ(e.high, 0x140006000u);
    EXPECT_EQ(e.file_size, p.size());
    ASSERT_EQ(e.map.size(), 4u);
    for (uint64_t i = 0; i < 4; ++i) {
      EXPECT_EQ(e.map[i].address, 0x140000000u + 0x1000 * (i + 1));
      EXPECT_EQ(e.map[i].offset, 0x400u + 0x600 * i);
      EXPECT_EQ(e.map[i].length, i == 2 ? 0x600u : 0x5F0u);  // raw padding is not loaded
    }
    ASSERT_EQ(e.parts.size(), 5u);
    EXPECT_TRUE(e.parts[0].kind == PartKind::kCode);
    EXPECT_TRUE(e.parts[1].kind == PartKind::kPointers);
    EXPECT_TRUE(e.parts[2].kind == PartKind::kPointers);
    EXPECT_EQ(e.parts[3].name, std::string(".data.bss"));
    EXPECT_TRUE(!e.parts[3].file_bytes);
    EXPECT_EQ(e.parts[3].address, 0x140003600u);
    EXPECT_EQ(e.parts[3].size, 0xA00u);
    EXPECT_TRUE(e.parts[4].kind == PartKind::kOther);  // .reloc: page RVAs, not pointers
  }
}

TEST(DamagedPeHeadersAreNotExecutables) {
  struct Damage {
    const char* what;
    void (*apply)(Bytes*);
  };
  const uint64_t table = 0x80 + 24 + 240;
  const Damage damages[] = {
      {"PE32", [](Bytes* p) { (*p)[0x80 + 24] = 0x0B, (*p)[0x80 + 25] = 0x01; }},
      {"i386", [](Bytes* p) { (*p)[0x80 + 4] = 0x4C, (*p)[0x80 + 5] = 0x01; }},
      {"signature", [](Bytes* p) { (*p)[0x81] = 'X'; }},
      {"e_lfanew past the file", [](Bytes* p) { PutU32(&(*p)[0x3C], 0x7FFFFFFF); }},
      {"no sections", [](Bytes* p) { (*p)[0x80 + 6] = 0; }},
      {"section table past the file", [](Bytes* p) { (*p)[0x80 + 6] = 0xFF; }},
      {"raw data past the file", [](Bytes* p) { PutU32(&(*p)[table + 40 + 20], 0x10000); }},
      {"raw data overlapping", [](Bytes* p) { PutU32(&(*p)[table + 40 + 20], 0x600); }},
      {"sections overlapping in memory", [](Bytes* p) { PutU32(&(*p)[table + 40 + 12], 0x1200); }},
      {"section past SizeOfImage", [](Bytes* p) { PutU32(&(*p)[table + 3 * 40 + 12], 0x6000); }},
  };
  (void)table;
  for (const Damage& d : damages) {
    Bytes p = MakePe(false);
    d.apply(&p);
    Executable e;
    const bool parsed = executable_spans::ParsePe(Buffer(p), 0, &e);
    if (parsed) std::fprintf(stderr, "  damage: %s\n", d.what);
    EXPECT_TRUE(!parsed);
  }
}

TEST(PeVersion3SpansCoverItsCodeAndPointersToIt) {
  const Bytes p = MakePe(false);
  std::vector<ReferenceSpan> spans;
  FindExecutableSpans(p.data(), p.size(), 512, &spans);
  ASSERT_EQ(spans.size(), 3u);  // .text, .rdata, .data; not .reloc
  EXPECT_TRUE(spans[0].kind == ReferenceKind::kRel32);
  EXPECT_EQ(spans[0].start, 0x400u);
  EXPECT_EQ(spans[0].length, 0x5F0u);
  EXPECT_EQ(spans[0].low, 0x400u);
  EXPECT_EQ(spans[0].high, 0x9F0u);
  EXPECT_TRUE(spans[1].kind == ReferenceKind::kAbs64);
  EXPECT_EQ(spans[1].start, 0xA00u);
  // Pointers to .text: address = view offset + the code section's bias.
  EXPECT_EQ(spans[1].low, 0x140001000u);
  EXPECT_EQ(spans[1].high, 0x1400015F0u);
  EXPECT_EQ(spans[1].bias, 0x140001000u - 0x400);
  const Bytes a = MakePe(true);
  spans.clear();
  FindExecutableSpans(a.data(), a.size(), 512, &spans);
  ASSERT_EQ(spans.size(), 3u);
  EXPECT_TRUE(spans[0].kind == ReferenceKind::kArm64);
  EXPECT_EQ(spans[0].bias, 0x140001000u - 0x400);
}

// Two versions of a signed executable: the second's code differs in one
// byte per page, so every page hash changes.
TEST(AVersion4DeltaRebuildsTheCodeSignatureOnTheDevice) {
  const MachOFile a = MakeMachO(8, 24);
  MachOFile b = MakeMachO(8, 24);
  for (uint64_t page = 0; page < 24; ++page) b.bytes[page * 4096 + 2000] ^= 0x5A;
  for (uint64_t i = 0; i < b.count; ++i) {
    const uint64_t start = i * 4096, end = std::min<uint64_t>(start + 4096, b.sig_offset);
    const Digest d = Sha256::Hash(b.bytes.data() + start, end - start);
    std::memcpy(b.bytes.data() + b.slots + i * 32, d.data(), 32);
  }
  DeltaMatcher matcher;
  ASSERT_OK(matcher.Init(a.bytes.data(), a.bytes.size()));
  std::vector<DeltaRecord> records;
  matcher.Match(b.bytes.data(), b.bytes.size(), &records);
  Bytes plain;
  ASSERT_OK(WriteDelta(a.bytes.data(), a.bytes.size(), b.bytes.data(), b.bytes.size(), records,
                       &plain));
  ReferenceInfo info;
  info.version = kAddressReferenceVersion;
  FindPageDigests(b.bytes.data(), b.bytes.size(), 4096, &info.digests);
  ASSERT_EQ(info.digests.size(), 1u);
  Bytes predicted;
  ASSERT_OK(WriteDelta(a.bytes.data(), a.bytes.size(), b.bytes.data(), b.bytes.size(), records,
                       &predicted, &info));
  EXPECT_EQ(GetU32(predicted.data() + 4), kAddressDiffFormatVersion);
  // 24 hashes of 32 random bytes no longer travel.
  EXPECT_TRUE(predicted.size() + 24 * 32 - 100 < plain.size());
  Bytes out(b.bytes.size());
  ASSERT_OK(DecodeDiff(a.bytes.data(), a.bytes.size(), predicted.data(), predicted.size(),
                       out.data(), out.size()));
  EXPECT_TRUE(out == b.bytes);

  // The same through a layout: the new buffer is the view's blocks 1 on;
  // page 0's slot is carried, the others rebuilt.
  const uint64_t blocks = (b.bytes.size() + 4095) / 4096;
  Bytes tail_view(b.bytes.begin() + 4096, b.bytes.end());
  std::vector<Extent> source = {{0, blocks}}, target = {{1, blocks - 1}};
  const DeltaLayout layout{4096, &source, &target};
  matcher.Match(tail_view.data(), tail_view.size(), &records);
  ASSERT_OK(WriteDelta(a.bytes.data(), a.bytes.size(), tail_view.data(), tail_view.size(), records,
                       &predicted, &info, &layout));
  Bytes tail_out(tail_view.size());
  ASSERT_OK(DecodeDiff(a.bytes.data(), a.bytes.size(), predicted.data(), predicted.size(),
                       tail_out.data(), tail_out.size(), &layout));
  EXPECT_TRUE(tail_out == tail_view);

  // A reference part with bytes after the equivalences that are not runs
  // (a zero run count) is corrupt.
  Bytes part;
  ReferenceInfo none;
  none.version = kAddressReferenceVersion;
  EncodeReferenceInfo(none, &part);
  part.push_back(0);
  ReferenceInfo got;
  EXPECT_CODE(DecodeReferenceInfo(part.data(), part.size(), &got, kAddressReferenceVersion),
              ErrorCode::kCorrupt);
  EncodeReferenceInfo(info, &part);
  ASSERT_OK(DecodeReferenceInfo(part.data(), part.size(), &got, kAddressReferenceVersion));
  ASSERT_EQ(got.digests.size(), 1u);
  EXPECT_EQ(got.digests[0].slots, b.slots);
}

}  // namespace
