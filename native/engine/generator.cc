#include "generator.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <unordered_map>
#include <utility>

#include "block_io.h"
#include "buffered_writer.h"
#include "diff.h"
#include "file_io.h"
#include "merkle.h"
#include "operation.h"
#include "payload_reader.h"

namespace revpatch {
namespace {

// A DIFF or REPLACE run is at most this many blocks, so compression and the
// matcher see some context while an op stays small to apply.
constexpr uint64_t kMaxDataRunBlocks = 256;
// A DIFF reads the source at the run's own place, widened by this many
// blocks on each side so data shifted across a block boundary still matches.
constexpr uint64_t kDiffMarginBlocks = 16;
constexpr size_t kWriteBuffer = 1u << 20;

bool AllZero(const uint8_t* p, size_t n) {
  return n == 0 || (p[0] == 0 && std::memcmp(p, p + 1, n - 1) == 0);
}

uint64_t IndexKey(const Digest& d) {
  uint64_t key;
  std::memcpy(&key, d.data(), sizeof(key));
  return key;
}

// One image read block by block, the partial last block zero-padded (as the
// view and the Merkle leaves see it).
class ImageFile {
 public:
  Status Open(const std::string& path, uint32_t block_size) {
    REVPATCH_RETURN_IF_ERROR(File::OpenRead(path, &file_));
    REVPATCH_RETURN_IF_ERROR(file_.Size(&size_));
    block_size_ = block_size;
    return Status::Ok();
  }
  uint64_t size() const { return size_; }
  uint64_t blocks() const { return BlockCount(size_, block_size_); }
  Status ReadBlocks(uint64_t first, uint64_t count, uint8_t* out) const {
    uint64_t offset = first * block_size_;
    uint64_t length = std::min<uint64_t>(count * block_size_, size_ - offset);
    REVPATCH_RETURN_IF_ERROR(file_.ReadAt(offset, out, static_cast<size_t>(length)));
    std::memset(out + length, 0, static_cast<size_t>(count * block_size_ - length));
    return Status::Ok();
  }

 private:
  File file_;
  uint64_t size_ = 0;
  uint32_t block_size_ = 0;
};

// Appends the payload to its temporary file, computing the chunk digests and
// the whole digest as bytes go by.
class PayloadWriter {
 public:
  PayloadWriter(File* file, uint32_t chunk_size)
      : out_(file, 0, kWriteBuffer), chunk_size_(chunk_size) {}

  Status Append(const uint8_t* p, size_t n) {
    REVPATCH_RETURN_IF_ERROR(out_.Append(p, n));
    whole_.Update(p, n);
    size_ += n;
    while (n > 0) {
      size_t take = std::min<size_t>(n, chunk_size_ - chunk_fill_);
      chunk_.Update(p, take);
      chunk_fill_ += take;
      p += take;
      n -= take;
      if (chunk_fill_ == chunk_size_) EndChunk();
    }
    return Status::Ok();
  }

  Status Finish(GenerateResult* result) {
    REVPATCH_RETURN_IF_ERROR(out_.Flush());
    if (chunk_fill_ > 0) EndChunk();
    result->payload_size = size_;
    result->payload_digest = whole_.Final();
    result->chunk_digests = std::move(chunks_);
    return Status::Ok();
  }

 private:
  void EndChunk() {
    chunks_.push_back(chunk_.Final());
    chunk_.Reset();
    chunk_fill_ = 0;
  }

  BufferedWriter out_;
  uint32_t chunk_size_;
  Sha256 whole_;
  Sha256 chunk_;
  size_t chunk_fill_ = 0;
  uint64_t size_ = 0;
  std::vector<Digest> chunks_;
};

enum class RunKind { kNone, kZero, kCopy, kData };

// Walks the target, classifies each block and coalesces runs into ops.
class Generator {
 public:
  Generator(const ImageFile& source, const ImageFile& target, uint32_t block_size,
            PayloadWriter* writer, GenerateResult* result)
      : source_(source), target_(target), block_size_(block_size), writer_(writer),
        result_(result) {
    max_blocks_ = kMaxOperationBytes / block_size;
    data_cap_ = std::min(kMaxDataRunBlocks, max_blocks_ / 2);
    margin_ = std::min(kDiffMarginBlocks, (max_blocks_ - data_cap_) / 2);
  }

  Status IndexSource() {
    std::vector<uint8_t> block(block_size_);
    for (uint64_t b = 0; b < source_.blocks(); ++b) {
      REVPATCH_RETURN_IF_ERROR(source_.ReadBlocks(b, 1, block.data()));
      if (AllZero(block.data(), block_size_)) continue;
      index_.emplace(IndexKey(Sha256::Hash(block.data(), block_size_)), b);
    }
    return Status::Ok();
  }

  Status Run(const std::function<void(uint64_t, uint64_t)>& progress) {
    std::vector<uint8_t> block(block_size_), same(block_size_), other(block_size_);
    const uint64_t source_blocks = source_.blocks();
    const uint64_t target_blocks = target_.blocks();
    for (uint64_t t = 0; t < target_blocks; ++t) {
      if (progress && t % 1024 == 0) progress(t * block_size_, target_.size());
      REVPATCH_RETURN_IF_ERROR(target_.ReadBlocks(t, 1, block.data()));
      bool zero = AllZero(block.data(), block_size_);
      if (t < source_blocks) {
        REVPATCH_RETURN_IF_ERROR(source_.ReadBlocks(t, 1, same.data()));
        if (std::memcmp(block.data(), same.data(), block_size_) == 0) continue;
      } else if (zero) {
        // The layer writer stores growth blocks nobody wrote as zeros.
        ++result_->changed_blocks;
        continue;
      }
      if (zero) {
        REVPATCH_RETURN_IF_ERROR(Add(RunKind::kZero, t, block.data(), 0));
        continue;
      }
      auto found = index_.find(IndexKey(Sha256::Hash(block.data(), block_size_)));
      if (found != index_.end()) {
        REVPATCH_RETURN_IF_ERROR(source_.ReadBlocks(found->second, 1, other.data()));
        if (std::memcmp(block.data(), other.data(), block_size_) == 0) {
          REVPATCH_RETURN_IF_ERROR(Add(RunKind::kCopy, t, block.data(), found->second));
          continue;
        }
      }
      REVPATCH_RETURN_IF_ERROR(Add(RunKind::kData, t, block.data(), 0));
    }
    REVPATCH_RETURN_IF_ERROR(Flush());
    if (progress) progress(target_.size(), target_.size());
    return Status::Ok();
  }

 private:
  uint64_t Cap(RunKind kind) const { return kind == RunKind::kData ? data_cap_ : max_blocks_; }

  Status Add(RunKind kind, uint64_t t, const uint8_t* block, uint64_t src_block) {
    bool contiguous = kind_ == kind && start_ + count_ == t && count_ < Cap(kind);
    if (contiguous && kind == RunKind::kCopy &&
        src_.back().start_block + src_.back().num_blocks != src_block &&
        src_.size() == kMaxExtentsPerOperation) {
      contiguous = false;
    }
    if (!contiguous) {
      REVPATCH_RETURN_IF_ERROR(Flush());
      kind_ = kind;
      start_ = t;
    }
    ++count_;
    switch (kind) {
      case RunKind::kZero:
      case RunKind::kCopy:
        hash_.Update(block, block_size_);
        break;
      case RunKind::kData:
        data_.insert(data_.end(), block, block + block_size_);
        break;
      case RunKind::kNone:
        break;
    }
    if (kind == RunKind::kCopy) {
      if (!src_.empty() && src_.back().start_block + src_.back().num_blocks == src_block) {
        ++src_.back().num_blocks;
      } else {
        src_.push_back({src_block, 1});
      }
    }
    return Status::Ok();
  }

  Status Flush() {
    if (kind_ == RunKind::kNone) return Status::Ok();
    Operation op;
    op.dst_extents.push_back({start_, count_});
    std::vector<uint8_t> payload_data;
    switch (kind_) {
      case RunKind::kZero:
        op.type = OperationType::kZero;
        op.dst_hash = hash_.Final();
        break;
      case RunKind::kCopy:
        op.type = OperationType::kCopy;
        op.src_extents = src_;
        op.dst_hash = hash_.Final();
        op.src_hash = op.dst_hash;  // the same bytes
        break;
      case RunKind::kData:
        REVPATCH_RETURN_IF_ERROR(ChooseData(&op, &payload_data));
        break;
      case RunKind::kNone:
        break;
    }
    hash_.Reset();
    op.data_length = payload_data.size();
    std::vector<uint8_t> record;
    EncodeOperation(op, &record);
    REVPATCH_RETURN_IF_ERROR(writer_->Append(record.data(), record.size()));
    REVPATCH_RETURN_IF_ERROR(writer_->Append(payload_data.data(), payload_data.size()));
    OperationStats& s = result_->stats.by_type[static_cast<uint8_t>(op.type)];
    ++s.count;
    s.target_blocks += count_;
    s.data_bytes += op.data_length;
    ++result_->stats.operations;
    ++result_->operation_count;
    result_->changed_blocks += count_;
    kind_ = RunKind::kNone;
    count_ = 0;
    src_.clear();
    data_.clear();
    return Status::Ok();
  }

  // The smallest of raw REPLACE, REPLACE_BROTLI and DIFF against the source
  // around the run's own place; ties go to the cheaper one to apply.
  Status ChooseData(Operation* op, std::vector<uint8_t>* out) {
    op->dst_hash = Sha256::Hash(data_.data(), data_.size());
    op->type = OperationType::kReplace;
    *out = data_;
    std::vector<uint8_t> candidate;
    REVPATCH_RETURN_IF_ERROR(
        BrotliCompress(data_.data(), data_.size(), kBrotliQuality, &candidate));
    if (candidate.size() < out->size()) {
      op->type = OperationType::kReplaceBrotli;
      out->swap(candidate);
    }
    uint64_t first = start_ > margin_ ? start_ - margin_ : 0;
    uint64_t end = std::min(source_.blocks(), start_ + count_ + margin_);
    if (first < end) {
      std::vector<uint8_t> old((end - first) * block_size_);
      REVPATCH_RETURN_IF_ERROR(source_.ReadBlocks(first, end - first, old.data()));
      REVPATCH_RETURN_IF_ERROR(EncodeDiff(old, data_, &candidate));
      if (candidate.size() < out->size()) {
        op->type = OperationType::kDiff;
        op->src_extents.push_back({first, end - first});
        op->src_hash = Sha256::Hash(old.data(), old.size());
        out->swap(candidate);
      }
    }
    return Status::Ok();
  }

  const ImageFile& source_;
  const ImageFile& target_;
  uint32_t block_size_;
  PayloadWriter* writer_;
  GenerateResult* result_;
  uint64_t max_blocks_, data_cap_, margin_;
  std::unordered_map<uint64_t, uint64_t> index_;  // hash prefix -> first block

  RunKind kind_ = RunKind::kNone;
  uint64_t start_ = 0;
  uint64_t count_ = 0;
  std::vector<Extent> src_;
  Sha256 hash_;
  std::vector<uint8_t> data_;
};

Status Generate(const std::string& source_path, const std::string& target_path,
                const std::string& temp_path, const GenerateOptions& options,
                const std::function<void(uint64_t, uint64_t)>& progress,
                GenerateResult* result) {
  REVPATCH_RETURN_IF_ERROR(HashImage(source_path, options.block_size, "",
                                     &result->source_digest, &result->source_size));
  REVPATCH_RETURN_IF_ERROR(HashImage(target_path, options.block_size, "",
                                     &result->target_digest, &result->target_size));
  ImageFile source, target;
  REVPATCH_RETURN_IF_ERROR(source.Open(source_path, options.block_size));
  REVPATCH_RETURN_IF_ERROR(target.Open(target_path, options.block_size));
  if (source.size() != result->source_size || target.size() != result->target_size) {
    return Status(ErrorCode::kIo, "an image changed while the patch was generated");
  }
  File file;
  REVPATCH_RETURN_IF_ERROR(File::CreateTruncate(temp_path, &file));
  PayloadWriter writer(&file, options.chunk_size);
  Generator generator(source, target, options.block_size, &writer, result);
  REVPATCH_RETURN_IF_ERROR(generator.IndexSource());
  REVPATCH_RETURN_IF_ERROR(generator.Run(progress));
  REVPATCH_RETURN_IF_ERROR(writer.Finish(result));
  REVPATCH_RETURN_IF_ERROR(file.FullSync());
  return file.Close();
}

}  // namespace

Status GeneratePayload(const std::string& source_path,
                       const std::string& target_path,
                       const std::string& payload_path,
                       const GenerateOptions& options,
                       const std::function<void(uint64_t, uint64_t)>& progress,
                       GenerateResult* result) {
  *result = GenerateResult();
  if (!ValidBlockSize(options.block_size)) {
    return Status(ErrorCode::kInvalidArgument, "invalid block size");
  }
  if (options.chunk_size < kMinChunkSize || options.chunk_size > kMaxChunkSize) {
    return Status(ErrorCode::kInvalidArgument, "chunk size out of range");
  }
  const std::string temp_path = payload_path + ".tmp";
  Status status =
      Generate(source_path, target_path, temp_path, options, progress, result);
  if (status.ok()) status = RenameFile(temp_path, payload_path);
  if (status.ok()) status = SyncDirectory(DirName(payload_path));
  if (!status.ok()) {
    UnlinkFile(temp_path);
    *result = GenerateResult();
  }
  return status;
}

}  // namespace revpatch
