// The fault injector and power-loss simulator, and the engine's transitions
// under them: the commit record, a layer's write and seal, and export each
// run with every I/O call N failing under every mode. After each run the
// state must be exactly the old or exactly the new one, an error must carry
// the mode's code, and the next operation without a plan must succeed.
#include "../engine/fault_injection.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "../engine/commit_record.h"
#include "../engine/export.h"
#include "../engine/file_io.h"
#include "../engine/layer_file.h"
#include "../engine/view.h"
#include "storage_test_util.h"
#include "testing.h"

using revpatch::ClearFaultPlan;
using revpatch::CommitRecordState;
using revpatch::Digest;
using revpatch::ErrorCode;
using revpatch::FaultCallCount;
using revpatch::FaultMode;
using revpatch::FaultPlan;
using revpatch::FaultTriggered;
using revpatch::File;
using revpatch::LayerReader;
using revpatch::LayerWriter;
using revpatch::RecoverFromPowerLoss;
using revpatch::SetFaultPlan;
using revpatch::Status;
using revpatch::View;
using revpatch_test::Bytes;

namespace {

constexpr uint32_t kBs = 4096;

const FaultMode kFailModes[] = {FaultMode::kEio, FaultMode::kEnospc, FaultMode::kShortWrite,
                                FaultMode::kPowerLoss, FaultMode::kPowerLossTorn};

bool IsPowerLoss(FaultMode mode) {
  return mode == FaultMode::kPowerLoss || mode == FaultMode::kPowerLossTorn;
}

ErrorCode CodeFor(FaultMode mode) {
  return mode == FaultMode::kEnospc || mode == FaultMode::kShortWrite ? ErrorCode::kNoSpace
                                                                      : ErrorCode::kIo;
}

FaultPlan Plan(FaultMode mode, uint64_t fail_at, uint64_t seed = 0) {
  FaultPlan plan;
  plan.mode = mode;
  plan.fail_at = fail_at;
  plan.seed = seed;
  return plan;
}

// Where a sweep is, for failure messages.
struct Point {
  FaultMode mode;
  uint64_t fail_at;
  std::string Describe() const {
    return std::string(" [") + revpatch::FaultModeName(mode) + ":" + std::to_string(fail_at) + "]";
  }
};

#define CHECK_AT(point, cond)                                                        \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      ::revpatch_test::Fail(__FILE__, __LINE__, "expected " #cond + (point).Describe()); \
    }                                                                                \
  } while (0)

struct SweepResult {
  uint64_t calls = 0;
  int runs = 0;
};

// Counts the I/O calls of `op` without a fault, then runs it once for every
// mode and every call number 1..calls+1 (the last: the cut comes after the
// operation returned), each time from `setup`'s state. `check` sees the
// files after the power-loss modes were recovered.
SweepResult Sweep(const std::function<void()>& setup, const std::function<Status()>& op,
                  const std::function<void(const Point&, const Status&)>& check) {
  SweepResult result;
  setup();
  if (!SetFaultPlan(Plan(FaultMode::kNone, 0)).ok()) return result;
  Status clean = op();
  result.calls = FaultCallCount();
  ClearFaultPlan();
  if (!clean.ok() || result.calls == 0) {
    revpatch_test::Fail(__FILE__, __LINE__, "unfaulted run: " + clean.ToString());
    return result;
  }
  for (FaultMode mode : kFailModes) {
    for (uint64_t n = 1; n <= result.calls + 1; ++n) {
      const Point at{mode, n};
      setup();
      Status armed = SetFaultPlan(Plan(mode, n, n * 7919 + static_cast<uint64_t>(mode)));
      CHECK_AT(at, armed.ok());
      Status s = op();
      const bool triggered = FaultTriggered();
      if (IsPowerLoss(mode)) {
        Status recovered = RecoverFromPowerLoss();
        CHECK_AT(at, recovered.ok());
      } else {
        ClearFaultPlan();
      }
      // Every call up to the count is reached; a short write needs a write
      // at or after call n.
      if (n <= result.calls && mode != FaultMode::kShortWrite) CHECK_AT(at, triggered);
      if (triggered) {
        CHECK_AT(at, s.code() == CodeFor(mode));
      } else {
        CHECK_AT(at, s.ok());
      }
      check(at, s);
      ++result.runs;
    }
  }
  std::printf("  %llu I/O calls, %d faulted runs\n",
              static_cast<unsigned long long>(result.calls), result.runs);
  return result;
}

std::vector<std::string> Entries(const std::string& dir) {
  std::vector<std::string> names;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d)) {
      const std::string name = e->d_name;
      if (name != "." && name != "..") names.push_back(name);
    }
    ::closedir(d);
  }
  return names;
}

bool HasTemporaries(const std::string& dir) {
  for (const std::string& name : Entries(dir)) {
    if (name.find(".tmp-") != std::string::npos) return true;
  }
  return false;
}

std::string BodyOf(char fill, size_t size) { return std::string(size, fill); }

}  // namespace

// ------------------------------------------------------------ transitions

TEST(commit_record_write_is_old_or_new_after_any_fault_at_any_call) {
  const std::string dir = revpatch_test::TempDir();
  const std::string path = dir + "/record";
  const std::string old_body = BodyOf('o', 3000);
  const std::string new_body = BodyOf('n', 5000);
  auto setup = [&] {
    ::unlink(path.c_str());
    uint64_t g = 0;
    Status s = revpatch::WriteCommitRecord(path, 0, BodyOf('f', 100), &g);
    if (s.ok()) s = revpatch::WriteCommitRecord(path, 1, old_body, &g);
    if (!s.ok()) revpatch_test::Fail(__FILE__, __LINE__, "setup: " + s.ToString());
  };
  auto op = [&] {
    uint64_t g = 0;
    return revpatch::WriteCommitRecord(path, 2, new_body, &g);
  };
  SweepResult r = Sweep(setup, op, [&](const Point& at, const Status& s) {
    CommitRecordState state;
    Status read = revpatch::ReadCommitRecord(path, &state);
    CHECK_AT(at, read.ok());
    const bool is_old = state.generation == 2 && state.body == old_body;
    const bool is_new = state.generation == 3 && state.body == new_body;
    CHECK_AT(at, is_old || is_new);
    if (s.ok()) CHECK_AT(at, is_new);
    uint64_t g = 0;
    CHECK_AT(at, revpatch::WriteCommitRecord(path, state.generation, "next", &g).ok());
    CHECK_AT(at, revpatch::ReadCommitRecord(path, &state).ok() && state.body == "next");
    CHECK_AT(at, !HasTemporaries(dir));
  });
  EXPECT_TRUE(r.calls >= 4);
  EXPECT_EQ(r.runs, static_cast<int>(5 * (r.calls + 1)));
}

TEST(commit_record_creation_is_absent_or_complete_after_any_fault_at_any_call) {
  const std::string dir = revpatch_test::TempDir();
  const std::string path = dir + "/record";
  const std::string body = BodyOf('c', 2000);
  auto setup = [&] {
    for (const std::string& name : Entries(dir)) ::unlink((dir + "/" + name).c_str());
  };
  auto op = [&] {
    uint64_t g = 0;
    return revpatch::WriteCommitRecord(path, 0, body, &g);
  };
  Sweep(setup, op, [&](const Point& at, const Status& s) {
    CommitRecordState state;
    Status read = revpatch::ReadCommitRecord(path, &state);
    if (read.code() == ErrorCode::kNotFound) {
      CHECK_AT(at, !s.ok());
      uint64_t g = 0;
      CHECK_AT(at, revpatch::WriteCommitRecord(path, 0, body, &g).ok() && g == 1);
    } else {
      CHECK_AT(at, read.ok() && state.generation == 1 && state.body == body);
    }
    CHECK_AT(at, !HasTemporaries(dir));
  });
}

TEST(layer_is_absent_unsealed_or_sealed_and_valid_after_any_fault_at_any_call) {
  const std::string dir = revpatch_test::TempDir();
  const Bytes base = revpatch_test::StampedImage(64 * kBs, 0, kBs);
  ASSERT_TRUE(revpatch_test::WriteBytes(dir + "/base", base));
  Digest d{};
  ASSERT_OK(revpatch::HashImage(dir + "/base", kBs, dir + "/base.tree", &d, nullptr));
  std::unique_ptr<View> view;
  ASSERT_OK(View::Open(dir + "/base", dir + "/base.tree", {}, &view));
  const std::string path = dir + "/layer";
  const uint64_t target_size = 70 * kBs + 100;

  auto write_layer = [&](const std::string& to, Digest* digest) {
    std::unique_ptr<LayerWriter> w;
    REVPATCH_RETURN_IF_ERROR(LayerWriter::Create(to, target_size, view.get(), &w));
    uint8_t block[kBs];
    for (uint64_t i = 0; i < 50; ++i) {
      const uint64_t b = (i * 37) % 70;  // scattered, growing past the base
      revpatch_test::Stamp(b, 7, kBs, block);
      REVPATCH_RETURN_IF_ERROR(w->WriteBlock(b, block));
    }
    return w->Seal(nullptr, digest);
  };
  Digest expected{};
  ASSERT_OK(write_layer(dir + "/reference", &expected));

  SweepResult r = Sweep([&] { ::unlink(path.c_str()); },
        [&] {
          Digest got{};
          return write_layer(path, &got);
        },
        [&](const Point& at, const Status& s) {
          std::unique_ptr<LayerReader> reader;
          Status open = revpatch::FileExists(path) ? LayerReader::Open(path, &reader)
                                                   : Status(ErrorCode::kNotFound, "absent");
          if (open.ok()) {
            CHECK_AT(at, reader->Verify().ok());
            CHECK_AT(at, reader->view_digest() == expected);
          } else {
            CHECK_AT(at, !s.ok());
            CHECK_AT(at, open.code() == ErrorCode::kNotFound || open.code() == ErrorCode::kCorrupt);
          }
          const std::string next = dir + "/next";
          ::unlink(next.c_str());
          Digest again{};
          CHECK_AT(at, write_layer(next, &again).ok() && again == expected);
          CHECK_AT(at, revpatch::IsSealedLayer(next));
        });
  EXPECT_TRUE(r.calls >= 8);
}

TEST(copy_export_target_holds_the_old_file_or_the_whole_image_after_any_fault) {
  const std::string dir = revpatch_test::TempDir();
  Bytes model = revpatch_test::StampedImage(40 * kBs + 300, 0, kBs);
  ASSERT_TRUE(revpatch_test::WriteBytes(dir + "/base", model));
  Digest d{};
  ASSERT_OK(revpatch::HashImage(dir + "/base", kBs, dir + "/base.tree", &d, nullptr));
  std::unique_ptr<View> view;
  ASSERT_OK(View::Open(dir + "/base", dir + "/base.tree", {}, &view));
  {
    std::unique_ptr<LayerWriter> w;
    ASSERT_OK(LayerWriter::Create(dir + "/layer", 45 * kBs + 17, view.get(), &w));
    uint8_t block[kBs];
    for (uint64_t b : {1u, 2u, 20u, 44u}) {
      revpatch_test::Stamp(b, 3, kBs, block);
      ASSERT_OK(w->WriteBlock(b, block));
    }
    ASSERT_OK(w->Seal(nullptr, &d));
  }
  ASSERT_OK(View::Open(dir + "/base", dir + "/base.tree", {dir + "/layer"}, &view));
  Bytes image(view->size_bytes());
  ASSERT_OK(view->ReadBytes(0, image.size(), image.data()));

  const std::string out_dir = dir + "/out";
  ASSERT_TRUE(::mkdir(out_dir.c_str(), 0755) == 0);
  const std::string target = out_dir + "/export.img";
  const Bytes old_file(10000, 0x5a);
  auto setup = [&] {
    for (const std::string& name : Entries(out_dir)) ::unlink((out_dir + "/" + name).c_str());
    revpatch_test::WriteBytes(target, old_file);
  };
  auto op = [&] {
    revpatch::ExportResult result;
    return revpatch::ExportView(*view, target, revpatch::ExportMode::kCopy, nullptr, &result);
  };
  SweepResult r = Sweep(setup, op, [&](const Point& at, const Status& s) {
    const Bytes now = revpatch_test::ReadBytes(target);
    CHECK_AT(at, now == old_file || now == image);
    if (s.ok()) CHECK_AT(at, now == image);
    CHECK_AT(at, !HasTemporaries(out_dir));
    revpatch::ExportResult result;
    CHECK_AT(at, revpatch::ExportView(*view, target, revpatch::ExportMode::kCopy, nullptr,
                                      &result).ok());
    CHECK_AT(at, revpatch_test::ReadBytes(target) == image);
  });
  EXPECT_TRUE(r.calls >= 6);
}

// ------------------------------------------------------------ the simulator

TEST(an_unsynced_write_is_undone_and_a_synced_one_kept) {
  const std::string dir = revpatch_test::TempDir();
  const std::string path = dir + "/f";
  const Bytes original(4096, 'a');
  ASSERT_TRUE(revpatch_test::WriteBytes(path, original));
  const Bytes update(100, 'b');

  ASSERT_OK(SetFaultPlan(Plan(FaultMode::kPowerLoss, 1000)));
  {
    File f;
    ASSERT_OK(File::OpenReadWrite(path, &f));
    ASSERT_OK(f.WriteAt(10, update.data(), update.size()));
  }
  EXPECT_TRUE(!FaultTriggered());
  ASSERT_OK(RecoverFromPowerLoss());
  EXPECT_TRUE(revpatch_test::ReadBytes(path) == original);

  ASSERT_OK(SetFaultPlan(Plan(FaultMode::kPowerLoss, 1000)));
  {
    File f;
    ASSERT_OK(File::OpenReadWrite(path, &f));
    ASSERT_OK(f.WriteAt(10, update.data(), update.size()));
    ASSERT_OK(f.FullSync());
    ASSERT_OK(f.WriteAt(2000, update.data(), update.size()));  // after the sync: lost
  }
  ASSERT_OK(RecoverFromPowerLoss());
  Bytes expect = original;
  std::copy(update.begin(), update.end(), expect.begin() + 10);
  EXPECT_TRUE(revpatch_test::ReadBytes(path) == expect);
}

TEST(an_unsynced_extension_and_truncate_restore_the_old_size_and_bytes) {
  const std::string dir = revpatch_test::TempDir();
  const std::string path = dir + "/f";
  const Bytes original = revpatch_test::StampedImage(1000, 1, 512);
  ASSERT_TRUE(revpatch_test::WriteBytes(path, original));
  ASSERT_OK(SetFaultPlan(Plan(FaultMode::kPowerLoss, 1000)));
  {
    File f;
    ASSERT_OK(File::OpenReadWrite(path, &f));
    const Bytes tail(500, 'x');
    ASSERT_OK(f.WriteAt(900, tail.data(), tail.size()));
    ASSERT_OK(f.Truncate(200));
    ASSERT_OK(f.Truncate(5000));
  }
  EXPECT_EQ(revpatch_test::FileSizeOf(path), 5000u);
  ASSERT_OK(RecoverFromPowerLoss());
  EXPECT_TRUE(revpatch_test::ReadBytes(path) == original);
}

TEST(a_create_is_undone_until_its_directory_is_synced) {
  const std::string dir = revpatch_test::TempDir();
  const Bytes data(3000, 'c');
  for (int variant = 0; variant < 3; ++variant) {
    const std::string path = dir + "/new" + std::to_string(variant);
    ASSERT_OK(SetFaultPlan(Plan(FaultMode::kPowerLoss, 1000)));
    {
      File f;
      ASSERT_OK(File::CreateNew(path, &f));
      ASSERT_OK(f.WriteAt(0, data.data(), data.size()));
      if (variant != 1) ASSERT_OK(f.FullSync());
    }
    if (variant != 0) ASSERT_OK(revpatch::SyncDirectory(dir));
    ASSERT_OK(RecoverFromPowerLoss());
    switch (variant) {
      case 0:  // data synced, name not: gone
        EXPECT_TRUE(!revpatch::FileExists(path));
        break;
      case 1:  // name synced, data not: an empty file
        EXPECT_TRUE(revpatch::FileExists(path));
        EXPECT_EQ(revpatch_test::FileSizeOf(path), 0u);
        break;
      default:  // both
        EXPECT_TRUE(revpatch_test::ReadBytes(path) == data);
    }
  }
}

TEST(a_rename_over_a_file_is_undone_and_the_replaced_file_restored) {
  const std::string dir = revpatch_test::TempDir();
  const std::string a = dir + "/a";
  const std::string b = dir + "/b";
  const Bytes a_bytes(700, 'a');
  const Bytes b_bytes(900, 'b');
  for (int synced = 0; synced < 2; ++synced) {
    ASSERT_TRUE(revpatch_test::WriteBytes(a, a_bytes));
    ASSERT_TRUE(revpatch_test::WriteBytes(b, b_bytes));
    ASSERT_OK(SetFaultPlan(Plan(FaultMode::kPowerLoss, 1000)));
    ASSERT_OK(revpatch::RenameFile(a, b));
    if (synced) ASSERT_OK(revpatch::SyncDirectory(dir));
    ASSERT_OK(RecoverFromPowerLoss());
    if (synced) {
      EXPECT_TRUE(!revpatch::FileExists(a));
      EXPECT_TRUE(revpatch_test::ReadBytes(b) == a_bytes);
    } else {
      EXPECT_TRUE(revpatch_test::ReadBytes(a) == a_bytes);
      EXPECT_TRUE(revpatch_test::ReadBytes(b) == b_bytes);
    }
  }
}

TEST(an_unlink_is_undone_until_its_directory_is_synced) {
  const std::string dir = revpatch_test::TempDir();
  const std::string path = dir + "/victim";
  const Bytes data(5000, 'v');
  for (int synced = 0; synced < 2; ++synced) {
    ASSERT_TRUE(revpatch_test::WriteBytes(path, data));
    ASSERT_OK(SetFaultPlan(Plan(FaultMode::kPowerLoss, 1000)));
    ASSERT_OK(revpatch::UnlinkFile(path));
    EXPECT_TRUE(!revpatch::FileExists(path));
    if (synced) ASSERT_OK(revpatch::SyncDirectory(dir));
    ASSERT_OK(RecoverFromPowerLoss());
    if (synced) {
      EXPECT_TRUE(!revpatch::FileExists(path));
    } else {
      EXPECT_TRUE(revpatch_test::ReadBytes(path) == data);
    }
  }
}

TEST(torn_writes_keep_whole_sectors_chosen_by_the_seed) {
  const std::string dir = revpatch_test::TempDir();
  const std::string path = dir + "/torn";
  const size_t kSectors = 64;
  const Bytes zeros(kSectors * 512, 0);
  const Bytes ones(kSectors * 512, 0xab);
  auto pattern = [&](uint64_t seed, std::string* out) {
    ASSERT_TRUE(revpatch_test::WriteBytes(path, zeros));
    ASSERT_OK(SetFaultPlan(Plan(FaultMode::kPowerLossTorn, 1000, seed)));
    {
      File f;
      ASSERT_OK(File::OpenReadWrite(path, &f));
      ASSERT_OK(f.WriteAt(0, ones.data(), ones.size()));
    }
    ASSERT_OK(RecoverFromPowerLoss());
    const Bytes now = revpatch_test::ReadBytes(path);
    ASSERT_EQ(now.size(), zeros.size());
    out->clear();
    for (size_t s = 0; s < kSectors; ++s) {
      const Bytes sector(now.begin() + s * 512, now.begin() + (s + 1) * 512);
      if (sector == Bytes(512, 0)) {
        out->push_back('0');
      } else if (sector == Bytes(512, 0xab)) {
        out->push_back('1');
      } else {
        out->push_back('?');
      }
    }
  };
  std::string first, again, other;
  pattern(11, &first);
  pattern(11, &again);
  pattern(12, &other);
  EXPECT_EQ(first, again);
  EXPECT_TRUE(first != other);
  EXPECT_TRUE(first.find('?') == std::string::npos);
  EXPECT_TRUE(first.find('0') != std::string::npos && first.find('1') != std::string::npos);

  // A torn extension: the file ends with the last kept sector, or is as it was.
  const std::string grow = dir + "/grow";
  ASSERT_TRUE(revpatch_test::WriteBytes(grow, Bytes(512, 0x11)));
  ASSERT_OK(SetFaultPlan(Plan(FaultMode::kPowerLossTorn, 1000, 5)));
  {
    File f;
    ASSERT_OK(File::OpenReadWrite(grow, &f));
    ASSERT_OK(f.WriteAt(512, ones.data(), 8 * 512));
  }
  ASSERT_OK(RecoverFromPowerLoss());
  const Bytes now = revpatch_test::ReadBytes(grow);
  EXPECT_TRUE(now.size() % 512 == 0 && now.size() >= 512 && now.size() <= 9 * 512);
  EXPECT_TRUE(Bytes(now.begin(), now.begin() + 512) == Bytes(512, 0x11));
  if (now.size() > 512) EXPECT_TRUE(now.back() == 0xab);
}

TEST(after_the_cut_every_call_fails_and_nothing_reaches_the_disk) {
  const std::string dir = revpatch_test::TempDir();
  const std::string path = dir + "/f";
  const Bytes original(2048, 'o');
  ASSERT_TRUE(revpatch_test::WriteBytes(path, original));
  ASSERT_OK(SetFaultPlan(Plan(FaultMode::kPowerLoss, 2)));
  File f;
  ASSERT_OK(File::OpenReadWrite(path, &f));
  const Bytes update(10, 'u');
  EXPECT_CODE(f.WriteAt(0, update.data(), update.size()), ErrorCode::kIo);
  uint8_t byte = 0;
  EXPECT_CODE(f.ReadAt(0, &byte, 1), ErrorCode::kIo);
  EXPECT_CODE(revpatch::UnlinkFile(path), ErrorCode::kIo);
  EXPECT_CODE(revpatch::SyncDirectory(dir), ErrorCode::kIo);
  File other;
  EXPECT_CODE(File::CreateNew(dir + "/g", &other), ErrorCode::kIo);
  EXPECT_TRUE(FaultTriggered());
  EXPECT_EQ(FaultCallCount(), 6u);
  EXPECT_TRUE(revpatch_test::ReadBytes(path) == original);
  EXPECT_TRUE(!revpatch::FileExists(dir + "/g"));
  ASSERT_OK(RecoverFromPowerLoss());
  EXPECT_EQ(FaultCallCount(), 0u);
  ASSERT_OK(f.Close());
}

TEST(eio_and_enospc_fail_only_call_n) {
  const std::string dir = revpatch_test::TempDir();
  const std::string path = dir + "/f";
  ASSERT_TRUE(revpatch_test::WriteBytes(path, Bytes(100, 0)));
  const Bytes data(10, 'd');
  const FaultMode modes[] = {FaultMode::kEio, FaultMode::kEnospc};
  for (FaultMode mode : modes) {
    ASSERT_OK(SetFaultPlan(Plan(mode, 2)));
    File f;
    ASSERT_OK(File::OpenReadWrite(path, &f));
    EXPECT_TRUE(!FaultTriggered());
    EXPECT_CODE(f.WriteAt(0, data.data(), data.size()), CodeFor(mode));
    EXPECT_TRUE(FaultTriggered());
    EXPECT_OK(f.WriteAt(0, data.data(), data.size()));
    EXPECT_OK(f.FullSync());
    EXPECT_EQ(FaultCallCount(), 4u);
    ClearFaultPlan();
    EXPECT_EQ(FaultCallCount(), 0u);
    EXPECT_TRUE(!FaultTriggered());
  }
}

TEST(a_short_write_leaves_a_partial_prefix_and_reports_no_space) {
  const std::string dir = revpatch_test::TempDir();
  const std::string path = dir + "/f";
  const Bytes data(10000, 0xcd);
  size_t prefixes[2] = {0, 0};
  for (int round = 0; round < 2; ++round) {
    ASSERT_TRUE(revpatch_test::WriteBytes(path, Bytes(10000, 0)));
    // Call 1 is the open: the fault moves on to the first write.
    ASSERT_OK(SetFaultPlan(Plan(FaultMode::kShortWrite, 1, 42)));
    File f;
    ASSERT_OK(File::OpenReadWrite(path, &f));
    EXPECT_CODE(f.WriteAt(0, data.data(), data.size()), ErrorCode::kNoSpace);
    EXPECT_TRUE(FaultTriggered());
    EXPECT_OK(f.WriteAt(0, data.data(), 1));  // later calls run normally
    ClearFaultPlan();
    const Bytes now = revpatch_test::ReadBytes(path);
    ASSERT_EQ(now.size(), data.size());
    size_t prefix = 0;
    while (prefix < now.size() && now[prefix] == 0xcd) ++prefix;
    EXPECT_TRUE(prefix > 0 && prefix < data.size());
    EXPECT_TRUE(std::all_of(now.begin() + prefix, now.end(), [](uint8_t b) { return b == 0; }));
    prefixes[round] = prefix;
  }
  EXPECT_EQ(prefixes[0], prefixes[1]);
}

TEST(a_failed_fsync_poisons_the_file_for_good) {
  const std::string dir = revpatch_test::TempDir();
  const std::string path = dir + "/f";
  ASSERT_TRUE(revpatch_test::WriteBytes(path, Bytes(100, 0)));
  ASSERT_OK(SetFaultPlan(Plan(FaultMode::kEio, 3)));
  File f;
  ASSERT_OK(File::OpenReadWrite(path, &f));
  const uint8_t byte = 1;
  ASSERT_OK(f.WriteAt(0, &byte, 1));
  EXPECT_CODE(f.FullSync(), ErrorCode::kIo);
  ClearFaultPlan();
  EXPECT_TRUE(f.poisoned());
  EXPECT_CODE(f.FullSync(), ErrorCode::kPoisoned);
  EXPECT_CODE(f.WriteAt(0, &byte, 1), ErrorCode::kPoisoned);
  EXPECT_CODE(f.Truncate(0), ErrorCode::kPoisoned);
  File moved = std::move(f);
  EXPECT_CODE(moved.FullSync(), ErrorCode::kPoisoned);
  uint8_t read = 0;
  EXPECT_OK(moved.ReadAt(0, &read, 1));  // reading is still allowed
  EXPECT_OK(moved.Close());
  File fresh;  // a new handle is a new transaction
  ASSERT_OK(File::OpenReadWrite(path, &fresh));
  EXPECT_OK(fresh.WriteAt(0, &byte, 1));
  EXPECT_OK(fresh.FullSync());
}

TEST(fault_plans_parse_from_their_text_form) {
  FaultPlan plan;
  ASSERT_OK(revpatch::ParseFaultPlan("power-loss-torn:17:3", &plan));
  EXPECT_TRUE(plan.mode == FaultMode::kPowerLossTorn && plan.fail_at == 17 && plan.seed == 3);
  ASSERT_OK(revpatch::ParseFaultPlan("eio:1", &plan));
  EXPECT_TRUE(plan.mode == FaultMode::kEio && plan.fail_at == 1 && plan.seed == 0);
  ASSERT_OK(revpatch::ParseFaultPlan("none", &plan));
  EXPECT_TRUE(plan.mode == FaultMode::kNone);
  for (const char* bad : {"", "eio", "eio:0", "eio:-1", "eio:x", "crash:3", "eio:1:2:3",
                          "short-write:99999999999999999999999"}) {
    EXPECT_CODE(revpatch::ParseFaultPlan(bad, &plan), ErrorCode::kInvalidArgument);
  }
  EXPECT_CODE(SetFaultPlan(Plan(FaultMode::kEio, 0)), ErrorCode::kInvalidArgument);
  EXPECT_CODE(RecoverFromPowerLoss(), ErrorCode::kInvalidArgument);
}
