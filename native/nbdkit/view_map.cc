#include "view_map.h"

#include <errno.h>
#include <unistd.h>

#include <algorithm>

#include "merkle.h"

namespace revpatch {
namespace {

constexpr uint64_t kLeafChunk = 4096;  // leaves checked per VerifiedBaseTree call

}  // namespace

ViewMap::ViewMap(View* view)
    : view_(view),
      block_size_(view->block_size()),
      size_(view->size_bytes()),
      blocks_(BlockCount(view->size_bytes(), view->block_size())) {
  if (!view->base_file().Size(&base_size_).ok()) base_size_ = 0;
  std::vector<uint8_t> zeros(block_size_, 0);
  zero_leaf_ = LeafHash(zeros.data(), block_size_);
}

void ViewMap::Append(uint64_t first_block, uint64_t blocks, bool zero,
                     std::vector<ViewExtent>* out) const {
  if (blocks == 0) return;
  const uint64_t offset = first_block * block_size_;
  const uint64_t end = std::min(size_, (first_block + blocks) * block_size_);
  if (end <= offset) return;
  if (!out->empty() && out->back().zero == zero &&
      out->back().offset + out->back().length == offset) {
    out->back().length = end - out->back().offset;
    return;
  }
  out->push_back(ViewExtent{offset, end - offset, zero});
}

Status ViewMap::Open(View* view, const std::string& base_tree_path,
                     std::unique_ptr<ViewMap>* out) {
  std::unique_ptr<ViewMap> map(new ViewMap(view));
  REVPATCH_RETURN_IF_ERROR(MerkleTreeFile::Open(base_tree_path, &map->base_tree_));
  // The base's digest: what the bottom layer was made over, or the view's
  // own when there is no layer.
  const Digest& base =
      view->layer_count() > 0 ? view->layer(0).below_digest() : view->digest();
  if (map->base_tree_->view_digest() != base) {
    return Status(ErrorCode::kSourceMismatch, "tree file " + base_tree_path + " is not the view's base tree");
  }
  map->base_leaves_.reset(new VerifiedBaseTree(map->base_tree_.get()));
  *out = std::move(map);
  return Status::Ok();
}

Status ViewMap::MapBase(uint64_t first, uint64_t end, std::vector<ViewExtent>* out) {
  const uint64_t bs = block_size_;
  const int fd = view_->base_file().fd();
  uint64_t b = first;
  while (b < end) {
    const uint64_t pos = b * bs;
    uint64_t data = pos;
    REVPATCH_RETURN_IF_ERROR(view_->base_file().NextData(pos, base_size_, &data));
    // Blocks wholly inside the hole [pos, data) are zero candidates; the
    // tree decides. A block the hole only partly covers is data.
    const uint64_t hole_end = std::min(end, data >= base_size_ ? end : data / bs);
    std::vector<Digest> leaves;
    while (b < hole_end) {
      const uint64_t n = std::min(kLeafChunk, hole_end - b);
      leaves.resize(static_cast<size_t>(n));
      REVPATCH_RETURN_IF_ERROR(base_leaves_->Leaves(b, n, leaves.data()));
      for (uint64_t i = 0; i < n; ++i) Append(b + i, 1, leaves[i] == zero_leaf_, out);
      b += n;
    }
    if (b >= end) break;
    // Data from here to the next hole (rounded out to whole blocks).
    uint64_t hole = base_size_;
#if defined(SEEK_HOLE)
    const off_t found = ::lseek(fd, static_cast<off_t>(b * bs), SEEK_HOLE);
    if (found >= 0) hole = std::min<uint64_t>(static_cast<uint64_t>(found), base_size_);
#else
    (void)fd;
#endif
    uint64_t data_end = hole >= base_size_ ? end : BlockCount(hole, block_size_);
    data_end = std::min(end, std::max(data_end, b + 1));
    Append(b, data_end - b, false, out);
    b = data_end;
  }
  return Status::Ok();
}

Status ViewMap::Map(uint64_t offset, uint64_t length, uint64_t max_blocks,
                    std::vector<ViewExtent>* out) {
  out->clear();
  if (offset >= size_ || length == 0 || max_blocks == 0) return Status::Ok();
  const uint64_t first = offset / block_size_;
  const uint64_t last = std::min(size_, offset + std::min(length, size_ - offset));
  const uint64_t end =
      std::min({blocks_, BlockCount(last, block_size_), first + max_blocks});
  const uint64_t base_blocks = BlockCount(base_size_, block_size_);
  SourceRuns runs(*view_, first, end);
  SourceRuns::Run run;
  while (runs.Next(&run)) {
    if (run.layer < 0) {
      if (run.end > base_blocks) {
        return Status(ErrorCode::kCorrupt, "block " + std::to_string(base_blocks) +
                                               " is past the base and in no layer");
      }
      REVPATCH_RETURN_IF_ERROR(MapBase(run.first, run.end, out));
      continue;
    }
    // A layer's run, split where its entries change between zero and data.
    LayerReader& layer = view_->layer(static_cast<size_t>(run.layer));
    uint64_t b = run.first;
    size_t pos = run.entry;
    while (b < run.end) {
      const bool zero = layer.EntryIsZero(pos);
      uint64_t len = 1;
      while (b + len < run.end && layer.EntryIsZero(pos + len) == zero) ++len;
      Append(b, len, zero, out);
      b += len;
      pos += len;
    }
  }
  return Status::Ok();
}

}  // namespace revpatch
