#include "../engine/view.h"

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "../engine/layer_file.h"
#include "storage_test_util.h"
#include "testing.h"
#include "view_stack.h"

using revpatch::Digest;
using revpatch::ErrorCode;
using revpatch::View;
using revpatch_test::Bytes;

namespace {

constexpr uint32_t kBs = 512;
constexpr uint32_t kZero = revpatch_test::ViewStack::kZero;

struct Stack : revpatch_test::ViewStack {
  explicit Stack(const Bytes& base_image) : ViewStack(base_image, kBs) {}
};

}  // namespace

TEST(base_only_view_reads_the_base) {
  Stack s(revpatch_test::StampedImage(37 * kBs + 100, 0, kBs));
  EXPECT_EQ(s.view->layer_count(), 0u);
  EXPECT_EQ(s.view->block_size(), kBs);
  EXPECT_TRUE(s.view->ChangedBlocks().empty());
  CHECK_VIEW(s);
}

TEST(layer_blocks_replace_only_their_own_blocks) {
  Stack s(revpatch_test::StampedImage(64 * kBs, 0, kBs));
  ASSERT_OK(s.AddLayer(64 * kBs, {{5, 1}, {6, 1}, {7, kZero}, {40, 1}, {63, 1}}));
  CHECK_VIEW(s);
  // Every block outside the layer still carries the base's stamp.
  for (uint64_t b = 0; b < 64; ++b) {
    uint8_t got[kBs], base[kBs];
    ASSERT_OK(s.view->ReadBlocks(b, 1, got));
    revpatch_test::Stamp(b, 0, kBs, base);
    const bool in_layer = b == 5 || b == 6 || b == 7 || b == 40 || b == 63;
    EXPECT_EQ(std::equal(got, got + kBs, base), !in_layer);
  }
  EXPECT_TRUE(s.view->ChangedBlocks() == (std::vector<uint64_t>{5, 6, 7, 40, 63}));
}

TEST(stacked_layers_read_from_the_topmost_holder) {
  Stack s(revpatch_test::StampedImage(50 * kBs + 7, 0, kBs));
  ASSERT_OK(s.AddLayer(50 * kBs + 7, {{1, 1}, {2, 1}, {3, 1}, {20, 1}, {50, 1}}));
  ASSERT_OK(s.AddLayer(50 * kBs + 7, {{2, 2}, {4, 2}, {20, kZero}}));
  ASSERT_OK(s.AddLayer(50 * kBs + 7, {{3, 3}, {4, 3}, {49, 3}}));
  CHECK_VIEW(s);
  EXPECT_TRUE(s.view->ChangedBlocks() == (std::vector<uint64_t>{1, 2, 3, 4, 20, 49, 50}));
  uint8_t got[kBs], want[kBs];
  ASSERT_OK(s.view->ReadBlocks(2, 1, got));
  revpatch_test::Stamp(2, 2, kBs, want);
  EXPECT_TRUE(std::equal(got, got + kBs, want));
}

TEST(grow_then_grow_into_a_partial_block) {
  Stack s(revpatch_test::StampedImage(10 * kBs + 200, 0, kBs));
  ASSERT_OK(s.AddLayer(20 * kBs, {{3, 1}, {12, 1}, {19, 1}}));  // 13..18 zero-filled
  CHECK_VIEW(s);
  EXPECT_EQ(s.view->ChangedBlocks().size(), 1u + 9u);  // block 3 and 11..19
  ASSERT_OK(s.AddLayer(23 * kBs + 77, {{22, 2}}));
  CHECK_VIEW(s);
}

TEST(shrink_then_grow_back_reads_zeros_not_stale_blocks) {
  Stack s(revpatch_test::StampedImage(20 * kBs, 0, kBs));
  ASSERT_OK(s.AddLayer(20 * kBs, {{15, 1}, {2, 1}}));
  // Cut inside block 7: its stamped tail must read as zeros from now on.
  ASSERT_OK(s.AddLayer(7 * kBs + 100, {}));
  CHECK_VIEW(s);
  EXPECT_TRUE(s.view->layer(1).HasBlock(7));
  ASSERT_OK(s.AddLayer(15 * kBs, {{9, 3}}));
  CHECK_VIEW(s);
  // Shrinking to a block boundary stores nothing at all.
  ASSERT_OK(s.AddLayer(4 * kBs, {}));
  EXPECT_EQ(s.view->layer(3).block_entries(), 0u);
  CHECK_VIEW(s);
  EXPECT_TRUE(s.view->ChangedBlocks() == (std::vector<uint64_t>{2}));
}

TEST(shrink_to_empty_and_grow_from_empty) {
  Stack s(revpatch_test::StampedImage(5 * kBs, 0, kBs));
  ASSERT_OK(s.AddLayer(0, {}));
  EXPECT_EQ(s.view->size_bytes(), 0u);
  uint8_t block[kBs];
  EXPECT_CODE(s.view->ReadBlocks(0, 1, block), ErrorCode::kBadExtent);
  CHECK_VIEW(s);
  ASSERT_OK(s.AddLayer(3 * kBs + 1, {{1, 4}}));
  CHECK_VIEW(s);
}

TEST(empty_base_grows) {
  Stack s(Bytes{});
  CHECK_VIEW(s);
  ASSERT_OK(s.AddLayer(4 * kBs, {{0, 1}, {3, 1}}));
  CHECK_VIEW(s);
}

TEST(random_layer_stacks_match_the_model) {
  revpatch_test::Rng rng(2024);
  for (int round = 0; round < 3; ++round) {
    Stack s(revpatch_test::StampedImage(40 * kBs + rng.Below(kBs), 0, kBs));
    for (uint32_t layer = 1; layer <= 12; ++layer) {
      uint64_t size = s.model.size();
      const uint64_t pick = rng.Below(6);
      if (pick == 0) size = rng.Below(60 * kBs);
      if (pick == 1) size = size + rng.Below(8 * kBs);
      const uint64_t blocks = revpatch::BlockCount(size, kBs);
      std::map<uint64_t, uint32_t> writes;
      const uint64_t count = blocks == 0 ? 0 : rng.Below(10);
      for (uint64_t k = 0; k < count; ++k) {
        writes[rng.Below(blocks)] = rng.Below(4) == 0 ? kZero : layer;
      }
      ASSERT_OK(s.AddLayer(size, writes));
      CHECK_VIEW(s);
    }
    EXPECT_EQ(s.view->layer_count(), 12u);
  }
}

TEST(read_ranges_outside_the_view_are_refused) {
  Stack s(revpatch_test::StampedImage(8 * kBs, 0, kBs));
  uint8_t buf[9 * kBs];
  EXPECT_CODE(s.view->ReadBlocks(0, 0, buf), ErrorCode::kBadExtent);
  EXPECT_CODE(s.view->ReadBlocks(8, 1, buf), ErrorCode::kBadExtent);
  EXPECT_CODE(s.view->ReadBlocks(0, 9, buf), ErrorCode::kBadExtent);
  EXPECT_CODE(s.view->ReadBlocks(7, ~uint64_t{0}, buf), ErrorCode::kBadExtent);
  ASSERT_OK(s.view->ReadBlocks(7, 1, buf));
}

TEST(read_bytes_is_clamped_and_unaligned_reads_work) {
  Stack s(revpatch_test::StampedImage(30 * kBs + 9, 0, kBs));
  ASSERT_OK(s.AddLayer(30 * kBs + 9, {{2, 1}, {3, 1}, {29, 1}, {30, 1}}));
  revpatch_test::Rng rng(3);
  for (int i = 0; i < 200; ++i) {
    const uint64_t offset = rng.Below(s.model.size() + 100);
    const uint64_t size = rng.Below(5 * kBs);
    Bytes got(size, 0xaa);
    ASSERT_OK(s.view->ReadBytes(offset, size, got.data()));
    for (uint64_t k = 0; k < size; ++k) {
      const uint8_t want = offset + k < s.model.size() ? s.model[offset + k] : 0;
      if (got[k] != want) {
        revpatch_test::Fail(__FILE__, __LINE__, "ReadBytes differs at " +
                                                    std::to_string(offset + k));
        break;
      }
    }
  }
}

TEST(tree_nodes_of_a_layered_view_match_a_fresh_tree) {
  Stack s(revpatch_test::StampedImage(33 * kBs, 0, kBs));
  ASSERT_OK(s.AddLayer(33 * kBs, {{0, 1}, {17, 1}}));
  ASSERT_OK(s.AddLayer(21 * kBs, {{5, 2}}));
  revpatch_test::WriteBytes(s.dir + "/model", s.model);
  Digest d{};
  ASSERT_OK(revpatch::HashImage(s.dir + "/model", kBs, s.dir + "/model.tree", &d, nullptr));
  std::unique_ptr<revpatch::MerkleTreeFile> fresh;
  ASSERT_OK(revpatch::MerkleTreeFile::Open(s.dir + "/model.tree", &fresh));
  revpatch::MerkleNodeSource& tree = s.view->tree();
  EXPECT_EQ(tree.leaf_count(), 21u);
  for (uint32_t l = 0; l < revpatch::MerkleHeight(21); ++l) {
    for (uint64_t i = 0; i < revpatch::MerkleLevelWidth(21, l); ++i) {
      Digest a{}, b{};
      ASSERT_OK(tree.GetNode(l, i, &a));
      ASSERT_OK(fresh->GetNode(l, i, &b));
      EXPECT_TRUE(a == b);
    }
  }
  Digest n{};
  EXPECT_CODE(tree.GetNode(0, 21, &n), ErrorCode::kBadExtent);
}

TEST(a_broken_layer_chain_is_refused) {
  Stack s(revpatch_test::StampedImage(16 * kBs, 0, kBs));
  ASSERT_OK(s.AddLayer(16 * kBs, {{1, 1}}));
  ASSERT_OK(s.AddLayer(16 * kBs, {{2, 2}}));
  std::unique_ptr<View> v;
  // The second layer without the first, or the two swapped.
  EXPECT_CODE(View::Open(s.dir + "/base", s.dir + "/base.tree", {s.layers[1]}, &v),
              ErrorCode::kSourceMismatch);
  EXPECT_CODE(View::Open(s.dir + "/base", s.dir + "/base.tree", {s.layers[1], s.layers[0]}, &v),
              ErrorCode::kSourceMismatch);
  EXPECT_CODE(View::Open(s.dir + "/base", s.dir + "/base.tree", {s.layers[0], s.layers[0]}, &v),
              ErrorCode::kSourceMismatch);
  // A tree file made for another base size.
  revpatch_test::WriteBytes(s.dir + "/other", revpatch_test::StampedImage(17 * kBs, 0, kBs));
  Digest d{};
  ASSERT_OK(revpatch::HashImage(s.dir + "/other", kBs, s.dir + "/other.tree", &d, nullptr));
  EXPECT_CODE(View::Open(s.dir + "/base", s.dir + "/other.tree", {}, &v),
              ErrorCode::kSourceMismatch);
  // A layer with another block size.
  ASSERT_OK(revpatch::HashImage(s.dir + "/base", 1024, s.dir + "/base1k.tree", &d, nullptr));
  EXPECT_CODE(View::Open(s.dir + "/base", s.dir + "/base1k.tree", {s.layers[0]}, &v),
              ErrorCode::kSourceMismatch);
  EXPECT_CODE(View::Open(s.dir + "/missing", s.dir + "/base.tree", {}, &v),
              ErrorCode::kNotFound);
}
