// The two small interfaces the operation executors see: where source blocks
// come from and where target blocks go. Executors know nothing of files,
// layers or Node; tests give them in-memory fakes, the fuzzer too.
#ifndef REVPATCH_ENGINE_BLOCK_IO_H_
#define REVPATCH_ENGINE_BLOCK_IO_H_

#include <cstdint>

#include "sha256.h"
#include "status.h"

namespace revpatch {

constexpr uint32_t kDefaultBlockSize = 4096;
constexpr uint32_t kMinBlockSize = 512;
constexpr uint32_t kMaxBlockSize = 1u << 20;

// ceil(size_bytes / block_size) without overflow.
inline uint64_t BlockCount(uint64_t size_bytes, uint32_t block_size) {
  return size_bytes / block_size + (size_bytes % block_size != 0 ? 1 : 0);
}

// True for a power of two in [kMinBlockSize, kMaxBlockSize].
bool ValidBlockSize(uint32_t block_size);

class BlockSource {
 public:
  virtual ~BlockSource() = default;
  virtual uint32_t block_size() const = 0;
  // Logical size in bytes; need not be a multiple of the block size.
  virtual uint64_t size_bytes() const = 0;
  uint64_t block_count() const { return BlockCount(size_bytes(), block_size()); }
  // Reads blocks [first, first + count) into `out` (count * block_size bytes).
  // The part of the last block past size_bytes() reads as zeros. A range that
  // is empty or reaches past block_count() is kBadExtent. May be called from
  // several threads at once (the executor reads a large source in halves).
  virtual Status ReadBlocks(uint64_t first, uint64_t count, uint8_t* out) = 0;
};

class BlockSink {
 public:
  virtual ~BlockSink() = default;
  // Writes one whole block of the target view. A block may be written at
  // most once per apply; a second write of the same block, or a block past
  // the target's block count, is kBadExtent.
  virtual Status WriteBlock(uint64_t block, const uint8_t* data) = 0;
  // Writes blocks [first, first + count) from `data` (count blocks of
  // `block_size` bytes, the sink's block size), exactly as WriteBlock on
  // each in turn would, stopping at the first failure as that loop would.
  // A sink that does better with a run (hash several blocks at once, write
  // them with one call) overrides it.
  virtual Status WriteBlocks(uint64_t first, uint64_t count, uint32_t block_size,
                             const uint8_t* data);
  // WriteBlocks with `leaves[i]` the leaf hash (merkle.h LeafHash) of block
  // i of `data`, computed by the caller from these same bytes: a sink that
  // hashes what it stores may take them instead of hashing again. The
  // default ignores them.
  virtual Status WriteHashedBlocks(uint64_t first, uint64_t count, uint32_t block_size,
                                   const uint8_t* data, const Digest* leaves);
  // Records that `block` is all zeros, without storing its bytes.
  virtual Status WriteZeroBlock(uint64_t block) = 0;
};

}  // namespace revpatch

#endif  // REVPATCH_ENGINE_BLOCK_IO_H_
