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
    CheckpointLog log;
    ASSERT_OK(WriteCheckpoint(path, c, &log));
    EXPECT_EQ(log.end, revpatch_test::FileSizeOf(path));
    EXPECT_EQ(log.end, 176 + c.identity.layer_name.size() + 48 * entries + 32);
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

TEST(a_torn_or_altered_base_record_is_corrupt_and_never_crashes) {
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

namespace {

// `base` with the entries of `progress` added, as ReadCheckpoint returns it.
Checkpoint Applied(Checkpoint base, const CheckpointProgress& progress) {
  base.next_operation = progress.next_operation;
  base.payload = progress.payload;
  base.layer.data_blocks = progress.data_blocks;
  base.layer.entries.insert(base.layer.entries.end(), progress.new_entries.begin(),
                            progress.new_entries.end());
  return base;
}

// Progress records taking Sample(n)'s state on, `added` entries each.
std::vector<CheckpointProgress> Progress(const Checkpoint& from, size_t records, size_t added) {
  std::vector<CheckpointProgress> out;
  uint64_t next = from.next_operation, position = from.payload.position;
  uint64_t data_blocks = from.layer.data_blocks, block = 5000;
  for (size_t r = 0; r < records; ++r) {
    CheckpointProgress p;
    p.next_operation = next += 3;
    p.payload.position = position += 70000;
    for (size_t i = 0; i < added; ++i) {
      LayerIndexEntry e;
      e.block = block++;
      e.offset = 4096 * (1 + data_blocks++);
      e.leaf = Sha256::Hash(&block, sizeof(block));
      p.new_entries.push_back(e);
    }
    p.data_blocks = data_blocks;
    out.push_back(p);
  }
  return out;
}

}  // namespace

TEST(progress_records_append_to_the_base_and_read_back_merged) {
  const std::string dir = revpatch_test::TempDir();
  const std::string path = dir + "/apply.checkpoint";
  const Checkpoint base = Sample(1030);
  CheckpointLog log;
  ASSERT_OK(WriteCheckpoint(path, base, &log));
  Checkpoint expected = base, out;
  for (const CheckpointProgress& p : Progress(base, 4, 1500)) {
    const uint64_t before = log.end;
    ASSERT_OK(AppendCheckpoint(path, p, &log));
    EXPECT_EQ(log.end, before + 32 + 48 * p.new_entries.size() + 32);
    EXPECT_EQ(log.end, revpatch_test::FileSizeOf(path));
    expected = Applied(expected, p);
    ASSERT_OK(ReadCheckpoint(path, 1030 + 4 * 1500, &out));
    EXPECT_TRUE(SameCheckpoint(expected, out));
  }
  // A record with no new entries still moves the position on.
  CheckpointProgress empty = Progress(expected, 1, 0)[0];
  ASSERT_OK(AppendCheckpoint(path, empty, &log));
  ASSERT_OK(ReadCheckpoint(path, 1030 + 4 * 1500, &out));
  EXPECT_TRUE(SameCheckpoint(Applied(expected, empty), out));
  // More entries than the target has blocks, counted over every record.
  EXPECT_CODE(ReadCheckpoint(path, 1030 + 4 * 1500 - 1, &out), ErrorCode::kCorrupt);
  // A new base replaces the records with it.
  ASSERT_OK(WriteCheckpoint(path, base, &log));
  ASSERT_OK(ReadCheckpoint(path, 1030, &out));
  EXPECT_TRUE(SameCheckpoint(base, out));
}

TEST(a_torn_or_altered_progress_record_leaves_the_state_before_it) {
  const std::string dir = revpatch_test::TempDir();
  const std::string path = dir + "/apply.checkpoint";
  const Checkpoint base = Sample(10);
  CheckpointLog log;
  ASSERT_OK(WriteCheckpoint(path, base, &log));
  const std::vector<CheckpointProgress> records = Progress(base, 3, 4);
  std::vector<uint64_t> ends{log.end};
  std::vector<Checkpoint> states{base};
  for (const CheckpointProgress& p : records) {
    ASSERT_OK(AppendCheckpoint(path, p, &log));
    ends.push_back(log.end);
    states.push_back(Applied(states.back(), p));
  }
  const Bytes good = revpatch_test::ReadBytes(path);
  Checkpoint out;
  // Cut anywhere after the base: the last whole record's state.
  for (size_t cut = ends[0]; cut <= good.size(); ++cut) {
    ASSERT_TRUE(revpatch_test::WriteBytes(path, Bytes(good.begin(), good.begin() + cut)));
    ASSERT_OK(ReadCheckpoint(path, 1000, &out));
    size_t whole = 0;
    while (whole + 1 < ends.size() && ends[whole + 1] <= cut) ++whole;
    EXPECT_TRUE(SameCheckpoint(states[whole], out));
  }
  // A changed byte in record r: the state before r, whatever follows it.
  for (size_t at = ends[0]; at < good.size(); ++at) {
    Bytes b = good;
    b[at] ^= 0x20;
    ASSERT_TRUE(revpatch_test::WriteBytes(path, b));
    size_t r = 0;
    while (ends[r + 1] <= at) ++r;
    // (In the entry count, a count past the end reads as torn and one that
    // fits fails the checksum: either way the record is not taken.)
    ASSERT_OK(ReadCheckpoint(path, 1000, &out));
    EXPECT_TRUE(SameCheckpoint(states[r], out));
  }
  // Garbage after the last record is a torn append: ignored.
  Bytes longer = good;
  longer.insert(longer.end(), 100, 0xab);
  ASSERT_TRUE(revpatch_test::WriteBytes(path, longer));
  ASSERT_OK(ReadCheckpoint(path, 1000, &out));
  EXPECT_TRUE(SameCheckpoint(states.back(), out));
  // A record appended after a torn one does not chain to the good state.
  ASSERT_TRUE(revpatch_test::WriteBytes(path, Bytes(good.begin(), good.begin() + ends[1] + 7)));
  CheckpointLog after_tear{ends[1] + 7, log.last_checksum};
  ASSERT_OK(AppendCheckpoint(path, records[2], &after_tear));
  ASSERT_OK(ReadCheckpoint(path, 1000, &out));
  EXPECT_TRUE(SameCheckpoint(states[1], out));
  // Counts near the 64-bit limit in a record are refused before any
  // allocation.
  for (uint64_t count : {~uint64_t{0}, ~uint64_t{0} / 48, uint64_t{1} << 40}) {
    Bytes b = good;
    for (int i = 0; i < 8; ++i) b[ends[1] + 24 + i] = static_cast<uint8_t>(count >> (8 * i));
    ASSERT_TRUE(revpatch_test::WriteBytes(path, b));
    ASSERT_OK(ReadCheckpoint(path, ~uint64_t{0}, &out));
    EXPECT_TRUE(SameCheckpoint(states[1], out));
  }
}
