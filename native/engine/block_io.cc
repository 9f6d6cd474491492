#include "block_io.h"

namespace revpatch {

bool ValidBlockSize(uint32_t block_size) {
  return block_size >= kMinBlockSize && block_size <= kMaxBlockSize &&
         (block_size & (block_size - 1)) == 0;
}

}  // namespace revpatch
