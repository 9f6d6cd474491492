// A layer: one patch's changed blocks in a file of its own.
//
// Layout (docs/on-disk-format.md): a header, the block data in write order,
// then a sorted block index, the changed Merkle nodes, and a footer with the
// target size, the view digest after this layer and a checksum over header,
// index, nodes and footer. Each index entry also holds the block's leaf hash,
// so Verify() can check the data and a read can be checked on demand.
//
// A layer is written once: LayerWriter appends blocks, Seal() writes the
// index, nodes and footer and fsyncs the file and its directory. From then
// on it never changes (invariant 2). A file without a valid footer is garbage
// and the caller collects it; LayerReader::Open() refuses it (kCorrupt).
#ifndef REVPATCH_ENGINE_LAYER_FILE_H_
#define REVPATCH_ENGINE_LAYER_FILE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "block_io.h"
#include "file_io.h"
#include "merkle.h"
#include "sha256.h"
#include "status.h"

namespace revpatch {

class View;

class LayerWriter : public BlockSink {
 public:
  // Creates `path` (must not exist) for a layer over `below` whose target
  // view is `target_size` bytes in blocks of below.block_size(). `below` must
  // outlive the writer.
  static Status Create(const std::string& path, uint64_t target_size,
                       View* below, std::unique_ptr<LayerWriter>* out);
  ~LayerWriter() override;  // Calls Abort() unless sealed.

  Status WriteBlock(uint64_t block, const uint8_t* data) override;
  Status WriteZeroBlock(uint64_t block) override;

  // Writes zero entries for every block in [below's block count, target
  // block count) not yet written, computes the Merkle delta and the new view
  // digest; if `expected` is given and differs, fails with kHashMismatch and
  // leaves the file unsealed. Otherwise writes index, nodes and footer and
  // fsyncs file and directory. A failed fsync poisons the writer.
  Status Seal(const Digest* expected, Digest* view_digest);
  // Closes and unlinks the unsealed file. Safe to call more than once.
  void Abort();

  uint64_t blocks_written() const;
  uint64_t bytes_written() const;

 private:
  LayerWriter();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

class LayerReader {
 public:
  // Opens and checks the footer checksum and index ordering (O(changed)).
  static Status Open(const std::string& path, std::unique_ptr<LayerReader>* out);
  ~LayerReader();

  uint32_t block_size() const;
  uint64_t target_size() const;
  const Digest& view_digest() const;
  uint64_t block_entries() const;
  // The view this layer was sealed over: its size and digest. View::Open
  // checks them against the layers beneath, so a broken chain is refused.
  uint64_t below_size() const;
  const Digest& below_digest() const;

  // *found is false if this layer does not hold `block`.
  Status ReadBlock(uint64_t block, uint8_t* out, bool* found);
  bool HasBlock(uint64_t block) const;
  // Stored Merkle node, if this layer changed it.
  bool FindNode(uint32_t level, uint64_t index, Digest* out) const;
  // Sorted block numbers this layer holds (zero entries included).
  std::vector<uint64_t> Blocks() const;
  // Re-reads every stored block and checks it against its leaf hash.
  Status Verify();

  // Positional access for sequential readers (View::ReadBlocks), entries
  // being sorted by block: the first entry whose block is >= `block`
  // (block_entries() if none), the block of entry `pos`, and the data of
  // entries [pos, pos + count) into `out` (count blocks; entries stored back
  // to back are read with one pread; zero entries read as zeros).
  size_t LowerBound(uint64_t block) const;
  uint64_t EntryBlock(size_t pos) const;
  Status ReadEntries(size_t pos, size_t count, uint8_t* out);

 private:
  LayerReader();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// True if the file at `path` has a valid footer (a sealed layer).
bool IsSealedLayer(const std::string& path);

}  // namespace revpatch

#endif  // REVPATCH_ENGINE_LAYER_FILE_H_
