// The platform paths of file_io.cc: data-only sync, space reservation and
// access hints behave the same to a caller on Linux and macOS, whatever the
// filesystem supports.
#include <sys/stat.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "../engine/fault_injection.h"
#include "../engine/file_io.h"
#include "testing.h"

using revpatch::ErrorCode;
using revpatch::File;

namespace {

std::vector<uint8_t> Pattern(size_t n, uint8_t salt) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(i * 131 + salt);
  return v;
}

uint64_t AllocatedBytes(const File& f) {
  struct stat st;
  if (::fstat(f.fd(), &st) != 0) return 0;
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

}  // namespace

TEST(data_sync_keeps_an_overwrite_and_the_size) {
  const std::string path = revpatch_test::TempDir() + "/f";
  File f;
  ASSERT_OK(File::CreateNew(path, &f));
  const std::vector<uint8_t> first = Pattern(8192, 1), second = Pattern(4096, 2);
  ASSERT_OK(f.WriteAt(0, first.data(), first.size()));
  ASSERT_OK(f.FullSync());
  ASSERT_OK(f.WriteAt(4096, second.data(), second.size()));
  ASSERT_OK(f.DataSync());
  uint64_t size = 0;
  ASSERT_OK(f.Size(&size));
  EXPECT_EQ(size, 8192u);
  std::vector<uint8_t> got(4096);
  ASSERT_OK(f.ReadAt(4096, got.data(), got.size()));
  EXPECT_TRUE(got == second);
  ASSERT_OK(f.ReadAt(0, got.data(), got.size()));
  EXPECT_TRUE(std::equal(got.begin(), got.end(), first.begin()));
}

TEST(data_sync_on_a_closed_file_is_invalid_argument) {
  File f;
  EXPECT_CODE(f.DataSync(), ErrorCode::kInvalidArgument);
}

TEST(failed_data_sync_poisons_the_file_like_a_full_sync) {
  const std::string path = revpatch_test::TempDir() + "/f";
  File f;
  ASSERT_OK(File::CreateNew(path, &f));
  const std::vector<uint8_t> data = Pattern(512, 3);
  ASSERT_OK(f.WriteAt(0, data.data(), data.size()));
  revpatch::FaultPlan plan;
  plan.mode = revpatch::FaultMode::kEio;
  plan.fail_at = 1;  // the sync is the next counted call
  ASSERT_OK(revpatch::SetFaultPlan(plan));
  const revpatch::Status s = f.DataSync();
  const uint64_t calls = revpatch::FaultCallCount();
  revpatch::ClearFaultPlan();
  EXPECT_CODE(s, ErrorCode::kIo);
  EXPECT_EQ(calls, 1u);
  EXPECT_TRUE(f.poisoned());
  EXPECT_CODE(f.WriteAt(0, data.data(), data.size()), ErrorCode::kPoisoned);
  EXPECT_CODE(f.DataSync(), ErrorCode::kPoisoned);
  EXPECT_CODE(f.Reserve(0, 4096), ErrorCode::kPoisoned);
}

TEST(reserve_allocates_without_changing_the_size) {
  const std::string path = revpatch_test::TempDir() + "/f";
  File f;
  ASSERT_OK(File::CreateNew(path, &f));
  const uint64_t want = 4u << 20;
  const revpatch::Status s = f.Reserve(0, want);
  uint64_t size = 1;
  ASSERT_OK(f.Size(&size));
  EXPECT_EQ(size, 0u);
  uint64_t free_bytes = 0;
  ASSERT_OK(revpatch::FreeSpace(revpatch::DirName(path), &free_bytes));
  if (s.ok()) {
    EXPECT_TRUE(AllocatedBytes(f) >= want);
  } else if (s.code() != ErrorCode::kNoSpace || free_bytes > 2 * want) {
    EXPECT_CODE(s, ErrorCode::kUnsupported);
  }
#if defined(__linux__)
  std::printf("  reserve on this filesystem: %s\n", s.ok() ? "fallocate" : "unsupported");
#endif
  // Writes into the reserved range work and set the size as usual.
  const std::vector<uint8_t> data = Pattern(65536, 4);
  ASSERT_OK(f.WriteAt(1 << 20, data.data(), data.size()));
  ASSERT_OK(f.Size(&size));
  EXPECT_EQ(size, (1u << 20) + 65536u);
  std::vector<uint8_t> got(data.size());
  ASSERT_OK(f.ReadAt(1 << 20, got.data(), got.size()));
  EXPECT_TRUE(got == data);
}

TEST(release_reserved_gives_back_the_space_past_the_end_only) {
  const std::string path = revpatch_test::TempDir() + "/f";
  File f;
  ASSERT_OK(File::CreateNew(path, &f));
  const std::vector<uint8_t> data = Pattern(65536, 6);
  ASSERT_OK(f.WriteAt(0, data.data(), data.size()));
  const revpatch::Status reserved = f.Reserve(65536, 8u << 20);
  if (reserved.ok()) EXPECT_TRUE(AllocatedBytes(f) >= (8u << 20));
  EXPECT_CODE(f.ReleaseReserved(4096, 8u << 20), ErrorCode::kInvalidArgument);  // not the size
  EXPECT_OK(f.ReleaseReserved(65536, 65536));  // nothing past the end
  const revpatch::Status released = f.ReleaseReserved(65536, (8u << 20) + 65536);
  if (reserved.ok() && released.ok()) EXPECT_TRUE(AllocatedBytes(f) < (1u << 20));
  uint64_t size = 0;
  ASSERT_OK(f.Size(&size));
  EXPECT_EQ(size, 65536u);
  std::vector<uint8_t> got(data.size());
  ASSERT_OK(f.ReadAt(0, got.data(), got.size()));
  EXPECT_TRUE(got == data);
}

TEST(reserve_refuses_ranges_past_the_largest_offset) {
  const std::string path = revpatch_test::TempDir() + "/f";
  File f;
  ASSERT_OK(File::CreateNew(path, &f));
  const uint64_t max = static_cast<uint64_t>(std::numeric_limits<off_t>::max());
  EXPECT_CODE(f.Reserve(max, 2), ErrorCode::kTooLarge);
  EXPECT_CODE(f.Reserve(~uint64_t{0}, 1), ErrorCode::kTooLarge);
  EXPECT_OK(f.Reserve(4096, 0));  // nothing to do
  File closed;
  EXPECT_CODE(closed.Reserve(0, 4096), ErrorCode::kInvalidArgument);
}

TEST(access_hints_never_change_what_is_read) {
  const std::string path = revpatch_test::TempDir() + "/f";
  File f;
  ASSERT_OK(File::CreateNew(path, &f));
  const std::vector<uint8_t> data = Pattern(1 << 20, 6);
  ASSERT_OK(f.WriteAt(0, data.data(), data.size()));
  f.AdviseSequential(0, data.size());
  f.StartWriteback(0, data.size() / 2);
  f.StartWriteback(0, 0);       // nothing to start
  f.DropCache(0, data.size());  // dirty pages: must not be lost
  ASSERT_OK(f.FullSync());
  f.StartWriteback(~uint64_t{0}, ~uint64_t{0});  // out of range: ignored
  f.DropCache(0, 0);            // 0 = to the end of the file
  f.AdviseSequential(~uint64_t{0}, ~uint64_t{0});  // out of range: ignored
  std::vector<uint8_t> got(data.size());
  ASSERT_OK(f.ReadAt(0, got.data(), got.size()));
  EXPECT_TRUE(got == data);
  File closed;
  closed.AdviseSequential(0, 1);
  closed.DropCache(0, 1);
  closed.StartWriteback(0, 1);
}

TEST(a_duplicate_descriptor_syncs_the_same_file) {
  File f;
  ASSERT_OK(File::CreateNew(revpatch_test::TempDir() + "/f", &f));
  const std::vector<uint8_t> data = Pattern(4096, 9);
  ASSERT_OK(f.WriteAt(0, data.data(), data.size()));
  File dup;
  ASSERT_OK(f.Duplicate(&dup));
  EXPECT_TRUE(dup.valid() && dup.fd() != f.fd());
  ASSERT_OK(dup.FullSync());
  std::vector<uint8_t> got(data.size());
  ASSERT_OK(dup.ReadAt(0, got.data(), got.size()));
  EXPECT_TRUE(got == data);
  ASSERT_OK(dup.Close());
  ASSERT_OK(f.ReadAt(0, got.data(), got.size()));  // the original stays open
  File closed, out;
  EXPECT_CODE(closed.Duplicate(&out), ErrorCode::kInvalidArgument);
}
