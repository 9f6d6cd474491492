// The operation stream: read ahead on a second thread, it hands over
// exactly what the inline reading does (operations, data, reader positions,
// errors at the same operation), so a parallel apply writes the same layer
// as a serial one; and it stops cleanly when the apply stops early.
#include "../engine/operation_stream.h"

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "../engine/generator/generator.h"
#include "../engine/merkle.h"
#include "../engine/sha256.h"
#include "testing.h"

using namespace revpatch;

namespace {

using Bytes = std::vector<uint8_t>;
constexpr uint32_t kBlock = 4096;
constexpr uint32_t kChunk = 64 * 1024;

void WriteFile(const std::string& path, const Bytes& data) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();
  if (!data.empty() && std::fwrite(data.data(), 1, data.size(), f) != data.size()) std::abort();
  std::fclose(f);
}

Bytes RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  Bytes b(n);
  for (auto& x : b) x = static_cast<uint8_t>(rng());
  return b;
}

// A payload of many small ops of every kind, from the generator.
struct Payload {
  std::string dir = revpatch_test::TempDir();
  std::string path = dir + "/payload";
  GenerateResult gen;
  uint64_t source_blocks = 0;

  Payload() {
    Bytes source = RandomBytes(300 * kBlock, 1);
    Bytes target = source;
    for (size_t b = 0; b < 300; b += 7) target[b * kBlock + 9] ^= 0x21;            // DIFF
    for (size_t b = 3; b < 300; b += 11) std::memset(&target[b * kBlock], 0, kBlock);  // ZERO
    Bytes fresh = RandomBytes(40 * kBlock, 2);
    std::memcpy(&target[200 * kBlock], fresh.data(), fresh.size());                 // REPLACE
    WriteFile(dir + "/s", source);
    WriteFile(dir + "/t", target);
    GenerateOptions options;
    options.chunk_size = kChunk;
    options.region_bytes = 4 * kBlock;
    if (!GeneratePayload(dir + "/s", dir + "/t", path, options, nullptr, &gen).ok()) std::abort();
    source_blocks = 300;
  }
};

bool SamePosition(const PayloadPosition& a, const PayloadPosition& b) {
  return a.position == b.position;
}

bool SameOperation(const ReadOperation& a, const ReadOperation& b) {
  if (a.status.code() != b.status.code() || a.op.type != b.op.type ||
      a.op.data_length != b.op.data_length || a.op.src_hash != b.op.src_hash ||
      a.op.dst_hash != b.op.dst_hash || a.data != b.data ||
      a.op.src_extents.size() != b.op.src_extents.size() ||
      a.op.dst_extents.size() != b.op.dst_extents.size() || !SamePosition(a.after, b.after)) {
    return false;
  }
  for (size_t i = 0; i < a.op.dst_extents.size(); ++i) {
    if (a.op.dst_extents[i].start_block != b.op.dst_extents[i].start_block ||
        a.op.dst_extents[i].num_blocks != b.op.dst_extents[i].num_blocks) {
      return false;
    }
  }
  for (size_t i = 0; i < a.op.src_extents.size(); ++i) {
    if (a.op.src_extents[i].start_block != b.op.src_extents[i].start_block ||
        a.op.src_extents[i].num_blocks != b.op.src_extents[i].num_blocks) {
      return false;
    }
  }
  return true;
}

// Every item of the stream, up to and including the first error or the
// final Finish() status.
std::vector<ReadOperation> ReadAll(const Payload& p, const std::vector<Digest>& chunks,
                                   bool ahead, bool slow_consumer = false) {
  int fd = open(p.path.c_str(), O_RDONLY);
  std::unique_ptr<PayloadReader> reader;
  if (!PayloadReader::Open(fd, 0, p.gen.payload_size, kChunk, chunks, &reader)
           .ok()) {
    std::abort();
  }
  TargetCoverage coverage;
  std::vector<ReadOperation> items;
  {
    OperationStream stream(*reader, coverage, p.gen.operation_count, kBlock, p.source_blocks,
                           p.source_blocks, 0);
    if (ahead) {
      stream.StartThread();
      if (!stream.reading_ahead()) std::abort();
    }
    for (uint64_t i = 0; i <= p.gen.operation_count; ++i) {
      items.emplace_back();
      if (slow_consumer) std::this_thread::sleep_for(std::chrono::milliseconds(5));
      stream.Next(&items.back());
      if (!items.back().status.ok()) break;
    }
  }
  close(fd);
  return items;
}

}  // namespace

TEST(reading_ahead_hands_over_the_same_operations_data_and_positions) {
  Payload p;
  ASSERT_TRUE(p.gen.operation_count > 20);
  std::vector<ReadOperation> inline_items = ReadAll(p, p.gen.chunk_digests, false);
  std::vector<ReadOperation> ahead_items = ReadAll(p, p.gen.chunk_digests, true);
  ASSERT_EQ(inline_items.size(), p.gen.operation_count + 1);
  ASSERT_EQ(ahead_items.size(), inline_items.size());
  for (size_t i = 0; i < inline_items.size(); ++i) {
    EXPECT_TRUE(SameOperation(inline_items[i], ahead_items[i]));
  }
  EXPECT_OK(ahead_items.back().status);  // Finish(): consumed, digest right
  EXPECT_EQ(ahead_items.back().after.position, p.gen.payload_size);
}

// While the consumer is busy, the reading thread leaf-hashes the raw
// REPLACE in hand: what it hands over are the leaves of exactly the data's
// first blocks, and nothing else changes.
TEST(a_reader_kept_waiting_hands_over_the_leaves_of_a_replace) {
  Payload p;
  std::vector<ReadOperation> inline_items = ReadAll(p, p.gen.chunk_digests, false);
  std::vector<ReadOperation> ahead_items = ReadAll(p, p.gen.chunk_digests, true, true);
  ASSERT_EQ(ahead_items.size(), inline_items.size());
  size_t replaces = 0, fully_hashed = 0;
  for (size_t i = 0; i < ahead_items.size(); ++i) {
    const ReadOperation& item = ahead_items[i];
    EXPECT_TRUE(SameOperation(inline_items[i], item));
    EXPECT_TRUE(inline_items[i].leaves.empty());
    if (item.op.type != OperationType::kReplace) {
      EXPECT_TRUE(item.leaves.empty());
      continue;
    }
    ++replaces;
    const size_t blocks = item.data.size() / kBlock;
    ASSERT_TRUE(item.leaves.size() <= blocks);
    for (size_t b = 0; b < item.leaves.size(); ++b) {
      EXPECT_TRUE(item.leaves[b] == LeafHash(&item.data[b * kBlock], kBlock));
    }
    if (item.leaves.size() == blocks) ++fully_hashed;
  }
  EXPECT_TRUE(replaces >= 5);
  // The first op is handed over as soon as it is read; the rest wait 5 ms
  // for the consumer, ample time to hash a few blocks.
  EXPECT_TRUE(fully_hashed + 1 >= replaces);
}

TEST(a_bad_chunk_fails_at_the_same_operation_either_way) {
  Payload p;
  for (size_t bad : {size_t{0}, p.gen.chunk_digests.size() / 2, p.gen.chunk_digests.size() - 1}) {
    std::vector<Digest> chunks = p.gen.chunk_digests;
    chunks[bad][0] ^= 1;
    std::vector<ReadOperation> inline_items = ReadAll(p, chunks, false);
    std::vector<ReadOperation> ahead_items = ReadAll(p, chunks, true);
    ASSERT_EQ(ahead_items.size(), inline_items.size());
    EXPECT_TRUE(inline_items.size() <= p.gen.operation_count);
    EXPECT_EQ(inline_items.back().status.code(), ErrorCode::kHashMismatch);
    EXPECT_EQ(ahead_items.back().status.code(), ErrorCode::kHashMismatch);
  }
}

TEST(an_apply_that_stops_early_joins_the_reader_without_waiting_for_the_rest) {
  Payload p;
  int fd = open(p.path.c_str(), O_RDONLY);
  std::unique_ptr<PayloadReader> reader;
  ASSERT_OK(PayloadReader::Open(fd, 0, p.gen.payload_size, kChunk, p.gen.chunk_digests, &reader));
  TargetCoverage coverage;
  {
    OperationStream stream(*reader, coverage, p.gen.operation_count, kBlock, p.source_blocks,
                           p.source_blocks, 0);
    stream.StartThread();
    ReadOperation item;
    stream.Next(&item);
    EXPECT_OK(item.status);
    stream.Stop();
    stream.Stop();  // twice is fine
  }  // and the destructor after Stop()
  // The reader is the caller's again, one op (plus at most one ahead) in.
  EXPECT_TRUE(reader->position() < p.gen.payload_size);
  close(fd);
}

TEST(operations_that_break_the_views_are_refused_in_stream_order) {
  Payload p;
  int fd = open(p.path.c_str(), O_RDONLY);
  std::unique_ptr<PayloadReader> reader;
  ASSERT_OK(PayloadReader::Open(fd, 0, p.gen.payload_size, kChunk, p.gen.chunk_digests, &reader));
  TargetCoverage coverage;
  // A target view of 100 blocks: the first op writing past it is refused.
  OperationStream stream(*reader, coverage, p.gen.operation_count, kBlock, p.source_blocks, 100,
                         0);
  stream.StartThread();
  ReadOperation item;
  bool refused = false;
  for (uint64_t i = 0; i <= p.gen.operation_count; ++i) {
    stream.Next(&item);
    if (!item.status.ok()) {
      EXPECT_EQ(item.status.code(), ErrorCode::kBadExtent);
      refused = true;
      break;
    }
    for (const Extent& e : item.op.dst_extents) EXPECT_TRUE(e.start_block + e.num_blocks <= 100);
  }
  EXPECT_TRUE(refused);
  stream.Stop();
  close(fd);
}
