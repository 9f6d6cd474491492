// Sequential appends to a File through one large buffer, so writers issue a
// few big pwrites instead of one per block. Used by the tree file, layer and
// export writers; the buffer is the writer's only memory.
#ifndef REVPATCH_ENGINE_BUFFERED_WRITER_H_
#define REVPATCH_ENGINE_BUFFERED_WRITER_H_

#include <cstdint>
#include <cstring>
#include <vector>

#include "file_io.h"
#include "status.h"

namespace revpatch {

class BufferedWriter {
 public:
  // Appends start at `offset`; `file` must outlive the writer.
  BufferedWriter(File* file, uint64_t offset, size_t capacity)
      : file_(file), offset_(offset), capacity_(capacity) {
    buffer_.reserve(capacity);
  }

  Status Append(const void* data, size_t size) {
    const uint8_t* p = static_cast<const uint8_t*>(data);
    while (size > 0) {
      if (buffer_.empty() && size >= capacity_) {
        // Large appends bypass the buffer.
        REVPATCH_RETURN_IF_ERROR(file_->WriteAt(offset_, p, size));
        offset_ += size;
        return Status::Ok();
      }
      size_t take = capacity_ - buffer_.size();
      if (take > size) take = size;
      buffer_.insert(buffer_.end(), p, p + take);
      p += take;
      size -= take;
      if (buffer_.size() == capacity_) REVPATCH_RETURN_IF_ERROR(Flush());
    }
    return Status::Ok();
  }

  Status Flush() {
    if (buffer_.empty()) return Status::Ok();
    Status s = file_->WriteAt(offset_, buffer_.data(), buffer_.size());
    if (!s.ok()) return s;
    offset_ += buffer_.size();
    buffer_.clear();
    return Status::Ok();
  }

  // File offset of the next appended byte (buffered bytes included).
  uint64_t position() const { return offset_ + buffer_.size(); }
  // End of what has reached the file (buffered bytes excluded).
  uint64_t written_end() const { return offset_; }

 private:
  File* file_;
  uint64_t offset_;
  size_t capacity_;
  std::vector<uint8_t> buffer_;
};

}  // namespace revpatch

#endif  // REVPATCH_ENGINE_BUFFERED_WRITER_H_
