// Verified reads: a View never returns a block that differs from its leaf,
// wherever the difference is (base data, layer data, the base tree's leaves
// or inner nodes), from one thread or several; the scrub lists them all.
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "../engine/audit.h"
#include "../engine/merkle.h"
#include "../engine/scrub.h"
#include "../engine/verified_tree.h"
#include "../engine/view.h"
#include "storage_test_util.h"
#include "testing.h"
#include "view_stack.h"

using revpatch::CorruptRead;
using revpatch::ErrorCode;
using revpatch::Status;
using revpatch::View;
using revpatch_test::Bytes;

namespace {

constexpr uint32_t kBs = 512;
// Enough blocks for several groups of 2^8 leaves, the last one partial.
constexpr uint64_t kBlocks = 1100;
constexpr uint64_t kTreeHeader = 256;

// A base of kBlocks stamped blocks (tag 0) and one layer over it that
// stamps blocks 5, 6 and 700 with tag 1.
struct Fixture : revpatch_test::ViewStack {
  Fixture() : ViewStack(revpatch_test::StampedImage(kBlocks * kBs, 0, kBs), kBs) {
    Status s = AddLayer(kBlocks * kBs, {{5, 1}, {6, 1}, {700, 1}});
    if (!s.ok()) revpatch_test::Fail(__FILE__, __LINE__, s.ToString());
  }
  std::string layer() const { return layers[0]; }

  // Flips one byte of `path` at `offset` in place, size unchanged.
  static void Flip(const std::string& path, uint64_t offset) {
    int fd = ::open(path.c_str(), O_RDWR);
    uint8_t byte = 0;
    if (fd < 0 || ::pread(fd, &byte, 1, offset) != 1) {
      revpatch_test::Fail(__FILE__, __LINE__, "cannot read " + path);
    }
    byte ^= 0x5a;
    if (::pwrite(fd, &byte, 1, offset) != 1) revpatch_test::Fail(__FILE__, __LINE__, "pwrite");
    ::close(fd);
  }

  // Offset of node `index` of `level` in the base tree file.
  static uint64_t NodeOffset(uint32_t level, uint64_t index) {
    uint64_t offset = kTreeHeader;
    for (uint32_t l = 0; l < level; ++l) offset += 32 * revpatch::MerkleLevelWidth(kBlocks, l);
    return offset + 32 * index;
  }

  bool Matches(uint64_t first, uint64_t count, const Bytes& got) const {
    return std::equal(got.begin(), got.begin() + count * kBs, model.begin() + first * kBs);
  }
};

// Collects what the corruption handler hears, from any thread.
struct Heard {
  std::mutex mu;
  std::vector<CorruptRead> reads;
  std::function<void(const CorruptRead&)> Handler() {
    return [this](const CorruptRead& r) {
      std::lock_guard<std::mutex> lock(mu);
      reads.push_back(r);
    };
  }
};

}  // namespace

TEST(clean_view_reads_every_block_verified) {
  Fixture f;
  ASSERT_TRUE(f.view->verify_reads());
  Bytes got(kBlocks * kBs);
  ASSERT_OK(f.view->ReadBlocks(0, kBlocks, got.data()));
  EXPECT_TRUE(f.Matches(0, kBlocks, got));
  revpatch_test::Rng rng(7);
  for (int i = 0; i < 200; ++i) {
    const uint64_t first = rng.Below(kBlocks);
    const uint64_t count = 1 + rng.Below(kBlocks - first);
    ASSERT_OK(f.view->ReadBlocks(first, count, got.data()));
    EXPECT_TRUE(f.Matches(first, count, got));
  }
  revpatch::ScrubResult scrub;
  ASSERT_OK(revpatch::ScrubView(*f.view, 10, nullptr, &scrub));
  EXPECT_EQ(scrub.blocks, kBlocks);
  EXPECT_EQ(scrub.bad, 0u);
}

TEST(flipped_base_byte_fails_the_read_naming_block_and_base) {
  Fixture f;
  Heard heard;
  f.view->SetCorruptionHandler(heard.Handler());
  Fixture::Flip(f.base_path(), 300 * kBs + 17);
  Bytes got(kBlocks * kBs);
  Status s = f.view->ReadBlocks(290, 20, got.data());
  EXPECT_EQ(s.code(), ErrorCode::kCorrupt);
  EXPECT_TRUE(s.message().find("block 300 ") != std::string::npos);
  EXPECT_TRUE(s.message().find(f.base_path()) != std::string::npos);
  EXPECT_CODE(f.view->ReadBytes(300 * kBs + 100, 10, got.data()), ErrorCode::kCorrupt);
  ASSERT_EQ(heard.reads.size(), 2u);
  EXPECT_EQ(heard.reads[0].block, 300u);
  EXPECT_EQ(heard.reads[0].layer, -1);
  // Its neighbours still read.
  ASSERT_OK(f.view->ReadBlocks(290, 10, got.data()));
  EXPECT_TRUE(f.Matches(290, 10, got));
  ASSERT_OK(f.view->ReadBlocks(301, 10, got.data()));
  // Unverified, the changed byte would be served: the check is what stops it.
  f.view->SetVerifyReads(false);
  ASSERT_OK(f.view->ReadBlocks(300, 1, got.data()));
  EXPECT_TRUE(!f.Matches(300, 1, got));
}

TEST(flipped_layer_byte_fails_the_read_naming_the_layer) {
  Fixture f;
  Heard heard;
  f.view->SetCorruptionHandler(heard.Handler());
  // Data blocks follow the one-block header in write order: 5, 6, 700.
  Fixture::Flip(f.layer(), 3 * kBs + 1);
  Bytes got(kBlocks * kBs);
  Status s = f.view->ReadBlocks(690, 20, got.data());
  EXPECT_EQ(s.code(), ErrorCode::kCorrupt);
  EXPECT_TRUE(s.message().find("block 700 ") != std::string::npos);
  EXPECT_TRUE(s.message().find(f.layer()) != std::string::npos);
  ASSERT_EQ(heard.reads.size(), 1u);
  EXPECT_EQ(heard.reads[0].layer, 0);
  // The layer's other blocks and the base under block 700 are fine.
  ASSERT_OK(f.view->ReadBlocks(0, 700, got.data()));
  EXPECT_TRUE(f.Matches(0, 700, got));
}

TEST(flipped_leaf_in_the_base_tree_fails_reads_of_its_group_only) {
  Fixture f;
  Heard heard;
  f.view->SetCorruptionHandler(heard.Handler());
  Fixture::Flip(f.tree_path(), Fixture::NodeOffset(0, 520) + 3);
  Bytes got(kBlocks * kBs);
  // Block 520 is in group 2 (leaves 512..767): none of them can be checked.
  Status s = f.view->ReadBlocks(600, 1, got.data());
  EXPECT_EQ(s.code(), ErrorCode::kCorrupt);
  EXPECT_TRUE(s.message().find(f.tree_path()) != std::string::npos);
  EXPECT_CODE(f.view->ReadBlocks(520, 1, got.data()), ErrorCode::kCorrupt);
  // Layer blocks in that range come from the layer's own index.
  ASSERT_OK(f.view->ReadBlocks(700, 1, got.data()));
  EXPECT_TRUE(f.Matches(700, 1, got));
  // Other groups read.
  ASSERT_OK(f.view->ReadBlocks(0, 512, got.data()));
  ASSERT_OK(f.view->ReadBlocks(768, kBlocks - 768, got.data()));
  EXPECT_TRUE(!heard.reads.empty());
}

TEST(flipped_inner_node_in_the_base_tree_is_caught_or_unused) {
  {
    // At the group height (the level kept in memory, checked up to the
    // root): nothing of the base can be checked, so no base block reads;
    // layer blocks still do.
    Fixture f;
    Fixture::Flip(f.tree_path(), Fixture::NodeOffset(8, 1));
    Bytes got(kBlocks * kBs);
    Status s = f.view->ReadBlocks(300, 1, got.data());
    EXPECT_EQ(s.code(), ErrorCode::kCorrupt);
    EXPECT_TRUE(s.message().find("does not lead to its root") != std::string::npos);
    EXPECT_CODE(f.view->ReadBlocks(0, 1, got.data()), ErrorCode::kCorrupt);
    ASSERT_OK(f.view->ReadBlocks(5, 2, got.data()));
    EXPECT_TRUE(f.Matches(5, 2, got));
  }
  {
    // Between the leaves and the group height, a group is checked from its
    // leaves up, so a changed node there is never relied on: reads stay
    // right (and the leaves still lead to the root).
    Fixture f;
    Fixture::Flip(f.tree_path(), Fixture::NodeOffset(1, 10));
    Fixture::Flip(f.tree_path(), Fixture::NodeOffset(9, 0));
    Bytes got(kBlocks * kBs);
    ASSERT_OK(f.view->ReadBlocks(0, kBlocks, got.data()));
    EXPECT_TRUE(f.Matches(0, kBlocks, got));
  }
  {
    // The top node is compared with the header's root at open.
    Fixture f;
    f.view.reset();
    const uint32_t top = revpatch::MerkleHeight(kBlocks) - 1;
    Fixture::Flip(f.tree_path(), Fixture::NodeOffset(top, 0));
    EXPECT_CODE(f.Reopen(), ErrorCode::kCorrupt);
  }
}

TEST(scrub_lists_every_bad_block_and_does_not_stop) {
  Fixture f;
  Heard heard;
  f.view->SetCorruptionHandler(heard.Handler());
  Fixture::Flip(f.base_path(), 10 * kBs);
  Fixture::Flip(f.base_path(), 1099 * kBs + 5);
  Fixture::Flip(f.layer(), 2 * kBs + 9);  // block 6
  uint64_t last_done = 0;
  revpatch::ScrubResult r;
  ASSERT_OK(revpatch::ScrubView(*f.view, 2,
                                [&](uint64_t done, uint64_t total) {
                                  EXPECT_EQ(total, kBlocks);
                                  last_done = done;
                                },
                                &r));
  EXPECT_EQ(last_done, kBlocks);
  EXPECT_EQ(r.blocks, kBlocks);
  EXPECT_EQ(r.bad, 3u);
  EXPECT_EQ(r.base_bad, 2u);
  EXPECT_EQ(r.layer_bad, 1u);
  ASSERT_EQ(r.first_bad.size(), 2u);
  EXPECT_EQ(r.first_bad[0].block, 6u);
  EXPECT_EQ(r.first_bad[0].layer, 0);
  EXPECT_EQ(r.first_bad[1].block, 10u);
  EXPECT_EQ(heard.reads.size(), 3u);
  // CheckBlocks zeroes what it could not trust and returns the rest.
  std::vector<CorruptRead> bad;
  Bytes got(20 * kBs, 0xee);
  ASSERT_OK(f.view->CheckBlocks(0, 20, got.data(), &bad));
  ASSERT_EQ(bad.size(), 2u);
  EXPECT_TRUE(std::all_of(got.begin() + 10 * kBs, got.begin() + 11 * kBs,
                          [](uint8_t b) { return b == 0; }));
  EXPECT_TRUE(std::equal(got.begin(), got.begin() + 6 * kBs, f.model.begin()));
}

TEST(parallel_reads_on_one_view_are_all_verified) {
  Fixture f;
  Fixture::Flip(f.base_path(), 900 * kBs + 2);
  std::atomic<int> heard{0};
  f.view->SetCorruptionHandler([&](const CorruptRead& r) {
    if (r.block == 900) heard.fetch_add(1);
  });
  std::atomic<int> wrong{0}, corrupt{0}, clean{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      revpatch_test::Rng rng(100 + t);
      Bytes got(64 * kBs);
      for (int i = 0; i < 300; ++i) {
        const uint64_t first = rng.Below(kBlocks);
        const uint64_t count = 1 + rng.Below(std::min<uint64_t>(64, kBlocks - first));
        Status s = f.view->ReadBlocks(first, count, got.data());
        const bool covers = first <= 900 && 900 < first + count;
        if (s.code() == ErrorCode::kCorrupt && covers) {
          corrupt.fetch_add(1);
        } else if (s.ok() && !covers && f.Matches(first, count, got)) {
          clean.fetch_add(1);
        } else {
          wrong.fetch_add(1);
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(corrupt.load() + clean.load(), 1200);
  EXPECT_EQ(heard.load(), corrupt.load());
}

TEST(audit_lines_are_appended_whole) {
  const std::string dir = revpatch_test::TempDir();
  const std::string path = dir + "/audit.ndjson";
  ASSERT_OK(revpatch::AppendAuditLine(path, "{\"event\":\"a\"}"));
  ASSERT_OK(revpatch::AppendAuditLine(path, "{\"event\":\"b\"}\n"));
  EXPECT_CODE(revpatch::AppendAuditLine(path, "{\"a\":1}\n{\"b\":2}"),
              ErrorCode::kInvalidArgument);
  EXPECT_CODE(revpatch::AppendAuditLine(path, ""), ErrorCode::kInvalidArgument);
  const Bytes text = revpatch_test::ReadBytes(path);
  EXPECT_TRUE(std::string(text.begin(), text.end()) ==
              "{\"event\":\"a\"}\n{\"event\":\"b\"}\n");
  EXPECT_TRUE(revpatch::JsonString("a\"b\\\n\x01") == "\"a\\\"b\\\\\\n\\u0001\"");
  EXPECT_CODE(revpatch::AppendAuditLine(dir + "/missing/audit.ndjson", "{}"),
              ErrorCode::kNotFound);
  revpatch_test::RemoveDir(dir);
}
