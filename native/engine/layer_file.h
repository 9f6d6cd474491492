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

// One index entry (docs/on-disk-format.md, "Layer file").
constexpr uint64_t kLayerZeroOffset = ~uint64_t{0};  // offset of a zero block
struct LayerIndexEntry {
  uint64_t block = 0;
  uint64_t offset = 0;  // file offset of the data, or kLayerZeroOffset
  Digest leaf{};
};

// What an unsealed writer has done, for an apply checkpoint: the number of
// data blocks after the header (the file is bs * (1 + data_blocks) bytes of
// it) and the index entries in write order. Entry k with data has offset
// bs * (1 + its rank among the data entries).
struct LayerWriterState {
  uint64_t data_blocks = 0;
  std::vector<LayerIndexEntry> entries;
};

class LayerWriter : public BlockSink {
 public:
  // Creates `path` (must not exist) for a layer over `below` whose target
  // view is `target_size` bytes in blocks of below.block_size(). `below` must
  // outlive the writer.
  static Status Create(const std::string& path, uint64_t target_size,
                       View* below, std::unique_ptr<LayerWriter>* out);
  // Reopens the unsealed layer an interrupted writer left at `path` and
  // continues from `state`, saved by SaveState() after a Sync(). Checks that
  // the file holds the header for this `below` and `target_size` and at
  // least the state's data, that the entries are well formed (blocks inside
  // the target, none twice, data offsets in write order, zero entries with
  // the zero leaf) and that every data block still matches its leaf hash
  // (O(data so far), sequential reads); then cuts the file to the state's
  // data, dropping whatever was written after the save. kCorrupt if any
  // check fails; the file is then left as it was.
  static Status Resume(const std::string& path, uint64_t target_size, View* below,
                       const LayerWriterState& state, std::unique_ptr<LayerWriter>* out);
  ~LayerWriter() override;  // Calls Abort() unless sealed or detached.

  Status WriteBlock(uint64_t block, const uint8_t* data) override;
  // As WriteBlock on each, with the run's leaves hashed two at a time and
  // its data appended in large writes.
  Status WriteBlocks(uint64_t first, uint64_t count, uint32_t block_size,
                     const uint8_t* data) override;
  // WriteBlocks with the leaves taken from `leaves` (not null) instead of
  // hashed: each must be the LeafHash of its block, or the layer's index,
  // and with it the view digest Seal computes, is wrong.
  Status WriteHashedBlocks(uint64_t first, uint64_t count, uint32_t block_size,
                           const uint8_t* data, const Digest* leaves) override;
  Status WriteZeroBlock(uint64_t block) override;

  // Writes zero entries for every block in [below's block count, target
  // block count) not yet written, computes the Merkle delta and the new view
  // digest; if `expected` is given and differs, fails with kHashMismatch and
  // leaves the file unsealed. Otherwise writes index, nodes and footer and
  // fsyncs file and directory. A failed fsync poisons the writer.
  Status Seal(const Digest* expected, Digest* view_digest);
  // Closes and unlinks the unsealed file. Safe to call more than once.
  void Abort();

  // Writes out buffered data and fsyncs the file (and, the first time, its
  // directory), so that what SaveState() then reports survives a crash. A
  // failed fsync poisons the writer.
  Status Sync();
  // Sync() in two halves, so that the wait for the disk can run on another
  // thread while this one goes on writing (the apply's checkpoints).
  // Flush() writes out the buffered data, on the writing thread. Then
  // SyncFlushed() fsyncs the file (and, the first time, its directory)
  // through a descriptor of its own, and may run on another thread beside
  // WriteBlock(s) and Flush(): when it returns Ok, everything flushed
  // before it started is durable. It must not overlap another SyncFlushed
  // or any other call. Its failure poisons the writer as Sync's does:
  // every later call on the writing thread is refused with kPoisoned.
  Status Flush();
  Status SyncFlushed();
  // The state Resume() continues from; call right after a successful Sync(),
  // or right after the Flush() of a SyncFlushed() that then succeeds.
  void SaveState(LayerWriterState* out) const;
  // SaveState with only the entries from the `first_entry`-th on (those
  // written since a SaveState that returned first_entry of them).
  void SaveStateSince(size_t first_entry, LayerWriterState* out) const;
  // Index entries so far, in write order.
  size_t entry_count() const;
  // Closes the unsealed file without unlinking it and drops buffered data:
  // what a crash leaves behind. For the apply's test-only stop.
  void Detach();

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
  // True if entry `pos` is a zero entry (reads as zeros, no data stored):
  // what an NBD export reports as a zero extent.
  bool EntryIsZero(size_t pos) const;
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
