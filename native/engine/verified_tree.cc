#include "verified_tree.h"

#include <algorithm>
#include <string>
#include <utility>

namespace revpatch {
namespace {

// Folds `nodes` (consecutive nodes of one level, starting at an even index
// or being the whole level) up `levels` levels in place, with the tree's
// rule: a last node without a right sibling is promoted unchanged.
void FoldUp(std::vector<Digest>* nodes, uint32_t levels) {
  std::vector<Digest>& n = *nodes;
  for (uint32_t l = 0; l < levels && n.size() > 1; ++l) {
    const size_t pairs = n.size() / 2;
    size_t i = 0;
    for (; i + 2 <= pairs; i += 2) {
      InnerHashPair(n[2 * i], n[2 * i + 1], n[2 * i + 2], n[2 * i + 3], &n[i], &n[i + 1]);
    }
    if (i < pairs) n[i] = InnerHash(n[2 * i], n[2 * i + 1]);
    if (n.size() % 2 != 0) {
      n[pairs] = n[n.size() - 1];
      n.resize(pairs + 1);
    } else {
      n.resize(pairs);
    }
  }
}

}  // namespace

VerifiedBaseTree::VerifiedBaseTree(const MerkleTreeFile* tree)
    : tree_(tree), leaves_(tree->leaf_count()) {
  const uint32_t height = MerkleHeight(leaves_);
  uint32_t g = kMinGroupHeight;
  while (MerkleLevelWidth(leaves_, g) > kMaxTopNodes) ++g;
  group_height_ = std::min(g, height - 1);
  const size_t group_bytes = (size_t{1} << group_height_) * sizeof(Digest);
  max_groups_ = std::max<size_t>(4, kCacheBytes / group_bytes);
}

Status VerifiedBaseTree::LoadTop() {
  if (top_loaded_) return top_status_;
  const uint64_t width = MerkleLevelWidth(leaves_, group_height_);
  std::vector<Digest> level(static_cast<size_t>(width));
  Status s = tree_->ReadNodes(group_height_, 0, width, level.data());
  if (s.ok()) {
    std::vector<Digest> fold(level);
    FoldUp(&fold, MerkleHeight(leaves_) - 1 - group_height_);
    if (fold.size() != 1 || fold[0] != tree_->root()) {
      s = Status(ErrorCode::kCorrupt, "base tree file " + tree_->path() + ": level " +
                                          std::to_string(group_height_) +
                                          " does not lead to its root");
    }
  }
  // An I/O error may pass; a tree that does not lead to its root will not.
  if (!s.ok() && s.code() != ErrorCode::kCorrupt) return s;
  top_loaded_ = true;
  top_status_ = s;
  if (s.ok()) top_ = std::move(level);
  return s;
}

Status VerifiedBaseTree::CheckGroup(uint64_t group, Group* out) const {
  const uint64_t first = group << group_height_;
  const uint64_t count = std::min<uint64_t>(uint64_t{1} << group_height_, leaves_ - first);
  auto leaves = std::make_shared<std::vector<Digest>>(static_cast<size_t>(count));
  REVPATCH_RETURN_IF_ERROR(tree_->ReadNodes(0, first, count, leaves->data()));
  std::vector<Digest> fold(*leaves);
  FoldUp(&fold, group_height_);
  if (fold.size() != 1 || fold[0] != top_[static_cast<size_t>(group)]) {
    return Status(ErrorCode::kCorrupt,
                  "base tree file " + tree_->path() + ": leaves " + std::to_string(first) +
                      ".." + std::to_string(first + count - 1) +
                      " do not lead to its root");
  }
  *out = std::move(leaves);
  return Status::Ok();
}

Status VerifiedBaseTree::GetGroup(uint64_t group, Group* out) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    REVPATCH_RETURN_IF_ERROR(LoadTop());
    auto it = cache_.find(group);
    if (it != cache_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second.position);
      *out = it->second.leaves;
      return Status::Ok();
    }
  }
  // top_ never changes once loaded, so it is read here without the lock.
  Group checked;
  REVPATCH_RETURN_IF_ERROR(CheckGroup(group, &checked));
  std::lock_guard<std::mutex> lock(mu_);
  if (cache_.find(group) == cache_.end()) {
    lru_.push_front(group);
    cache_[group] = Cached{checked, lru_.begin()};
    while (cache_.size() > max_groups_) {
      cache_.erase(lru_.back());
      lru_.pop_back();
    }
  }
  *out = std::move(checked);
  return Status::Ok();
}

Status VerifiedBaseTree::Leaves(uint64_t first, uint64_t count, Digest* out) {
  if (first > leaves_ || count > leaves_ - first) {
    return Status(ErrorCode::kBadExtent, "leaves out of range of the base tree");
  }
  uint64_t done = 0;
  while (done < count) {
    const uint64_t leaf = first + done;
    const uint64_t group = leaf >> group_height_;
    Group g;
    REVPATCH_RETURN_IF_ERROR(GetGroup(group, &g));
    const uint64_t offset = leaf - (group << group_height_);
    const uint64_t n = std::min<uint64_t>(count - done, g->size() - offset);
    std::copy(g->begin() + offset, g->begin() + offset + n, out + done);
    done += n;
  }
  return Status::Ok();
}

}  // namespace revpatch
