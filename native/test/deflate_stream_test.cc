// Exact deflate (deflate_stream.h) and the scan for streams
// (generator/deflate_scan.h): streams made by zlib at every level and
// strategy, by gzip(1) and by npm (Node's zlib) expand to their data and
// rebuild bit for bit; hand-made streams cover what compressors rarely
// write (padding bits set, 258 as 284 + 31, empty stored blocks); damaged
// streams and expansions are refused, never rebuilt wrong.
#include "../engine/deflate_stream.h"

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../engine/diff.h"
#include "../engine/generator/deflate_scan.h"
#include "../engine/generator/diff_encoder.h"
#include "../engine/little_endian.h"
#include "../engine/stream_codec.h"
#include "../engine/stream_delta.h"
#include "testing.h"

#ifdef REVPATCH_HAVE_ZLIB
#include <zlib.h>
#endif

using namespace revpatch;

namespace {

using Bytes = std::vector<uint8_t>;

Bytes ReadFixture(const std::string& name) {
  const std::string path = std::string(REVPATCH_TEST_DATA_DIR) + "/" + name;
  Bytes b;
  FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return b;
  uint8_t buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) b.insert(b.end(), buf, buf + n);
  std::fclose(f);
  return b;
}

// Text-like, binary-like and repetitive parts, so every block type and
// code shape appears.
Bytes SampleData(size_t size, uint32_t seed) {
  std::mt19937 rng(seed);
  static const char* words[] = {"deflate ", "stream ", "patch ", "revpatch ", "block ",
                                "huffman ", "literal ", "match ", "\n", "distance "};
  Bytes b;
  while (b.size() < size) {
    switch (rng() % 4) {
      case 0:
        for (int i = 0; i < 200; ++i) {
          const char* w = words[rng() % 10];
          b.insert(b.end(), w, w + std::strlen(w));
        }
        break;
      case 1:
        for (int i = 0; i < 300; ++i) b.push_back(static_cast<uint8_t>(rng()));
        break;
      case 2:
        b.insert(b.end(), 1000 + rng() % 2000, static_cast<uint8_t>(rng()));
        break;
      default:
        if (b.size() > 5000) {
          const size_t from = rng() % (b.size() - 4000);
          b.insert(b.end(), b.begin() + from, b.begin() + from + 3000);
        }
    }
  }
  b.resize(size);
  return b;
}

// Expands, checks the data part, rebuilds and compares.
bool RoundTrips(const Bytes& stream, const Bytes* data, std::string* why) {
  Bytes expanded;
  Status s = DeflateExpand(stream.data(), stream.size(), 1u << 30, &expanded);
  if (!s.ok()) {
    *why = "expand: " + s.ToString();
    return false;
  }
  uint64_t data_size = 0;
  if (!DeflateExpansionDataSize(expanded.data(), expanded.size(), &data_size).ok()) {
    *why = "data size";
    return false;
  }
  if (data != nullptr &&
      (data_size != data->size() || !std::equal(data->begin(), data->end(), expanded.begin()))) {
    *why = "expanded data differs";
    return false;
  }
  Bytes out(stream.size(), 0xA5);
  s = DeflateRebuild(expanded.data(), expanded.size(), out.data(), out.size());
  if (!s.ok()) {
    *why = "rebuild: " + s.ToString();
    return false;
  }
  if (out != stream) {
    *why = "rebuilt bytes differ";
    return false;
  }
  return true;
}

// LSB-first bit writer for hand-made streams.
struct Bits {
  Bytes bytes;
  uint64_t n = 0;
  void Put(uint32_t v, unsigned count) {
    for (unsigned i = 0; i < count; ++i, ++n) {
      if (n % 8 == 0) bytes.push_back(0);
      bytes.back() |= static_cast<uint8_t>(((v >> i) & 1) << (n % 8));
    }
  }
  // A Huffman code, most significant bit first.
  void Code(uint32_t code, unsigned len) {
    for (unsigned i = 0; i < len; ++i) Put((code >> (len - 1 - i)) & 1, 1);
  }
  // Fixed-code literal/length symbol.
  void FixedSymbol(int s) {
    if (s < 144) Code(0x30 + s, 8);
    else if (s < 256) Code(0x190 + s - 144, 9);
    else if (s < 280) Code(s - 256, 7);
    else Code(0xC0 + s - 280, 8);
  }
};

#ifdef REVPATCH_HAVE_ZLIB
Bytes ZlibRaw(const Bytes& data, int level, int strategy, int window_bits, int mem_level) {
  z_stream z{};
  if (deflateInit2(&z, level, Z_DEFLATED, -window_bits, mem_level, strategy) != Z_OK) return {};
  Bytes out(deflateBound(&z, data.size()) + 64);
  z.next_in = const_cast<Bytef*>(data.data());
  z.avail_in = static_cast<uInt>(data.size());
  z.next_out = out.data();
  z.avail_out = static_cast<uInt>(out.size());
  const int r = deflate(&z, Z_FINISH);
  out.resize(z.total_out);
  deflateEnd(&z);
  return r == Z_STREAM_END ? out : Bytes{};
}

// The same data pushed through in pieces with Z_SYNC_FLUSH / Z_FULL_FLUSH
// between them (empty stored blocks, blocks cut mid-stream).
Bytes ZlibFlushed(const Bytes& data, int level, int flush) {
  z_stream z{};
  if (deflateInit2(&z, level, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK) return {};
  Bytes out(deflateBound(&z, data.size()) * 2 + 4096);
  z.next_out = out.data();
  z.avail_out = static_cast<uInt>(out.size());
  size_t at = 0;
  while (at < data.size()) {
    const size_t n = std::min<size_t>(7919, data.size() - at);
    z.next_in = const_cast<Bytef*>(data.data() + at);
    z.avail_in = static_cast<uInt>(n);
    at += n;
    deflate(&z, at == data.size() ? Z_FINISH : flush);
  }
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}
#endif

}  // namespace

#ifdef REVPATCH_HAVE_ZLIB
TEST(ZlibStreamsOfEveryLevelAndStrategyRoundTrip) {
  const Bytes data = SampleData(300000, 1);
  const int strategies[] = {Z_DEFAULT_STRATEGY, Z_FILTERED, Z_HUFFMAN_ONLY, Z_RLE, Z_FIXED};
  for (int level = 0; level <= 9; ++level) {
    for (int strategy : strategies) {
      const Bytes stream = ZlibRaw(data, level, strategy, 15, 8);
      ASSERT_TRUE(!stream.empty());
      std::string why;
      if (!RoundTrips(stream, &data, &why)) {
        revpatch_test::Fail(__FILE__, __LINE__,
                            "level " + std::to_string(level) + " strategy " +
                                std::to_string(strategy) + ": " + why);
      }
    }
  }
}

TEST(ZlibStreamsOfOtherWindowsAndMemoryLevelsRoundTrip) {
  const Bytes data = SampleData(120000, 2);
  for (int window : {9, 10, 12, 15}) {
    for (int mem : {1, 5, 9}) {
      const Bytes stream = ZlibRaw(data, 6, Z_DEFAULT_STRATEGY, window, mem);
      ASSERT_TRUE(!stream.empty());
      std::string why;
      if (!RoundTrips(stream, &data, &why)) {
        revpatch_test::Fail(__FILE__, __LINE__,
                            "window " + std::to_string(window) + " mem " + std::to_string(mem) +
                                ": " + why);
      }
    }
  }
}

TEST(FlushedStreamsWithEmptyStoredBlocksRoundTrip) {
  const Bytes data = SampleData(60000, 3);
  for (int flush : {Z_SYNC_FLUSH, Z_FULL_FLUSH, Z_PARTIAL_FLUSH}) {
    const Bytes stream = ZlibFlushed(data, 6, flush);
    std::string why;
    EXPECT_TRUE(RoundTrips(stream, &data, &why));
    if (!why.empty()) revpatch_test::Fail(__FILE__, __LINE__, why);
  }
}

TEST(EmptyAndTinyInputsRoundTrip) {
  for (size_t n : {0, 1, 2, 3, 258, 259}) {
    const Bytes data(n, 'x');
    for (int level : {0, 1, 9}) {
      const Bytes stream = ZlibRaw(data, level, Z_DEFAULT_STRATEGY, 15, 8);
      std::string why;
      EXPECT_TRUE(RoundTrips(stream, &data, &why));
    }
  }
}
#endif  // REVPATCH_HAVE_ZLIB

TEST(GzipAndNpmStreamsRoundTrip) {
  for (const char* name : {"gpl3-gzip9.gz", "apache2-gzip1.gz", "ms-2.1.3.tgz"}) {
    const Bytes file = ReadFixture(name);
    ASSERT_TRUE(file.size() > 100);
    std::vector<FoundStream> found;
    FindDeflateStreams(file.data(), file.size(), &found);
    ASSERT_EQ(found.size(), size_t{1});
    // The member's deflate data runs from after the header to before the
    // 8-byte trailer.
    EXPECT_TRUE(found[0].offset >= 10);
    EXPECT_EQ(found[0].offset + found[0].length + 8, file.size());
    EXPECT_TRUE(found[0].codec == StreamCodec::kDeflate);
    EXPECT_TRUE(found[0].recipe.empty());
    const Bytes stream(file.begin() + found[0].offset,
                       file.begin() + found[0].offset + found[0].length);
    std::string why;
    if (!RoundTrips(stream, nullptr, &why)) revpatch_test::Fail(__FILE__, __LINE__, std::string(name) + ": " + why);
    // ISIZE says how long the data is.
    Bytes expanded;
    ASSERT_OK(DeflateExpand(stream.data(), stream.size(), 1u << 30, &expanded));
    uint64_t data_size = 0;
    ASSERT_OK(DeflateExpansionDataSize(expanded.data(), expanded.size(), &data_size));
    EXPECT_EQ(static_cast<uint32_t>(data_size), GetU32(file.data() + file.size() - 4));
  }
}

TEST(OddCodingsRoundTripExactly) {
  // Fixed block: 'a', then 258 coded as 284 + 31 at distance 1, then 258
  // as 285, end; the final padding bits are ones.
  Bits b;
  b.Put(1, 1);
  b.Put(1, 2);
  b.FixedSymbol('a');
  b.FixedSymbol(284);
  b.Put(31, 5);
  b.Code(0, 5);  // distance 1
  b.FixedSymbol(285);
  b.Code(0, 5);
  b.FixedSymbol(256);
  const unsigned pad = static_cast<unsigned>((8 - b.n % 8) % 8);
  ASSERT_TRUE(pad > 0);
  b.Put((1u << pad) - 1, pad);
  const Bytes data(1 + 258 + 258, 'a');
  std::string why;
  EXPECT_TRUE(RoundTrips(b.bytes, &data, &why));

  // Stored blocks: an empty one whose skipped bits are not zero, then a
  // final one with data.
  Bits s;
  s.Put(0, 1);
  s.Put(0, 2);
  s.Put(0x15, 5);
  s.Put(0, 16);
  s.Put(0xFFFF, 16);
  s.Put(1, 1);
  s.Put(0, 2);
  s.Put(0x3, 5);
  s.Put(3, 16);
  s.Put(0xFFFC, 16);
  for (char c : std::string("xyz")) s.Put(static_cast<uint8_t>(c), 8);
  const Bytes xyz = {'x', 'y', 'z'};
  EXPECT_TRUE(RoundTrips(s.bytes, &xyz, &why));
}

// A fixed block of literals `lits`, then a match of 3 at `distance`.
Bytes LiteralsThenMatch(const Bytes& lits, uint32_t distance) {
  static const uint16_t base[30] = {1,   2,   3,   4,   5,   7,    9,    13,   17,   25,
                                    33,  49,  65,  97,  129, 193,  257,  385,  513,  769,
                                    1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
  Bits b;
  b.Put(1, 1);
  b.Put(1, 2);
  for (uint8_t c : lits) b.FixedSymbol(c);
  b.FixedSymbol(257);
  int s = 29;
  while (base[s] > distance) --s;
  b.Code(static_cast<uint32_t>(s), 5);
  b.Put(distance - base[s], s < 4 ? 0 : (s - 2) / 2);
  b.FixedSymbol(256);
  return b.bytes;
}

TEST(DistancesThatAreNotTheNearestRoundTrip) {
  // "abcXabcY" then "abc" from 8 back: the second-nearest candidate.
  Bytes lits = {'a', 'b', 'c', 'X', 'a', 'b', 'c', 'Y'};
  Bytes data = lits;
  data.insert(data.end(), {'a', 'b', 'c'});
  std::string why;
  EXPECT_TRUE(RoundTrips(LiteralsThenMatch(lits, 8), &data, &why));
  EXPECT_TRUE(RoundTrips(LiteralsThenMatch(lits, 4), &data, &why));
  // The first of 400 "abc"s: further down the chain than a rank reaches,
  // so the distance is written out.
  lits.clear();
  for (int i = 0; i < 400; ++i) lits.insert(lits.end(), {'a', 'b', 'c', static_cast<uint8_t>(i)});
  data = lits;
  data.insert(data.end(), {'a', 'b', 'c'});
  const Bytes far = LiteralsThenMatch(lits, 1600);
  EXPECT_TRUE(RoundTrips(far, &data, &why));
  EXPECT_TRUE(RoundTrips(LiteralsThenMatch(lits, 1600 - 4 * 200), &data, &why));
  if (!why.empty()) revpatch_test::Fail(__FILE__, __LINE__, why);
  // Structure tail: ..., 1 match, run 1600, length 3 - 3, then 0 and the
  // distance 1599 written out, final run 0, padding.
  Bytes expanded;
  ASSERT_OK(DeflateExpand(far.data(), far.size(), 1 << 20, &expanded));
  const Bytes tail(expanded.end() - 8 - 12, expanded.end() - 8);
  const Bytes want = {0x01, 0xC0, 0x0C, 0x00, 0x00, 0xBF, 0x0C, 0x00};
  EXPECT_TRUE(std::equal(want.begin(), want.end(), tail.end() - want.size() - 1));
}

TEST(RanksWithNoMatchAndDistancesSpelledOutNeedlesslyAreRefused) {
  const Bytes lits = {'a', 'b', 'c', 'X', 'a', 'b', 'c', 'Y'};
  const Bytes stream = LiteralsThenMatch(lits, 8);
  Bytes expanded;
  ASSERT_OK(DeflateExpand(stream.data(), stream.size(), 1 << 20, &expanded));
  uint64_t data_size = 0;
  ASSERT_OK(DeflateExpansionDataSize(expanded.data(), expanded.size(), &data_size));
  // version, final fixed block, 1 match: run 8, length 3, rank 1; run 0; pad
  const Bytes st(expanded.begin() + data_size, expanded.end() - 8);
  ASSERT_EQ(st.size(), size_t{8});
  EXPECT_EQ(Bytes(st.begin(), st.begin() + 7), (Bytes{1, 3, 1, 8, 0, 2, 0}));
  auto with_structure = [&](const Bytes& structure) {
    Bytes e(expanded.begin(), expanded.begin() + data_size);
    e.insert(e.end(), structure.begin(), structure.end());
    uint8_t trailer[8];
    PutU64(trailer, structure.size());
    e.insert(e.end(), trailer, trailer + 8);
    return e;
  };
  Bytes out(stream.size());
  Bytes e = with_structure(st);
  EXPECT_OK(DeflateRebuild(e.data(), e.size(), out.data(), out.size()));
  EXPECT_EQ(out, stream);
  // Rank 2: only two earlier "abc"s.
  Bytes bad = st;
  bad[5] = 3;
  e = with_structure(bad);
  EXPECT_CODE(DeflateRebuild(e.data(), e.size(), out.data(), out.size()), ErrorCode::kCorrupt);
  // Distance 8 written out although its rank says it.
  bad = st;
  bad[5] = 0;
  bad.insert(bad.begin() + 6, 7);
  e = with_structure(bad);
  EXPECT_CODE(DeflateRebuild(e.data(), e.size(), out.data(), out.size()), ErrorCode::kCorrupt);
  // Distance 3 written out: "XabcY" is not "abc" again.
  bad[6] = 2;
  e = with_structure(bad);
  EXPECT_CODE(DeflateRebuild(e.data(), e.size(), out.data(), out.size()), ErrorCode::kCorrupt);
}

TEST(TruncatedAndExtendedStreamsAreRefused) {
  const Bytes file = ReadFixture("gpl3-gzip9.gz");
  std::vector<FoundStream> found;
  FindDeflateStreams(file.data(), file.size(), &found);
  ASSERT_EQ(found.size(), size_t{1});
  const Bytes stream(file.begin() + found[0].offset, file.begin() + found[0].offset + found[0].length);
  for (size_t n = 0; n < stream.size(); n += 1 + n / 16) {
    Bytes out = {1, 2, 3};
    EXPECT_CODE(DeflateExpand(stream.data(), n, 1u << 30, &out), ErrorCode::kCorrupt);
    EXPECT_EQ(out, (Bytes{1, 2, 3}));  // untouched on failure
  }
  // Bytes after the final block: refused whole, measured as a prefix.
  Bytes longer = stream;
  longer.push_back(0);
  Bytes out;
  EXPECT_CODE(DeflateExpand(longer.data(), longer.size(), 1u << 30, &out), ErrorCode::kCorrupt);
  EXPECT_TRUE(out.empty());
  size_t consumed = 0;
  EXPECT_OK(DeflateExpandPrefix(longer.data(), longer.size(), 1u << 30, &out, &consumed));
  EXPECT_EQ(consumed, stream.size());
}

TEST(ExpansionPastTheLimitIsRefused) {
  const Bytes file = ReadFixture("gpl3-gzip9.gz");
  const uint32_t isize = GetU32(file.data() + file.size() - 4);
  std::vector<FoundStream> found;
  FindDeflateStreams(file.data(), file.size(), &found);
  ASSERT_EQ(found.size(), size_t{1});
  const uint8_t* stream = file.data() + found[0].offset;
  Bytes out;
  EXPECT_CODE(DeflateExpand(stream, found[0].length, isize / 2, &out), ErrorCode::kCorrupt);
  EXPECT_TRUE(out.empty());
  EXPECT_CODE(DeflateExpand(stream, found[0].length, isize, &out), ErrorCode::kCorrupt);
  ASSERT_OK(DeflateExpand(stream, found[0].length, isize + 100000, &out));
  EXPECT_CODE(DeflateExpand(stream, found[0].length, out.size() - 1, &out), ErrorCode::kCorrupt);
  const size_t exact = out.size();
  out.clear();
  EXPECT_OK(DeflateExpand(stream, found[0].length, exact, &out));
}

TEST(InvalidStreamsAreRefused) {
  Bytes out;
  // Reserved block type.
  EXPECT_CODE(DeflateExpand(Bytes{0x07, 0, 0}.data(), 3, 1 << 20, &out), ErrorCode::kCorrupt);
  // Stored length without its complement.
  const Bytes bad_stored = {0x01, 0x03, 0x00, 0xFC, 0xFE, 'a', 'b', 'c'};
  EXPECT_CODE(DeflateExpand(bad_stored.data(), bad_stored.size(), 1 << 20, &out), ErrorCode::kCorrupt);
  // A match at the very start (nothing to copy from).
  Bits b;
  b.Put(1, 1);
  b.Put(1, 2);
  b.FixedSymbol(257);
  b.Code(0, 5);
  b.FixedSymbol(256);
  EXPECT_CODE(DeflateExpand(b.bytes.data(), b.bytes.size(), 1 << 20, &out), ErrorCode::kCorrupt);
  // Distance symbol 30.
  Bits d;
  d.Put(1, 1);
  d.Put(1, 2);
  d.FixedSymbol('a');
  d.FixedSymbol(257);
  d.Code(30, 5);
  d.FixedSymbol(256);
  EXPECT_CODE(DeflateExpand(d.bytes.data(), d.bytes.size(), 1 << 20, &out), ErrorCode::kCorrupt);
  EXPECT_TRUE(out.empty());
}

TEST(DamagedExpansionsAreRefusedOrRebuildWhatTheyDescribe) {
  const Bytes file = ReadFixture("apache2-gzip1.gz");
  std::vector<FoundStream> found;
  FindDeflateStreams(file.data(), file.size(), &found);
  ASSERT_EQ(found.size(), size_t{1});
  const Bytes stream(file.begin() + found[0].offset, file.begin() + found[0].offset + found[0].length);
  Bytes expanded;
  ASSERT_OK(DeflateExpand(stream.data(), stream.size(), 1u << 30, &expanded));
  uint64_t data_size = 0;
  ASSERT_OK(DeflateExpansionDataSize(expanded.data(), expanded.size(), &data_size));

  // The wrong output length, either way.
  Bytes out(stream.size() + 1);
  EXPECT_CODE(DeflateRebuild(expanded.data(), expanded.size(), out.data(), stream.size() - 1),
              ErrorCode::kCorrupt);
  EXPECT_CODE(DeflateRebuild(expanded.data(), expanded.size(), out.data(), stream.size() + 1),
              ErrorCode::kCorrupt);
  // A trailer naming more structure than there is.
  Bytes bad = expanded;
  PutU64(bad.data() + bad.size() - 8, bad.size());
  EXPECT_CODE(DeflateRebuild(bad.data(), bad.size(), out.data(), stream.size()), ErrorCode::kCorrupt);
  EXPECT_CODE(DeflateRebuild(bad.data(), 7, out.data(), stream.size()), ErrorCode::kCorrupt);
  // A structure of another version: not known here, not damaged.
  Bytes newer = expanded;
  newer[data_size] = kDeflateStructureVersion + 1;
  EXPECT_CODE(DeflateRebuild(newer.data(), newer.size(), out.data(), stream.size()),
              ErrorCode::kUnsupported);

  // Every single-byte change of the structure, and changes all over the
  // data: refused, or rebuilt into a stream that expands back to exactly
  // the changed expansion (so a rebuild never writes what its expansion
  // does not describe).
  size_t refused = 0, rebuilt = 0;
  std::mt19937 rng(7);
  for (size_t i = 0; i < expanded.size() - 8; i += (i < data_size ? 97 : 1)) {
    Bytes damaged = expanded;
    damaged[i] ^= static_cast<uint8_t>(1 + rng() % 255);
    Bytes o(stream.size());
    const Status s = DeflateRebuild(damaged.data(), damaged.size(), o.data(), o.size());
    if (!s.ok()) {
      EXPECT_TRUE(s.code() == ErrorCode::kCorrupt ||
                  (i == data_size && s.code() == ErrorCode::kUnsupported));
      ++refused;
      continue;
    }
    ++rebuilt;
    Bytes again;
    ASSERT_OK(DeflateExpand(o.data(), o.size(), 1u << 30, &again));
    EXPECT_TRUE(again == damaged);
  }
  EXPECT_TRUE(refused > 0);
  // A literal changed in the data is still a literal: those rebuild.
  EXPECT_TRUE(rebuilt > 0);
}

TEST(ScanFindsStreamsInTheirContainersAndOnlyExactOnes) {
  Bytes buf(1000, 0x90);
  const Bytes gz = ReadFixture("gpl3-gzip9.gz");
  const size_t gz_at = buf.size();
  buf.insert(buf.end(), gz.begin(), gz.end());
  buf.insert(buf.end(), 500, 0xCC);
  // A gzip header over garbage is not a stream.
  buf.insert(buf.end(), {0x1F, 0x8B, 0x08, 0, 0, 0, 0, 0, 0, 3});
  for (int i = 0; i < 200; ++i) buf.push_back(static_cast<uint8_t>(i * 37));
  // A damaged copy of the member (one byte of its deflate data changed)
  // fails its CRC or does not decode.
  Bytes damaged = gz;
  damaged[gz.size() / 2] ^= 0x10;
  buf.insert(buf.end(), damaged.begin(), damaged.end());
  std::vector<FoundStream> found;
  FindDeflateStreams(buf.data(), buf.size(), &found);
  ASSERT_EQ(found.size(), size_t{1});
  EXPECT_EQ(found[0].offset, gz_at + 10);
  EXPECT_EQ(found[0].length, gz.size() - 18);
}

#ifdef REVPATCH_HAVE_ZLIB
TEST(ScanFindsZlibStreamsAndZipEntries) {
  const Bytes data = SampleData(50000, 9);
  const Bytes raw = ZlibRaw(data, 9, Z_DEFAULT_STRATEGY, 15, 8);
  ASSERT_TRUE(!raw.empty());
  Bytes buf(777, 0);
  // zlib: 78 DA, the raw stream, Adler-32 big-endian.
  const size_t zlib_at = buf.size() + 2;
  buf.push_back(0x78);
  buf.push_back(0xDA);
  buf.insert(buf.end(), raw.begin(), raw.end());
  const uint32_t adler = static_cast<uint32_t>(adler32(1, data.data(), static_cast<uInt>(data.size())));
  for (int k = 3; k >= 0; --k) buf.push_back(static_cast<uint8_t>(adler >> (8 * k)));
  buf.insert(buf.end(), 300, 0x11);
  // zip local entry "a.bin", method 8, sizes and CRC in the header.
  const size_t zip_at = buf.size();
  Bytes h(30, 0);
  h[0] = 'P';
  h[1] = 'K';
  h[2] = 3;
  h[3] = 4;
  h[4] = 20;
  h[8] = 8;
  PutU32(h.data() + 14, static_cast<uint32_t>(crc32(0, data.data(), static_cast<uInt>(data.size()))));
  PutU32(h.data() + 18, static_cast<uint32_t>(raw.size()));
  PutU32(h.data() + 22, static_cast<uint32_t>(data.size()));
  h[26] = 5;
  buf.insert(buf.end(), h.begin(), h.end());
  for (char c : std::string("a.bin")) buf.push_back(static_cast<uint8_t>(c));
  buf.insert(buf.end(), raw.begin(), raw.end());
  buf.insert(buf.end(), 100, 0x22);
  std::vector<FoundStream> found;
  FindDeflateStreams(buf.data(), buf.size(), &found);
  ASSERT_EQ(found.size(), size_t{2});
  EXPECT_EQ(found[0].offset, zlib_at);
  EXPECT_EQ(found[0].length, raw.size());
  EXPECT_EQ(found[1].offset, zip_at + 35);
  EXPECT_EQ(found[1].length, raw.size());
  // A wrong Adler-32 and the zlib stream is not taken.
  buf[zlib_at + raw.size()] ^= 1;
  found.clear();
  FindDeflateStreams(buf.data(), buf.size(), &found);
  ASSERT_EQ(found.size(), size_t{1});
  EXPECT_EQ(found[0].offset, zip_at + 35);
}

TEST(ExpansionsOfSimilarDataDiffToLittle) {
  // Two inputs that differ in one region: the compressed streams differ
  // from there on, their expansions (data and structure) hardly at all.
  // Block boundaries move with the change, so headers differ, but tokens
  // are coded without positions and stay the same bytes.
  Bytes a = SampleData(400000, 11);
  Bytes b = a;
  for (size_t i = 1000; i < 1100; ++i) b[i] ^= 0x5A;
  const Bytes sa = ZlibRaw(a, 6, Z_DEFAULT_STRATEGY, 15, 8);
  const Bytes sb = ZlibRaw(b, 6, Z_DEFAULT_STRATEGY, 15, 8);
  Bytes ea, eb;
  ASSERT_OK(DeflateExpand(sa.data(), sa.size(), 1u << 30, &ea));
  ASSERT_OK(DeflateExpand(sb.data(), sb.size(), 1u << 30, &eb));
  Bytes through, plain;
  ASSERT_OK(EncodeDiff(ea, eb, &through));
  ASSERT_OK(EncodeDiff(sa, sb, &plain));
  std::printf("  compressed %zu, expanded %zu; delta of the streams %zu, of the expansions %zu\n",
              sb.size(), eb.size(), plain.size(), through.size());
  EXPECT_TRUE(through.size() * 20 < sb.size());
  EXPECT_TRUE(through.size() * 5 < plain.size());
}

// A gzip member as gzip(1) and npm write it (zlib, windowBits 31).
Bytes Gzip(const Bytes& data, int level) {
  z_stream z{};
  if (deflateInit2(&z, level, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY) != Z_OK) return {};
  Bytes out(deflateBound(&z, data.size()) + 64);
  z.next_in = const_cast<Bytef*>(data.data());
  z.avail_in = static_cast<uInt>(data.size());
  z.next_out = out.data();
  z.avail_out = static_cast<uInt>(out.size());
  deflate(&z, Z_FINISH);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

TEST(StreamDeltaThroughADeflateStreamRebuildsTheNewBufferExactly) {
  // Old and new: a header, a gzip member of slightly different data, a
  // trailer; the version 5 delta lists both members as deflate streams.
  const Bytes inner_old = SampleData(300000, 31);
  Bytes inner_new = inner_old;
  for (size_t k = 500; k < inner_new.size(); k += 7919) inner_new[k] ^= 0x33;
  const Bytes head(321, 0x42);
  Bytes old_buf = head, new_buf = head;
  const Bytes go = Gzip(inner_old, 9), gn = Gzip(inner_new, 9);
  old_buf.insert(old_buf.end(), go.begin(), go.end());
  new_buf.insert(new_buf.end(), gn.begin(), gn.end());
  std::vector<FoundStream> fo, fn;
  FindDeflateStreams(old_buf.data(), old_buf.size(), &fo);
  FindDeflateStreams(new_buf.data(), new_buf.size(), &fn);
  ASSERT_EQ(fo.size(), size_t{1});
  ASSERT_EQ(fn.size(), size_t{1});

  StreamTable table;
  Bytes expanded_old, expanded_new;
  for (int side = 0; side < 2; ++side) {
    const Bytes& buf = side == 0 ? old_buf : new_buf;
    const FoundStream& f = side == 0 ? fo[0] : fn[0];
    Bytes* expanded = side == 0 ? &expanded_old : &expanded_new;
    expanded->assign(buf.begin(), buf.begin() + f.offset);
    const size_t before = expanded->size();
    ASSERT_OK(ExpandStream(StreamCodec::kDeflate, buf.data() + f.offset, f.length,
                           kMaxExpandedBytes, expanded));
    StreamEntry e;
    e.offset = f.offset;
    e.compressed_length = f.length;
    e.codec = StreamCodec::kDeflate;
    e.expanded_length = expanded->size() - before;
    expanded->insert(expanded->end(), buf.begin() + f.offset + f.length, buf.end());
    (side == 0 ? table.old_streams : table.new_streams).push_back(e);
  }
  Bytes inner, delta, plain;
  ASSERT_OK(EncodeDiff(expanded_old, expanded_new, &inner));
  EncodeStreamDelta(new_buf.size(), table, inner, &delta);
  ASSERT_OK(EncodeDiff(old_buf, new_buf, &plain));
  std::printf("  gzip %zu bytes: plain delta %zu, stream delta %zu\n", gn.size(), plain.size(),
              delta.size());
  EXPECT_TRUE(delta.size() * 5 < plain.size());
  Bytes out(new_buf.size(), 0xEE);
  ASSERT_OK(DecodeDiff(old_buf.data(), old_buf.size(), delta.data(), delta.size(), out.data(),
                       out.size()));
  EXPECT_TRUE(out == new_buf);

  // A recipe on a deflate stream is not defined: refused.
  table.new_streams[0].recipe = {1};
  EncodeStreamDelta(new_buf.size(), table, inner, &delta);
  Bytes refused(new_buf.size(), 0xEE);
  EXPECT_CODE(DecodeDiff(old_buf.data(), old_buf.size(), delta.data(), delta.size(),
                         refused.data(), refused.size()),
              ErrorCode::kCorrupt);
}
#endif  // REVPATCH_HAVE_ZLIB
