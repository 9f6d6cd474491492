#include "generator.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <unordered_map>
#include <utility>

#include "block_io.h"
#include "buffered_writer.h"
#include "diff_encoder.h"
#include "file_io.h"
#include "merkle.h"
#include "operation.h"
#include "payload_reader.h"

namespace revpatch {
namespace {

constexpr uint64_t kNeighbourBlocks = 64;
constexpr uint64_t kReplaceOpBytes = 4ull << 20;
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

// Operations being gathered: ZERO and COPY collect blocks from all over the
// target (many extents, one record); data blocks collect into a region.
struct PendingOp {
  std::vector<Extent> dst;
  std::vector<Extent> src;
  uint64_t blocks = 0;
  Sha256 hash;
};

void AppendBlock(std::vector<Extent>* extents, uint64_t block) {
  if (!extents->empty() && extents->back().start_block + extents->back().num_blocks == block) {
    ++extents->back().num_blocks;
  } else {
    extents->push_back({block, 1});
  }
}

// Walks the target, classifies each block and gathers them into ops.
class Generator {
 public:
  // Changed blocks that are neither zeros nor found whole in the source
  // are gathered, in target order, into regions of region_bytes; each
  // becomes one DIFF (or REPLACE) op with one target extent per run, so
  // scattered small changes share one record and one delta.
  Generator(const ImageFile& source, const ImageFile& target, const GenerateOptions& options,
            PayloadWriter* writer, GenerateResult* result)
      : source_(source), target_(target), block_size_(options.block_size), writer_(writer),
        result_(result) {
    max_blocks_ = std::max<uint64_t>(
        1, std::min(options.region_bytes, kMaxOperationBytes) / block_size_);
    region_blocks_ = max_blocks_;
    source_limit_ = kMaxOperationBytes / block_size_;
    whole_source_ = source.size() <= std::min(options.whole_source_bytes, kWholeSourceLimit);
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
        REVPATCH_RETURN_IF_ERROR(AddGathered(OperationType::kZero, &zero_, t, block.data(), 0));
        continue;
      }
      auto found = whole_source_ ? index_.end()
                                 : index_.find(IndexKey(Sha256::Hash(block.data(), block_size_)));
      if (found != index_.end()) {
        REVPATCH_RETURN_IF_ERROR(source_.ReadBlocks(found->second, 1, other.data()));
        if (std::memcmp(block.data(), other.data(), block_size_) == 0) {
          REVPATCH_RETURN_IF_ERROR(
              AddGathered(OperationType::kCopy, &copy_, t, block.data(), found->second));
          continue;
        }
      }
      REVPATCH_RETURN_IF_ERROR(AddData(t, block.data()));
    }
    REVPATCH_RETURN_IF_ERROR(FlushGathered(OperationType::kZero, &zero_));
    REVPATCH_RETURN_IF_ERROR(FlushGathered(OperationType::kCopy, &copy_));
    REVPATCH_RETURN_IF_ERROR(FlushRegion());
    if (progress) progress(target_.size(), target_.size());
    return Status::Ok();
  }

 private:
  Status AddGathered(OperationType type, PendingOp* op, uint64_t t, const uint8_t* block,
                     uint64_t src_block) {
    if (op->blocks == max_blocks_ || op->dst.size() + 1 >= kMaxExtentsPerOperation ||
        op->src.size() + 1 >= kMaxExtentsPerOperation) {
      REVPATCH_RETURN_IF_ERROR(FlushGathered(type, op));
    }
    AppendBlock(&op->dst, t);
    if (type == OperationType::kCopy) AppendBlock(&op->src, src_block);
    op->hash.Update(block, block_size_);
    ++op->blocks;
    return Status::Ok();
  }

  Status FlushGathered(OperationType type, PendingOp* pending) {
    if (pending->blocks == 0) return Status::Ok();
    Operation op;
    op.type = type;
    op.dst_extents.swap(pending->dst);
    op.dst_hash = pending->hash.Final();
    if (type == OperationType::kCopy) {
      op.src_extents.swap(pending->src);
      op.src_hash = op.dst_hash;  // the same bytes
    }
    *pending = PendingOp();
    return Emit(op, nullptr, 0);
  }

  Status AddData(uint64_t t, const uint8_t* block) {
    if (data_blocks_.size() == region_blocks_) REVPATCH_RETURN_IF_ERROR(FlushRegion());
    data_blocks_.push_back(t);
    data_.insert(data_.end(), block, block + block_size_);
    return Status::Ok();
  }

  Status FlushRegion() {
    if (data_blocks_.empty()) return Status::Ok();
    Status status = EmitRegion(0, data_blocks_.size());
    data_blocks_.clear();
    data_.clear();
    return status;
  }

  Status Emit(const Operation& op_in, const uint8_t* data, size_t size) {
    Operation op = op_in;
    op.data_length = size;
    std::vector<uint8_t> record;
    EncodeOperation(op, &record);
    REVPATCH_RETURN_IF_ERROR(writer_->Append(record.data(), record.size()));
    if (size > 0) REVPATCH_RETURN_IF_ERROR(writer_->Append(data, size));
    uint64_t blocks = 0;
    TotalBlocks(op.dst_extents, &blocks);
    OperationStats& s = result_->stats.by_type[static_cast<uint8_t>(op.type)];
    ++s.count;
    s.target_blocks += blocks;
    s.data_bytes += op.data_length;
    ++result_->stats.operations;
    ++result_->operation_count;
    result_->changed_blocks += blocks;
    return Status::Ok();
  }

  // The source bytes the matcher sees for data blocks [first, first+count):
  // the whole source once, or the neighbourhood of the blocks.
  Status PrepareCandidates(size_t first, size_t count) {
    const uint64_t source_blocks = source_.blocks();
    if (whole_source_) {
      if (whole_ready_) return Status::Ok();
      candidate_blocks_.clear();
      for (uint64_t b = 0; b < source_blocks; ++b) candidate_blocks_.push_back(b);
    } else {
      // The neighbourhood, narrowed until it fits what one suffix array
      // may index.
      for (uint64_t margin = kNeighbourBlocks;; margin /= 2) {
        candidate_blocks_.clear();
        for (size_t i = first; i < first + count; ++i) {
          const uint64_t t = data_blocks_[i];
          uint64_t lo = t > margin ? t - margin : 0;
          const uint64_t hi = std::min(source_blocks, t + margin + 1);
          if (!candidate_blocks_.empty()) lo = std::max(lo, candidate_blocks_.back() + 1);
          for (uint64_t b = lo; b < hi; ++b) candidate_blocks_.push_back(b);
        }
        if (margin == 0 || candidate_blocks_.size() * block_size_ <= kWholeSourceLimit) break;
      }
    }
    try {
      candidate_.resize(candidate_blocks_.size() * block_size_);
    } catch (const std::bad_alloc&) {
      return Status(ErrorCode::kTooLarge, "generator: out of memory");
    }
    for (size_t i = 0; i < candidate_blocks_.size();) {
      size_t run = 1;
      while (i + run < candidate_blocks_.size() &&
             candidate_blocks_[i + run] == candidate_blocks_[i] + run) {
        ++run;
      }
      REVPATCH_RETURN_IF_ERROR(source_.ReadBlocks(candidate_blocks_[i], run,
                                                  candidate_.data() + i * block_size_));
      i += run;
    }
    whole_ready_ = whole_source_;
    return matcher_.Init(candidate_.data(), candidate_.size());
  }

  // One region: a DIFF over the source blocks its matches touch (only
  // those, so the device reads little), or REPLACE / REPLACE_BROTLI when
  // nothing matches or the delta is no smaller. A region whose touched
  // source would pass the op limits is split in two.
  Status EmitRegion(size_t first, size_t count) {
    const uint8_t* target = data_.data() + first * block_size_;
    const size_t target_size = count * block_size_;
    Operation op;
    for (size_t i = first; i < first + count; ++i) AppendBlock(&op.dst_extents, data_blocks_[i]);
    op.dst_hash = Sha256::Hash(target, target_size);

    std::vector<DeltaRecord> records;
    if (source_.blocks() > 0) {
      REVPATCH_RETURN_IF_ERROR(PrepareCandidates(first, count));
      matcher_.Match(target, target_size, &records);
    }
    std::vector<uint8_t> touched(candidate_blocks_.size(), 0);
    uint64_t add_total = 0;
    for (const DeltaRecord& r : records) {
      if (r.add_length == 0) continue;
      add_total += r.add_length;
      for (uint64_t b = r.old_start / block_size_;
           b <= (r.old_start + r.add_length - 1) / block_size_; ++b) {
        touched[b] = 1;
      }
    }
    std::vector<Extent> src;
    std::vector<uint64_t> compact(candidate_blocks_.size(), 0);
    uint64_t touched_blocks = 0;
    for (size_t b = 0; b < touched.size(); ++b) {
      if (!touched[b]) continue;
      compact[b] = touched_blocks++;
      AppendBlock(&src, candidate_blocks_[b]);
    }
    if (add_total > 0 && (touched_blocks > source_limit_ || src.size() > kMaxExtentsPerOperation)) {
      if (count > 1) {
        REVPATCH_RETURN_IF_ERROR(EmitRegion(first, count / 2));
        return EmitRegion(first + count / 2, count - count / 2);
      }
      add_total = 0;  // one block: cannot split further; store it instead
    }
    std::vector<uint8_t> best;
    op.type = OperationType::kReplace;
    if (add_total == 0) {
      std::vector<uint8_t> packed;
      REVPATCH_RETURN_IF_ERROR(BrotliCompress(target, target_size, kBrotliQuality, &packed));
      if (packed.size() < target_size) {
        op.type = OperationType::kReplaceBrotli;
        best.swap(packed);
      }
    } else {
      std::vector<uint8_t> old(touched_blocks * block_size_);
      for (size_t b = 0; b < touched.size(); ++b) {
        if (touched[b]) {
          std::memcpy(old.data() + compact[b] * block_size_,
                      candidate_.data() + b * block_size_, block_size_);
        }
      }
      for (DeltaRecord& r : records) {
        if (r.add_length == 0) continue;
        r.old_start = compact[r.old_start / block_size_] * block_size_ + r.old_start % block_size_;
      }
      std::vector<uint8_t> delta;
      REVPATCH_RETURN_IF_ERROR(
          WriteDelta(old.data(), old.size(), target, target_size, records, &delta));
      REVPATCH_RETURN_IF_ERROR(PrepareReferences());
      if (!references_.empty() && records.size() <= kMaxPredictedRecords) {
        // Executables in the source: the delta with references predicted
        // too, kept when smaller (on data it only costs its few bytes).
        const DeltaLayout layout{block_size_, &src, &op.dst_extents};
        std::vector<uint8_t> predicted;
        REVPATCH_RETURN_IF_ERROR(WriteDelta(old.data(), old.size(), target, target_size,
                                            records, &predicted, &references_, &layout));
        if (predicted.size() < delta.size()) delta.swap(predicted);
      }
      if (delta.size() < target_size) {
        op.type = OperationType::kDiff;
        op.src_extents = std::move(src);
        op.src_hash = Sha256::Hash(old.data(), old.size());
        best.swap(delta);
      }
    }
    if (op.type == OperationType::kReplace) return EmitReplace(first, count);
    return Emit(op, best.data(), best.size());
  }

  // The executables of the source and the blocks of their images left
  // unchanged in place (whose references' targets stay where they are),
  // once, when the source is held whole. Neighbourhood matching predicts
  // nothing: it never sees a whole executable.
  Status PrepareReferences() {
    if (references_ready_ || !whole_source_ || !whole_ready_) return Status::Ok();
    references_ready_ = true;
    FindExecutableSpans(candidate_.data(), candidate_.size(), block_size_, &references_.spans);
    std::vector<uint8_t> block(block_size_);
    const uint64_t common = std::min(source_.blocks(), target_.blocks());
    uint64_t next = 0;  // blocks below were looked at
    for (const ReferenceSpan& span : references_.spans) {
      if (span.kind != ReferenceKind::kRel32) continue;  // its range is the whole image
      const uint64_t first = std::max(next, span.low / block_size_);
      const uint64_t last = std::min(common, (span.high + block_size_ - 1) / block_size_);
      for (uint64_t b = first; b < last; ++b) {
        REVPATCH_RETURN_IF_ERROR(target_.ReadBlocks(b, 1, block.data()));
        if (std::memcmp(block.data(), candidate_.data() + b * block_size_, block_size_) != 0) {
          continue;
        }
        std::vector<Equivalence>& same = references_.equivalences;
        if (!same.empty() && same.back().old_start + same.back().length == b * block_size_) {
          same.back().length += block_size_;
        } else if (same.size() < kMaxEquivalences) {
          same.push_back({b * block_size_, b * block_size_, block_size_});
        }
      }
      next = std::max(next, last);
    }
    return Status::Ok();
  }

  // Raw data in ops of at most kReplaceOpBytes: nothing is lost by cutting
  // it, and the device applies one op while it reads the next.
  Status EmitReplace(size_t first, size_t count) {
    const size_t piece = std::max<size_t>(1, kReplaceOpBytes / block_size_);
    for (size_t at = first; at < first + count; at += piece) {
      const size_t n = std::min(piece, first + count - at);
      const uint8_t* bytes = data_.data() + at * block_size_;
      Operation op;
      op.type = OperationType::kReplace;
      for (size_t i = at; i < at + n; ++i) AppendBlock(&op.dst_extents, data_blocks_[i]);
      op.dst_hash = Sha256::Hash(bytes, n * block_size_);
      REVPATCH_RETURN_IF_ERROR(Emit(op, bytes, n * block_size_));
    }
    return Status::Ok();
  }

  const ImageFile& source_;
  const ImageFile& target_;
  uint32_t block_size_;
  PayloadWriter* writer_;
  GenerateResult* result_;
  uint64_t max_blocks_, region_blocks_, source_limit_;
  std::unordered_map<uint64_t, uint64_t> index_;  // hash prefix -> first block

  PendingOp zero_, copy_;
  std::vector<uint64_t> data_blocks_;  // target blocks of the current region
  std::vector<uint8_t> data_;          // their bytes
  // What the matcher indexes: source blocks (in order) and their bytes.
  std::vector<uint64_t> candidate_blocks_;
  std::vector<uint8_t> candidate_;
  bool whole_source_ = false;
  bool whole_ready_ = false;
  DeltaMatcher matcher_;
  ReferenceInfo references_;
  bool references_ready_ = false;
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
  Generator generator(source, target, options, &writer, result);
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
