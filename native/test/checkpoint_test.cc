// The pieces of an apply checkpoint on their own: a payload reader restored
// at any position, and the checkpoint file's round trip and refusals. Resuming whole applies is in
// apply_test.
#include "../engine/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "../engine/file_io.h"
#include "../engine/payload_reader.h"
#include "../engine/sha256.h"
#include "storage_test_util.h"
#include "testing.h"

using namespace revpatch;
using revpatch_test::Bytes;

namespace {

constexpr uint32_t kChunk = 64 * 1024;

Bytes Noise(size_t size, uint64_t seed) {
  revpatch_test::Rng rng(seed);
  Bytes b(size);
  for (auto& x : b) x = static_cast<uint8_t>(rng.Next() >> 56);
  return b;
}

Checkpoint Sample(size_t entries) {
  Checkpoint c;
  c.identity.payload_digest = Sha256::Hash("payload", 7);
  c.identity.source_digest = Sha256::Hash("source", 6);
  c.identity.target_digest = Sha256::Hash("target", 6);
  c.identity.payload_size = 5 * kChunk + 17;
  c.identity.operation_count = 40;
  c.identity.target_size = 1000 * 4096 + 5;
  c.identity.chunk_size = kChunk;
  c.identity.block_size = 4096;
  c.identity.layer_name = "patch-1.layer";
  c.next_operation = 12;
  c.payload.position = 2 * kChunk + 5000;
  for (size_t i = 0; i < entries; ++i) {
    LayerIndexEntry e;
    e.block = 3 * i + 1;
    e.offset = i % 3 == 0 ? kLayerZeroOffset : 4096 * (1 + c.layer.data_blocks++);
    e.leaf = Sha256::Hash(&i, sizeof(i));
    c.layer.entries.push_back(e);
  }
  return c;
}

bool SameCheckpoint(const Checkpoint& a, const Checkpoint& b) {
  if (a.identity != b.identity || a.next_operation != b.next_operation ||
      a.payload.position != b.payload.position ||
      a.layer.data_blocks != b.layer.data_blocks ||
      a.layer.entries.size() != b.layer.entries.size()) {
    return false;
  }
  for (size_t i = 0; i < a.layer.entries.size(); ++i) {
    const LayerIndexEntry& x = a.layer.entries[i];
    const LayerIndexEntry& y = b.layer.entries[i];
    if (x.block != y.block || x.offset != y.offset || x.leaf != y.leaf) return false;
  }
  return true;
}

}  // namespace

TEST(a_payload_reader_restored_at_any_position_reads_and_finishes_the_same) {
  const std::string dir = revpatch_test::TempDir();
  const Bytes payload = Noise(3 * kChunk + 700, 2);
  Bytes file(33, 0);
  file.insert(file.end(), payload.begin(), payload.end());
  ASSERT_TRUE(revpatch_test::WriteBytes(dir + "/p", file));
  std::vector<Digest> chunks;
  for (size_t off = 0; off < payload.size(); off += kChunk) {
    chunks.push_back(Sha256::Hash(payload.data() + off,
                                  std::min<size_t>(kChunk, payload.size() - off)));
  }
  int fd = open((dir + "/p").c_str(), O_RDONLY);
  ASSERT_TRUE(fd >= 0);
  for (uint64_t at : {uint64_t{0}, uint64_t{1}, uint64_t{kChunk - 1}, uint64_t{kChunk},
                      uint64_t{kChunk + 1}, uint64_t{2 * kChunk + 100}, uint64_t{3 * kChunk},
                      uint64_t{3 * kChunk + 699}, uint64_t{payload.size()}}) {
    std::unique_ptr<PayloadReader> reader;
    ASSERT_OK(PayloadReader::Open(fd, 33, payload.size(), kChunk, chunks, &reader));
    ASSERT_OK(reader->Skip(at));
    const PayloadPosition saved = reader->SavePosition();
    EXPECT_EQ(saved.position, at);

    std::unique_ptr<PayloadReader> resumed;
    ASSERT_OK(PayloadReader::Open(fd, 33, payload.size(), kChunk, chunks, &resumed));
    ASSERT_OK(resumed->RestorePosition(saved));
    EXPECT_EQ(resumed->position(), at);
    Bytes rest(payload.size() - at);
    ASSERT_OK(resumed->Read(rest.data(), rest.size()));
    EXPECT_TRUE(rest.empty() || std::memcmp(rest.data(), payload.data() + at, rest.size()) == 0);
    EXPECT_OK(resumed->Finish());

    // The chunk it resumes in is checked again.
    if (saved.position % kChunk != 0) {
      std::vector<Digest> bad = chunks;
      bad[saved.position / kChunk][0] ^= 1;
      ASSERT_OK(PayloadReader::Open(fd, 33, payload.size(), kChunk, bad, &resumed));
      EXPECT_CODE(resumed->RestorePosition(saved), ErrorCode::kHashMismatch);
    }
  }
  // Positions that are not this payload's.
  std::unique_ptr<PayloadReader> reader;
  ASSERT_OK(PayloadReader::Open(fd, 33, payload.size(), kChunk, chunks, &reader));
  ASSERT_OK(reader->Skip(kChunk + 10));
  const PayloadPosition good = reader->SavePosition();
  auto refused = [&](PayloadPosition p) {
    std::unique_ptr<PayloadReader> r;
    if (!PayloadReader::Open(fd, 33, payload.size(), kChunk, chunks, &r).ok()) return false;
    return r->RestorePosition(p).code() == ErrorCode::kCorrupt;
  };
  PayloadPosition p = good;
  p.position = payload.size() + 1;
  EXPECT_TRUE(refused(p));
  // Only a reader that has read nothing can be restored.
  EXPECT_CODE(reader->RestorePosition(good), ErrorCode::kInvalidArgument);
  close(fd);
}

TEST(a_checkpoint_reads_back_as_written_and_replaces_the_previous_one) {
  const std::string dir = revpatch_test::TempDir();
  const std::string path = dir + "/apply.checkpoint";
  Checkpoint out;
  EXPECT_CODE(ReadCheckpoint(path, 1000, &out), ErrorCode::kNotFound);
  for (size_t entries : {size_t{0}, size_t{1}, size_t{1024}, size_t{1025}, size_t{30000}}) {
    const Checkpoint c = Sample(entries);
    uint64_t bytes = 0;
    ASSERT_OK(WriteCheckpoint(path, c, &bytes));
    EXPECT_EQ(bytes, revpatch_test::FileSizeOf(path));
    EXPECT_EQ(bytes, 176 + c.identity.layer_name.size() + 48 * entries + 32);
    ASSERT_OK(ReadCheckpoint(path, 30000, &out));
    EXPECT_TRUE(SameCheckpoint(c, out));
  }
  EXPECT_CODE(ReadCheckpoint(path, 29999, &out), ErrorCode::kCorrupt);
  EXPECT_EQ(revpatch_test::CountEntries(dir), 1u);  // no temporary left
  // A stale temporary from a crash mid-write is overwritten, then removed.
  ASSERT_TRUE(revpatch_test::WriteBytes(path + ".tmp", Bytes(5000, 1)));
  ASSERT_OK(WriteCheckpoint(path, Sample(3), nullptr));
  EXPECT_TRUE(!FileExists(path + ".tmp"));
  ASSERT_TRUE(revpatch_test::WriteBytes(path + ".tmp", Bytes(5000, 1)));
  RemoveCheckpoint(path);
  EXPECT_EQ(revpatch_test::CountEntries(dir), 0u);
  Checkpoint long_name = Sample(1);
  long_name.identity.layer_name.assign(kMaxCheckpointLayerName + 1, 'x');
  EXPECT_CODE(WriteCheckpoint(path, long_name, nullptr), ErrorCode::kInvalidArgument);
}

TEST(a_torn_or_altered_checkpoint_is_corrupt_and_never_crashes) {
  const std::string dir = revpatch_test::TempDir();
  const std::string path = dir + "/apply.checkpoint";
  ASSERT_OK(WriteCheckpoint(path, Sample(20), nullptr));
  const Bytes good = revpatch_test::ReadBytes(path);
  Checkpoint out;
  for (size_t cut = 0; cut < good.size(); ++cut) {
    ASSERT_TRUE(revpatch_test::WriteBytes(path, Bytes(good.begin(), good.begin() + cut)));
    EXPECT_CODE(ReadCheckpoint(path, 1000, &out), ErrorCode::kCorrupt);
  }
  for (size_t at = 0; at < good.size(); ++at) {
    Bytes b = good;
    b[at] ^= 0x08;
    ASSERT_TRUE(revpatch_test::WriteBytes(path, b));
    EXPECT_CODE(ReadCheckpoint(path, 1000, &out), ErrorCode::kCorrupt);
  }
  Bytes longer = good;
  longer.push_back(0);
  ASSERT_TRUE(revpatch_test::WriteBytes(path, longer));
  EXPECT_CODE(ReadCheckpoint(path, 1000, &out), ErrorCode::kCorrupt);
  // Counts near the 64-bit limit are refused by the size check, before any
  // allocation (ASan would report an allocation this large).
  for (uint64_t count : {~uint64_t{0}, ~uint64_t{0} / 48, uint64_t{1} << 40}) {
    Bytes b = good;
    for (int i = 0; i < 8; ++i) b[272 + i] = static_cast<uint8_t>(count >> (8 * i));
    ASSERT_TRUE(revpatch_test::WriteBytes(path, b));
    EXPECT_CODE(ReadCheckpoint(path, ~uint64_t{0}, &out), ErrorCode::kCorrupt);
  }
  ASSERT_TRUE(revpatch_test::WriteBytes(path, good));
  EXPECT_OK(ReadCheckpoint(path, 1000, &out));
}
