// What the streaming generator knows of the whole source without holding
// it: which blocks hold data, each such block by a hash of its content
// (16 bytes per block: blocks found whole in the target become COPY ops),
// and content-defined anchors, a sample of the source's content that lets a
// changed target region find where its bytes came from even when they
// moved (8 bytes per anchor, about one per `anchor_spacing` bytes).
//
// Anchors are the positions where a rolling (gear) hash of the preceding
// 64 bytes has its top bits zero, so the same content gives the same
// anchors wherever it lies; each keeps 32 further bits of the hash as its
// key and the block it falls in. Both sides compute them with
// FindAnchors, so a key the target shares with the source names a source
// block that holds the same 64 bytes (or, rarely, a collision: the
// matcher then simply finds nothing there).
#ifndef REVPATCH_ENGINE_GENERATOR_SOURCE_INDEX_H_
#define REVPATCH_ENGINE_GENERATOR_SOURCE_INDEX_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

#include "image_reader.h"
#include "status.h"

namespace revpatch {

// A fast 64-bit hash of a block's bytes (not cryptographic: every hit is
// compared byte for byte before it is used).
uint64_t BlockHash(const uint8_t* data, size_t size);

struct Anchor {
  uint32_t key;
  uint32_t block;
  bool operator<(const Anchor& o) const {
    return key != o.key ? key < o.key : block < o.block;
  }
};

// Calls found(key, offset) for every anchor of data[0, size): `spacing_bits`
// sets the mean distance between anchors (2^bits bytes); anchors closer
// than a quarter of that to the previous one are dropped, so a run of one
// repeated byte cannot flood the index.
void FindAnchors(const uint8_t* data, size_t size, int spacing_bits,
                 const std::function<void(uint32_t key, size_t offset)>& found);

class SourceIndex {
 public:
  // Anchors are sampled only when `anchors` is true.
  Status Build(const ImageFile& source, int spacing_bits, bool anchors, size_t batch_bytes);

  bool HasData(uint64_t block) const {
    return block < blocks_ && ((data_[block >> 6] >> (block & 63)) & 1) != 0;
  }
  // The lowest source block whose hash is `hash`, or false.
  bool FindBlock(uint64_t hash, uint64_t* block) const;
  // The source blocks of anchors with `key`; none when more than
  // `max_hits` share it (content too common to say where it came from).
  void FindAnchor(uint32_t key, size_t max_hits, std::vector<uint64_t>* blocks) const;
  int spacing_bits() const { return spacing_bits_; }
  uint64_t data_blocks() const { return hashes_.size(); }
  size_t anchor_count() const { return anchors_.size(); }
  // Bytes held (the bit set, the hashes, the anchors).
  uint64_t MemoryBytes() const;
  // Bytes an index of a source with `data_blocks` data blocks will hold at
  // most, for planning before it is built.
  static uint64_t EstimateBytes(uint64_t blocks, uint64_t data_blocks, uint32_t block_size,
                                int spacing_bits);

 private:
  struct Entry {
    uint64_t hash;
    uint64_t block;
    bool operator<(const Entry& o) const {
      return hash != o.hash ? hash < o.hash : block < o.block;
    }
  };
  uint64_t blocks_ = 0;
  std::vector<uint64_t> data_;  // bit per block: holds data
  std::vector<Entry> hashes_;
  std::vector<Anchor> anchors_;
  int spacing_bits_ = 10;
};

}  // namespace revpatch

#endif  // REVPATCH_ENGINE_GENERATOR_SOURCE_INDEX_H_
