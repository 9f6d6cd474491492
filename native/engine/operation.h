// The operation record of a patch payload (docs/on-disk-format.md, "Patch
// payload"): what one step of an apply reads, what it writes, and the hashes
// that let the executor refuse it before anything reaches the layer.
//
// Record layout, little-endian, decoded field by field (never memcpy'd into
// a struct, so padding and host byte order cannot leak into the format):
//   u8  type            OperationType
//   u8  reserved[3]     0
//   u32 src_extent_count
//   u32 dst_extent_count
//   u32 reserved        0
//   u64 data_length
//   u8  src_hash[32]    SHA-256 of the concatenated source blocks read;
//                       all zeros when the type reads none
//   u8  dst_hash[32]    SHA-256 of the concatenated target blocks written
//   (u64 start_block, u64 num_blocks) x src_extent_count, then x dst_extent_count
//   u8  data[data_length]
//
// Why the bounds: an apply holds one operation's source, target and data in
// memory at once, so each is capped (kMaxOperationBytes, kMaxOperationData)
// and memory stays independent of the volume size (invariant 5). Every length
// is checked with overflow-safe 64-bit arithmetic before it sizes a buffer;
// a record never makes the engine crash, only fail with a stable code.
#ifndef REVPATCH_ENGINE_OPERATION_H_
#define REVPATCH_ENGINE_OPERATION_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <vector>

#include "sha256.h"
#include "status.h"

namespace revpatch {

// Values are part of the payload format; never renumber.
enum class OperationType : uint8_t {
  kReplace = 1,        // data: the target blocks, raw, whole blocks.
  kReplaceBrotli = 2,  // data: a Brotli stream of exactly the target blocks.
  kZero = 3,           // no data: the target blocks are zeros.
  kCopy = 4,           // no data: source blocks to target blocks.
  kDiff = 5,           // data: a delta (diff.h) from source to target bytes.
};
constexpr int kOperationTypeLimit = 8;  // PayloadStats::by_type size.

const char* OperationTypeName(OperationType type);

struct Extent {
  uint64_t start_block = 0;
  uint64_t num_blocks = 0;
};

struct Operation {
  OperationType type = OperationType::kZero;
  std::vector<Extent> src_extents;
  std::vector<Extent> dst_extents;
  uint64_t data_length = 0;
  Digest src_hash{};
  Digest dst_hash{};
};

constexpr size_t kOperationHeaderSize = 88;
constexpr size_t kExtentRecordSize = 16;
constexpr uint32_t kMaxExtentsPerOperation = 65536;
// Source bytes and target bytes of one operation, each.
constexpr uint64_t kMaxOperationBytes = 64ull << 20;
// A compressed stream may exceed its output a little; a delta carries three.
constexpr uint64_t kMaxOperationData = 2 * kMaxOperationBytes + (1ull << 20);

// Appends the record's header and extents (not the data) to `out`.
void EncodeOperation(const Operation& op, std::vector<uint8_t>* out);

// Parses the fixed header (`size` >= kOperationHeaderSize, else kCorrupt)
// into `op`, sizing its extent vectors to the counts (zero-valued until
// DecodeOperationExtents fills them), and checks what the header
// alone can tell: known type (kUnsupported), reserved fields zero
// (kCorrupt), extent counts (kBadExtent), data_length (kTooLarge), and the
// shape of the type (CheckOperationShape). *extents_bytes is how many bytes
// of extents follow.
Status DecodeOperationHeader(const uint8_t* bytes, size_t size, Operation* op,
                             size_t* extents_bytes);
// Parses the extents that follow the header: `size` must be the
// extents_bytes DecodeOperationHeader gave for `op` (else kCorrupt).
Status DecodeOperationExtents(const uint8_t* bytes, size_t size, Operation* op);
// Both of the above over one buffer; *consumed is the record length without
// the data (kCorrupt if `size` is shorter than that).
Status DecodeOperation(const uint8_t* bytes, size_t size, Operation* op,
                       size_t* consumed);

// Checks that do not need the views: type known, extent counts within
// kMaxExtentsPerOperation, data_length within kMaxOperationData, and per
// type: ZERO/REPLACE/REPLACE_BROTLI read no source, COPY/DIFF read some,
// every type writes some target, ZERO/COPY carry no data, and a type that
// reads nothing has an all-zero src_hash.
Status CheckOperationShape(const Operation& op);

// Everything CheckOperationShape checks, plus: every extent non-empty and
// inside its view (source extents < source_blocks, target extents <
// target_blocks; kBadExtent), target extents of the op pairwise disjoint
// (kBadExtent), total source and target bytes <= kMaxOperationBytes
// (kTooLarge), COPY moves as many blocks as it writes (kBadExtent), REPLACE
// data is exactly the target bytes (kCorrupt).
Status ValidateOperation(const Operation& op, uint32_t block_size,
                         uint64_t source_blocks, uint64_t target_blocks);

// Sum of num_blocks over `extents`, or false on overflow.
bool TotalBlocks(const std::vector<Extent>& extents, uint64_t* total);

// The target blocks claimed so far in one payload, as disjoint intervals;
// memory is O(operations), not O(blocks). Claim() refuses (kBadExtent,
// nothing recorded) an op that writes a block an earlier op already wrote.
class TargetCoverage {
 public:
  Status Claim(const std::vector<Extent>& dst_extents);
  uint64_t blocks() const { return blocks_; }

 private:
  std::map<uint64_t, uint64_t> intervals_;  // start -> end (exclusive)
  uint64_t blocks_ = 0;
};

}  // namespace revpatch

#endif  // REVPATCH_ENGINE_OPERATION_H_
