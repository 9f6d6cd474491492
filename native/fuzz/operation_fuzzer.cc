// operation_fuzzer: the operation record parser and its checks, over a
// stream of records as ApplyPatch and ScanPayload meet them
// (DecodeOperationHeader, DecodeOperationExtents, ValidateOperation,
// TargetCoverage).
//
// Input: u8 block size selector (below 240: 1 << (9 + s % 12), else a raw
// u32 follows, so 0 and odd sizes occur), u64 source blocks, u64 target
// blocks, then records back to back; each record's data is skipped.
//
// Checks, besides the sanitizers:
//  - the two-step decode (header, then extents) and DecodeOperation agree;
//  - a decoded record re-encodes to exactly its bytes (one encoding per op);
//  - ValidateOperation accepts exactly what a reference written from the
//    contract in operation.h accepts, computed in 128-bit arithmetic (a
//    small class here, not the builtins the engine uses);
//  - TargetCoverage::Claim accepts exactly the extent lists that are
//    non-empty, do not wrap, and are disjoint from each other and from all
//    claimed before, and blocks() is the sum of what it accepted.
#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "fuzz_input.h"
#include "fuzz_support.h"
#include "fuzz_targets.h"
#include "operation.h"

namespace revpatch_fuzz {
namespace {

using revpatch::Extent;
using revpatch::Operation;
using revpatch::OperationType;
using revpatch::Status;

constexpr int kMaxRecords = 512;

// A 128-bit unsigned integer, just enough for the reference: sums of block
// counts and their products with a block size never wrap. (ISO C++ has no
// __int128; the engine must not either, so the reference cannot use it.)
class u128 {
 public:
  u128(uint64_t v = 0) : lo_(v) {}  // NOLINT: implicit on purpose
  u128 operator+(u128 o) const {
    u128 r;
    r.lo_ = lo_ + o.lo_;
    r.hi_ = hi_ + o.hi_ + (r.lo_ < lo_ ? 1 : 0);
    return r;
  }
  u128& operator+=(u128 o) { return *this = *this + o; }
  // Exact while the result fits in 128 bits (here: at most 2^65 * 2^32).
  u128 operator*(uint32_t m) const {
    const uint64_t lo_lo = (lo_ & 0xffffffffu) * m;
    const uint64_t lo_hi = (lo_ >> 32) * m;
    u128 r;
    r.lo_ = lo_lo + (lo_hi << 32);
    r.hi_ = hi_ * m + (lo_hi >> 32) + (r.lo_ < lo_lo ? 1 : 0);
    return r;
  }
  bool operator<(u128 o) const { return hi_ != o.hi_ ? hi_ < o.hi_ : lo_ < o.lo_; }
  bool operator>(u128 o) const { return o < *this; }
  bool operator<=(u128 o) const { return !(o < *this); }
  bool operator==(u128 o) const { return hi_ == o.hi_ && lo_ == o.lo_; }
  bool operator!=(u128 o) const { return !(*this == o); }

 private:
  uint64_t hi_ = 0;
  uint64_t lo_ = 0;
};

const u128 kU64Max = u128(~uint64_t{0});

bool Reads(OperationType t) { return t == OperationType::kCopy || t == OperationType::kDiff; }
bool CarriesData(OperationType t) { return t != OperationType::kZero && t != OperationType::kCopy; }

bool ReferenceShapeOk(const Operation& op) {
  const uint8_t type = static_cast<uint8_t>(op.type);
  if (type < 1 || type > 5) return false;
  if (op.src_extents.size() > revpatch::kMaxExtentsPerOperation ||
      op.dst_extents.size() > revpatch::kMaxExtentsPerOperation) {
    return false;
  }
  if (op.data_length > revpatch::kMaxOperationData) return false;
  if (op.dst_extents.empty()) return false;
  if (Reads(op.type) && op.src_extents.empty()) return false;
  if (!Reads(op.type)) {
    if (!op.src_extents.empty()) return false;
    for (uint8_t b : op.src_hash) {
      if (b != 0) return false;
    }
  }
  return CarriesData(op.type) ? op.data_length > 0 : op.data_length == 0;
}

// Every extent non-empty and inside [0, view_blocks); the block total.
bool ReferenceExtentsOk(const std::vector<Extent>& extents, uint64_t view_blocks, u128* total) {
  *total = 0;
  for (const Extent& e : extents) {
    if (e.num_blocks == 0) return false;
    if (u128(e.start_block) + e.num_blocks > view_blocks) return false;
    *total += e.num_blocks;
  }
  return true;
}

bool ReferenceDisjoint(std::vector<std::pair<u128, u128>> ranges) {
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i - 1].second > ranges[i].first) return false;
  }
  return true;
}

bool ReferenceValidate(const Operation& op, uint32_t block_size, uint64_t source_blocks,
                       uint64_t target_blocks) {
  if (!ReferenceShapeOk(op) || block_size == 0) return false;
  u128 src = 0, dst = 0;
  if (!ReferenceExtentsOk(op.src_extents, source_blocks, &src)) return false;
  if (!ReferenceExtentsOk(op.dst_extents, target_blocks, &dst)) return false;
  std::vector<std::pair<u128, u128>> ranges;
  for (const Extent& e : op.dst_extents) {
    ranges.emplace_back(e.start_block, u128(e.start_block) + e.num_blocks);
  }
  if (!ReferenceDisjoint(std::move(ranges))) return false;
  if (src * block_size > revpatch::kMaxOperationBytes) return false;
  if (dst * block_size > revpatch::kMaxOperationBytes) return false;
  if (op.type == OperationType::kCopy && src != dst) return false;
  if (op.type == OperationType::kReplace && u128(op.data_length) != dst * block_size) return false;
  return true;
}

// What TargetCoverage must do, by sorting everything claimed each time.
class ReferenceCoverage {
 public:
  bool CanClaim(const std::vector<Extent>& extents) const {
    std::vector<std::pair<u128, u128>> ranges = claimed_;
    for (const Extent& e : extents) {
      const u128 end = u128(e.start_block) + e.num_blocks;
      if (e.num_blocks == 0 || end > kU64Max) return false;
      ranges.emplace_back(e.start_block, end);
    }
    return ReferenceDisjoint(std::move(ranges));
  }
  void Claim(const std::vector<Extent>& extents) {
    for (const Extent& e : extents) {
      claimed_.emplace_back(e.start_block, u128(e.start_block) + e.num_blocks);
      blocks_ += e.num_blocks;
    }
  }
  u128 blocks() const { return blocks_; }

 private:
  std::vector<std::pair<u128, u128>> claimed_;
  u128 blocks_ = 0;
};

bool SameExtents(const std::vector<Extent>& a, const std::vector<Extent>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].start_block != b[i].start_block || a[i].num_blocks != b[i].num_blocks) return false;
  }
  return true;
}

bool SameOperation(const Operation& a, const Operation& b) {
  return a.type == b.type && a.data_length == b.data_length && a.src_hash == b.src_hash &&
         a.dst_hash == b.dst_hash && SameExtents(a.src_extents, b.src_extents) &&
         SameExtents(a.dst_extents, b.dst_extents);
}

}  // namespace

int FuzzOperation(const uint8_t* data, size_t size) {
  FuzzInput in(data, size);
  const uint8_t selector = in.Take<uint8_t>();
  const uint32_t block_size = selector < 240 ? 1u << (9 + selector % 12) : in.Take<uint32_t>();
  const uint64_t source_blocks = in.Take<uint64_t>();
  const uint64_t target_blocks = in.Take<uint64_t>();
  const Bytes stream = in.TakeRest();

  revpatch::TargetCoverage coverage;
  ReferenceCoverage reference;
  size_t pos = 0;
  for (int records = 0; records < kMaxRecords && pos < stream.size(); ++records) {
    const uint8_t* p = stream.data() + pos;
    const size_t left = stream.size() - pos;

    Operation op;
    size_t extents_bytes = 0;
    const Status header = revpatch::DecodeOperationHeader(p, left, &op, &extents_bytes);
    Operation whole;
    size_t consumed = 0;
    const Status one_step = revpatch::DecodeOperation(p, left, &whole, &consumed);
    if (!header.ok()) {
      FUZZ_CHECK(one_step.code() == header.code(), one_step.ToString() + " vs " + header.ToString());
      break;
    }
    FUZZ_CHECK(extents_bytes == (op.src_extents.size() + op.dst_extents.size()) *
                                    revpatch::kExtentRecordSize,
               "extents_bytes");
    FUZZ_CHECK(revpatch::CheckOperationShape(op).ok(), "a decoded header passes the shape check");
    FUZZ_CHECK(ReferenceShapeOk(op), "the header decoder accepted a shape the contract refuses");
    if (left - revpatch::kOperationHeaderSize < extents_bytes) {
      FUZZ_CHECK(one_step.code() == revpatch::ErrorCode::kCorrupt, one_step.ToString());
      const Status part = revpatch::DecodeOperationExtents(
          p + revpatch::kOperationHeaderSize, left - revpatch::kOperationHeaderSize, &op);
      FUZZ_CHECK(part.code() == revpatch::ErrorCode::kCorrupt, part.ToString());
      break;
    }
    const Status extents =
        revpatch::DecodeOperationExtents(p + revpatch::kOperationHeaderSize, extents_bytes, &op);
    FUZZ_CHECK(extents.ok(), extents.ToString());
    FUZZ_CHECK(one_step.ok(), one_step.ToString());
    FUZZ_CHECK(consumed == revpatch::kOperationHeaderSize + extents_bytes, "consumed");
    FUZZ_CHECK(SameOperation(op, whole), "the two decoders disagree");

    std::vector<uint8_t> encoded;
    revpatch::EncodeOperation(op, &encoded);
    FUZZ_CHECK(encoded.size() == consumed && std::equal(encoded.begin(), encoded.end(), p),
               "a decoded record does not re-encode to its bytes");

    const Status valid = revpatch::ValidateOperation(op, block_size, source_blocks, target_blocks);
    const bool expect_valid = ReferenceValidate(op, block_size, source_blocks, target_blocks);
    FUZZ_CHECK(valid.ok() == expect_valid,
               "ValidateOperation says " + valid.ToString() + ", the contract says " +
                   (expect_valid ? "valid" : "invalid") + " (block size " +
                   std::to_string(block_size) + ")");

    uint64_t total = 0;
    u128 wide = 0;
    for (const Extent& e : op.dst_extents) wide += e.num_blocks;
    FUZZ_CHECK(revpatch::TotalBlocks(op.dst_extents, &total) == (wide <= kU64Max), "TotalBlocks overflow");
    if (wide <= kU64Max) FUZZ_CHECK(u128(total) == wide, "TotalBlocks sum");

    const bool expect_claim = reference.CanClaim(op.dst_extents);
    const Status claimed = coverage.Claim(op.dst_extents);
    FUZZ_CHECK(claimed.ok() == expect_claim, "TargetCoverage::Claim says " + claimed.ToString());
    if (claimed.ok()) reference.Claim(op.dst_extents);
    FUZZ_CHECK(u128(coverage.blocks()) == reference.blocks(), "TargetCoverage::blocks");

    pos += consumed;
    pos += static_cast<size_t>(std::min<uint64_t>(op.data_length, stream.size() - pos));
  }
  return 0;
}

}  // namespace revpatch_fuzz

REVPATCH_FUZZ_ENTRY(FuzzOperation)
