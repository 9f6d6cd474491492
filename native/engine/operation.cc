#include "operation.h"

#include <algorithm>
#include <iterator>
#include <utility>

#include "little_endian.h"
#include <string>

namespace revpatch {
namespace {

void AppendU32(uint32_t v, std::vector<uint8_t>* out) {
  uint8_t b[4];
  PutU32(b, v);
  out->insert(out->end(), b, b + 4);
}
void AppendU64(uint64_t v, std::vector<uint8_t>* out) {
  uint8_t b[8];
  PutU64(b, v);
  out->insert(out->end(), b, b + 8);
}

bool KnownType(uint8_t type) {
  return type >= static_cast<uint8_t>(OperationType::kReplace) &&
         type <= static_cast<uint8_t>(OperationType::kDiff);
}

bool IsZero(const Digest& d) {
  return std::all_of(d.begin(), d.end(), [](uint8_t b) { return b == 0; });
}

Status BadExtent(const std::string& what) {
  return Status(ErrorCode::kBadExtent, what);
}

// Checks non-empty, no overflow, inside [0, view_blocks); sums the blocks.
Status CheckExtents(const std::vector<Extent>& extents, uint64_t view_blocks,
                    const char* which, uint64_t* total) {
  *total = 0;
  for (const Extent& e : extents) {
    if (e.num_blocks == 0) return BadExtent(std::string(which) + " extent is empty");
    uint64_t end;
    if (__builtin_add_overflow(e.start_block, e.num_blocks, &end) ||
        end > view_blocks) {
      return BadExtent(std::string(which) + " extent is outside the view");
    }
    if (__builtin_add_overflow(*total, e.num_blocks, total)) {
      return Status(ErrorCode::kTooLarge,
                    std::string(which) + " block count overflows");
    }
  }
  return Status::Ok();
}

}  // namespace

const char* OperationTypeName(OperationType type) {
  switch (type) {
    case OperationType::kReplace: return "REPLACE";
    case OperationType::kReplaceBrotli: return "REPLACE_BROTLI";
    case OperationType::kZero: return "ZERO";
    case OperationType::kCopy: return "COPY";
    case OperationType::kDiff: return "DIFF";
  }
  return "UNKNOWN";
}

void EncodeOperation(const Operation& op, std::vector<uint8_t>* out) {
  out->push_back(static_cast<uint8_t>(op.type));
  out->push_back(0);
  out->push_back(0);
  out->push_back(0);
  AppendU32(static_cast<uint32_t>(op.src_extents.size()), out);
  AppendU32(static_cast<uint32_t>(op.dst_extents.size()), out);
  AppendU32(0, out);
  AppendU64(op.data_length, out);
  out->insert(out->end(), op.src_hash.begin(), op.src_hash.end());
  out->insert(out->end(), op.dst_hash.begin(), op.dst_hash.end());
  for (const auto* list : {&op.src_extents, &op.dst_extents}) {
    for (const Extent& e : *list) {
      AppendU64(e.start_block, out);
      AppendU64(e.num_blocks, out);
    }
  }
}

bool TotalBlocks(const std::vector<Extent>& extents, uint64_t* total) {
  *total = 0;
  for (const Extent& e : extents) {
    if (__builtin_add_overflow(*total, e.num_blocks, total)) return false;
  }
  return true;
}

Status CheckOperationShape(const Operation& op) {
  uint8_t raw_type = static_cast<uint8_t>(op.type);
  if (!KnownType(raw_type)) {
    return Status(ErrorCode::kUnsupported,
                  "unknown operation type " + std::to_string(raw_type));
  }
  if (op.src_extents.size() > kMaxExtentsPerOperation ||
      op.dst_extents.size() > kMaxExtentsPerOperation) {
    return BadExtent("too many extents in one operation");
  }
  if (op.data_length > kMaxOperationData) {
    return Status(ErrorCode::kTooLarge, "operation data is too long");
  }
  bool reads = op.type == OperationType::kCopy || op.type == OperationType::kDiff;
  bool has_data = op.type != OperationType::kZero && op.type != OperationType::kCopy;
  if (op.dst_extents.empty()) return BadExtent("operation writes no block");
  if (reads && op.src_extents.empty()) {
    return BadExtent(std::string(OperationTypeName(op.type)) + " reads no block");
  }
  if (!reads && !op.src_extents.empty()) {
    return Status(ErrorCode::kCorrupt, std::string(OperationTypeName(op.type)) +
                                           " must not have source extents");
  }
  if (!reads && !IsZero(op.src_hash)) {
    return Status(ErrorCode::kCorrupt, "source hash of an operation that reads nothing");
  }
  if (!has_data && op.data_length != 0) {
    return Status(ErrorCode::kCorrupt, std::string(OperationTypeName(op.type)) +
                                           " must not carry data");
  }
  if (has_data && op.data_length == 0) {
    return Status(ErrorCode::kCorrupt, std::string(OperationTypeName(op.type)) +
                                           " without data");
  }
  return Status::Ok();
}

Status DecodeOperationHeader(const uint8_t* bytes, size_t size, Operation* op,
                             size_t* extents_bytes) {
  if (size < kOperationHeaderSize) {
    return Status(ErrorCode::kCorrupt, "truncated operation header");
  }
  if (!KnownType(bytes[0])) {
    return Status(ErrorCode::kUnsupported,
                  "unknown operation type " + std::to_string(bytes[0]));
  }
  if (bytes[1] != 0 || bytes[2] != 0 || bytes[3] != 0 || GetU32(bytes + 12) != 0) {
    return Status(ErrorCode::kCorrupt, "reserved operation field is not zero");
  }
  uint32_t src_count = GetU32(bytes + 4);
  uint32_t dst_count = GetU32(bytes + 8);
  if (src_count > kMaxExtentsPerOperation || dst_count > kMaxExtentsPerOperation) {
    return BadExtent("too many extents in one operation");
  }
  op->type = static_cast<OperationType>(bytes[0]);
  op->data_length = GetU64(bytes + 16);
  std::copy(bytes + 24, bytes + 56, op->src_hash.begin());
  std::copy(bytes + 56, bytes + 88, op->dst_hash.begin());
  // Sized, zero-valued extents: DecodeOperationExtents fills them in.
  op->src_extents.assign(src_count, Extent{});
  op->dst_extents.assign(dst_count, Extent{});
  REVPATCH_RETURN_IF_ERROR(CheckOperationShape(*op));
  // Counts are <= 65536 each, so this cannot overflow.
  *extents_bytes = (static_cast<size_t>(src_count) + dst_count) * kExtentRecordSize;
  return Status::Ok();
}

Status DecodeOperationExtents(const uint8_t* bytes, size_t size, Operation* op) {
  size_t want = (op->src_extents.size() + op->dst_extents.size()) * kExtentRecordSize;
  if (size != want) return Status(ErrorCode::kCorrupt, "truncated operation extents");
  for (auto* list : {&op->src_extents, &op->dst_extents}) {
    for (Extent& e : *list) {
      e.start_block = GetU64(bytes);
      e.num_blocks = GetU64(bytes + 8);
      bytes += kExtentRecordSize;
    }
  }
  return Status::Ok();
}

Status DecodeOperation(const uint8_t* bytes, size_t size, Operation* op,
                       size_t* consumed) {
  size_t extents_bytes = 0;
  REVPATCH_RETURN_IF_ERROR(DecodeOperationHeader(bytes, size, op, &extents_bytes));
  if (size - kOperationHeaderSize < extents_bytes) {
    return Status(ErrorCode::kCorrupt, "truncated operation extents");
  }
  REVPATCH_RETURN_IF_ERROR(DecodeOperationExtents(bytes + kOperationHeaderSize,
                                                  extents_bytes, op));
  *consumed = kOperationHeaderSize + extents_bytes;
  return Status::Ok();
}

Status ValidateOperation(const Operation& op, uint32_t block_size,
                         uint64_t source_blocks, uint64_t target_blocks) {
  REVPATCH_RETURN_IF_ERROR(CheckOperationShape(op));
  if (block_size == 0) return Status(ErrorCode::kInvalidArgument, "block size 0");
  uint64_t src_blocks = 0, dst_blocks = 0;
  REVPATCH_RETURN_IF_ERROR(CheckExtents(op.src_extents, source_blocks, "source", &src_blocks));
  REVPATCH_RETURN_IF_ERROR(CheckExtents(op.dst_extents, target_blocks, "target", &dst_blocks));
  std::vector<Extent> sorted = op.dst_extents;
  std::sort(sorted.begin(), sorted.end(), [](const Extent& a, const Extent& b) {
    return a.start_block < b.start_block;
  });
  for (size_t i = 1; i < sorted.size(); ++i) {
    // Each end was checked above to not overflow.
    if (sorted[i - 1].start_block + sorted[i - 1].num_blocks > sorted[i].start_block) {
      return BadExtent("target extents of one operation overlap");
    }
  }
  uint64_t src_bytes, dst_bytes;
  if (__builtin_mul_overflow(src_blocks, block_size, &src_bytes) ||
      src_bytes > kMaxOperationBytes) {
    return Status(ErrorCode::kTooLarge, "operation reads too many bytes");
  }
  if (__builtin_mul_overflow(dst_blocks, block_size, &dst_bytes) ||
      dst_bytes > kMaxOperationBytes) {
    return Status(ErrorCode::kTooLarge, "operation writes too many bytes");
  }
  if (op.type == OperationType::kCopy && src_blocks != dst_blocks) {
    return BadExtent("COPY source and target block counts differ");
  }
  if (op.type == OperationType::kReplace && op.data_length != dst_bytes) {
    return Status(ErrorCode::kCorrupt, "REPLACE data is not the target's length");
  }
  return Status::Ok();
}

Status TargetCoverage::Claim(const std::vector<Extent>& dst_extents) {
  // Check all first, then record, so a refused op leaves no trace.
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  ranges.reserve(dst_extents.size());
  for (const Extent& e : dst_extents) {
    uint64_t end;
    if (e.num_blocks == 0 || __builtin_add_overflow(e.start_block, e.num_blocks, &end)) {
      return BadExtent("invalid target extent");
    }
    auto next = intervals_.upper_bound(e.start_block);
    if (next != intervals_.end() && next->first < end) {
      return BadExtent("target block written twice in one payload");
    }
    if (next != intervals_.begin() && std::prev(next)->second > e.start_block) {
      return BadExtent("target block written twice in one payload");
    }
    ranges.emplace_back(e.start_block, end);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i - 1].second > ranges[i].first) {
      return BadExtent("target extents of one operation overlap");
    }
  }
  for (const auto& r : ranges) {
    intervals_[r.first] = r.second;
    blocks_ += r.second - r.first;
  }
  return Status::Ok();
}

}  // namespace revpatch
