// Which parts of a view hold data and which read as zeros with nothing
// stored: what the NBD export answers to NBD_CMD_BLOCK_STATUS, so a client
// such as nbdcopy or qemu-img skips the zeros and a sparse result stays
// sparse (DESIGN.md, serve-view).
//
// Two sources say "zero", and only where the answer can be trusted without
// reading the bytes, since a client that believes it never reads them:
//  - a layer's zero entry (the index, covered by the layer's checksum, says
//    the block is zeros; nothing is stored);
//  - a hole in the base file (SEEK_DATA/SEEK_HOLE) whose blocks the view's
//    tree says are zero blocks (the leaf is the zero block's leaf). A hole
//    where the tree expects data is reported as data, so the read that
//    follows fails its check instead of a client assuming zeros.
// Everything else is data. The map works at block granularity and is free of
// nbdkit, so it can be tested on its own.
#ifndef REVPATCH_NBDKIT_VIEW_MAP_H_
#define REVPATCH_NBDKIT_VIEW_MAP_H_

#include <cstdint>
#include <vector>

#include "sha256.h"
#include "status.h"
#include "view.h"

namespace revpatch {

struct ViewExtent {
  uint64_t offset = 0;
  uint64_t length = 0;
  bool zero = false;  // reads as zeros and nothing is stored (hole + zero)
};

class ViewMap {
 public:
  // `view` must outlive the map and not change while it is used. Safe to
  // call Map() from several threads at once (reads use pread and lseek
  // with SEEK_DATA/SEEK_HOLE only, and keep no state between calls).
  explicit ViewMap(View* view);

  // Describes the view from the block holding `offset` on, covering at
  // least the byte at `offset` and at most `length` bytes past it, and at
  // most `max_blocks` blocks: consecutive extents, ascending, adjacent ones
  // of one kind merged, none past the view's size.
  Status Map(uint64_t offset, uint64_t length, uint64_t max_blocks,
             std::vector<ViewExtent>* out);

 private:
  // Appends [first, end) blocks of the base, split by the base file's
  // holes and checked against the tree.
  Status MapBase(uint64_t first, uint64_t end, std::vector<ViewExtent>* out);
  Status LeafIsZero(uint64_t block, bool* zero);
  void Append(uint64_t first_block, uint64_t blocks, bool zero,
              std::vector<ViewExtent>* out) const;

  View* view_;
  uint32_t block_size_;
  uint64_t size_;
  uint64_t blocks_;
  uint64_t base_size_ = 0;
  Digest zero_leaf_{};
};

}  // namespace revpatch

#endif  // REVPATCH_NBDKIT_VIEW_MAP_H_
