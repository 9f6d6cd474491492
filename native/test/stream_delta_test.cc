// The stream delta (version 5) and the zstd codec: recipes that rebuild
// frames exactly, a device whose libzstd differs from the recipe's refusing
// with kUnsupported, round trips through DecodeDiff, and hostile tables
// and frames refused as kCorrupt (output buffers sized exactly, so the
// sanitizers see any overrun).
#include "../engine/stream_delta.h"

#define ZSTD_STATIC_LINKING_ONLY
#include <zstd.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "../engine/diff.h"
#include "../engine/generator/diff_encoder.h"
#include "../engine/generator/stream_scan.h"
#include "../engine/little_endian.h"
#include "testing.h"

using namespace revpatch;

namespace {

using Bytes = std::vector<uint8_t>;

Bytes Structured(size_t n, uint32_t seed) {
  static const char* kWords[] = {"patch ", "layer ", "block ", "extent ", "view ",
                                 "digest ", "seal ", "\n", "0x1f2e ", "apply "};
  std::mt19937 rng(seed);
  Bytes b;
  while (b.size() < n) {
    const char* w = kWords[rng() % 10];
    b.insert(b.end(), w, w + std::strlen(w));
    if (rng() % 7 == 0) b.push_back(static_cast<uint8_t>(rng()));
  }
  b.resize(n);
  return b;
}

Bytes Random(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  Bytes b(n);
  for (auto& x : b) x = static_cast<uint8_t>(rng());
  return b;
}

// A frame as the libraries make it: one call, level `level`.
Bytes Compress(const Bytes& in, int level, bool checksum, int workers = 0) {
  ZSTD_CCtx* c = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, level);
  ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, checksum ? 1 : 0);
  if (workers > 0) ZSTD_CCtx_setParameter(c, ZSTD_c_nbWorkers, workers);
  Bytes out(ZSTD_compressBound(in.size()));
  ZSTD_CCtx_setPledgedSrcSize(c, in.size());
  ZSTD_inBuffer ib{in.data(), in.size(), 0};
  ZSTD_outBuffer ob{out.data(), out.size(), 0};
  while (ZSTD_compressStream2(c, &ob, &ib, ZSTD_e_end) != 0) {
  }
  ZSTD_freeCCtx(c);
  out.resize(ob.pos);
  return out;
}

Bytes Concat(std::initializer_list<const Bytes*> parts) {
  Bytes out;
  for (const Bytes* p : parts) out.insert(out.end(), p->begin(), p->end());
  return out;
}

// A version 5 delta between old and new, each holding one frame at the
// given offsets, with the recipe FindZstdRecipe found.
struct Pair {
  Bytes old_buf, new_buf, delta;
};

Pair MakePair(uint32_t seed, int level) {
  Pair p;
  Bytes inner_old = Structured(300000, seed);
  Bytes inner_new = inner_old;
  for (size_t k = 1000; k < inner_new.size(); k += 9973) inner_new[k] ^= 0x5A;
  Bytes head = Random(777, seed + 1), tail = Random(1234, seed + 2), tail2 = Random(999, seed + 3);
  Bytes fo = Compress(inner_old, level, true), fn = Compress(inner_new, level, true);
  p.old_buf = Concat({&head, &fo, &tail});
  p.new_buf = Concat({&head, &fn, &tail2});
  StreamTable t;
  StreamEntry o;
  o.offset = head.size();
  o.compressed_length = fo.size();
  o.expanded_length = inner_old.size();
  t.old_streams.push_back(o);
  StreamEntry n;
  n.offset = head.size();
  n.compressed_length = fn.size();
  n.expanded_length = inner_new.size();
  ZstdRecipe r;
  if (!FindZstdRecipe(fn.data(), fn.size(), inner_new.data(), inner_new.size(), &r)) return p;
  EncodeZstdRecipe(r, &n.recipe);
  t.new_streams.push_back(n);
  Bytes eo = Concat({&head, &inner_old, &tail}), en = Concat({&head, &inner_new, &tail2});
  Bytes inner;
  if (!EncodeDiff(eo, en, &inner).ok()) return p;
  EncodeStreamDelta(p.new_buf.size(), t, inner, &p.delta);
  return p;
}

}  // namespace

TEST(ZstdRecipeRebuildsFramesOfEveryCommonLevelExactly) {
  Bytes data = Structured(200000, 7);
  for (int level : {1, 3, 9, 19}) {
    Bytes frame = Compress(data, level, level % 2 == 1);
    ZstdRecipe r;
    ASSERT_TRUE(FindZstdRecipe(frame.data(), frame.size(), data.data(), data.size(), &r));
    EXPECT_EQ(r.level, level);
    EXPECT_EQ(r.version, ZSTD_versionNumber());
    Bytes recipe;
    EncodeZstdRecipe(r, &recipe);
    ASSERT_EQ(recipe.size(), kZstdRecipeSize);
    Bytes rebuilt(frame.size());
    ASSERT_OK(RebuildStream(StreamCodec::kZstd, recipe.data(), recipe.size(), data.data(),
                            data.size(), rebuilt.data(), rebuilt.size()));
    EXPECT_TRUE(rebuilt == frame);
  }
}

TEST(ZstdRecipeFindsMultiThreadedFramesAsTheCommandLineWritesThem) {
  // Large enough for two jobs at level 1 (job size 4 x window), where
  // threaded and single-threaded output differ.
  Bytes data = Structured(6u << 20, 11);
  Bytes frame = Compress(data, 1, true, 2);
  ZstdRecipe r;
  ASSERT_TRUE(FindZstdRecipe(frame.data(), frame.size(), data.data(), data.size(), &r));
  EXPECT_EQ(r.mode, kZstdModeThreaded);
}

TEST(RebuildRefusesARecipeOfAnotherZstdVersionAsUnsupported) {
  Bytes data = Structured(50000, 3);
  Bytes frame = Compress(data, 3, true);
  ZstdRecipe r;
  ASSERT_TRUE(FindZstdRecipe(frame.data(), frame.size(), data.data(), data.size(), &r));
  Bytes recipe;
  r.version += 1;
  EncodeZstdRecipe(r, &recipe);
  Bytes out(frame.size());
  EXPECT_CODE(RebuildStream(StreamCodec::kZstd, recipe.data(), recipe.size(), data.data(),
                            data.size(), out.data(), out.size()),
              ErrorCode::kUnsupported);
}

TEST(RebuildIsCorruptWhenTheFrameComesOutAnotherLength) {
  Bytes data = Structured(50000, 3);
  Bytes frame = Compress(data, 3, true);
  ZstdRecipe r;
  ASSERT_TRUE(FindZstdRecipe(frame.data(), frame.size(), data.data(), data.size(), &r));
  Bytes recipe;
  EncodeZstdRecipe(r, &recipe);
  for (size_t size : {frame.size() - 1, frame.size() + 1}) {
    Bytes out(size);
    EXPECT_CODE(RebuildStream(StreamCodec::kZstd, recipe.data(), recipe.size(), data.data(),
                              data.size(), out.data(), out.size()),
                ErrorCode::kCorrupt);
  }
  Bytes bad = recipe;
  bad[8] |= 0x80;  // unknown flag
  Bytes out(frame.size());
  EXPECT_CODE(RebuildStream(StreamCodec::kZstd, bad.data(), bad.size(), data.data(), data.size(),
                            out.data(), out.size()),
              ErrorCode::kCorrupt);
  EXPECT_CODE(RebuildStream(StreamCodec::kZstd, recipe.data(), recipe.size() - 1, data.data(),
                            data.size(), out.data(), out.size()),
              ErrorCode::kCorrupt);
}

TEST(ExpandRefusesTruncatedTrailingAndOversizedFrames) {
  Bytes data = Structured(100000, 5);
  Bytes frame = Compress(data, 3, true);
  Bytes out;
  ASSERT_OK(ExpandStream(StreamCodec::kZstd, frame.data(), frame.size(), data.size(), &out));
  EXPECT_TRUE(out == data);
  out.clear();
  EXPECT_CODE(ExpandStream(StreamCodec::kZstd, frame.data(), frame.size() - 1, data.size(), &out),
              ErrorCode::kCorrupt);
  Bytes longer = frame;
  longer.push_back(0);
  out.clear();
  EXPECT_CODE(ExpandStream(StreamCodec::kZstd, longer.data(), longer.size(), data.size(), &out),
              ErrorCode::kCorrupt);
  out.clear();
  EXPECT_CODE(ExpandStream(StreamCodec::kZstd, frame.data(), frame.size(), data.size() - 1, &out),
              ErrorCode::kCorrupt);
  EXPECT_TRUE(out.size() <= data.size() - 1);
  Bytes noise = Random(5000, 9);
  out.clear();
  EXPECT_CODE(ExpandStream(StreamCodec::kZstd, noise.data(), noise.size(), 1u << 20, &out),
              ErrorCode::kCorrupt);
}

TEST(StreamDeltaRoundTripsAndIsFarSmallerThanThePlainDelta) {
  Pair p = MakePair(21, 19);
  ASSERT_TRUE(!p.delta.empty());
  Bytes out(p.new_buf.size());
  ASSERT_OK(DecodeDiff(p.old_buf.data(), p.old_buf.size(), p.delta.data(), p.delta.size(),
                       out.data(), out.size()));
  EXPECT_TRUE(out == p.new_buf);
  Bytes plain;
  ASSERT_OK(EncodeDiff(p.old_buf, p.new_buf, &plain));
  EXPECT_TRUE(p.delta.size() * 4 < plain.size());
}

TEST(StreamDeltaIsRefusedUnsupportedWhenTheEngineReportsAnotherZstd) {
  Pair p = MakePair(22, 3);
  ASSERT_TRUE(!p.delta.empty());
  Bytes out(p.new_buf.size(), 0xEE);
  SetZstdVersionForTesting(ZSTD_versionNumber() + 1);
  const Status s = DecodeDiff(p.old_buf.data(), p.old_buf.size(), p.delta.data(), p.delta.size(),
                              out.data(), out.size());
  SetZstdVersionForTesting(0);
  EXPECT_CODE(s, ErrorCode::kUnsupported);
  EXPECT_TRUE(out == Bytes(p.new_buf.size(), 0xEE));  // nothing written
}

TEST(HostileStreamTablesAreCorrupt) {
  Pair p = MakePair(23, 3);
  ASSERT_TRUE(!p.delta.empty());
  auto decode = [&](const Bytes& d) {
    Bytes out(p.new_buf.size());
    return DecodeDiff(p.old_buf.data(), p.old_buf.size(), d.data(), d.size(), out.data(),
                      out.size());
  };
  const size_t old_entry = kStreamDeltaHeaderSize;
  const size_t new_entry = old_entry + 29;
  {
    Bytes d = p.delta;  // old stream past its buffer
    PutU64(d.data() + old_entry, p.old_buf.size());
    EXPECT_CODE(decode(d), ErrorCode::kCorrupt);
  }
  {
    Bytes d = p.delta;  // old stream expands to another length
    PutU64(d.data() + old_entry + 17, GetU64(d.data() + old_entry + 17) + 1);
    EXPECT_CODE(decode(d), ErrorCode::kCorrupt);
  }
  {
    Bytes d = p.delta;  // expansion past the cap
    PutU64(d.data() + old_entry + 17, kMaxExpandedBytes + 1);
    EXPECT_CODE(decode(d), ErrorCode::kCorrupt);
  }
  {
    Bytes d = p.delta;  // unknown codec
    d[new_entry + 16] = 9;
    EXPECT_CODE(decode(d), ErrorCode::kCorrupt);
  }
  {
    Bytes d = p.delta;  // too many streams
    PutU32(d.data() + 16, kMaxStreams + 1);
    EXPECT_CODE(decode(d), ErrorCode::kCorrupt);
  }
  {
    Bytes d = p.delta;  // a recipe on an old stream
    PutU32(d.data() + old_entry + 25, 12);
    EXPECT_CODE(decode(d), ErrorCode::kCorrupt);
  }
  {
    Bytes d = p.delta;  // new stream compressed length one short: rebuild differs
    PutU64(d.data() + new_entry + 8, GetU64(d.data() + new_entry + 8) - 1);
    EXPECT_TRUE(!decode(d).ok());
  }
  {
    Bytes d = p.delta;  // a stream delta inside a stream delta
    const size_t inner = new_entry + 29 + kZstdRecipeSize;
    PutU32(d.data() + inner + 4, kStreamDiffFormatVersion);
    EXPECT_CODE(decode(d), ErrorCode::kCorrupt);
  }
  for (size_t cut = 0; cut < p.delta.size(); cut += 1 + cut / 3) {
    Bytes d(p.delta.begin(), p.delta.begin() + cut);
    EXPECT_TRUE(!decode(d).ok());
  }
  std::mt19937 rng(5);
  for (int round = 0; round < 300; ++round) {
    Bytes d = p.delta;
    const size_t at = rng() % std::min<size_t>(d.size(), 120);
    d[at] = static_cast<uint8_t>(rng());
    Bytes out(p.new_buf.size());
    const Status s = DecodeDiff(p.old_buf.data(), p.old_buf.size(), d.data(), d.size(),
                                out.data(), out.size());
    if (s.ok()) EXPECT_TRUE(out == p.new_buf || at >= kStreamDeltaHeaderSize);
  }
}

TEST(ScanFindsFramesWithTheirRecipesAndSkipsNoise) {
  Bytes a = Structured(100000, 1), b = Structured(70000, 2);
  Bytes fa = Compress(a, 19, true), fb = Compress(b, 6, false);
  Bytes n1 = Random(3000, 3), n2 = Random(5000, 4);
  n1[100] = 0x28, n1[101] = 0xB5, n1[102] = 0x2F, n1[103] = 0xFD;  // a false magic
  Bytes buf = Concat({&n1, &fa, &n2, &fb, &n1});
  std::vector<FoundStream> found;
  FindZstdStreams(buf.data(), buf.size(), &found);
  ASSERT_EQ(found.size(), 2u);
  EXPECT_EQ(found[0].offset, n1.size());
  EXPECT_EQ(found[0].length, fa.size());
  EXPECT_EQ(found[1].offset, n1.size() + fa.size() + n2.size());
  EXPECT_EQ(found[1].length, fb.size());
  ZstdRecipe r;
  ASSERT_OK(DecodeZstdRecipe(found[1].recipe.data(), found[1].recipe.size(), &r));
  EXPECT_EQ(r.level, 6);
  EXPECT_TRUE(!r.checksum);
  std::vector<FoundStream> frames;
  FindZstdFrames(buf.data(), buf.size(), &frames);
  EXPECT_EQ(frames.size(), 2u);
}
