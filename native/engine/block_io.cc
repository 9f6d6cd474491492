#include "block_io.h"

namespace revpatch {

bool ValidBlockSize(uint32_t block_size) {
  return block_size >= kMinBlockSize && block_size <= kMaxBlockSize &&
         (block_size & (block_size - 1)) == 0;
}

Status BlockSink::WriteBlocks(uint64_t first, uint64_t count, uint32_t block_size,
                              const uint8_t* data) {
  for (uint64_t i = 0; i < count; ++i, data += block_size) {
    REVPATCH_RETURN_IF_ERROR(WriteBlock(first + i, data));
  }
  return Status::Ok();
}

Status BlockSink::WriteHashedBlocks(uint64_t first, uint64_t count, uint32_t block_size,
                                    const uint8_t* data, const Digest* /*leaves*/) {
  return WriteBlocks(first, count, block_size, data);
}

}  // namespace revpatch
