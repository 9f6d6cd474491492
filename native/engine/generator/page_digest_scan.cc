#include "page_digest_scan.h"

#include <algorithm>

#include "image_reader.h"

namespace revpatch {

void FindPageDigests(const ImageFile& image, std::vector<PageDigests>* runs) {
  const uint32_t block_size = image.block_size();
  std::vector<uint8_t> blocks;
  FindPageDigests(
      [&](uint64_t offset, uint64_t length, std::vector<uint8_t>* out) {
        if (offset > image.size() || length > image.size() - offset || length == 0) return false;
        const uint64_t first = offset / block_size;
        const uint64_t last = (offset + length - 1) / block_size;
        try {
          blocks.resize((last - first + 1) * block_size);
        } catch (const std::bad_alloc&) {
          return false;
        }
        if (!image.ReadBlocks(first, last - first + 1, blocks.data()).ok()) return false;
        const uint64_t skip = offset - first * block_size;
        out->assign(blocks.begin() + skip, blocks.begin() + skip + length);
        return true;
      },
      image.size(), block_size, runs);
}

}  // namespace revpatch
