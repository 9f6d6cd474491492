// The generator: which operation each kind of change becomes, the payload
// framing it reports (chunk digests, stats) and its refusals.
#include "../engine/generator.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../engine/apply.h"
#include "../engine/file_io.h"
#include "../engine/merkle.h"
#include "../engine/operation.h"
#include "testing.h"

using namespace revpatch;

namespace {

using Bytes = std::vector<uint8_t>;
constexpr uint32_t kBlock = 4096;
constexpr uint32_t kChunk = 64 * 1024;

// Incompressible block content, determined by (tag, index).
Bytes StampedBlock(uint64_t index, uint32_t tag) {
  std::mt19937_64 rng(index * 7919 + tag);
  Bytes b(kBlock);
  for (size_t i = 0; i < kBlock; i += 8) {
    uint64_t v = rng();
    std::memcpy(b.data() + i, &v, 8);
  }
  std::memcpy(b.data(), &index, 8);
  return b;
}

Bytes TextBlock(uint32_t seed) {
  static const char* kWords[] = {"alpha ", "beta ", "gamma ", "delta\n"};
  std::mt19937 rng(seed);
  Bytes b;
  while (b.size() < kBlock) {
    const char* w = kWords[rng() % 4];
    b.insert(b.end(), w, w + std::strlen(w));
  }
  b.resize(kBlock);
  return b;
}

Bytes StampedImage(uint64_t blocks) {
  Bytes image;
  for (uint64_t i = 0; i < blocks; ++i) {
    Bytes b = StampedBlock(i, 1);
    image.insert(image.end(), b.begin(), b.end());
  }
  return image;
}

void SetBlock(Bytes* image, uint64_t index, const Bytes& block) {
  std::memcpy(image->data() + index * kBlock, block.data(), kBlock);
}

void WriteFile(const std::string& path, const Bytes& data) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();
  if (!data.empty() && std::fwrite(data.data(), 1, data.size(), f) != data.size()) std::abort();
  std::fclose(f);
}

Status Generate(const std::string& dir, const Bytes& source, const Bytes& target,
                GenerateResult* result) {
  WriteFile(dir + "/source.img", source);
  WriteFile(dir + "/target.img", target);
  GenerateOptions options;
  options.chunk_size = kChunk;
  return GeneratePayload(dir + "/source.img", dir + "/target.img", dir + "/payload", options,
                         nullptr, result);
}

ApplyParams ParamsFor(const GenerateResult& r, int fd) {
  ApplyParams p;
  p.patch_fd = fd;
  p.payload_size = r.payload_size;
  p.chunk_size = kChunk;
  p.chunk_digests = r.chunk_digests;
  p.payload_digest = r.payload_digest;
  p.operation_count = r.operation_count;
  p.block_size = kBlock;
  p.target_size = r.target_size;
  p.source_digest = r.source_digest;
  p.target_digest = r.target_digest;
  return p;
}

uint64_t Count(const GenerateResult& r, OperationType type) {
  return r.stats.by_type[static_cast<int>(type)].count;
}

}  // namespace

TEST(identical_images_make_an_empty_payload) {
  std::string dir = revpatch_test::TempDir();
  Bytes image = StampedImage(20);
  GenerateResult r;
  ASSERT_OK(Generate(dir, image, image, &r));
  EXPECT_EQ(r.operation_count, 0u);
  EXPECT_EQ(r.payload_size, 0u);
  EXPECT_TRUE(r.chunk_digests.empty());
  EXPECT_EQ(r.changed_blocks, 0u);
  EXPECT_TRUE(r.source_digest == r.target_digest);
  EXPECT_TRUE(FileExists(dir + "/payload"));
  EXPECT_TRUE(!FileExists(dir + "/payload.tmp"));
}

TEST(each_kind_of_change_becomes_its_operation) {
  std::string dir = revpatch_test::TempDir();
  Bytes source = StampedImage(64);
  Bytes target = source;
  SetBlock(&target, 3, Bytes(kBlock, 0));                     // ZERO
  SetBlock(&target, 10, StampedBlock(20, 1));                 // COPY
  Bytes edited = StampedBlock(30, 1);
  for (size_t i = 100; i < kBlock; i += 500) edited[i] ^= 0xFF;
  SetBlock(&target, 30, edited);                              // DIFF
  SetBlock(&target, 40, StampedBlock(40, 2));                 // REPLACE
  SetBlock(&target, 50, TextBlock(3));                        // REPLACE_BROTLI
  GenerateResult r;
  ASSERT_OK(Generate(dir, source, target, &r));
  EXPECT_EQ(r.operation_count, 5u);
  EXPECT_EQ(r.changed_blocks, 5u);
  EXPECT_EQ(Count(r, OperationType::kZero), 1u);
  EXPECT_EQ(Count(r, OperationType::kCopy), 1u);
  EXPECT_EQ(Count(r, OperationType::kDiff), 1u);
  EXPECT_EQ(Count(r, OperationType::kReplace), 1u);
  EXPECT_EQ(Count(r, OperationType::kReplaceBrotli), 1u);
  EXPECT_TRUE(r.stats.by_type[static_cast<int>(OperationType::kDiff)].data_bytes < 1000);
  EXPECT_TRUE(!(r.source_digest == r.target_digest));
}

TEST(runs_of_blocks_coalesce_into_one_operation) {
  std::string dir = revpatch_test::TempDir();
  Bytes source = StampedImage(600);
  Bytes target = source;
  for (uint64_t b = 100; b < 200; ++b) SetBlock(&target, b, Bytes(kBlock, 0));
  for (uint64_t b = 300; b < 310; ++b) SetBlock(&target, b, StampedBlock(b + 200, 1));
  for (uint64_t b = 0; b < 290; ++b) SetBlock(&target, 310 + b, StampedBlock(b, 7));
  GenerateResult r;
  ASSERT_OK(Generate(dir, source, target, &r));
  EXPECT_EQ(Count(r, OperationType::kZero), 1u);
  EXPECT_EQ(Count(r, OperationType::kCopy), 1u);
  // 290 fresh blocks: data runs hold at most 256 blocks.
  EXPECT_EQ(Count(r, OperationType::kReplace), 2u);
  EXPECT_EQ(r.changed_blocks, 100u + 10 + 290);
  EXPECT_EQ(r.chunk_digests.size(), (r.payload_size + kChunk - 1) / kChunk);
}

TEST(scan_reads_back_the_statistics_the_generator_reported) {
  std::string dir = revpatch_test::TempDir();
  Bytes source = StampedImage(80);
  Bytes target = source;
  target.resize(target.size() + 5 * kBlock + 100, 0);
  SetBlock(&target, 81, TextBlock(9));
  SetBlock(&target, 7, Bytes(kBlock, 0));
  SetBlock(&target, 8, StampedBlock(70, 1));
  target[20 * kBlock + 5] ^= 1;
  GenerateResult r;
  ASSERT_OK(Generate(dir, source, target, &r));
  int fd = open((dir + "/payload").c_str(), O_RDONLY);
  ASSERT_TRUE(fd >= 0);
  PayloadStats stats;
  EXPECT_OK(ScanPayload(ParamsFor(r, fd), &stats));
  EXPECT_EQ(stats.operations, r.operation_count);
  for (int t = 0; t < 8; ++t) {
    EXPECT_EQ(stats.by_type[t].count, r.stats.by_type[t].count);
    EXPECT_EQ(stats.by_type[t].target_blocks, r.stats.by_type[t].target_blocks);
    EXPECT_EQ(stats.by_type[t].data_bytes, r.stats.by_type[t].data_bytes);
  }
  // Growth: 6 new blocks (one text, five zero-filled, the last partial).
  EXPECT_EQ(r.changed_blocks, 3u + 6);
  ApplyParams wrong_count = ParamsFor(r, fd);
  ++wrong_count.operation_count;
  EXPECT_CODE(ScanPayload(wrong_count, &stats), ErrorCode::kCorrupt);
  close(fd);
}

TEST(bad_options_and_missing_images_are_refused_without_leftovers) {
  std::string dir = revpatch_test::TempDir();
  WriteFile(dir + "/a.img", StampedImage(2));
  GenerateResult r;
  GenerateOptions bad_block;
  bad_block.block_size = 1000;
  EXPECT_CODE(GeneratePayload(dir + "/a.img", dir + "/a.img", dir + "/p", bad_block, nullptr, &r),
              ErrorCode::kInvalidArgument);
  GenerateOptions bad_chunk;
  bad_chunk.chunk_size = 4096;
  EXPECT_CODE(GeneratePayload(dir + "/a.img", dir + "/a.img", dir + "/p", bad_chunk, nullptr, &r),
              ErrorCode::kInvalidArgument);
  EXPECT_CODE(GeneratePayload(dir + "/missing.img", dir + "/a.img", dir + "/p", GenerateOptions(),
                              nullptr, &r),
              ErrorCode::kNotFound);
  EXPECT_TRUE(!FileExists(dir + "/p"));
  EXPECT_TRUE(!FileExists(dir + "/p.tmp"));
}

TEST(progress_reaches_the_target_size) {
  std::string dir = revpatch_test::TempDir();
  Bytes source = StampedImage(10), target = StampedImage(12);
  WriteFile(dir + "/s", source);
  WriteFile(dir + "/t", target);
  uint64_t last_done = 0, last_total = 0;
  GenerateResult r;
  ASSERT_OK(GeneratePayload(dir + "/s", dir + "/t", dir + "/p", GenerateOptions(),
                            [&](uint64_t done, uint64_t total) {
                              EXPECT_TRUE(done >= last_done);
                              last_done = done;
                              last_total = total;
                            },
                            &r));
  EXPECT_EQ(last_done, target.size());
  EXPECT_EQ(last_total, target.size());
}
