// The base tree file's leaves, each checked up to the header's root before
// a read relies on it.
//
// Why: a verified read of a base block compares the block's hash with its
// leaf in the base tree file (HashImage's output). The header and its root
// are covered by a checksum, but the levels are not, so a leaf read from the
// file is only as good as the path from it to the root. Checking that path
// for every read would cost log n reads and hashes per block; instead:
//
// - The level g ("group height") whose width is at most kMaxTopNodes is
//   read once, on first use, and folded up to the root (about width
//   hashes, a few milliseconds for a 1 TiB volume). It stays in memory:
//   at most 4 MiB.
// - The 2^g leaves under one node of level g (a "group") are read with one
//   pread the first time a block of theirs is read, folded up g levels and
//   compared with that node (2^g - 1 inner hashes: about 1/60 of the cost
//   of hashing the group's blocks). Checked groups are kept in an LRU cache
//   of at most kCacheBytes, so sequential reads check each group once.
//
// A group or top level that does not lead to the root is kCorrupt naming
// the tree file and the leaves; nothing under it is ever returned as a
// verified leaf. A failed top level is remembered (the file will not get
// better); a failed group is retried on the next read.
//
// Thread safety: Leaves() may be called from several threads at once. The
// cache is behind a mutex held only to look up or insert; a group is read
// and checked outside it (two threads missing the same group both check
// it, which is harmless).
#ifndef REVPATCH_ENGINE_VERIFIED_TREE_H_
#define REVPATCH_ENGINE_VERIFIED_TREE_H_

#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "merkle.h"
#include "sha256.h"
#include "status.h"

namespace revpatch {

class VerifiedBaseTree {
 public:
  static constexpr uint64_t kMaxTopNodes = uint64_t{1} << 17;  // 4 MiB of level g
  static constexpr uint32_t kMinGroupHeight = 8;                // 256 leaves, 8 KiB
  static constexpr size_t kCacheBytes = size_t{16} << 20;

  // `tree` must outlive this object. Reads nothing yet.
  explicit VerifiedBaseTree(const MerkleTreeFile* tree);

  // The checked leaf hashes [first, first + count) into out[0, count).
  // first + count must be at most the tree's leaf count (kBadExtent).
  Status Leaves(uint64_t first, uint64_t count, Digest* out);

  uint32_t group_height() const { return group_height_; }

 private:
  using Group = std::shared_ptr<const std::vector<Digest>>;
  Status LoadTop();
  Status GetGroup(uint64_t group, Group* out);
  Status CheckGroup(uint64_t group, Group* out) const;

  const MerkleTreeFile* tree_;
  uint64_t leaves_;
  uint32_t group_height_;
  size_t max_groups_;

  std::mutex mu_;  // guards everything below
  bool top_loaded_ = false;
  Status top_status_;
  std::vector<Digest> top_;  // level group_height_, checked against the root
  std::list<uint64_t> lru_;  // most recently used first
  struct Cached {
    Group leaves;
    std::list<uint64_t>::iterator position;
  };
  std::unordered_map<uint64_t, Cached> cache_;
};

}  // namespace revpatch

#endif  // REVPATCH_ENGINE_VERIFIED_TREE_H_
