// One image as the generator reads it: whole blocks, the partial last block
// zero-padded (as the view and the Merkle leaves see it), in large batches,
// and where the filesystem can tell, the ranges that are holes (zeros that
// need no reading).
//
// Reads are pread(2) on one descriptor, so several threads may read one
// ImageFile at once (the classifier and the region encoders do).
#ifndef REVPATCH_ENGINE_GENERATOR_IMAGE_READER_H_
#define REVPATCH_ENGINE_GENERATOR_IMAGE_READER_H_

#include <cstdint>
#include <string>

#include "file_io.h"
#include "status.h"

namespace revpatch {

class ImageFile {
 public:
  Status Open(const std::string& path, uint32_t block_size);
  uint64_t size() const { return size_; }
  uint32_t block_size() const { return block_size_; }
  uint64_t blocks() const { return (size_ + block_size_ - 1) / block_size_; }
  // Blocks [first, first + count), which must lie inside the image.
  Status ReadBlocks(uint64_t first, uint64_t count, uint8_t* out) const;
  // The first block >= `block` that may hold data; blocks in between read as
  // zeros. blocks() past the last data; `block` itself where the
  // filesystem cannot tell.
  Status NextDataBlock(uint64_t block, uint64_t* data_block) const;
  // Bytes the filesystem has allocated to the image (st_blocks): an upper
  // bound of its data for planning; size() where it cannot tell.
  uint64_t AllocatedBytes() const;

 private:
  File file_;
  uint64_t size_ = 0;
  uint32_t block_size_ = 0;
};

}  // namespace revpatch

#endif  // REVPATCH_ENGINE_GENERATOR_IMAGE_READER_H_
