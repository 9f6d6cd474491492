#include "image_reader.h"

#include <algorithm>
#include <cstring>

#include <sys/stat.h>

namespace revpatch {

Status ImageFile::Open(const std::string& path, uint32_t block_size) {
  REVPATCH_RETURN_IF_ERROR(File::OpenRead(path, &file_));
  REVPATCH_RETURN_IF_ERROR(file_.Size(&size_));
  block_size_ = block_size;
  return Status::Ok();
}

Status ImageFile::ReadBlocks(uint64_t first, uint64_t count, uint8_t* out) const {
  const uint64_t offset = first * block_size_;
  const uint64_t length = std::min<uint64_t>(count * block_size_, size_ - offset);
  REVPATCH_RETURN_IF_ERROR(file_.ReadAt(offset, out, static_cast<size_t>(length)));
  std::memset(out + length, 0, static_cast<size_t>(count * block_size_ - length));
  return Status::Ok();
}

Status ImageFile::NextDataBlock(uint64_t block, uint64_t* data_block) const {
  const uint64_t offset = block * block_size_;
  if (offset >= size_) {
    *data_block = blocks();
    return Status::Ok();
  }
  uint64_t data = 0;
  REVPATCH_RETURN_IF_ERROR(file_.NextData(offset, size_, &data));
  // The block holding the first data byte; holes come in whole filesystem
  // blocks, so everything before it reads as zeros.
  *data_block = std::max(block, std::min(blocks(), data / block_size_));
  return Status::Ok();
}

uint64_t ImageFile::AllocatedBytes() const {
  struct stat st;
  if (::fstat(file_.fd(), &st) != 0 || !S_ISREG(st.st_mode)) return size_;
  return std::min<uint64_t>(size_, static_cast<uint64_t>(st.st_blocks) * 512);
}

}  // namespace revpatch
