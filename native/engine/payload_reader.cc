#include "payload_reader.h"

#include <algorithm>
#include <cstring>
#include <string>

namespace revpatch {

Status PayloadReader::Open(int fd, uint64_t offset, uint64_t size,
                           uint32_t chunk_size,
                           const std::vector<Digest>& chunk_digests,
                           std::unique_ptr<PayloadReader>* out) {
  if (fd < 0) return Status(ErrorCode::kInvalidArgument, "payload: no file descriptor");
  if (chunk_size < kMinChunkSize || chunk_size > kMaxChunkSize) {
    return Status(ErrorCode::kCorrupt,
                  "payload: chunk size " + std::to_string(chunk_size) + " out of range");
  }
  uint64_t end;
  if (__builtin_add_overflow(offset, size, &end)) {
    return Status(ErrorCode::kCorrupt, "payload: offset + size overflows");
  }
  uint64_t chunks = size / chunk_size + (size % chunk_size != 0 ? 1 : 0);
  if (chunk_digests.size() != chunks) {
    return Status(ErrorCode::kCorrupt, "payload: " + std::to_string(chunk_digests.size()) +
                                           " chunk digests for " + std::to_string(chunks) +
                                           " chunks");
  }
  std::unique_ptr<PayloadReader> reader(new PayloadReader());
  reader->file_ = File(fd);
  reader->offset_ = offset;
  reader->size_ = size;
  reader->chunk_size_ = chunk_size;
  reader->chunk_digests_ = chunk_digests;
  *out = std::move(reader);
  return Status::Ok();
}

PayloadReader::~PayloadReader() { file_.Release(); }

Status PayloadReader::ReadChunksInto(uint8_t* dest, size_t room, size_t* loaded) {
  *loaded = 0;
  const uint64_t start = next_chunk_ * chunk_size_;
  if (next_chunk_ >= chunk_digests_.size() || start >= size_) {
    return Status(ErrorCode::kCorrupt, "payload: read past the end");
  }
  const size_t first_length =
      static_cast<size_t>(std::min<uint64_t>(chunk_size_, size_ - start));
  const bool two = !wait_for_bytes_ && next_chunk_ + 1 < chunk_digests_.size() &&
                   room >= first_length + std::min<uint64_t>(chunk_size_, size_ - start -
                                                                           first_length);
  const size_t length = static_cast<size_t>(
      std::min<uint64_t>(uint64_t{chunk_size_} * (two ? 2 : 1), size_ - start));
  if (wait_for_bytes_) REVPATCH_RETURN_IF_ERROR(wait_for_bytes_(offset_ + start + length));
  REVPATCH_RETURN_IF_ERROR(file_.ReadAt(offset_ + start, dest, length));
  Digest digests[2];
  if (two) {
    // The second chunk may be the short last one: the pair runs over its
    // length, then the first chunk goes on alone.
    const size_t second_length = length - chunk_size_;
    Sha256 a, b;
    Sha256::UpdatePair(a, dest, b, dest + chunk_size_, second_length);
    a.Update(dest + second_length, chunk_size_ - second_length);
    digests[0] = a.Final();
    digests[1] = b.Final();
  } else {
    digests[0] = Sha256::Hash(dest, length);
  }
  if (digests[0] != chunk_digests_[next_chunk_]) {
    return Status(ErrorCode::kHashMismatch,
                  "payload: chunk " + std::to_string(next_chunk_) + " does not match its digest");
  }
  if (two && digests[1] != chunk_digests_[next_chunk_ + 1]) {
    // The first chunk is good and is handed out; the bad one fails when it
    // is reached (loaded again), as it would loading one at a time.
    ++next_chunk_;
    *loaded = chunk_size_;
    return Status::Ok();
  }
  next_chunk_ += two ? 2 : 1;
  *loaded = length;
  return Status::Ok();
}

Status PayloadReader::LoadNextChunks() {
  chunk_pos_ = 0;
  // Two chunks where the file is complete (not growing), else one.
  chunk_.resize(2 * size_t{chunk_size_});
  size_t loaded = 0;
  Status status = ReadChunksInto(chunk_.data(), chunk_.size(), &loaded);
  chunk_.resize(loaded);  // shrinking writes nothing
  return status;
}

Status PayloadReader::Read(uint8_t* out, size_t n) {
  if (n > remaining()) return Status(ErrorCode::kCorrupt, "payload: read past the end");
  while (n > 0) {
    if (chunk_pos_ == chunk_.size()) {
      // At a chunk boundary with a whole chunk wanted: read and check it in
      // `out` itself, which saves copying it out of the reader's buffer.
      // The caller's memory is as private as that buffer, and the bytes
      // count as handed out only once their digest matched.
      const uint64_t start = next_chunk_ * chunk_size_;
      if (start < size_ && n >= std::min<uint64_t>(chunk_size_, size_ - start)) {
        size_t loaded = 0;
        REVPATCH_RETURN_IF_ERROR(ReadChunksInto(out, n, &loaded));
        position_ += loaded;
        out += loaded;
        n -= loaded;
        continue;
      }
      REVPATCH_RETURN_IF_ERROR(LoadNextChunks());
    }
    size_t take = std::min(n, chunk_.size() - chunk_pos_);
    std::memcpy(out, chunk_.data() + chunk_pos_, take);
    chunk_pos_ += take;
    position_ += take;
    out += take;
    n -= take;
  }
  return Status::Ok();
}

Status PayloadReader::Skip(uint64_t n) {
  if (n > remaining()) return Status(ErrorCode::kCorrupt, "payload: read past the end");
  while (n > 0) {
    if (chunk_pos_ == chunk_.size()) REVPATCH_RETURN_IF_ERROR(LoadNextChunks());
    size_t take = static_cast<size_t>(std::min<uint64_t>(n, chunk_.size() - chunk_pos_));
    chunk_pos_ += take;
    position_ += take;
    n -= take;
  }
  return Status::Ok();
}

PayloadPosition PayloadReader::SavePosition() const {
  PayloadPosition saved;
  saved.position = position_;
  return saved;
}

Status PayloadReader::RestorePosition(const PayloadPosition& saved) {
  if (position_ != 0 || next_chunk_ != 0) {
    return Status(ErrorCode::kInvalidArgument, "payload: restore on a reader already read");
  }
  if (saved.position > size_) {
    return Status(ErrorCode::kCorrupt, "payload: saved position does not fit the payload");
  }
  // The chunk the next byte lies in is loaded (and checked) now; a position
  // on a chunk boundary loads nothing until the next read.
  next_chunk_ = saved.position / chunk_size_;
  chunk_.clear();
  chunk_pos_ = 0;
  const uint64_t into_chunk = saved.position % chunk_size_;
  if (into_chunk != 0) {
    Status loaded = LoadNextChunks();
    if (!loaded.ok()) {
      next_chunk_ = 0;
      return loaded;
    }
    chunk_pos_ = static_cast<size_t>(into_chunk);
  }
  position_ = saved.position;
  return Status::Ok();
}

Status PayloadReader::Finish() const {
  if (remaining() != 0) {
    return Status(ErrorCode::kCorrupt, "payload: " + std::to_string(remaining()) +
                                           " bytes after the last operation");
  }
  return Status::Ok();
}

}  // namespace revpatch
