// The composed view: the base volume plus the active layers, read block by
// block from the topmost layer that has the block (DESIGN.md, View).
//
// Layers are given bottom to top and must form a chain: each was sealed
// over exactly the view made by the base and the layers beneath it. Blocks
// at or past the base's block count come only from layers (a layer that
// grows the volume stores every new block), and the view's size is the top
// layer's target size.
#ifndef REVPATCH_ENGINE_VIEW_H_
#define REVPATCH_ENGINE_VIEW_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "block_io.h"
#include "file_io.h"
#include "layer_file.h"
#include "merkle.h"
#include "sha256.h"
#include "status.h"

namespace revpatch {

class View : public BlockSource {
 public:
  // `base_tree_path` is the file HashImage wrote for the base; its size and
  // block size must match the base file (else kSourceMismatch).
  static Status Open(const std::string& base_path,
                     const std::string& base_tree_path,
                     const std::vector<std::string>& layer_paths,
                     std::unique_ptr<View>* out);
  ~View() override;

  uint32_t block_size() const override;
  uint64_t size_bytes() const override;
  Status ReadBlocks(uint64_t first, uint64_t count, uint8_t* out) override;
  // Reads bytes [offset, offset + size); bytes past size_bytes() read as
  // zeros (all `size` bytes of `out` are written).
  Status ReadBytes(uint64_t offset, uint64_t size, uint8_t* out);

  // O(1): the top layer's stored digest, or the base tree's.
  const Digest& digest() const;
  // The tree of this view: layer nodes top-down, then the base tree file.
  MerkleNodeSource& tree();

  const File& base_file() const;
  size_t layer_count() const;
  LayerReader& layer(size_t i);  // 0 = bottom.
  // Sorted union of all blocks held by any layer (what export must write
  // over a clone of the base).
  std::vector<uint64_t> ChangedBlocks() const;

 private:
  View();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace revpatch

#endif  // REVPATCH_ENGINE_VIEW_H_
