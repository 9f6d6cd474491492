// The generator: which operation each kind of change becomes, the payload
// framing it reports (chunk digests, stats) and its refusals.
#include "../engine/generator/generator.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../engine/apply.h"
#include "../engine/diff.h"
#include "../engine/file_io.h"
#include "../engine/little_endian.h"
#include "../engine/merkle.h"
#include "../engine/operation.h"
#include "testing.h"

#include <brotli/decode.h>

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

// whole_source: match data against the whole source (the default for
// sources up to 256 MiB); false: as for a larger source, against each
// region's neighbourhood, with COPY ops for blocks found whole elsewhere.
Status Generate(const std::string& dir, const Bytes& source, const Bytes& target,
                GenerateResult* result, bool whole_source = true) {
  WriteFile(dir + "/source.img", source);
  WriteFile(dir + "/target.img", target);
  GenerateOptions options;
  options.chunk_size = kChunk;
  if (!whole_source) options.whole_source_bytes = 0;
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
  SetBlock(&target, 40, StampedBlock(40, 2));                 // fresh, in the DIFF
  SetBlock(&target, 50, TextBlock(3));                        // fresh, in the DIFF
  GenerateResult r;
  ASSERT_OK(Generate(dir, source, target, &r, /*whole_source=*/false));
  // The three data blocks share one region, hence one DIFF.
  EXPECT_EQ(r.operation_count, 3u);
  EXPECT_EQ(r.changed_blocks, 5u);
  EXPECT_EQ(Count(r, OperationType::kZero), 1u);
  EXPECT_EQ(Count(r, OperationType::kCopy), 1u);
  EXPECT_EQ(Count(r, OperationType::kDiff), 1u);
  EXPECT_EQ(r.stats.by_type[static_cast<int>(OperationType::kDiff)].target_blocks, 3u);
  // The random block costs its size; the edit and the text little.
  EXPECT_TRUE(r.stats.by_type[static_cast<int>(OperationType::kDiff)].data_bytes < kBlock + 1200);
  EXPECT_TRUE(!(r.source_digest == r.target_digest));

  // Matched against the whole source, the moved block is a match inside the
  // DIFF, which costs a few bytes of control instead of a COPY record.
  GenerateResult whole;
  ASSERT_OK(Generate(revpatch_test::TempDir(), source, target, &whole));
  EXPECT_EQ(whole.operation_count, 2u);
  EXPECT_EQ(Count(whole, OperationType::kCopy), 0u);
  EXPECT_EQ(whole.stats.by_type[static_cast<int>(OperationType::kDiff)].target_blocks, 4u);
  EXPECT_TRUE(whole.payload_size < r.payload_size);
}

TEST(a_region_without_matches_is_replace_or_replace_brotli) {
  std::string dir = revpatch_test::TempDir();
  Bytes source = StampedImage(64);
  Bytes target = source;
  SetBlock(&target, 40, StampedBlock(40, 2));
  GenerateResult r;
  ASSERT_OK(Generate(dir, source, target, &r));
  EXPECT_EQ(r.operation_count, 1u);
  EXPECT_EQ(Count(r, OperationType::kReplace), 1u);
  EXPECT_EQ(r.stats.by_type[static_cast<int>(OperationType::kReplace)].data_bytes, kBlock);
  target = source;
  SetBlock(&target, 50, TextBlock(3));
  ASSERT_OK(Generate(dir, source, target, &r));
  EXPECT_EQ(r.operation_count, 1u);
  EXPECT_EQ(Count(r, OperationType::kReplaceBrotli), 1u);
}

// The operations of a payload file, in order.
std::vector<Operation> ReadOperations(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  Bytes payload;
  if (f) {
    uint8_t buf[65536];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) payload.insert(payload.end(), buf, buf + n);
    std::fclose(f);
  }
  std::vector<Operation> ops;
  size_t at = 0;
  while (at < payload.size()) {
    Operation op;
    size_t consumed = 0;
    if (!DecodeOperation(payload.data() + at, payload.size() - at, &op, &consumed).ok()) break;
    at += consumed + op.data_length;
    ops.push_back(op);
  }
  return ops;
}

// A toy x86-64 executable of `blocks` blocks: an ELF header with one
// loadable code segment over all of it, code of filler and calls (E8 rel32)
// to 64-byte-aligned function starts; `growth` bytes of filler inserted at
// `grow_at` move every function after it.
Bytes ToyExecutable(uint64_t blocks, size_t grow_at, size_t growth) {
  const size_t size = blocks * kBlock;
  Bytes code;
  std::mt19937 rng(77);
  while (code.size() < size) {
    if (code.size() == grow_at) code.insert(code.end(), growth, 0x90);
    const size_t here = code.size() - (code.size() > grow_at ? growth : 0);
    if (rng() % 6 == 0 && here > 256) {
      const uint64_t callee = (rng() % (size / 64)) * 64;  // in old coordinates
      const uint64_t moved = callee >= grow_at ? callee + growth : callee;
      const int64_t disp = static_cast<int64_t>(moved) - static_cast<int64_t>(code.size() + 5);
      uint8_t call[5] = {0xE8};
      PutU32(call + 1, static_cast<uint32_t>(disp));
      code.insert(code.end(), call, call + 5);
    } else {
      code.push_back(static_cast<uint8_t>(0x90 + rng() % 8));
    }
  }
  code.resize(size);
  const uint8_t ident[] = {0x7F, 'E', 'L', 'F', 2, 1, 1};
  std::memset(code.data(), 0, 256);
  std::memcpy(code.data(), ident, sizeof(ident));
  code[18] = 62;  // x86-64
  PutU64(code.data() + 32, 64);  // program headers
  code[54] = 56;
  code[56] = 1;
  uint8_t* load = code.data() + 64;
  PutU32(load, 1);      // PT_LOAD
  PutU32(load + 4, 5);  // R E
  PutU64(load + 16, 0x400000);
  PutU64(load + 32, size);
  PutU64(load + 40, size);
  return code;
}

TEST(moved_code_of_an_executable_is_predicted) {
  std::string dir = revpatch_test::TempDir();
  // The executable at block 2 of a volume; 24 bytes inserted into its
  // block 9 move the rest of it.
  Bytes source = StampedImage(2), target = source;
  const Bytes old_exe = ToyExecutable(40, 9 * kBlock + 100, 0);
  const Bytes new_exe = ToyExecutable(40, 9 * kBlock + 100, 24);
  source.insert(source.end(), old_exe.begin(), old_exe.end());
  target.insert(target.end(), new_exe.begin(), new_exe.end());
  GenerateResult r;
  ASSERT_OK(Generate(dir, source, target, &r));

  // Decode every DIFF as the executor does and compare with the target.
  FILE* f = std::fopen((dir + "/payload").c_str(), "rb");
  ASSERT_TRUE(f != nullptr);
  Bytes payload(r.payload_size);
  ASSERT_EQ(std::fread(payload.data(), 1, payload.size(), f), payload.size());
  std::fclose(f);
  size_t at = 0, predicted = 0;
  uint64_t diff_bytes = 0;
  while (at < payload.size()) {
    Operation op;
    size_t consumed = 0;
    ASSERT_OK(DecodeOperation(payload.data() + at, payload.size() - at, &op, &consumed));
    const uint8_t* data = payload.data() + at + consumed;
    at += consumed + op.data_length;
    if (op.type != OperationType::kDiff) continue;
    if (GetU32(data + 4) == kAddressDiffFormatVersion) ++predicted;
    diff_bytes += op.data_length;
    Bytes old_bytes, want;
    for (const Extent& e : op.src_extents) {
      old_bytes.insert(old_bytes.end(), source.begin() + e.start_block * kBlock,
                       source.begin() + (e.start_block + e.num_blocks) * kBlock);
    }
    for (const Extent& e : op.dst_extents) {
      want.insert(want.end(), target.begin() + e.start_block * kBlock,
                  target.begin() + (e.start_block + e.num_blocks) * kBlock);
    }
    Bytes got(want.size());
    const DeltaLayout layout{kBlock, &op.src_extents, &op.dst_extents};
    ASSERT_OK(DecodeDiff(old_bytes.data(), old_bytes.size(), data, op.data_length, got.data(),
                         got.size(), &layout));
    EXPECT_TRUE(got == want);
  }
  EXPECT_EQ(predicted, 1u);
  EXPECT_EQ(r.max_delta_version, kAddressDiffFormatVersion);

  // Without the ELF header nothing is predicted, and the DIFF is larger.
  source[2 * kBlock] = 0;
  target[2 * kBlock] = 0;
  GenerateResult plain;
  ASSERT_OK(Generate(revpatch_test::TempDir(), source, target, &plain));
  const uint64_t plain_diff = plain.stats.by_type[static_cast<int>(OperationType::kDiff)].data_bytes;
  EXPECT_EQ(diff_bytes, r.stats.by_type[static_cast<int>(OperationType::kDiff)].data_bytes);
  EXPECT_TRUE(diff_bytes * 2 < plain_diff);
}

TEST(a_diff_reads_only_the_source_blocks_its_matches_touch) {
  std::string dir = revpatch_test::TempDir();
  Bytes source = StampedImage(600);
  Bytes target = source;
  target[10 * kBlock + 77] ^= 1;
  target[500 * kBlock + 3000] ^= 1;
  // Block 5 takes block 300's content, slightly edited: data that moved.
  Bytes moved = StampedBlock(300, 1);
  moved[2000] ^= 0x40;
  SetBlock(&target, 5, moved);
  GenerateResult r;
  ASSERT_OK(Generate(dir, source, target, &r));
  std::vector<Operation> ops = ReadOperations(dir + "/payload");
  ASSERT_EQ(ops.size(), 1u);
  EXPECT_TRUE(ops[0].type == OperationType::kDiff);
  ASSERT_EQ(ops[0].dst_extents.size(), 3u);
  ASSERT_EQ(ops[0].src_extents.size(), 3u);
  const uint64_t want[3] = {10, 300, 500};
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(ops[0].src_extents[i].start_block, want[i]);
    EXPECT_EQ(ops[0].src_extents[i].num_blocks, 1u);
  }
  EXPECT_TRUE(ops[0].data_length < 300);
}

TEST(a_large_source_is_matched_around_each_region_block_and_where_its_anchors_point) {
  std::string dir = revpatch_test::TempDir();
  Bytes source = StampedImage(600);
  Bytes target = source;
  target[10 * kBlock + 77] ^= 1;
  target[500 * kBlock + 3000] ^= 1;
  Bytes far = StampedBlock(300, 1);  // 295 blocks away: outside the neighbourhood
  far[2000] ^= 0x40;
  SetBlock(&target, 5, far);
  WriteFile(dir + "/source.img", source);
  WriteFile(dir + "/target.img", target);
  GenerateOptions options;
  options.chunk_size = kChunk;
  options.whole_source_bytes = 0;  // as if the source were too large
  GenerateResult r;
  ASSERT_OK(GeneratePayload(dir + "/source.img", dir + "/target.img", dir + "/payload", options,
                            nullptr, &r));
  EXPECT_TRUE(!r.whole_source);
  std::vector<Operation> ops = ReadOperations(dir + "/payload");
  ASSERT_EQ(ops.size(), 1u);
  EXPECT_TRUE(ops[0].type == OperationType::kDiff);
  // The edits in place are found, and the far block through the anchors
  // its content shares with block 300.
  bool far_found = false;
  for (const Extent& e : ops[0].src_extents) far_found = far_found || e.start_block == 300;
  EXPECT_TRUE(far_found);
  EXPECT_TRUE(ops[0].data_length < 400);
}

TEST(scattered_blocks_of_one_kind_gather_into_one_operation) {
  std::string dir = revpatch_test::TempDir();
  Bytes source = StampedImage(600);
  Bytes target = source;
  for (uint64_t b = 100; b < 200; b += 2) SetBlock(&target, b, Bytes(kBlock, 0));
  for (uint64_t b = 300; b < 340; b += 4) SetBlock(&target, b, StampedBlock(b + 200, 1));
  for (uint64_t b = 0; b < 200; ++b) SetBlock(&target, 350 + b, StampedBlock(b, 7));
  GenerateResult r;
  ASSERT_OK(Generate(dir, source, target, &r, /*whole_source=*/false));
  EXPECT_EQ(Count(r, OperationType::kZero), 1u);
  EXPECT_EQ(Count(r, OperationType::kCopy), 1u);
  EXPECT_EQ(Count(r, OperationType::kReplace), 1u);
  EXPECT_EQ(r.operation_count, 3u);
  EXPECT_EQ(r.changed_blocks, 50u + 10 + 200);
  EXPECT_EQ(r.chunk_digests.size(), (r.payload_size + kChunk - 1) / kChunk);
  std::vector<Operation> ops = ReadOperations(dir + "/payload");
  for (const Operation& op : ops) {
    if (op.type == OperationType::kZero) EXPECT_EQ(op.dst_extents.size(), 50u);
    if (op.type == OperationType::kCopy) EXPECT_EQ(op.src_extents.size(), 10u);
  }
}

TEST(region_bytes_bounds_the_blocks_of_every_operation) {
  std::string dir = revpatch_test::TempDir();
  Bytes source = StampedImage(600);
  Bytes target = source;
  for (uint64_t b = 100; b < 200; ++b) SetBlock(&target, b, Bytes(kBlock, 0));
  for (uint64_t b = 0; b < 250; ++b) SetBlock(&target, 300 + b, StampedBlock(b, 7));
  WriteFile(dir + "/source.img", source);
  WriteFile(dir + "/target.img", target);
  GenerateOptions options;
  options.chunk_size = kChunk;
  options.region_bytes = 64 * kBlock;
  GenerateResult r;
  ASSERT_OK(GeneratePayload(dir + "/source.img", dir + "/target.img", dir + "/payload", options,
                            nullptr, &r));
  EXPECT_EQ(Count(r, OperationType::kZero), 2u);     // 64 + 36
  EXPECT_EQ(Count(r, OperationType::kReplace), 4u);  // 64 * 3 + 58
  for (const Operation& op : ReadOperations(dir + "/payload")) {
    uint64_t blocks = 0;
    TotalBlocks(op.dst_extents, &blocks);
    EXPECT_TRUE(blocks <= 64);
  }
  // Smaller than a block still makes progress, one block per op.
  options.region_bytes = 1;
  target = source;
  SetBlock(&target, 1, StampedBlock(1, 9));
  SetBlock(&target, 2, StampedBlock(2, 9));
  WriteFile(dir + "/target.img", target);
  ASSERT_OK(GeneratePayload(dir + "/source.img", dir + "/target.img", dir + "/payload", options,
                            nullptr, &r));
  EXPECT_EQ(r.operation_count, 2u);
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

// Applies a payload to `source` in memory, as the device would, giving the
// target image of `target_size` bytes (zero-padded to whole blocks).
Bytes ApplyInMemory(const Bytes& source_image, const Bytes& payload, uint64_t target_size) {
  Bytes source = source_image;
  source.resize((source.size() + kBlock - 1) / kBlock * kBlock, 0);
  const uint64_t target_blocks = (target_size + kBlock - 1) / kBlock;
  Bytes target(target_blocks * kBlock, 0);
  std::memcpy(target.data(), source.data(), std::min<size_t>(source.size(), target.size()));
  size_t at = 0;
  while (at < payload.size()) {
    Operation op;
    size_t consumed = 0;
    if (!DecodeOperation(payload.data() + at, payload.size() - at, &op, &consumed).ok()) {
      return Bytes();
    }
    const uint8_t* data = payload.data() + at + consumed;
    at += consumed + op.data_length;
    Bytes old_bytes, out;
    for (const Extent& e : op.src_extents) {
      old_bytes.insert(old_bytes.end(), source.begin() + e.start_block * kBlock,
                       source.begin() + (e.start_block + e.num_blocks) * kBlock);
    }
    uint64_t blocks = 0;
    TotalBlocks(op.dst_extents, &blocks);
    out.resize(blocks * kBlock);
    switch (op.type) {
      case OperationType::kReplace: std::memcpy(out.data(), data, out.size()); break;
      case OperationType::kReplaceBrotli: {
        size_t n = out.size();
        if (BrotliDecoderDecompress(op.data_length, data, &n, out.data()) !=
                BROTLI_DECODER_RESULT_SUCCESS ||
            n != out.size()) {
          return Bytes();
        }
        break;
      }
      case OperationType::kZero: break;
      case OperationType::kCopy: out = old_bytes; break;
      case OperationType::kDiff: {
        const DeltaLayout layout{kBlock, &op.src_extents, &op.dst_extents};
        if (!DecodeDiff(old_bytes.data(), old_bytes.size(), data, op.data_length, out.data(),
                        out.size(), &layout)
                 .ok()) {
          return Bytes();
        }
        break;
      }
    }
    size_t k = 0;
    for (const Extent& e : op.dst_extents) {
      std::memcpy(target.data() + e.start_block * kBlock, out.data() + k, e.num_blocks * kBlock);
      k += e.num_blocks * kBlock;
    }
  }
  return target;
}

// Payload bytes of a generation, for comparing runs.
Bytes ReadAll(const std::string& path) {
  Bytes out;
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return out;
  uint8_t buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) out.insert(out.end(), buf, buf + n);
  std::fclose(f);
  return out;
}

// A source and target with every kind of change in many small regions.
void MixedPair(Bytes* source, Bytes* target) {
  *source = StampedImage(3000);
  for (uint64_t b = 0; b < 3000; b += 7) SetBlock(source, b, TextBlock(static_cast<uint32_t>(b)));
  *target = *source;
  for (uint64_t b = 10; b < 3000; b += 13) {
    switch (b % 5) {
      case 0: SetBlock(target, b, Bytes(kBlock, 0)); break;
      case 1: SetBlock(target, b, StampedBlock((b * 31) % 3000, 1)); break;  // moved whole
      case 2: SetBlock(target, b, StampedBlock(b, 5)); break;               // fresh
      case 3: SetBlock(target, b, TextBlock(static_cast<uint32_t>(b + 1))); break;
      default: (*target)[b * kBlock + 100] ^= 0x5A; break;                   // edited
    }
  }
}

TEST(the_payload_is_the_same_for_any_thread_count_and_run) {
  Bytes source, target;
  MixedPair(&source, &target);
  for (bool whole : {true, false}) {
    Bytes first;
    GenerateResult first_result;
    for (unsigned threads : {1u, 4u, 3u, 1u}) {
      std::string dir = revpatch_test::TempDir();
      WriteFile(dir + "/source.img", source);
      WriteFile(dir + "/target.img", target);
      GenerateOptions options;
      options.chunk_size = kChunk;
      options.region_bytes = 16 * kBlock;  // many regions in flight
      options.threads = threads;
      if (!whole) options.whole_source_bytes = 0;
      GenerateResult r;
      ASSERT_OK(GeneratePayload(dir + "/source.img", dir + "/target.img", dir + "/payload",
                                options, nullptr, &r));
      EXPECT_EQ(r.whole_source, whole);
      EXPECT_EQ(r.threads, threads);
      Bytes payload = ReadAll(dir + "/payload");
      if (first.empty()) {
        first = payload;
        first_result = r;
        EXPECT_TRUE(r.operation_count > 8);
        continue;
      }
      EXPECT_TRUE(payload == first);
      EXPECT_TRUE(r.payload_digest == first_result.payload_digest);
      EXPECT_EQ(r.changed_blocks, first_result.changed_blocks);
    }
    // And it makes the target.
    EXPECT_TRUE(ApplyInMemory(source, first, target.size()) == target);
  }
}

TEST(a_small_memory_budget_streams_and_a_too_small_one_is_refused) {
  std::string dir = revpatch_test::TempDir();
  Bytes source, target;
  MixedPair(&source, &target);
  WriteFile(dir + "/source.img", source);
  WriteFile(dir + "/target.img", target);
  GenerateOptions options;
  options.chunk_size = kChunk;
  GenerateResult whole;
  ASSERT_OK(GeneratePayload(dir + "/source.img", dir + "/target.img", dir + "/payload", options,
                            nullptr, &whole));
  EXPECT_TRUE(whole.whole_source);
  // 12 MiB of source does not fit whole in 160 MiB beside a region.
  options.memory_budget = 160ull << 20;
  GenerateResult streamed;
  ASSERT_OK(GeneratePayload(dir + "/source.img", dir + "/target.img", dir + "/payload", options,
                            nullptr, &streamed));
  EXPECT_TRUE(!streamed.whole_source);
  EXPECT_TRUE(streamed.window_bytes >= (1u << 20));
  EXPECT_TRUE(streamed.planned_bytes > (16u << 20));
  EXPECT_TRUE(streamed.planned_bytes <= options.memory_budget);
  EXPECT_TRUE(ApplyInMemory(source, ReadAll(dir + "/payload"), target.size()) == target);
  options.memory_budget = 8ull << 20;
  GenerateResult refused;
  EXPECT_CODE(GeneratePayload(dir + "/source.img", dir + "/target.img", dir + "/p2", options,
                              nullptr, &refused),
              ErrorCode::kInvalidArgument);
  EXPECT_TRUE(!FileExists(dir + "/p2"));
  EXPECT_TRUE(!FileExists(dir + "/p2.tmp"));
  options.memory_budget = kDefaultMemoryBudget;
  options.threads = kMaxGeneratorThreads + 1;
  EXPECT_CODE(GeneratePayload(dir + "/source.img", dir + "/target.img", dir + "/p2", options,
                              nullptr, &refused),
              ErrorCode::kInvalidArgument);
}

TEST(holes_in_both_images_are_unchanged_and_growth_holes_are_zeros) {
  std::string dir = revpatch_test::TempDir();
  // Sparse files: 64 MiB, data at 1 MiB and 40 MiB; the target grows by a
  // hole of 1 MiB and a data block.
  const uint64_t size = 64ull << 20;
  auto make = [&](const std::string& path, bool changed) {
    int fd = open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) std::abort();
    Bytes a = StampedBlock(1, 1), b = StampedBlock(2, 1);
    if (changed) b[5] ^= 1;
    if (pwrite(fd, a.data(), kBlock, 1 << 20) != kBlock) std::abort();
    if (pwrite(fd, b.data(), kBlock, 40 << 20) != kBlock) std::abort();
    if (changed) {
      Bytes c = StampedBlock(3, 1);
      if (pwrite(fd, c.data(), kBlock, size + (1 << 20)) != kBlock) std::abort();
    } else if (ftruncate(fd, size) != 0) {
      std::abort();
    }
    close(fd);
  };
  make(dir + "/s", false);
  make(dir + "/t", true);
  for (bool whole : {true, false}) {
    GenerateOptions options;
    options.chunk_size = kChunk;
    if (!whole) options.whole_source_bytes = 0;
    GenerateResult r;
    ASSERT_OK(GeneratePayload(dir + "/s", dir + "/t", dir + "/p", options, nullptr, &r));
    // The edited block, 256 growth blocks read as zeros, the new block.
    EXPECT_EQ(r.changed_blocks, 1u + 256 + 1);
    Bytes source(size, 0), target(size + (1 << 20) + kBlock, 0);
    Bytes a = StampedBlock(1, 1), b = StampedBlock(2, 1), c = StampedBlock(3, 1);
    std::memcpy(source.data() + (1 << 20), a.data(), kBlock);
    std::memcpy(source.data() + (40 << 20), b.data(), kBlock);
    b[5] ^= 1;
    std::memcpy(target.data() + (1 << 20), a.data(), kBlock);
    std::memcpy(target.data() + (40 << 20), b.data(), kBlock);
    std::memcpy(target.data() + size + (1 << 20), c.data(), kBlock);
    EXPECT_TRUE(ApplyInMemory(source, ReadAll(dir + "/p"), target.size()) == target);
  }
}
