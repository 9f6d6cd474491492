#include "../engine/merkle.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "../engine/sha256.h"
#include "storage_test_util.h"
#include "testing.h"

using revpatch::Digest;
using revpatch::ErrorCode;
using revpatch::InnerHash;
using revpatch::InnerHashPair;
using revpatch::LeafHash;
using revpatch::MerkleDelta;
using revpatch::MerkleNode;
using revpatch::Status;
using revpatch_test::Bytes;
using revpatch_test::Rng;

namespace {

// The definition from merkle.h, level by level, with no cleverness.
std::vector<std::vector<Digest>> FullTree(const std::vector<Digest>& leaves) {
  std::vector<std::vector<Digest>> levels{leaves};
  while (levels.back().size() > 1) {
    const auto& below = levels.back();
    std::vector<Digest> up;
    for (size_t i = 0; i < below.size(); i += 2) {
      up.push_back(i + 1 < below.size() ? InnerHash(below[i], below[i + 1]) : below[i]);
    }
    levels.push_back(up);
  }
  return levels;
}

Digest RootOf(const std::vector<Digest>& leaves) {
  if (leaves.empty()) return revpatch::Sha256::Hash(nullptr, 0);
  return FullTree(leaves).back()[0];
}

class MemoryTree : public revpatch::MerkleNodeSource {
 public:
  explicit MemoryTree(const std::vector<Digest>& leaves)
      : n_(leaves.size()), levels_(FullTree(leaves)) {}
  uint64_t leaf_count() const override { return n_; }
  Status GetNode(uint32_t level, uint64_t index, Digest* out) override {
    ++reads;
    if (level >= levels_.size() || index >= levels_[level].size()) {
      return Status(ErrorCode::kBadExtent, "no such node");
    }
    *out = levels_[level][index];
    return Status::Ok();
  }
  size_t reads = 0;

 private:
  uint64_t n_;
  std::vector<std::vector<Digest>> levels_;
};

Digest LeafOf(uint64_t i, uint32_t tag) {
  uint8_t block[512];
  revpatch_test::Stamp(i, tag, sizeof(block), block);
  return LeafHash(block, sizeof(block));
}

std::vector<Digest> Leaves(uint64_t n, uint32_t tag) {
  std::vector<Digest> out;
  for (uint64_t i = 0; i < n; ++i) out.push_back(LeafOf(i, tag));
  return out;
}

// Applies `changes` (index -> new leaf) over `old_leaves`, resized to
// new_n, through MerkleDelta, and checks it against a full recompute: the
// root, every reported node, and every node not reported being unchanged.
void CheckDelta(const std::vector<Digest>& old_leaves, uint64_t new_n,
                const std::map<uint64_t, Digest>& changes) {
  std::vector<Digest> new_leaves(old_leaves);
  new_leaves.resize(new_n);
  std::vector<MerkleNode> given;
  for (const auto& c : changes) {
    new_leaves[c.first] = c.second;
    given.push_back({0, c.first, c.second});
  }
  MemoryTree below(old_leaves);
  std::vector<MerkleNode> changed;
  Digest root{};
  Status s = MerkleDelta(below, given, new_n, &changed, &root);
  if (!s.ok()) {
    revpatch_test::Fail(__FILE__, __LINE__, "MerkleDelta: " + s.ToString());
    return;
  }
  EXPECT_TRUE(root == RootOf(new_leaves));
  if (new_n == 0) {
    EXPECT_TRUE(changed.empty());
    return;
  }
  const auto want = FullTree(new_leaves);
  const auto old = old_leaves.empty() ? std::vector<std::vector<Digest>>()
                                      : FullTree(old_leaves);
  std::map<std::pair<uint32_t, uint64_t>, Digest> reported;
  for (size_t i = 0; i < changed.size(); ++i) {
    const MerkleNode& n = changed[i];
    if (i > 0) {
      const MerkleNode& p = changed[i - 1];
      EXPECT_TRUE(p.level < n.level || (p.level == n.level && p.index < n.index));
    }
    ASSERT_TRUE(n.level < want.size() && n.index < want[n.level].size());
    EXPECT_TRUE(n.hash == want[n.level][n.index]);
    reported[{n.level, n.index}] = n.hash;
  }
  for (uint32_t l = 0; l < want.size(); ++l) {
    for (uint64_t i = 0; i < want[l].size(); ++i) {
      if (reported.count({l, i}) != 0) continue;
      // Not reported: it must exist below with the same value.
      const bool exists_below = l < old.size() && i < old[l].size();
      EXPECT_TRUE(exists_below);
      if (exists_below) EXPECT_TRUE(old[l][i] == want[l][i]);
    }
  }
}

}  // namespace

TEST(level_width_and_height) {
  EXPECT_EQ(revpatch::MerkleHeight(0), 1u);
  EXPECT_EQ(revpatch::MerkleHeight(1), 1u);
  EXPECT_EQ(revpatch::MerkleHeight(2), 2u);
  EXPECT_EQ(revpatch::MerkleHeight(3), 3u);
  EXPECT_EQ(revpatch::MerkleHeight(4), 3u);
  EXPECT_EQ(revpatch::MerkleHeight(5), 4u);
  EXPECT_EQ(revpatch::MerkleLevelWidth(5, 0), 5u);
  EXPECT_EQ(revpatch::MerkleLevelWidth(5, 1), 3u);
  EXPECT_EQ(revpatch::MerkleLevelWidth(5, 2), 2u);
  EXPECT_EQ(revpatch::MerkleLevelWidth(5, 3), 1u);
  EXPECT_EQ(revpatch::MerkleLevelWidth(~uint64_t{0}, 63), 2u);
  EXPECT_EQ(revpatch::MerkleLevelWidth(~uint64_t{0}, 64), 1u);
  EXPECT_EQ(revpatch::MerkleHeight(~uint64_t{0}), 65u);
}

TEST(promotion_rule_keeps_a_lone_left_child_unhashed) {
  const auto l = Leaves(5, 1);
  // n = 3: level 1 = [H(l0,l1), l2]; root = H(H(l0,l1), l2).
  EXPECT_TRUE(RootOf({l[0], l[1], l[2]}) == InnerHash(InnerHash(l[0], l[1]), l[2]));
  // n = 5: level 1 = [H01, H23, l4]; level 2 = [H(H01,H23), l4].
  const Digest h0123 = InnerHash(InnerHash(l[0], l[1]), InnerHash(l[2], l[3]));
  EXPECT_TRUE(RootOf(l) == InnerHash(h0123, l[4]));
  // n = 1: the root is the leaf itself.
  EXPECT_TRUE(RootOf({l[0]}) == l[0]);
  // Delta from nothing gives the same roots.
  CheckDelta({}, 3, {{0, l[0]}, {1, l[1]}, {2, l[2]}});
  CheckDelta({}, 5, {{0, l[0]}, {1, l[1]}, {2, l[2]}, {3, l[3]}, {4, l[4]}});
}

TEST(leaf_and_view_digest_domain_separation) {
  uint8_t zeros[512] = {};
  EXPECT_TRUE(LeafHash(zeros, 512) != revpatch::Sha256::Hash(zeros, 512));
  const Digest r = LeafOf(0, 0);
  EXPECT_TRUE(revpatch::ViewDigest(512, 512, r) != revpatch::ViewDigest(511, 512, r));
  EXPECT_TRUE(revpatch::ViewDigest(4096, 512, r) != revpatch::ViewDigest(4096, 4096, r));
}

TEST(delta_equals_full_recompute_for_random_changes) {
  Rng rng(42);
  const uint64_t sizes[] = {1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 100, 257};
  for (uint64_t n : sizes) {
    const auto old_leaves = Leaves(n, 0);
    for (int round = 0; round < 12; ++round) {
      std::map<uint64_t, Digest> changes;
      const uint64_t count = rng.Below(n) + (round == 0 ? 0 : 1);
      for (uint64_t k = 0; k < count; ++k) {
        const uint64_t i = rng.Below(n);
        changes[i] = LeafOf(i, 100 + round);
      }
      CheckDelta(old_leaves, n, changes);
    }
  }
}

TEST(delta_with_no_change_returns_the_old_root_and_nothing) {
  const auto leaves = Leaves(13, 0);
  MemoryTree below(leaves);
  std::vector<MerkleNode> changed;
  Digest root{};
  ASSERT_OK(MerkleDelta(below, {}, 13, &changed, &root));
  EXPECT_TRUE(changed.empty());
  EXPECT_TRUE(root == RootOf(leaves));
}

TEST(delta_grows_including_from_zero_and_one) {
  Rng rng(7);
  const uint64_t pairs[][2] = {{0, 1}, {0, 2}, {0, 7}, {1, 2}, {1, 3}, {2, 3},
                               {3, 4}, {4, 5}, {5, 8}, {8, 9}, {9, 33}, {16, 17},
                               {31, 64}, {100, 129}};
  for (const auto& p : pairs) {
    const auto old_leaves = Leaves(p[0], 0);
    for (int round = 0; round < 4; ++round) {
      std::map<uint64_t, Digest> changes;
      for (uint64_t i = p[0]; i < p[1]; ++i) changes[i] = LeafOf(i, 1);
      for (int k = 0; k < round && p[0] > 0; ++k) {
        const uint64_t i = rng.Below(p[0]);
        changes[i] = LeafOf(i, 2 + round);
      }
      CheckDelta(old_leaves, p[1], changes);
    }
  }
}

TEST(delta_shrinks_even_when_no_leaf_changes) {
  Rng rng(9);
  const uint64_t pairs[][2] = {{1, 0}, {2, 1}, {3, 2}, {3, 1}, {4, 3}, {5, 4},
                               {8, 5}, {9, 8}, {17, 16}, {33, 9}, {64, 31},
                               {129, 100}, {7, 0}};
  for (const auto& p : pairs) {
    const auto old_leaves = Leaves(p[0], 0);
    CheckDelta(old_leaves, p[1], {});
    std::map<uint64_t, Digest> changes;
    for (int k = 0; k < 3 && p[1] > 0; ++k) {
      const uint64_t i = rng.Below(p[1]);
      changes[i] = LeafOf(i, 5);
    }
    CheckDelta(old_leaves, p[1], changes);
    if (p[1] > 0) CheckDelta(old_leaves, p[1], {{p[1] - 1, LeafOf(p[1] - 1, 6)}});
  }
}

TEST(delta_reads_few_nodes_for_a_small_change) {
  const auto leaves = Leaves(1 << 12, 0);
  MemoryTree below(leaves);
  std::vector<MerkleNode> changed;
  Digest root{};
  ASSERT_OK(MerkleDelta(below, {{0, 1234, LeafOf(1234, 9)}}, leaves.size(), &changed, &root));
  EXPECT_EQ(changed.size(), 13u);  // one node per level
  EXPECT_TRUE(below.reads <= 12);  // one sibling per level
}

TEST(delta_refuses_unsorted_out_of_range_or_uncovered_leaves) {
  const auto leaves = Leaves(4, 0);
  MemoryTree below(leaves);
  std::vector<MerkleNode> changed;
  Digest root{};
  const Digest x = LeafOf(0, 3);
  EXPECT_CODE(MerkleDelta(below, {{0, 2, x}, {0, 1, x}}, 4, &changed, &root),
              ErrorCode::kInvalidArgument);
  EXPECT_CODE(MerkleDelta(below, {{0, 1, x}, {0, 1, x}}, 4, &changed, &root),
              ErrorCode::kInvalidArgument);
  EXPECT_CODE(MerkleDelta(below, {{0, 4, x}}, 4, &changed, &root),
              ErrorCode::kInvalidArgument);
  EXPECT_CODE(MerkleDelta(below, {{0, 4, x}}, 6, &changed, &root),
              ErrorCode::kInvalidArgument);
}

TEST(hash_image_matches_the_definition_and_writes_a_readable_tree) {
  const std::string dir = revpatch_test::TempDir();
  const uint32_t bs = 512;
  const uint64_t sizes[] = {0, 1, 511, 512, 513, 1024, 3 * 512 + 100, 17 * 512};
  for (uint64_t size : sizes) {
    const Bytes image = revpatch_test::StampedImage(size, 3, bs);
    const std::string img = dir + "/image";
    const std::string tree_path = dir + "/image.tree";
    ASSERT_TRUE(revpatch_test::WriteBytes(img, image));
    std::vector<Digest> leaves;
    for (uint64_t b = 0; b < revpatch::BlockCount(size, bs); ++b) {
      Bytes block(bs, 0);
      std::copy(image.begin() + b * bs,
                image.begin() + std::min<uint64_t>(size, (b + 1) * bs), block.begin());
      leaves.push_back(LeafHash(block.data(), bs));
    }
    const Digest want = revpatch::ViewDigest(size, bs, RootOf(leaves));
    Digest got{}, got_with_tree{};
    uint64_t got_size = 99;
    ASSERT_OK(revpatch::HashImage(img, bs, "", &got, &got_size));
    EXPECT_TRUE(got == want);
    EXPECT_EQ(got_size, size);
    ASSERT_OK(revpatch::HashImage(img, bs, tree_path, &got_with_tree, nullptr));
    EXPECT_TRUE(got_with_tree == want);
    std::unique_ptr<revpatch::MerkleTreeFile> tree;
    ASSERT_OK(revpatch::MerkleTreeFile::Open(tree_path, &tree));
    EXPECT_EQ(tree->leaf_count(), leaves.size());
    EXPECT_EQ(tree->size_bytes(), size);
    EXPECT_EQ(tree->block_size(), bs);
    EXPECT_TRUE(tree->view_digest() == want);
    if (!leaves.empty()) {
      const auto full = FullTree(leaves);
      for (uint32_t l = 0; l < full.size(); ++l) {
        for (uint64_t i = 0; i < full[l].size(); ++i) {
          Digest node{};
          ASSERT_OK(tree->GetNode(l, i, &node));
          EXPECT_TRUE(node == full[l][i]);
        }
      }
      Digest node{};
      EXPECT_CODE(tree->GetNode(0, leaves.size(), &node), ErrorCode::kBadExtent);
      EXPECT_CODE(tree->GetNode(static_cast<uint32_t>(full.size()), 0, &node),
                  ErrorCode::kBadExtent);
    }
    // Overwriting an existing tree file goes through rename.
    ASSERT_OK(revpatch::HashImage(img, bs, tree_path, &got_with_tree, nullptr));
    EXPECT_EQ(revpatch_test::CountEntries(dir), 2u);
  }
  revpatch_test::RemoveDir(dir);
}

TEST(tree_file_spanning_several_read_chunks_is_correct) {
  // More level-0 nodes than one 64 Ki-node read chunk, and an odd count.
  const std::string dir = revpatch_test::TempDir();
  const uint32_t bs = 512;
  const uint64_t n = (1 << 16) * 2 + 37;
  const Bytes image = revpatch_test::StampedImage(n * bs - 5, 4, bs);
  ASSERT_TRUE(revpatch_test::WriteBytes(dir + "/big", image));
  Digest digest{};
  ASSERT_OK(revpatch::HashImage(dir + "/big", bs, dir + "/big.tree", &digest, nullptr));
  std::unique_ptr<revpatch::MerkleTreeFile> tree;
  ASSERT_OK(revpatch::MerkleTreeFile::Open(dir + "/big.tree", &tree));
  std::vector<Digest> leaves;
  for (uint64_t b = 0; b < n; ++b) {
    Bytes block(bs, 0);
    std::copy(image.begin() + b * bs,
              image.begin() + std::min<uint64_t>(image.size(), (b + 1) * bs), block.begin());
    leaves.push_back(LeafHash(block.data(), bs));
  }
  const auto full = FullTree(leaves);
  EXPECT_TRUE(digest == revpatch::ViewDigest(image.size(), bs, full.back()[0]));
  for (uint32_t l = 1; l < full.size(); ++l) {
    for (uint64_t i : {uint64_t{0}, uint64_t{full[l].size() / 2}, uint64_t{full[l].size() - 1}}) {
      Digest node{};
      ASSERT_OK(tree->GetNode(l, i, &node));
      EXPECT_TRUE(node == full[l][i]);
    }
  }
  revpatch_test::RemoveDir(dir);
}

TEST(damaged_tree_files_are_refused) {
  const std::string dir = revpatch_test::TempDir();
  const uint32_t bs = 512;
  ASSERT_TRUE(revpatch_test::WriteBytes(dir + "/img", revpatch_test::StampedImage(5000, 1, bs)));
  Digest d{};
  ASSERT_OK(revpatch::HashImage(dir + "/img", bs, dir + "/tree", &d, nullptr));
  const Bytes good = revpatch_test::ReadBytes(dir + "/tree");
  std::unique_ptr<revpatch::MerkleTreeFile> tree;
  for (size_t offset : {size_t{0}, size_t{12}, size_t{20}, size_t{50}, size_t{80},
                        size_t{110}, size_t{200}, good.size() - 1}) {
    Bytes bad = good;
    bad[offset] ^= 0x40;
    ASSERT_TRUE(revpatch_test::WriteBytes(dir + "/bad", bad));
    EXPECT_CODE(revpatch::MerkleTreeFile::Open(dir + "/bad", &tree), ErrorCode::kCorrupt);
  }
  Bytes truncated(good.begin(), good.end() - 32);
  ASSERT_TRUE(revpatch_test::WriteBytes(dir + "/bad", truncated));
  EXPECT_CODE(revpatch::MerkleTreeFile::Open(dir + "/bad", &tree), ErrorCode::kCorrupt);
  EXPECT_CODE(revpatch::MerkleTreeFile::Open(dir + "/missing", &tree), ErrorCode::kNotFound);
  EXPECT_CODE(revpatch::HashImage(dir + "/img", 1000, "", &d, nullptr),
              ErrorCode::kInvalidArgument);
  revpatch_test::RemoveDir(dir);
}

TEST(leaf_hashes_of_a_run_equal_one_leaf_hash_per_block) {
  for (uint32_t bs : {512u, 4096u}) {
    std::vector<uint8_t> blocks(7 * size_t{bs});
    for (size_t i = 0; i < blocks.size(); ++i) blocks[i] = static_cast<uint8_t>(i * 7 + i / bs);
    for (size_t count = 0; count <= 7; ++count) {
      std::vector<Digest> out(count);
      revpatch::LeafHashes(blocks.data(), count, bs, out.data());
      for (size_t i = 0; i < count; ++i) {
        EXPECT_TRUE(out[i] == LeafHash(&blocks[i * bs], bs));
      }
    }
  }
}

TEST(inner_hash_pair_equals_two_inner_hashes) {
  for (int i = 0; i < 50; ++i) {
    const Digest la = revpatch::Sha256::Hash(&i, sizeof(i));
    const Digest ra = revpatch::Sha256::Hash(la.data(), 7);
    const Digest lb = revpatch::Sha256::Hash(ra.data(), 9);
    const Digest rb = revpatch::Sha256::Hash(lb.data(), 11);
    Digest a, b;
    InnerHashPair(la, ra, lb, rb, &a, &b);
    EXPECT_TRUE(a == InnerHash(la, ra));
    EXPECT_TRUE(b == InnerHash(lb, rb));
  }
}

namespace {

// Writes `image` to `path` leaving holes where it has runs of zeros of
// 4 KiB or more on 4 KiB boundaries (the filesystem's granule here), so a
// block of another size may lie partly in a hole.
bool WriteWithHoles(const std::string& path, const Bytes& image) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return false;
  const size_t granule = 4096;
  bool ok = true;
  for (size_t at = 0; at < image.size(); at += granule) {
    const size_t n = std::min(granule, image.size() - at);
    bool zero = true;
    for (size_t i = 0; i < n; ++i) zero = zero && image[at + i] == 0;
    if (zero && n == granule) continue;
    ok = ok && std::fseek(f, static_cast<long>(at), SEEK_SET) == 0 &&
         std::fwrite(image.data() + at, 1, n, f) == n;
  }
  ok = ok && std::fclose(f) == 0;
  return ok && ::truncate(path.c_str(), static_cast<off_t>(image.size())) == 0;
}

Digest DefinitionDigest(const Bytes& image, uint32_t bs) {
  std::vector<Digest> leaves;
  for (uint64_t b = 0; b < revpatch::BlockCount(image.size(), bs); ++b) {
    Bytes block(bs, 0);
    std::copy(image.begin() + b * bs,
              image.begin() + std::min<uint64_t>(image.size(), (b + 1) * bs), block.begin());
    leaves.push_back(LeafHash(block.data(), bs));
  }
  return revpatch::ViewDigest(image.size(), bs, RootOf(leaves));
}

}  // namespace

TEST(hash_image_of_a_sparse_file_equals_the_dense_definition) {
  const std::string dir = revpatch_test::TempDir();
  Rng rng(11);
  for (uint32_t bs : {512u, 4096u, 65536u}) {
    for (int shape = 0; shape < 4; ++shape) {
      // Data runs and holes of random lengths (some not whole blocks, some
      // of many blocks), a hole or data at each end, a partial last block.
      const uint64_t size = 3 * 65536 * 16 + (shape == 3 ? 777 : 0);
      Bytes image(size, 0);
      for (uint64_t at = shape == 1 ? 70000 : 0; at < size;) {
        const uint64_t data = 1 + rng.Next() % 90000;
        for (uint64_t i = at; i < std::min(size, at + data); ++i) {
          image[i] = static_cast<uint8_t>(rng.Next() | 1);
        }
        at += data + rng.Next() % 300000;
      }
      if (shape == 2) std::fill(image.end() - 200000, image.end(), 0);
      ASSERT_TRUE(WriteWithHoles(dir + "/sparse", image));
      const Digest want = DefinitionDigest(image, bs);
      Digest got{}, with_tree{};
      ASSERT_OK(revpatch::HashImage(dir + "/sparse", bs, "", &got, nullptr));
      EXPECT_TRUE(got == want);
      ASSERT_OK(revpatch::HashImage(dir + "/sparse", bs, dir + "/sparse.tree", &with_tree, nullptr));
      EXPECT_TRUE(with_tree == want);
      std::unique_ptr<revpatch::MerkleTreeFile> tree;
      ASSERT_OK(revpatch::MerkleTreeFile::Open(dir + "/sparse.tree", &tree));
      EXPECT_TRUE(tree->view_digest() == want);
    }
  }
  revpatch_test::RemoveDir(dir);
}

TEST(hash_image_of_a_large_hole_folds_whole_zero_subtrees) {
  // 2 GiB, nearly all hole: the root equals the definition's over the
  // leaves (zero leaves but for three written blocks, one of them last).
  const std::string dir = revpatch_test::TempDir();
  const std::string path = dir + "/hole";
  const uint32_t bs = 4096;
  const uint64_t size = (uint64_t{2} << 30) + 1000;
  const uint64_t n = revpatch::BlockCount(size, bs);
  FILE* f = std::fopen(path.c_str(), "wb");
  ASSERT_TRUE(f != nullptr);
  Bytes zero(bs, 0);
  std::vector<Digest> leaves(n, LeafHash(zero.data(), bs));
  for (uint64_t b : {uint64_t{5}, uint64_t{300000}, n - 1}) {
    Bytes block(bs, 0);
    revpatch_test::Stamp(b, 9, b == n - 1 ? 1000 : bs, block.data());
    ASSERT_TRUE(std::fseek(f, static_cast<long>(b * bs), SEEK_SET) == 0);
    ASSERT_TRUE(std::fwrite(block.data(), 1, b == n - 1 ? 1000 : bs, f) ==
                (b == n - 1 ? 1000u : bs));
    leaves[b] = LeafHash(block.data(), bs);
  }
  ASSERT_TRUE(std::fclose(f) == 0);
  Digest got{};
  uint64_t got_size = 0;
  ASSERT_OK(revpatch::HashImage(path, bs, "", &got, &got_size));
  EXPECT_EQ(got_size, size);
  EXPECT_TRUE(got == revpatch::ViewDigest(size, bs, RootOf(leaves)));
  revpatch_test::RemoveDir(dir);
}
