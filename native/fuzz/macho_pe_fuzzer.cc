// macho_pe_fuzzer: the Mach-O and PE32+ parsers of the publisher
// (generator/executable_spans.h, generator/page_digest_scan.h) on fuzzed
// images, and the page digest runs a device decodes (page_digests.h).
//
// Input: u8 mode, then by mode % 4:
//   0: the image, raw;
//   1: a signed arm64 Mach-O the harness builds (u8 pages, u8 hash type 2
//      or 3), then patches to the end: (u16 offset, u8 value) each;
//   2: a PE32+ the harness builds (u8 section count, u8 arm64 when odd),
//      then patches as above;
//   3: encoded page digest runs (u16 length, that many bytes), u8 block
//      size exponent, u8 extent count and (u8 start, u8 blocks) each, then
//      a buffer (the rest).
// Bits 2-3 of mode pick the block size the scans use (512 << n).
//
// Checks, besides the sanitizers:
//  - the spans are sorted, disjoint, non-empty, inside the image and below
//    2^62, and their encoding decodes on the device side to the same spans
//    (what the publisher sends, the device accepts);
//  - page digest runs found are valid, inside the image, round-trip through
//    their encoding, and subtracting then adding them gives back the image;
//  - decoded runs (mode 3) fail only with kCorrupt, and adding then
//    subtracting them under any layout gives back the buffer.
#include <algorithm>
#include <cstring>
#include <vector>

#include "executable_spans.h"
#include "fuzz_input.h"
#include "fuzz_support.h"
#include "fuzz_targets.h"
#include "little_endian.h"
#include "page_digest_scan.h"
#include "page_digests.h"
#include "references.h"

namespace revpatch_fuzz {
namespace {

using revpatch::ErrorCode;
using revpatch::Status;

constexpr size_t kMaxImage = 1 << 18;

void PutBe32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 24);
  p[1] = static_cast<uint8_t>(v >> 16);
  p[2] = static_cast<uint8_t>(v >> 8);
  p[3] = static_cast<uint8_t>(v);
}

// __TEXT of `pages` 4 KiB pages (a few arm64 branches and ADRP pairs, and
// pointers into it), __LINKEDIT with an ad hoc signature whose slots hold
// the pages' hashes.
Bytes MachO(size_t pages, uint8_t hash_type) {
  const uint8_t hash_size = hash_type == 3 ? 20 : 32;
  const uint64_t text = pages * 4096, sig_off = text + 64;
  const uint64_t count = (sig_off + 4095) / 4096, cd_length = 88 + count * hash_size;
  Bytes m(sig_off + 20 + cd_length, 0);
  for (uint64_t i = 256; i + 8 <= text / 2; i += 8) {
    revpatch::PutU32(&m[i], 0x94000000u | static_cast<uint32_t>(i % 977));  // BL
    revpatch::PutU32(&m[i + 4], i % 3 ? 0xD503201Fu : 0x90000001u);        // NOP or ADRP x1
  }
  for (uint64_t i = text / 2; i + 8 <= text; i += 8) revpatch::PutU64(&m[i], 0x100000000 + i / 3);
  revpatch::PutU32(&m[0], 0xFEEDFACF);
  revpatch::PutU32(&m[4], 0x0100000C);
  revpatch::PutU32(&m[12], 2);
  revpatch::PutU32(&m[16], 3);
  revpatch::PutU32(&m[20], 72 + 152 + 16);
  uint8_t* c = &m[32];
  revpatch::PutU32(c, 0x19);
  revpatch::PutU32(c + 4, 72 + 80);
  std::memcpy(c + 8, "__TEXT", 6);
  revpatch::PutU64(c + 24, 0x100000000);
  revpatch::PutU64(c + 32, text);
  revpatch::PutU64(c + 48, text);
  revpatch::PutU32(c + 64, 1);
  uint8_t* sect = c + 72;
  std::memcpy(sect, "__text", 6);
  std::memcpy(sect + 16, "__TEXT", 6);
  revpatch::PutU64(sect + 32, 0x100000000 + 256);
  revpatch::PutU64(sect + 40, text / 2 - 256);
  revpatch::PutU32(sect + 48, 256);
  revpatch::PutU32(sect + 64, 0x80000400);
  c += 152;
  revpatch::PutU32(c, 0x19);
  revpatch::PutU32(c + 4, 72);
  std::memcpy(c + 8, "__LINKEDIT", 10);
  revpatch::PutU64(c + 24, 0x100000000 + text);
  revpatch::PutU64(c + 32, m.size() - text);
  revpatch::PutU64(c + 40, text);
  revpatch::PutU64(c + 48, m.size() - text);
  c += 72;
  revpatch::PutU32(c, 0x1D);
  revpatch::PutU32(c + 4, 16);
  revpatch::PutU32(c + 8, static_cast<uint32_t>(sig_off));
  revpatch::PutU32(c + 12, static_cast<uint32_t>(20 + cd_length));
  uint8_t* sig = &m[sig_off];
  PutBe32(sig, 0xFADE0CC0);
  PutBe32(sig + 4, static_cast<uint32_t>(20 + cd_length));
  PutBe32(sig + 8, 1);
  PutBe32(sig + 16, 20);
  uint8_t* cd = sig + 20;
  PutBe32(cd, 0xFADE0C02);
  PutBe32(cd + 4, static_cast<uint32_t>(cd_length));
  PutBe32(cd + 8, 0x20400);
  PutBe32(cd + 16, 88);
  PutBe32(cd + 28, static_cast<uint32_t>(count));
  PutBe32(cd + 32, static_cast<uint32_t>(sig_off));
  cd[36] = hash_size;
  cd[37] = hash_type;
  cd[39] = 12;
  for (uint64_t i = 0; i < count; ++i) {
    const uint64_t start = i * 4096, end = std::min<uint64_t>(start + 4096, sig_off);
    const revpatch::Digest d = revpatch::Sha256::Hash(&m[start], end - start);
    std::memcpy(cd + 88 + i * hash_size, d.data(), hash_size);
  }
  return m;
}

// An MZ stub, the PE headers and `sections` sections of 2 KiB (512-aligned
// in the file, 4 KiB-aligned in memory): the first code, the others data
// holding pointers to it.
Bytes Pe(size_t sections, bool arm64) {
  const uint64_t pe = 0x80, opt = pe + 24, table = opt + 240;
  const uint64_t headers = (table + sections * 40 + 511) / 512 * 512;
  Bytes p(headers + sections * 2048, 0);
  p[0] = 'M';
  p[1] = 'Z';
  revpatch::PutU32(&p[0x3C], static_cast<uint32_t>(pe));
  std::memcpy(&p[pe], "PE\0\0", 4);
  p[pe + 4] = arm64 ? 0x64 : 0x64;
  p[pe + 5] = arm64 ? 0xAA : 0x86;
  p[pe + 6] = static_cast<uint8_t>(sections);
  p[pe + 20] = 240;
  p[opt] = 0x0B;
  p[opt + 1] = 0x02;
  revpatch::PutU64(&p[opt + 24], 0x140000000);
  revpatch::PutU32(&p[opt + 32], 4096);
  revpatch::PutU32(&p[opt + 36], 512);
  for (size_t i = 0; i < sections; ++i) {
    uint8_t* s = &p[table + i * 40];
    std::memcpy(s, i == 0 ? ".text" : ".data", 5);
    revpatch::PutU32(s + 8, 2048);
    revpatch::PutU32(s + 12, static_cast<uint32_t>(4096 * (i + 1)));
    revpatch::PutU32(s + 16, 2048);
    revpatch::PutU32(s + 20, static_cast<uint32_t>(headers + 2048 * i));
    revpatch::PutU32(s + 36, i == 0 ? 0x60000020u : 0xC0000040u);
    for (uint64_t k = 0; k + 8 <= 2048; k += 8) {
      uint8_t* w = &p[headers + 2048 * i + k];
      if (i == 0) {
        w[0] = 0xE8;
        revpatch::PutU32(w + 1, static_cast<uint32_t>(k * 3 % 2000));
      } else {
        revpatch::PutU64(w, 0x140001000 + k);
      }
    }
  }
  return p;
}

void Patch(FuzzInput* in, Bytes* image) {
  while (in->remaining() >= 3 && !image->empty()) {
    const size_t at = in->Take<uint16_t>() % image->size();
    (*image)[at] = in->Take<uint8_t>();
  }
}

void CheckScans(const Bytes& image, uint32_t block_size) {
  std::vector<revpatch::ReferenceSpan> spans;
  revpatch::FindExecutableSpans(image.data(), image.size(), block_size, &spans);
  uint64_t end = 0;
  for (const revpatch::ReferenceSpan& s : spans) {
    FUZZ_CHECK(s.length > 0 && s.start >= end && s.start + s.length <= image.size(),
               "span out of order or outside the image");
    end = s.start + s.length;
  }
  if (spans.size() <= revpatch::kMaxReferenceSpans) {
    revpatch::ReferenceInfo info, back;
    info.spans = spans;
    Bytes enc;
    revpatch::EncodeReferenceInfo(info, &enc);
    const Status s = revpatch::DecodeReferenceInfo(enc.data(), enc.size(), &back);
    FUZZ_CHECK(s.ok(), "the device refuses the spans: " + s.ToString());
    FUZZ_CHECK(back.spans.size() == spans.size(), "span count changed");
    for (size_t i = 0; i < spans.size(); ++i) {
      FUZZ_CHECK(back.spans[i].start == spans[i].start && back.spans[i].length == spans[i].length &&
                     back.spans[i].kind == spans[i].kind && back.spans[i].low == spans[i].low &&
                     back.spans[i].high == spans[i].high,
                 "span changed in its encoding");
    }
  }

  std::vector<revpatch::PageDigests> runs;
  revpatch::FindPageDigests(image.data(), image.size(), block_size, &runs);
  FUZZ_CHECK(revpatch::ValidPageDigests(runs), "invalid runs found");
  for (const revpatch::PageDigests& r : runs) {
    FUZZ_CHECK(r.slots + r.count * r.hash_size <= image.size(), "slots outside the image");
  }
  Bytes enc;
  revpatch::EncodePageDigests(runs, &enc);
  std::vector<revpatch::PageDigests> back;
  Status s = revpatch::DecodePageDigests(enc.data(), enc.size(), &back);
  FUZZ_CHECK(s.ok() && back.size() == runs.size(), "runs do not round-trip: " + s.ToString());
  for (size_t i = 0; i < runs.size(); ++i) {
    FUZZ_CHECK(back[i].slots == runs[i].slots && back[i].pages == runs[i].pages &&
                   back[i].limit == runs[i].limit && back[i].count == runs[i].count,
               "run changed in its encoding");
  }
  Bytes copy = image;
  s = revpatch::ApplyPageDigests(runs, 0, nullptr, revpatch::DigestDirection::kSubtract,
                                 copy.data(), copy.size());
  FUZZ_CHECK(s.ok(), s.ToString());
  s = revpatch::ApplyPageDigests(runs, 0, nullptr, revpatch::DigestDirection::kAdd, copy.data(),
                                 copy.size());
  FUZZ_CHECK(s.ok() && copy == image, "subtracting then adding the digests changed the image");
}

void CheckRuns(FuzzInput* in) {
  const Bytes enc = in->TakeBytes(in->Take<uint16_t>());
  const uint32_t block_size = 1u << (in->Take<uint8_t>() % 14);
  std::vector<revpatch::Extent> extents;
  const uint8_t count = in->Take<uint8_t>() % 8;
  for (uint8_t i = 0; i < count; ++i) {
    const uint64_t start = in->Take<uint8_t>();
    extents.push_back({start, in->Take<uint8_t>()});
  }
  const Bytes buf = in->TakeBytes(kMaxImage);
  std::vector<revpatch::PageDigests> runs;
  Status s = revpatch::DecodePageDigests(enc.data(), enc.size(), &runs);
  if (!s.ok()) {
    FUZZ_CHECK(s.code() == ErrorCode::kCorrupt && runs.empty(), s.ToString());
    return;
  }
  FUZZ_CHECK(revpatch::ValidPageDigests(runs), "decoded runs are not valid");
  Bytes copy = buf;
  const std::vector<revpatch::Extent>* e = count > 0 ? &extents : nullptr;
  s = revpatch::ApplyPageDigests(runs, block_size, e, revpatch::DigestDirection::kAdd, copy.data(),
                                 copy.size());
  if (!s.ok()) {
    FUZZ_CHECK(s.code() == ErrorCode::kCorrupt && copy == buf, s.ToString());
    return;
  }
  s = revpatch::ApplyPageDigests(runs, block_size, e, revpatch::DigestDirection::kSubtract,
                                 copy.data(), copy.size());
  FUZZ_CHECK(s.ok() && copy == buf, "adding then subtracting the digests changed the buffer");
}

}  // namespace

int FuzzMachOPe(const uint8_t* data, size_t size) {
  FuzzInput in(data, size);
  const uint8_t mode = in.Take<uint8_t>();
  const uint32_t block_size = 512u << ((mode >> 2) & 3);
  Bytes image;
  switch (mode % 4) {
    case 0:
      image = in.TakeBytes(kMaxImage);
      break;
    case 1: {
      const size_t pages = 1 + in.Take<uint8_t>() % 8;
      image = MachO(pages, in.Take<uint8_t>() % 2 ? 3 : 2);
      Patch(&in, &image);
      break;
    }
    case 2: {
      const size_t sections = 1 + in.Take<uint8_t>() % 6;
      image = Pe(sections, in.Take<uint8_t>() % 2 == 1);
      Patch(&in, &image);
      break;
    }
    default:
      CheckRuns(&in);
      return 0;
  }
  CheckScans(image, block_size);
  return 0;
}

}  // namespace revpatch_fuzz

REVPATCH_FUZZ_ENTRY(FuzzMachOPe)
