#include "generator.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_set>
#include <utility>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "block_io.h"
#include "buffered_writer.h"
#include "diff_encoder.h"
#include "executable_spans.h"
#include "file_io.h"
#include "image_reader.h"
#include "little_endian.h"
#include "merkle.h"
#include "operation.h"
#include "ordered_pool.h"
#include "page_digest_scan.h"
#include "payload_reader.h"
#include "source_index.h"
#include "stream_delta_encoder.h"
#include "stream_scan.h"

namespace revpatch {
namespace {

// Streams a stream delta can go through: zstd frames and deflate streams,
// sorted by offset, overlapping ones dropped (a stream inside another's
// bytes is the outer one's business). `exact`: only streams a rebuild
// reproduces (the target's); otherwise any that expands (the source's).
void FindStreams(const uint8_t* buf, size_t size, bool exact, std::vector<FoundStream>* out) {
  std::vector<FoundStream> found;
  if (exact) {
    FindZstdStreams(buf, size, &found);
  } else {
    FindZstdFrames(buf, size, &found);
  }
  FindDeflateStreams(buf, size, &found);
  std::stable_sort(found.begin(), found.end(),
                   [](const FoundStream& a, const FoundStream& b) { return a.offset < b.offset; });
  uint64_t end = 0;
  for (FoundStream& f : found) {
    if (!out->empty() && f.offset < end) continue;
    end = f.offset + f.length;
    out->push_back(std::move(f));
  }
}

constexpr uint64_t kMiB = 1ull << 20;
constexpr uint64_t kNeighbourBlocks = 64;
constexpr uint64_t kReplaceOpBytes = 4ull << 20;
constexpr size_t kWriteBuffer = 1u << 20;
// Blocks read and compared per call, of each image.
constexpr size_t kBatchBytes = 4u << 20;
// Streaming regions: small enough that many spread over the workers and
// their encoders' windows stay small, large enough that Brotli sees context.
constexpr uint64_t kStreamRegionBytes = (4ull << 20) - (64u << 10);
constexpr uint64_t kMinRegionBytes = 256u << 10;
constexpr uint64_t kMinWindowBytes = 1ull << 20;
constexpr uint64_t kMaxWindowBytes = 64ull << 20;
// A region's window holds at most this many times the region's bytes: its
// same offsets, what its anchors point at and its nearest neighbours;
// more costs suffix-array time for little.
constexpr uint64_t kWindowPerRegion = 4;
// An anchor key shared by more source blocks than this says nothing about
// where the content came from.
constexpr size_t kMaxAnchorHits = 4;
// Mean source bytes per anchor: 2^10, more when the anchors of a large
// source would take more than an eighth of the budget.
constexpr int kAnchorSpacingBits = 10;
// What the classifier holds besides the index and the gathered region:
// its two read batches (or, before, the two image hashers' buffers), the
// payload writer's buffer, the ZERO and COPY ops being gathered (up to
// kMaxExtentsPerOperation extents each), and allocator slack.
constexpr uint64_t kFixedBytes = 2 * kBatchBytes + kWriteBuffer + 3 * 16 * 65536 + 24 * kMiB;

bool AllZero(const uint8_t* p, size_t n) {
  return n == 0 || (p[0] == 0 && std::memcmp(p, p + 1, n - 1) == 0);
}

void AppendBlock(std::vector<Extent>* extents, uint64_t block) {
  if (!extents->empty() && extents->back().start_block + extents->back().num_blocks == block) {
    ++extents->back().num_blocks;
  } else {
    extents->push_back({block, 1});
  }
}

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

// One operation ready to write: its record and its data, owned or a range
// of the region's bytes.
struct EncodedOp {
  Operation op;
  std::vector<uint8_t> owned;
  size_t region_offset = 0;
  size_t region_length = 0;
};

// A region: target blocks (in order) and their bytes, then its ops.
struct Region {
  std::vector<uint64_t> blocks;
  std::vector<uint8_t> data;
  std::vector<EncodedOp> ops;
};

// How the run uses its budget (see generator.h).
struct Plan {
  bool whole_source = false;
  uint64_t region_bytes = 0;
  uint64_t window_bytes = 0;
  uint64_t fixed = 0;     // outside the pool: index or whole source, batches, region gathering
  uint64_t capacity = 0;  // for regions in flight
  unsigned threads = 1;
  int anchor_spacing_bits = kAnchorSpacingBits;
};

// The memory of a matcher over `n` bytes, the bytes included, at its peak
// (diff_encoder.h's bounds).
uint64_t MatcherPeakBytes(uint64_t n) { return n + DeltaMatcherInitPeakBytes(n); }
// One region of `r` bytes: its records (24 bytes each, at most about one
// per 24 target bytes) and a WriteDelta, with references predicted or
// not; the first delta is held while the predicted one is written.
uint64_t DeltaBytes(uint64_t r, bool predicted) {
  return r + WriteDeltaPeakBytes(r, r / 24 + 1, predicted) + (predicted ? 2 * r : 0);
}

// Reserved memory of one region of `r` bytes in flight.
uint64_t WholeRegionBytes(uint64_t r, uint64_t source_size) {
  // The region, the source blocks it touches (at most one op's worth) and
  // the delta.
  return r + std::min(source_size, kMaxOperationBytes) + DeltaBytes(r, true);
}
uint64_t StreamRegionBytes(uint64_t r, uint64_t w) {
  // Matching (window, suffix array, Bloom filter), then the delta over the
  // touched blocks (at most the window), the matcher gone by then.
  const uint64_t matching = MatcherPeakBytes(w) + w / 256 + r;  // + block list, records
  const uint64_t writing = w + DeltaBytes(r, false);
  return r + std::max(matching, writing);
}

Status MakePlan(const GenerateOptions& options, const ImageFile& source, Plan* plan) {
  const uint64_t budget = options.memory_budget;
  const uint32_t block_size = options.block_size;
  const uint64_t region_cap = std::max<uint64_t>(
      block_size, std::min(options.region_bytes, kMaxOperationBytes) / block_size * block_size);
  unsigned threads = options.threads;
  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
  plan->threads = std::min(threads, kMaxGeneratorThreads);
  const uint64_t s = source.size();
  const auto fits = [&](uint64_t fixed, uint64_t one) { return fixed + one <= budget; };

  // Whole source: the matcher, the block list, one region gathering and
  // one in flight.
  if (s <= std::min(options.whole_source_bytes, kWholeSourceLimit)) {
    const uint64_t shared = MatcherPeakBytes(s) + source.blocks() * 8 + kFixedBytes;
    for (uint64_t r = region_cap;; r = std::max<uint64_t>(block_size, r / 2 / block_size * block_size)) {
      if (fits(shared + r, WholeRegionBytes(r, s))) {
        plan->whole_source = true;
        plan->region_bytes = r;
        plan->fixed = shared + r;
        plan->capacity = budget - shared - r;
        return Status::Ok();
      }
      if (r <= std::min(region_cap, kMinRegionBytes * 16)) break;
    }
  }

  // Streaming: the index, one region gathering, regions in flight with a
  // window each. Two regions at once where the budget allows, else one
  // (fewer workers run; the payload does not depend on it).
  const uint64_t data_blocks =
      std::min<uint64_t>(source.blocks(), source.AllocatedBytes() / block_size + 1);
  int bits = kAnchorSpacingBits;
  while (bits < 20 && SourceIndex::EstimateBytes(source.blocks(), data_blocks, block_size, bits) >
                          budget / 8) {
    ++bits;
  }
  plan->anchor_spacing_bits = bits;
  const uint64_t index = SourceIndex::EstimateBytes(source.blocks(), data_blocks, block_size, bits);
  for (uint64_t r = std::min(region_cap, kStreamRegionBytes);;
       r = std::max<uint64_t>(block_size, r / 2 / block_size * block_size)) {
    const uint64_t fixed = kFixedBytes + index + r;
    if (fixed < budget) {
      const uint64_t capacity = budget - fixed;
      for (uint64_t share : {capacity / 2, capacity}) {
        const uint64_t most = std::max(kMinWindowBytes, std::min(kMaxWindowBytes, kWindowPerRegion * r) /
                                                            kMinWindowBytes * kMinWindowBytes);
        for (uint64_t w = most; w >= kMinWindowBytes; w -= kMinWindowBytes) {
          if (StreamRegionBytes(r, w) <= share) {
            plan->whole_source = false;
            plan->region_bytes = r;
            plan->window_bytes = w;
            plan->fixed = fixed;
            plan->capacity = capacity;
            return Status::Ok();
          }
        }
      }
    }
    if (r <= block_size || r <= kMinRegionBytes) break;
  }
  const uint64_t r = std::min(region_cap, kMinRegionBytes);
  const uint64_t need = kFixedBytes + index + r + StreamRegionBytes(r, kMinWindowBytes);
  return Status(ErrorCode::kInvalidArgument,
                "memory budget of " + std::to_string(budget) +
                    " bytes is too small for these images: at least " + std::to_string(need) +
                    " needed");
}

// The target image as a ByteSource for the executable parsers: blocks
// read through a window of kWindowBlocks, so a scan of block starts reads
// each block once. The first read error is kept for status().
class ImageByteSource : public ByteSource {
 public:
  explicit ImageByteSource(const ImageFile& image) : image_(image) {}
  uint64_t size() const override { return image_.size(); }
  bool Read(uint64_t offset, size_t length, uint8_t* out) const override {
    const uint64_t bs = image_.block_size();
    if (!status_.ok() || offset > size() || length > size() - offset) return false;
    while (length > 0) {
      const uint64_t block = offset / bs;
      if (block < first_ || block >= first_ + loaded_) {
        const uint64_t n = std::min<uint64_t>(kWindowBlocks, image_.blocks() - block);
        window_.resize(n * bs);
        status_ = image_.ReadBlocks(block, n, window_.data());
        if (!status_.ok()) return false;
        first_ = block;
        loaded_ = n;
      }
      const uint64_t at = offset - first_ * bs;
      const size_t k = static_cast<size_t>(std::min<uint64_t>(length, loaded_ * bs - at));
      std::memcpy(out, window_.data() + at, k);
      out += k;
      offset += k;
      length -= k;
    }
    return true;
  }
  const Status& status() const { return status_; }

 private:
  static constexpr uint64_t kWindowBlocks = 256;
  const ImageFile& image_;
  mutable std::vector<uint8_t> window_;
  mutable uint64_t first_ = 0, loaded_ = 0;
  mutable Status status_;
};

// Read-only state every region encoder shares.
struct Shared {
  const ImageFile* source = nullptr;
  const ImageFile* target = nullptr;
  uint32_t block_size = 0;
  uint64_t source_limit = 0;  // most source blocks one op may read
  Plan plan;
  // Whole source: every source block, its bytes, one matcher, the
  // executables' references.
  std::vector<uint64_t> candidate_blocks;
  std::vector<uint8_t> candidate;
  DeltaMatcher matcher;
  ReferenceInfo references;
  // Whole source: its zstd frames and deflate streams (offsets in the
  // source), for stream deltas; one stream delta is written at a time (its
  // memory is beyond the region's reservation: see TryStreams).
  std::vector<FoundStream> streams;
  mutable std::mutex stream_mutex;
  // When `references` is of version 4 and the source's executables are at
  // one bias each: the same in version 3, tried too (its reference part is
  // smaller where both predict alike).
  ReferenceInfo view_references;
  // Streaming.
  SourceIndex index;
};

// Encodes one region into its ops: on a worker thread, touching nothing
// but the region and (read-only) the shared state.
class RegionEncoder {
 public:
  RegionEncoder(const Shared& shared, Region* region) : s_(shared), region_(region) {}

  Status Encode() { return EmitRegion(0, region_->blocks.size()); }

 private:
  // The source bytes the matcher sees for region blocks [first, first+count).
  Status PrepareCandidates(size_t first, size_t count) {
    if (s_.plan.whole_source) {
      blocks_ = &s_.candidate_blocks;
      bytes_ = &s_.candidate;
      matcher_ = &s_.matcher;
      return Status::Ok();
    }
    const uint64_t source_blocks = s_.source->blocks();
    const uint64_t cap = std::max<uint64_t>(1, s_.plan.window_bytes / s_.block_size);
    const std::vector<uint64_t>& targets = region_->blocks;
    std::vector<uint64_t> chosen;
    std::unordered_set<uint64_t> seen;
    chosen.reserve(static_cast<size_t>(std::min<uint64_t>(cap, 1u << 16)));
    // Adds source block b when it holds data; false once the window is full.
    auto add = [&](uint64_t b) {
      if (chosen.size() >= cap) return false;
      if (b < source_blocks && s_.index.HasData(b) && seen.insert(b).second) chosen.push_back(b);
      return true;
    };
    bool room = true;
    for (size_t i = first; room && i < first + count; ++i) room = add(targets[i]);
    if (room) {
      std::vector<uint64_t> hits;
      FindAnchors(region_->data.data() + first * s_.block_size, count * s_.block_size,
                  s_.index.spacing_bits(), [&](uint32_t key, size_t) {
                    if (!room) return;
                    hits.clear();
                    s_.index.FindAnchor(key, kMaxAnchorHits, &hits);
                    for (uint64_t b : hits) {
                      room = room && (b == 0 || add(b - 1)) && add(b) && add(b + 1);
                    }
                  });
    }
    for (uint64_t margin = 1; room && margin <= kNeighbourBlocks; margin *= 2) {
      for (size_t i = first; room && i < first + count; ++i) {
        const uint64_t t = targets[i];
        const uint64_t lo = t > margin ? t - margin : 0;
        for (uint64_t b = lo; room && b <= t + margin; ++b) room = add(b);
      }
    }
    std::sort(chosen.begin(), chosen.end());
    own_blocks_.swap(chosen);
    own_matcher_.reset();
    std::vector<uint8_t>().swap(own_bytes_);
    try {
      own_bytes_.resize(own_blocks_.size() * s_.block_size);
    } catch (const std::bad_alloc&) {
      return Status(ErrorCode::kTooLarge, "generator: out of memory");
    }
    for (size_t i = 0; i < own_blocks_.size();) {
      size_t run = 1;
      while (i + run < own_blocks_.size() && own_blocks_[i + run] == own_blocks_[i] + run) ++run;
      REVPATCH_RETURN_IF_ERROR(
          s_.source->ReadBlocks(own_blocks_[i], run, own_bytes_.data() + i * s_.block_size));
      i += run;
    }
    blocks_ = &own_blocks_;
    bytes_ = &own_bytes_;
    own_matcher_.reset(new DeltaMatcher());
    matcher_ = own_matcher_.get();
    if (own_bytes_.empty()) return Status::Ok();
    return own_matcher_->Init(own_bytes_.data(), own_bytes_.size());
  }

  // Streaming: the window's matcher and bytes are not needed once the
  // touched blocks are copied out; freed before the delta is written.
  void ReleaseWindow() {
    if (s_.plan.whole_source) return;
    own_matcher_.reset();
    std::vector<uint8_t>().swap(own_bytes_);
  }

  void Add(Operation op, std::vector<uint8_t> owned) {
    EncodedOp e;
    op.data_length = owned.size();
    e.op = std::move(op);
    e.owned = std::move(owned);
    region_->ops.push_back(std::move(e));
  }

  // One region: a DIFF over the source blocks its matches touch (only
  // those, so the device reads little), or REPLACE / REPLACE_BROTLI when
  // nothing matches or the delta is no smaller. A region whose touched
  // source would pass the op limits is split in two.
  Status EmitRegion(size_t first, size_t count) {
    const uint32_t block_size = s_.block_size;
    const uint8_t* target = region_->data.data() + first * block_size;
    const size_t target_size = count * block_size;
    Operation op;
    for (size_t i = first; i < first + count; ++i) AppendBlock(&op.dst_extents, region_->blocks[i]);
    op.dst_hash = Sha256::Hash(target, target_size);

    std::vector<DeltaRecord> records;
    blocks_ = nullptr;
    if (s_.source->blocks() > 0) {
      REVPATCH_RETURN_IF_ERROR(PrepareCandidates(first, count));
      if (!bytes_->empty()) matcher_->Match(target, target_size, &records);
    }
    const size_t candidates = blocks_ ? blocks_->size() : 0;
    std::vector<uint8_t> touched(candidates, 0);
    uint64_t add_total = 0;
    for (const DeltaRecord& r : records) {
      if (r.add_length == 0) continue;
      add_total += r.add_length;
      for (uint64_t b = r.old_start / block_size; b <= (r.old_start + r.add_length - 1) / block_size;
           ++b) {
        touched[b] = 1;
      }
    }
    std::vector<Extent> src;
    std::vector<uint64_t> compact(candidates, 0);
    uint64_t touched_blocks = 0;
    for (size_t b = 0; b < touched.size(); ++b) {
      if (!touched[b]) continue;
      compact[b] = touched_blocks++;
      AppendBlock(&src, (*blocks_)[b]);
    }
    if (add_total > 0 &&
        (touched_blocks > s_.source_limit || src.size() > kMaxExtentsPerOperation)) {
      if (count > 1) {
        ReleaseWindow();
        REVPATCH_RETURN_IF_ERROR(EmitRegion(first, count / 2));
        return EmitRegion(first + count / 2, count - count / 2);
      }
      add_total = 0;  // one block: cannot split further; store it instead
    }
    std::vector<uint8_t> best;
    op.type = OperationType::kReplace;
    if (add_total == 0) {
      ReleaseWindow();
      std::vector<uint8_t> packed;
      REVPATCH_RETURN_IF_ERROR(BrotliCompress(target, target_size, kBrotliQuality, &packed));
      if (packed.size() < target_size) {
        op.type = OperationType::kReplaceBrotli;
        best.swap(packed);
      }
    } else {
      std::vector<uint8_t> old(touched_blocks * block_size);
      for (size_t b = 0; b < touched.size(); ++b) {
        if (touched[b]) {
          std::memcpy(old.data() + compact[b] * block_size, bytes_->data() + b * block_size,
                      block_size);
        }
      }
      ReleaseWindow();
      for (DeltaRecord& r : records) {
        if (r.add_length == 0) continue;
        r.old_start = compact[r.old_start / block_size] * block_size + r.old_start % block_size;
      }
      std::vector<uint8_t> delta;
      REVPATCH_RETURN_IF_ERROR(
          WriteDelta(old.data(), old.size(), target, target_size, records, &delta));
      if (!s_.references.empty() && records.size() <= kMaxPredictedRecords) {
        // Executables in the source: the delta with references predicted
        // too, kept when smaller (on data it only costs its few bytes).
        const DeltaLayout layout{block_size, &src, &op.dst_extents};
        std::vector<uint8_t> predicted;
        REVPATCH_RETURN_IF_ERROR(WriteDelta(old.data(), old.size(), target, target_size, records,
                                            &predicted, &s_.references, &layout));
        if (predicted.size() < delta.size()) delta.swap(predicted);
        if (!s_.view_references.empty()) {
          REVPATCH_RETURN_IF_ERROR(WriteDelta(old.data(), old.size(), target, target_size, records,
                                              &predicted, &s_.view_references, &layout));
          if (predicted.size() < delta.size()) delta.swap(predicted);
        }
      }
      if (delta.size() < target_size) {
        op.type = OperationType::kDiff;
        op.src_extents = std::move(src);
        op.src_hash = Sha256::Hash(old.data(), old.size());
        best.swap(delta);
      }
    }
    if (s_.plan.whole_source && !s_.streams.empty()) {
      std::vector<Extent> plain = op.type == OperationType::kDiff ? op.src_extents : src;
      if (add_total == 0) plain.clear();
      const size_t best_size = op.type == OperationType::kReplace ? target_size : best.size();
      REVPATCH_RETURN_IF_ERROR(TryStreams(target, target_size, plain, best_size, &op, &best));
    }
    if (op.type == OperationType::kReplace) return EmitReplace(first, count);
    Add(std::move(op), std::move(best));
    return Status::Ok();
  }

  // A stream delta (version 5) for a region holding zstd frames the
  // publisher's libzstd reproduces, when the source holds frames too: each
  // new frame is paired with the source frame nearest in expanded size,
  // the op reads those frames' blocks and the blocks the plain delta
  // touched, and the result replaces the op when smaller than
  // `best_size`. Whole-source mode only; skipped when its memory
  // (StreamDeltaPeakBytes) is more than the regions' share of the budget.
  Status TryStreams(const uint8_t* target, size_t target_size, const std::vector<Extent>& plain,
                    size_t best_size, Operation* op, std::vector<uint8_t>* best) {
    const uint32_t block_size = s_.block_size;
    std::vector<FoundStream> found;
    FindStreams(target, target_size, /*exact=*/true, &found);
    if (found.empty()) return Status::Ok();
    std::vector<size_t> chosen;
    uint64_t expanded_new = target_size;
    for (const FoundStream& n : found) {
      size_t pick = s_.streams.size();
      uint64_t gap = UINT64_MAX;
      for (size_t i = 0; i < s_.streams.size(); ++i) {
        if (s_.streams[i].codec != n.codec) continue;
        const uint64_t e = s_.streams[i].expanded_length;
        const uint64_t d = e > n.expanded_length ? e - n.expanded_length : n.expanded_length - e;
        if (d < gap) gap = d, pick = i;
      }
      if (pick < s_.streams.size()) chosen.push_back(pick);
      expanded_new = expanded_new - n.length + n.expanded_length;
    }
    std::sort(chosen.begin(), chosen.end());
    chosen.erase(std::unique(chosen.begin(), chosen.end()), chosen.end());
    if (chosen.empty()) return Status::Ok();
    // Source blocks: the chosen frames' and (while within the op limits)
    // the plain delta's.
    std::vector<uint64_t> blocks;
    for (size_t i : chosen) {
      const FoundStream& o = s_.streams[i];
      for (uint64_t b = o.offset / block_size; b <= (o.offset + o.length - 1) / block_size; ++b) {
        blocks.push_back(b);
      }
    }
    const size_t stream_blocks = blocks.size();
    for (const Extent& e : plain) {
      for (uint64_t b = e.start_block; b < e.start_block + e.num_blocks; ++b) blocks.push_back(b);
    }
    auto normalize = [&] {
      std::sort(blocks.begin(), blocks.end());
      blocks.erase(std::unique(blocks.begin(), blocks.end()), blocks.end());
    };
    auto extents_of = [&] {
      std::vector<Extent> extents;
      for (uint64_t b : blocks) AppendBlock(&extents, b);
      return extents;
    };
    normalize();
    std::vector<Extent> src = extents_of();
    if (blocks.size() > s_.source_limit || src.size() > kMaxExtentsPerOperation) {
      blocks.resize(stream_blocks);
      normalize();
      src = extents_of();
      if (blocks.size() > s_.source_limit || src.size() > kMaxExtentsPerOperation) {
        return Status::Ok();
      }
    }
    uint64_t expanded_old = blocks.size() * block_size;
    for (size_t i : chosen) {
      expanded_old = expanded_old - s_.streams[i].length + s_.streams[i].expanded_length;
    }
    if (expanded_old > kMaxExpandedBytes || expanded_new > kMaxExpandedBytes ||
        StreamDeltaPeakBytes(expanded_old, expanded_new) > s_.plan.capacity) {
      return Status::Ok();
    }
    std::vector<uint8_t> old(blocks.size() * block_size);
    for (size_t k = 0; k < blocks.size(); ++k) {
      std::memcpy(old.data() + k * block_size, s_.candidate.data() + blocks[k] * block_size,
                  block_size);
    }
    std::vector<FoundStream> old_streams;
    for (size_t i : chosen) {
      FoundStream o = s_.streams[i];
      const uint64_t b = o.offset / block_size;
      const size_t k = std::lower_bound(blocks.begin(), blocks.end(), b) - blocks.begin();
      o.offset = k * block_size + o.offset % block_size;
      old_streams.push_back(std::move(o));
    }
    std::vector<uint8_t> delta;
    {
      std::lock_guard<std::mutex> one_at_a_time(s_.stream_mutex);
      const Status made = WriteStreamDelta(old.data(), old.size(), old_streams, target, target_size,
                                           found, block_size, &delta);
      if (made.code() == ErrorCode::kTooLarge) return Status::Ok();
      REVPATCH_RETURN_IF_ERROR(made);
    }
    if (delta.size() >= best_size) return Status::Ok();
    op->type = OperationType::kDiff;
    op->src_extents = std::move(src);
    op->src_hash = Sha256::Hash(old.data(), old.size());
    best->swap(delta);
    return Status::Ok();
  }

  // Raw data in ops of at most kReplaceOpBytes: nothing is lost by cutting
  // it, and the device applies one op while it reads the next.
  Status EmitReplace(size_t first, size_t count) {
    const uint32_t block_size = s_.block_size;
    const size_t piece = std::max<size_t>(1, kReplaceOpBytes / block_size);
    for (size_t at = first; at < first + count; at += piece) {
      const size_t n = std::min(piece, first + count - at);
      EncodedOp e;
      e.op.type = OperationType::kReplace;
      for (size_t i = at; i < at + n; ++i) AppendBlock(&e.op.dst_extents, region_->blocks[i]);
      e.region_offset = at * block_size;
      e.region_length = n * block_size;
      e.op.dst_hash = Sha256::Hash(region_->data.data() + e.region_offset, e.region_length);
      e.op.data_length = e.region_length;
      region_->ops.push_back(std::move(e));
    }
    return Status::Ok();
  }

  const Shared& s_;
  Region* region_;
  const std::vector<uint64_t>* blocks_ = nullptr;
  const std::vector<uint8_t>* bytes_ = nullptr;
  const DeltaMatcher* matcher_ = nullptr;
  std::vector<uint64_t> own_blocks_;
  std::vector<uint8_t> own_bytes_;
  std::unique_ptr<DeltaMatcher> own_matcher_;
};

// Operations being gathered: ZERO and COPY collect blocks from all over the
// target (many extents, one record).
struct PendingOp {
  std::vector<Extent> dst;
  std::vector<Extent> src;
  uint64_t blocks = 0;
  Sha256 hash;
};

// Walks the target, classifies each block and gathers them into ops; hands
// regions to the pool and writes every op in order.
class Generator {
 public:
  Generator(Shared* shared, const GenerateOptions& options, PayloadWriter* writer,
            GenerateResult* result)
      : shared_(shared), s_(*shared), block_size_(options.block_size), writer_(writer), result_(result),
        pool_(shared->plan.threads, shared->plan.capacity) {
    max_blocks_ = std::max<uint64_t>(
        1, std::min(options.region_bytes, kMaxOperationBytes) / block_size_);
    region_blocks_ = std::max<uint64_t>(1, s_.plan.region_bytes / block_size_);
  }

  Status Run(const std::function<void(uint64_t, uint64_t)>& progress) {
    const ImageFile& source = *s_.source;
    const ImageFile& target = *s_.target;
    const uint64_t source_blocks = source.blocks();
    const uint64_t target_blocks = target.blocks();
    const size_t batch = std::max<size_t>(1, kBatchBytes / block_size_);
    std::vector<uint8_t> tbuf(batch * block_size_), sbuf(batch * block_size_);
    std::vector<uint8_t> other(block_size_);
    REVPATCH_RETURN_IF_ERROR(FindTargetFrames());
    size_t frame = 0;  // next of frames_ not yet passed
    uint64_t reported = 0;
    for (uint64_t t = 0; t < target_blocks;) {
      if (progress && (t == 0 || t - reported >= 1024)) {
        progress(t * block_size_, target.size());
        reported = t;
      }
      // Holes in both images (or, past the source, in the target) are
      // unchanged zeros: not read.
      uint64_t next_t = t, next_s = t;
      REVPATCH_RETURN_IF_ERROR(target.NextDataBlock(t, &next_t));
      if (t < source_blocks) {
        REVPATCH_RETURN_IF_ERROR(source.NextDataBlock(t, &next_s));
        const uint64_t skip = std::min({next_t, next_s, source_blocks});
        if (skip > t) {
          t = skip;
          continue;
        }
      } else if (next_t > t) {
        // Growth blocks nobody wrote: the layer writer stores them as zeros.
        result_->changed_blocks += next_t - t;
        t = next_t;
        continue;
      }
      uint64_t n = std::min<uint64_t>(batch, target_blocks - t);
      if (t < source_blocks) n = std::min(n, source_blocks - t);
      REVPATCH_RETURN_IF_ERROR(target.ReadBlocks(t, n, tbuf.data()));
      if (t < source_blocks) REVPATCH_RETURN_IF_ERROR(source.ReadBlocks(t, n, sbuf.data()));
      for (uint64_t i = 0; i < n; ++i) {
        const uint64_t b = t + i;
        const uint8_t* block = tbuf.data() + i * block_size_;
        const bool zero = AllZero(block, block_size_);
        if (b < source_blocks) {
          while (frame < frames_.size() && frames_[frame].second <= b) ++frame;
          const bool in_frame = frame < frames_.size() && frames_[frame].first <= b;
          // A frame's blocks go to one region whole, unchanged ones too:
          // its stream delta needs the frame's bytes.
          if (!in_frame && std::memcmp(block, sbuf.data() + i * block_size_, block_size_) == 0) {
            continue;
          }
          if (in_frame && b == frames_[frame].first && region_ &&
              region_->blocks.size() + (frames_[frame].second - b) > region_blocks_) {
            REVPATCH_RETURN_IF_ERROR(FlushRegion());
          }
        } else if (zero) {
          ++result_->changed_blocks;
          continue;
        }
        if (zero) {
          REVPATCH_RETURN_IF_ERROR(AddGathered(OperationType::kZero, &zero_, b, block, 0));
          continue;
        }
        uint64_t found = 0;
        if (!s_.plan.whole_source && s_.index.FindBlock(BlockHash(block, block_size_), &found)) {
          REVPATCH_RETURN_IF_ERROR(source.ReadBlocks(found, 1, other.data()));
          if (std::memcmp(block, other.data(), block_size_) == 0) {
            REVPATCH_RETURN_IF_ERROR(AddGathered(OperationType::kCopy, &copy_, b, block, found));
            continue;
          }
        }
        REVPATCH_RETURN_IF_ERROR(AddData(b, block));
      }
      t += n;
    }
    REVPATCH_RETURN_IF_ERROR(FlushGathered(OperationType::kZero, &zero_));
    REVPATCH_RETURN_IF_ERROR(FlushGathered(OperationType::kCopy, &copy_));
    REVPATCH_RETURN_IF_ERROR(FlushRegion());
    REVPATCH_RETURN_IF_ERROR(pool_.Finish());
    result_->planned_bytes = s_.plan.fixed + pool_.peak_reserved();
    if (progress) progress(target.size(), target.size());
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
    auto op = std::make_shared<Operation>();
    op->type = type;
    op->dst_extents.swap(pending->dst);
    op->dst_hash = pending->hash.Final();
    if (type == OperationType::kCopy) {
      op->src_extents.swap(pending->src);
      op->src_hash = op->dst_hash;  // the same bytes
    }
    *pending = PendingOp();
    const uint64_t cost = (op->dst_extents.size() + op->src_extents.size()) * sizeof(Extent);
    return pool_.Submit(cost, nullptr, [this, op] { return Emit(*op, nullptr, 0); });
  }

  Status AddData(uint64_t t, const uint8_t* block) {
    if (region_ && region_->blocks.size() == region_blocks_) {
      REVPATCH_RETURN_IF_ERROR(FlushRegion());
    }
    if (!region_) {
      region_ = std::make_shared<Region>();
      try {
        region_->data.reserve(region_blocks_ * block_size_);
      } catch (const std::bad_alloc&) {
        return Status(ErrorCode::kTooLarge, "generator: out of memory");
      }
    }
    region_->blocks.push_back(t);
    region_->data.insert(region_->data.end(), block, block + block_size_);
    return Status::Ok();
  }

  // Hands the gathered region to a worker; its ops are written when every
  // op before them is.
  Status FlushRegion() {
    if (!region_) return Status::Ok();
    std::shared_ptr<Region> region = std::move(region_);
    region_.reset();
    const uint64_t r = region->data.size();
    if (s_.plan.whole_source && !whole_ready_) REVPATCH_RETURN_IF_ERROR(PrepareWholeSource());
    const uint64_t cost = s_.plan.whole_source ? WholeRegionBytes(r, s_.source->size())
                                               : StreamRegionBytes(r, s_.plan.window_bytes);
    const Shared* shared = &s_;
    return pool_.Submit(
        cost,
        [shared, region] {
          RegionEncoder encoder(*shared, region.get());
          return encoder.Encode();
        },
        [this, region] {
          for (const EncodedOp& e : region->ops) {
            const uint8_t* data =
                e.owned.empty() ? region->data.data() + e.region_offset : e.owned.data();
            const size_t size = e.owned.empty() ? e.region_length : e.owned.size();
            REVPATCH_RETURN_IF_ERROR(Emit(e.op, data, size));
          }
          region->ops.clear();
          std::vector<uint8_t>().swap(region->data);
          return Status::Ok();
        });
  }

  // The whole source, its matcher and its executables' references, before
  // the first region is encoded (nothing else runs then).
  Status PrepareWholeSource() {
    whole_ready_ = true;
    Shared& s = *shared_;
    const uint64_t source_blocks = s.source->blocks();
    if (source_blocks == 0) return Status::Ok();
    try {
      s.candidate_blocks.resize(source_blocks);
      s.candidate.resize(source_blocks * block_size_);
    } catch (const std::bad_alloc&) {
      return Status(ErrorCode::kTooLarge, "generator: out of memory");
    }
    for (uint64_t b = 0; b < source_blocks; ++b) s.candidate_blocks[b] = b;
    const size_t batch = std::max<size_t>(1, kBatchBytes / block_size_);
    for (uint64_t b = 0; b < source_blocks; b += batch) {
      const uint64_t n = std::min<uint64_t>(batch, source_blocks - b);
      REVPATCH_RETURN_IF_ERROR(s.source->ReadBlocks(b, n, s.candidate.data() + b * block_size_));
    }
    REVPATCH_RETURN_IF_ERROR(s.matcher.Init(s.candidate.data(), s.candidate.size()));
    FindStreams(s.candidate.data(), s.candidate.size(), /*exact=*/false, &s.streams);
    return PrepareReferences(&s);
  }

  // The executables of the source and the blocks of their images left
  // unchanged in place (whose references' targets stay where they are).
  // Executables found in both the source and the target are described in
  // addresses (version 4 references: any layout of segments); failing
  // that, those of the source at one bias in view offsets (version 3).
  // Streaming predicts nothing: its windows never hold a whole executable.
  Status PrepareReferences(Shared* s) {
    ReferenceInfo& references = s->references;
    std::vector<std::pair<uint64_t, uint64_t>> images;  // view ranges
    {
      const MemoryByteSource old_view(s->candidate.data(), s->candidate.size());
      std::vector<Executable> old_execs, new_execs;
      FindExecutables(old_view, block_size_, &old_execs);
      if (!old_execs.empty()) {
        const ImageByteSource new_view(*s->target);
        FindExecutables(new_view, block_size_, &new_execs);
        REVPATCH_RETURN_IF_ERROR(new_view.status());
        BuildAddressReferences(old_execs, new_execs, &references);
      }
      if (references.spans.empty()) {
        references = ReferenceInfo{};
      } else {
        for (const Executable& x : old_execs) {
          images.push_back({x.view_offset, x.view_offset + x.file_size});
        }
      }
    }
    if (!references.spans.empty()) {
      FindExecutableSpans(s->candidate.data(), s->candidate.size(), block_size_,
                          &s->view_references.spans);
    } else {
      FindExecutableSpans(s->candidate.data(), s->candidate.size(), block_size_, &references.spans);
      for (const ReferenceSpan& span : references.spans) {
        // A rel32 span's range is its whole image.
        if (span.kind == ReferenceKind::kRel32) images.push_back({span.low, span.high});
      }
    }
    std::vector<uint8_t> block(block_size_);
    const uint64_t common = std::min(s->source->blocks(), s->target->blocks());
    uint64_t next = 0;  // blocks below were looked at
    for (const auto& image : images) {
      const uint64_t first = std::max(next, image.first / block_size_);
      const uint64_t last = std::min(common, (image.second + block_size_ - 1) / block_size_);
      for (uint64_t b = first; b < last; ++b) {
        REVPATCH_RETURN_IF_ERROR(s->target->ReadBlocks(b, 1, block.data()));
        if (std::memcmp(block.data(), s->candidate.data() + b * block_size_, block_size_) != 0) {
          continue;
        }
        std::vector<Equivalence>& same = references.equivalences;
        if (!same.empty() && same.back().old_start + same.back().length == b * block_size_) {
          same.back().length += block_size_;
        } else if (same.size() < kMaxEquivalences) {
          same.push_back({b * block_size_, b * block_size_, block_size_});
        }
      }
      next = std::max(next, last);
    }
    // The target's code signatures, whose page hashes the device rebuilds
    // (page_digests.h): version 4 only, so with no spans of version 3.
    if (references.version == kAddressReferenceVersion || references.spans.empty()) {
      FindPageDigests(*s->target, &references.digests);
      if (!references.digests.empty()) references.version = kAddressReferenceVersion;
    }
    if (!s->view_references.empty()) s->view_references.equivalences = references.equivalences;
    return Status::Ok();
  }

  // Whole source: the block ranges [first, end) of the target's zstd
  // frames that fit one region and changed in place, found before the
  // walk (the target read whole once, then freed).
  Status FindTargetFrames() {
    if (!s_.plan.whole_source || s_.target->size() > kWholeSourceLimit) return Status::Ok();
    std::vector<uint8_t> all;
    try {
      all.resize(s_.target->blocks() * block_size_);
    } catch (const std::bad_alloc&) {
      return Status::Ok();  // no stream deltas then
    }
    const size_t batch = std::max<size_t>(1, kBatchBytes / block_size_);
    for (uint64_t b = 0; b < s_.target->blocks(); b += batch) {
      const uint64_t n = std::min<uint64_t>(batch, s_.target->blocks() - b);
      REVPATCH_RETURN_IF_ERROR(s_.target->ReadBlocks(b, n, all.data() + b * block_size_));
    }
    std::vector<FoundStream> found;
    FindStreams(all.data(), all.size(), /*exact=*/false, &found);
    std::vector<uint8_t> old;
    for (const FoundStream& f : found) {
      const uint64_t first = f.offset / block_size_;
      const uint64_t end = (f.offset + f.length + block_size_ - 1) / block_size_;
      if (end - first > region_blocks_) continue;
      if (end <= s_.source->blocks()) {
        old.resize((end - first) * block_size_);
        REVPATCH_RETURN_IF_ERROR(s_.source->ReadBlocks(first, end - first, old.data()));
        if (std::memcmp(old.data(), all.data() + first * block_size_, old.size()) == 0) continue;
      }
      if (!frames_.empty() && frames_.back().second > first) {
        frames_.back().second = std::max(frames_.back().second, end);
      } else {
        frames_.push_back({first, end});
      }
    }
    return Status::Ok();
  }

  // On the producer's thread, in order.
  Status Emit(const Operation& op_in, const uint8_t* data, size_t size) {
    Operation op = op_in;
    op.data_length = size;
    std::vector<uint8_t> record;
    EncodeOperation(op, &record);
    REVPATCH_RETURN_IF_ERROR(writer_->Append(record.data(), record.size()));
    if (size > 0) REVPATCH_RETURN_IF_ERROR(writer_->Append(data, size));
    if (op.type == OperationType::kDiff && size >= 8) {
      result_->max_delta_version = std::max(result_->max_delta_version, GetU32(data + 4));
    }
    uint64_t blocks = 0;
    TotalBlocks(op.dst_extents, &blocks);
    if (op.type == OperationType::kDiff) {
      uint64_t src_blocks = 0;
      TotalBlocks(op.src_extents, &src_blocks);
      AddDeltaNeeds(data, size, src_blocks * block_size_, blocks * block_size_, &needs_);
      result_->delta_versions = needs_.versions;
      result_->zstd_versions = needs_.zstd_versions;
      result_->deflate_streams = needs_.deflate;
    }
    OperationStats& st = result_->stats.by_type[static_cast<uint8_t>(op.type)];
    ++st.count;
    st.target_blocks += blocks;
    st.data_bytes += op.data_length;
    ++result_->stats.operations;
    ++result_->operation_count;
    result_->changed_blocks += blocks;
    return Status::Ok();
  }

  Shared* shared_;  // written only before the first region is encoded
  const Shared& s_;
  uint32_t block_size_;
  PayloadWriter* writer_;
  GenerateResult* result_;
  uint64_t max_blocks_, region_blocks_;
  PendingOp zero_, copy_;
  DeltaNeeds needs_;
  std::vector<std::pair<uint64_t, uint64_t>> frames_;
  std::shared_ptr<Region> region_;
  bool whole_ready_ = false;
  OrderedPool pool_;  // last: its workers stop before the rest goes
};

Status Generate(const std::string& source_path, const std::string& target_path,
                const std::string& temp_path, const GenerateOptions& options,
                const std::function<void(uint64_t, uint64_t)>& progress,
                GenerateResult* result) {
  ImageFile source, target;
  REVPATCH_RETURN_IF_ERROR(source.Open(source_path, options.block_size));
  REVPATCH_RETURN_IF_ERROR(target.Open(target_path, options.block_size));
  auto shared = std::make_unique<Shared>();
  REVPATCH_RETURN_IF_ERROR(MakePlan(options, source, &shared->plan));
  // The two digests and the source index read different things (or the
  // same pages): they run at once, each on its own thread.
  Status source_hashed, target_hashed;
  std::thread source_hasher([&] {
    source_hashed = HashImage(source_path, options.block_size, "", &result->source_digest,
                              &result->source_size);
  });
  std::thread target_hasher([&] {
    target_hashed = HashImage(target_path, options.block_size, "", &result->target_digest,
                              &result->target_size);
  });
  shared->source = &source;
  Status indexed = Status::Ok();
  if (!shared->plan.whole_source) {
    indexed = shared->index.Build(source, shared->plan.anchor_spacing_bits, /*anchors=*/true,
                                  kBatchBytes);
  }
  source_hasher.join();
  target_hasher.join();
  REVPATCH_RETURN_IF_ERROR(source_hashed);
  REVPATCH_RETURN_IF_ERROR(target_hashed);
  REVPATCH_RETURN_IF_ERROR(indexed);
  if (source.size() != result->source_size || target.size() != result->target_size) {
    return Status(ErrorCode::kIo, "an image changed while the patch was generated");
  }
#if defined(__GLIBC__)
  // Large buffers come and go with every region: mapped and unmapped
  // rather than kept in per-thread heaps, so what is freed leaves the
  // process and the budget holds.
  mallopt(M_MMAP_THRESHOLD, 1 << 20);
#endif
  shared->target = &target;
  shared->block_size = options.block_size;
  shared->source_limit = kMaxOperationBytes / options.block_size;
  result->whole_source = shared->plan.whole_source;
  result->region_bytes = shared->plan.region_bytes;
  result->window_bytes = shared->plan.window_bytes;
  result->threads = shared->plan.threads;
  File file;
  REVPATCH_RETURN_IF_ERROR(File::CreateTruncate(temp_path, &file));
  PayloadWriter writer(&file, options.chunk_size);
  {
    Generator generator(shared.get(), options, &writer, result);
    REVPATCH_RETURN_IF_ERROR(generator.Run(progress));
  }
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
  if (options.threads > kMaxGeneratorThreads) {
    return Status(ErrorCode::kInvalidArgument, "too many threads");
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
