// The composed view: the base volume plus the active layers, read block by
// block from the topmost layer that has the block (DESIGN.md, View).
//
// Layers are given bottom to top and must form a chain: each was sealed
// over exactly the view made by the base and the layers beneath it. Blocks
// at or past the base's block count come only from layers (a layer that
// grows the volume stores every new block), and the view's size is the top
// layer's target size.
//
// Verified reads (docs/reliability.md, "Verified reads"): by default every
// block ReadBlocks returns has been hashed and compared with its leaf: a
// layer's block with the leaf in that layer's index (covered by the footer
// checksum LayerReader::Open checks), a base block with its leaf in the base
// tree file, itself checked up to the header's root (VerifiedBaseTree). A
// block that differs is never returned: the read fails with kCorrupt, whose
// message names the block and where it came from, and the corruption
// handler, if set, hears of each bad block first.
//
// Reads are safe from several threads at once on one View (an NBD server
// serves parallel requests): ReadBlocks and ReadBytes keep their cursors on
// the stack and the base tree's cache is behind a mutex. The setters below
// are not: call them before the reads begin.
#ifndef REVPATCH_ENGINE_VIEW_H_
#define REVPATCH_ENGINE_VIEW_H_

#include <cstdint>
#include <functional>
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

class VerifiedBaseTree;

// One block that failed its check (or could not be checked: a base tree
// whose nodes do not lead to its root).
struct CorruptRead {
  uint64_t block = 0;
  int layer = -1;  // index of the layer (0 = bottom), -1 = the base
  std::string detail;
};

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

  // As ReadBlocks, but a block that fails its check does not stop the
  // read: it is appended to *bad, reads as zeros, and the call goes on to
  // the end (the scrub). Returns kCorrupt only through *bad; other errors
  // (I/O) stop it as ReadBlocks.
  Status CheckBlocks(uint64_t first, uint64_t count, uint8_t* out,
                     std::vector<CorruptRead>* bad);

  // On by default. Off only for benchmarks and tools that check the bytes
  // another way.
  void SetVerifyReads(bool verify);
  bool verify_reads() const;
  // Called once per failed block check, from the reading thread, before the
  // read returns kCorrupt (or, in CheckBlocks, before the block is listed).
  void SetCorruptionHandler(std::function<void(const CorruptRead&)> handler);
  // Where a block from `layer` came from, as messages name it: the base's
  // path for -1, else the layer's.
  std::string SourceName(int layer) const;

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

// Walks blocks [first, end) of a view as runs that one source serves: each
// block comes from the topmost layer holding it, else from the base. A run
// from a layer is consecutive index entries of that layer that no layer
// above it overrides. View's reads go through it; so does the NBD export's
// map of holes and zeros (native/nbdkit/view_map.h). O(layers) per run; the
// cursors start at each layer's first entry >= first (a binary search).
class SourceRuns {
 public:
  struct Run {
    uint64_t first = 0;  // first block of the run
    uint64_t end = 0;    // one past its last block
    int layer = -1;      // index from the bottom, or -1 for the base
    size_t entry = 0;    // for a layer: the index entry of `first`
  };

  // `first` <= `end` <= the view's block count; the view outlives the walker.
  SourceRuns(View& view, uint64_t first, uint64_t end);
  // The next run, or false once `end` is reached.
  bool Next(Run* run);

 private:
  View& view_;
  const uint64_t end_;
  uint64_t block_;
  size_t small_[8];
  std::vector<size_t> large_;
  size_t* cursor_;
};

}  // namespace revpatch

#endif  // REVPATCH_ENGINE_VIEW_H_
