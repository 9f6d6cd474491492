// The view digest: a Merkle tree over the SHA-256 of every block.
//
// Why a tree: installing a patch must check that it applies to the current
// view without hashing the whole volume (DESIGN.md invariant 5). The base's
// tree is built once at init and kept in a file; each layer stores only the
// tree nodes its blocks changed, so a new view digest costs
// O(changed blocks x log n) hashes and reads.
//
// Definition (also in docs/on-disk-format.md), n = block count:
//   leaf(i)        = SHA256(0x00 || block i, zero-padded to block_size)
//   level 0        = leaf(0..n-1)
//   level l+1, i   = SHA256(0x01 || L || R) with L = level l node 2i and
//                    R = level l node 2i+1; when 2i+1 is past the level's
//                    end the node is L itself (promoted, not rehashed)
//   the root is the single node of the first level with one node;
//   n == 0: root = SHA256("") 
//   view digest    = SHA256("revpatch-view-v1" || u64le size_bytes ||
//                           u32le block_size || root)
// A node covering blocks that did not change, entirely below
// min(old n, new n), keeps its value between two views; that is what makes
// the per-layer delta small.
#ifndef REVPATCH_ENGINE_MERKLE_H_
#define REVPATCH_ENGINE_MERKLE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "block_io.h"
#include "sha256.h"
#include "status.h"

namespace revpatch {

// Number of nodes at `level` for n leaves: ceil(n / 2^level); levels run
// from 0 to MerkleHeight(n) - 1 where the last level has one node.
uint64_t MerkleLevelWidth(uint64_t leaves, uint32_t level);
uint32_t MerkleHeight(uint64_t leaves);  // 1 for n <= 1.

Digest LeafHash(const uint8_t* block, uint32_t block_size);
// LeafHash of each of the `count` blocks stored back to back at `blocks`,
// into out[0, count): two at a time on one core (Sha256::UpdatePair), which
// is faster wherever a run of blocks is hashed.
void LeafHashes(const uint8_t* blocks, size_t count, uint32_t block_size, Digest* out);
Digest InnerHash(const Digest& left, const Digest& right);
// InnerHash(left_a, right_a) into *a and InnerHash(left_b, right_b) into
// *b, the two computed together (Sha256::UpdatePair).
void InnerHashPair(const Digest& left_a, const Digest& right_a, const Digest& left_b,
                   const Digest& right_b, Digest* a, Digest* b);
Digest ViewDigest(uint64_t size_bytes, uint32_t block_size,
                  const Digest& root);

// Read access to the nodes of some view's tree.
class MerkleNodeSource {
 public:
  virtual ~MerkleNodeSource() = default;
  virtual uint64_t leaf_count() const = 0;
  virtual Status GetNode(uint32_t level, uint64_t index, Digest* out) = 0;
};

struct MerkleNode {
  uint32_t level;
  uint64_t index;
  Digest hash;
};

// Given the tree below (the current view, `below.leaf_count()` leaves) and
// the new leaf hashes of a layer (sorted by index, unique, every index <
// new_leaves, and covering every index in [below leaves, new_leaves)),
// computes every node of the new tree that differs from `below` or lies
// where the below tree has no node, in (level, index) order, and the root.
Status MerkleDelta(MerkleNodeSource& below,
                   const std::vector<MerkleNode>& new_leaves_level0,
                   uint64_t new_leaves, std::vector<MerkleNode>* changed,
                   Digest* root);

// The leaves given to MerkleInnerDelta, read where the caller keeps them
// (a layer's index entries): count() of them, the i-th's index and hash.
class MerkleLeafList {
 public:
  virtual ~MerkleLeafList() = default;
  virtual size_t count() const = 0;
  virtual void Get(size_t i, uint64_t* index, Digest* hash) const = 0;
};

// MerkleDelta with the leaves read through `leaves` and only the inner
// nodes (level >= 1) in *changed, for a caller that keeps the leaves
// itself: a large layer's seal copies them nowhere. Each level is hashed
// straight into *changed and read back from there for the next, so the
// memory is the output's.
Status MerkleInnerDelta(MerkleNodeSource& below, const MerkleLeafList& leaves,
                        uint64_t new_leaves, std::vector<MerkleNode>* changed,
                        Digest* root);

// Streams a whole image and computes its view digest with O(log n) memory.
// If `tree_path` is not empty, also writes the whole tree there (temp file,
// fsync, rename, directory fsync) in the format MerkleTreeFile reads.
Status HashImage(const std::string& image_path, uint32_t block_size,
                 const std::string& tree_path, Digest* view_digest,
                 uint64_t* size_bytes);

// A tree file written by HashImage: a header (magic, version, block size,
// size in bytes, leaf count, view digest, checksum) and the levels stored
// one after another. Nodes are read with pread on demand; memory is O(1).
class MerkleTreeFile : public MerkleNodeSource {
 public:
  static Status Open(const std::string& path, std::unique_ptr<MerkleTreeFile>* out);
  uint64_t leaf_count() const override;
  uint64_t size_bytes() const;
  uint32_t block_size() const;
  const Digest& view_digest() const;
  // The root stored in the header (covered by the header checksum, unlike
  // the levels below it: VerifiedBaseTree checks those against it).
  const Digest& root() const;
  const std::string& path() const;
  Status GetNode(uint32_t level, uint64_t index, Digest* out) override;
  // Nodes [first, first + count) of `level` into out[0, count), one pread.
  Status ReadNodes(uint32_t level, uint64_t first, uint64_t count, Digest* out) const;
  ~MerkleTreeFile() override;

 private:
  MerkleTreeFile();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace revpatch

#endif  // REVPATCH_ENGINE_MERKLE_H_
