#include "view_map.h"

#include <errno.h>
#include <unistd.h>

#include <algorithm>
#include <limits>

#include "merkle.h"

namespace revpatch {
namespace {

constexpr uint64_t kNoBlock = std::numeric_limits<uint64_t>::max();

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

Status ViewMap::LeafIsZero(uint64_t block, bool* zero) {
  Digest leaf;
  REVPATCH_RETURN_IF_ERROR(view_->tree().GetNode(0, block, &leaf));
  *zero = leaf == zero_leaf_;
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
    while (b < hole_end) {
      bool zero = false;
      REVPATCH_RETURN_IF_ERROR(LeafIsZero(b, &zero));
      uint64_t run = 1;
      bool next_zero = zero;
      while (b + run < hole_end) {
        REVPATCH_RETURN_IF_ERROR(LeafIsZero(b + run, &next_zero));
        if (next_zero != zero) break;
        ++run;
      }
      Append(b, run, zero, out);
      b += run;
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
  const size_t k = view_->layer_count();
  std::vector<size_t> cursor(k);
  for (size_t i = 0; i < k; ++i) cursor[i] = view_->layer(i).LowerBound(first);

  const uint64_t base_blocks = BlockCount(base_size_, block_size_);
  uint64_t b = first;
  while (b < end) {
    // As View::ReadBlocks: the topmost layer holding b, and where the run
    // it serves ends (the next block a layer above it holds).
    int top = -1;
    uint64_t limit = end;
    uint64_t next_any = end;
    for (size_t i = k; i-- > 0;) {
      LayerReader& layer = view_->layer(i);
      const size_t n = layer.block_entries();
      size_t& pos = cursor[i];
      while (pos < n && layer.EntryBlock(pos) < b) ++pos;
      const uint64_t blk = pos < n ? layer.EntryBlock(pos) : kNoBlock;
      if (blk == b && top < 0) {
        top = static_cast<int>(i);
        limit = std::min(next_any, end);
      }
      next_any = std::min(next_any, blk);
    }
    if (top < 0) {
      const uint64_t run_end = std::min(next_any, end);
      if (run_end > base_blocks) {
        return Status(ErrorCode::kCorrupt, "block " + std::to_string(base_blocks) +
                                               " is past the base and in no layer");
      }
      REVPATCH_RETURN_IF_ERROR(MapBase(b, run_end, out));
      b = run_end;
      continue;
    }
    LayerReader& layer = view_->layer(static_cast<size_t>(top));
    const size_t pos = cursor[top];
    const size_t n = layer.block_entries();
    const bool zero = layer.EntryIsZero(pos);
    size_t run = 1;
    while (b + run < limit && pos + run < n && layer.EntryBlock(pos + run) == b + run &&
           layer.EntryIsZero(pos + run) == zero) {
      ++run;
    }
    Append(b, run, zero, out);
    cursor[top] += run;
    b += run;
  }
  return Status::Ok();
}

}  // namespace revpatch
