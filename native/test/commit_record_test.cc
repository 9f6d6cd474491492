#include "../engine/commit_record.h"

#include <string>

#include "../engine/file_io.h"
#include "storage_test_util.h"
#include "testing.h"

using revpatch::CommitRecordState;
using revpatch::ErrorCode;
using revpatch::kCommitSlotSize;
using revpatch::ReadCommitRecord;
using revpatch::WriteCommitRecord;
using revpatch_test::Bytes;

TEST(first_write_creates_the_record_at_generation_one) {
  const std::string dir = revpatch_test::TempDir();
  const std::string path = dir + "/commit";
  CommitRecordState st;
  EXPECT_CODE(ReadCommitRecord(path, &st), ErrorCode::kNotFound);
  uint64_t gen = 0;
  ASSERT_OK(WriteCommitRecord(path, 0, "{\"v\":1}", &gen));
  EXPECT_EQ(gen, 1u);
  ASSERT_OK(ReadCommitRecord(path, &st));
  EXPECT_EQ(st.generation, 1u);
  EXPECT_EQ(st.body, "{\"v\":1}");
  EXPECT_EQ(revpatch_test::FileSizeOf(path), 2u * kCommitSlotSize);
  EXPECT_EQ(revpatch_test::CountEntries(dir), 1u);  // no temporary left
  // Creating again is a lost update.
  EXPECT_CODE(WriteCommitRecord(path, 0, "x", &gen), ErrorCode::kInvalidArgument);
  revpatch_test::RemoveDir(dir);
}

TEST(writes_alternate_slots_and_never_touch_the_newer_one) {
  const std::string dir = revpatch_test::TempDir();
  const std::string path = dir + "/commit";
  uint64_t gen = 0;
  ASSERT_OK(WriteCommitRecord(path, 0, "one", &gen));
  Bytes before = revpatch_test::ReadBytes(path);
  for (uint64_t g = 1; g < 8; ++g) {
    const std::string body = "body-" + std::to_string(g + 1) + std::string(g * 100, 'x');
    ASSERT_OK(WriteCommitRecord(path, g, body, &gen));
    EXPECT_EQ(gen, g + 1);
    const Bytes after = revpatch_test::ReadBytes(path);
    // The slot of generation g (g % 2) is byte-for-byte unchanged.
    const size_t kept = (g % 2) * kCommitSlotSize;
    EXPECT_TRUE(std::equal(before.begin() + kept, before.begin() + kept + kCommitSlotSize,
                           after.begin() + kept));
    CommitRecordState st;
    ASSERT_OK(ReadCommitRecord(path, &st));
    EXPECT_EQ(st.generation, g + 1);
    EXPECT_EQ(st.body, body);
    before = after;
  }
  revpatch_test::RemoveDir(dir);
}

TEST(torn_or_garbage_newer_slot_falls_back_to_the_older) {
  const std::string dir = revpatch_test::TempDir();
  const std::string path = dir + "/commit";
  uint64_t gen = 0;
  ASSERT_OK(WriteCommitRecord(path, 0, "old", &gen));
  ASSERT_OK(WriteCommitRecord(path, 1, "new state", &gen));  // generation 2, slot 0
  const Bytes good = revpatch_test::ReadBytes(path);
  CommitRecordState st;
  // Torn: the tail of the newer slot's body is missing; garbage; zeroed.
  for (int variant = 0; variant < 4; ++variant) {
    Bytes bad = good;
    if (variant == 0) bad[64 + 4] ^= 1;                       // body byte
    if (variant == 1) bad[16] ^= 1;                           // generation
    if (variant == 2) std::fill(bad.begin(), bad.begin() + 64, 0x5a);  // header
    if (variant == 3) std::fill(bad.begin() + 40, bad.begin() + 64, 0);  // checksum
    ASSERT_TRUE(revpatch_test::WriteBytes(path, bad));
    ASSERT_OK(ReadCommitRecord(path, &st));
    EXPECT_EQ(st.generation, 1u);
    EXPECT_EQ(st.body, "old");
  }
  // The next write goes over the damaged slot and wins.
  ASSERT_OK(WriteCommitRecord(path, 1, "again", &gen));
  EXPECT_EQ(gen, 2u);
  ASSERT_OK(ReadCommitRecord(path, &st));
  EXPECT_EQ(st.body, "again");
  // Both slots damaged: corrupt, and a write refuses to guess.
  Bytes both = revpatch_test::ReadBytes(path);
  both[64] ^= 1;
  both[kCommitSlotSize + 64] ^= 1;
  ASSERT_TRUE(revpatch_test::WriteBytes(path, both));
  EXPECT_CODE(ReadCommitRecord(path, &st), ErrorCode::kCorrupt);
  EXPECT_CODE(WriteCommitRecord(path, 2, "x", &gen), ErrorCode::kCorrupt);
  // A short file holding only part of the second slot.
  ASSERT_TRUE(revpatch_test::WriteBytes(path, Bytes(good.begin(), good.begin() + kCommitSlotSize + 70)));
  ASSERT_OK(ReadCommitRecord(path, &st));
  EXPECT_EQ(st.generation, 2u);
  revpatch_test::RemoveDir(dir);
}

TEST(a_record_in_the_wrong_slot_is_not_trusted) {
  const std::string dir = revpatch_test::TempDir();
  const std::string path = dir + "/commit";
  uint64_t gen = 0;
  ASSERT_OK(WriteCommitRecord(path, 0, "a", &gen));
  ASSERT_OK(WriteCommitRecord(path, 1, "b", &gen));
  ASSERT_OK(WriteCommitRecord(path, 2, "c", &gen));  // generation 3 in slot 1
  Bytes bytes = revpatch_test::ReadBytes(path);
  // Copy slot 1 (generation 3) over slot 0: now slot 0 claims an odd
  // generation, which only slot 1 may hold.
  std::copy(bytes.begin() + kCommitSlotSize, bytes.end(), bytes.begin());
  ASSERT_TRUE(revpatch_test::WriteBytes(path, bytes));
  CommitRecordState st;
  ASSERT_OK(ReadCommitRecord(path, &st));
  EXPECT_EQ(st.generation, 3u);
  ASSERT_OK(WriteCommitRecord(path, 3, "d", &gen));
  ASSERT_OK(ReadCommitRecord(path, &st));
  EXPECT_EQ(st.body, "d");
  revpatch_test::RemoveDir(dir);
}

TEST(expected_generation_mismatch_is_refused_without_writing) {
  const std::string dir = revpatch_test::TempDir();
  const std::string path = dir + "/commit";
  uint64_t gen = 0;
  ASSERT_OK(WriteCommitRecord(path, 0, "a", &gen));
  ASSERT_OK(WriteCommitRecord(path, 1, "b", &gen));
  const Bytes before = revpatch_test::ReadBytes(path);
  EXPECT_CODE(WriteCommitRecord(path, 1, "stale", &gen), ErrorCode::kInvalidArgument);
  EXPECT_CODE(WriteCommitRecord(path, 3, "future", &gen), ErrorCode::kInvalidArgument);
  EXPECT_TRUE(revpatch_test::ReadBytes(path) == before);
  EXPECT_CODE(WriteCommitRecord(dir + "/missing", 4, "x", &gen), ErrorCode::kNotFound);
  revpatch_test::RemoveDir(dir);
}

TEST(oversize_body_is_refused_and_the_largest_fits) {
  const std::string dir = revpatch_test::TempDir();
  const std::string path = dir + "/commit";
  uint64_t gen = 0;
  EXPECT_CODE(WriteCommitRecord(path, 0, std::string(revpatch::kCommitMaxBody + 1, 'x'), &gen),
              ErrorCode::kTooLarge);
  EXPECT_TRUE(!revpatch::FileExists(path));
  ASSERT_OK(WriteCommitRecord(path, 0, "", &gen));
  const std::string largest(revpatch::kCommitMaxBody, 'y');
  ASSERT_OK(WriteCommitRecord(path, 1, largest, &gen));
  CommitRecordState st;
  ASSERT_OK(ReadCommitRecord(path, &st));
  EXPECT_TRUE(st.body == largest);
  EXPECT_CODE(WriteCommitRecord(path, 2, largest + "z", &gen), ErrorCode::kTooLarge);
  revpatch_test::RemoveDir(dir);
}

TEST(parse_slot_rejects_short_and_random_input) {
  CommitRecordState st;
  EXPECT_TRUE(!revpatch::ParseCommitSlot(nullptr, 0, &st));
  uint8_t small[10] = {};
  EXPECT_TRUE(!revpatch::ParseCommitSlot(small, sizeof(small), &st));
  revpatch_test::Rng rng(1);
  Bytes noise(4096);
  for (int round = 0; round < 100; ++round) {
    for (auto& b : noise) b = static_cast<uint8_t>(rng.Next());
    std::copy(std::begin("RVPCOMM1"), std::begin("RVPCOMM1") + 8, noise.begin());
    EXPECT_TRUE(!revpatch::ParseCommitSlot(noise.data(), rng.Below(noise.size()), &st));
  }
}
