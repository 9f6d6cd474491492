// The operation record: encoding, decoding and every validation refusal.
#include "../engine/operation.h"

#include <cstdint>
#include <limits>
#include <vector>

#include "testing.h"

using namespace revpatch;

namespace {

constexpr uint64_t kMax64 = std::numeric_limits<uint64_t>::max();
constexpr uint32_t kBlock = 4096;

Digest Filled(uint8_t v) {
  Digest d;
  d.fill(v);
  return d;
}

Operation CopyOp() {
  Operation op;
  op.type = OperationType::kCopy;
  op.src_extents = {{10, 2}, {40, 1}};
  op.dst_extents = {{0, 3}};
  op.src_hash = Filled(0xAA);
  op.dst_hash = Filled(0xBB);
  return op;
}

Operation ZeroOp(std::vector<Extent> dst) {
  Operation op;
  op.type = OperationType::kZero;
  op.dst_extents = std::move(dst);
  return op;
}

std::vector<uint8_t> Encode(const Operation& op) {
  std::vector<uint8_t> bytes;
  EncodeOperation(op, &bytes);
  return bytes;
}

Status Decode(const std::vector<uint8_t>& bytes, Operation* op = nullptr) {
  Operation scratch;
  size_t consumed = 0;
  return DecodeOperation(bytes.data(), bytes.size(), op ? op : &scratch, &consumed);
}

void PutU32At(std::vector<uint8_t>* b, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) (*b)[at + i] = static_cast<uint8_t>(v >> (8 * i));
}

}  // namespace

TEST(encode_then_decode_gives_the_same_operation) {
  Operation op;
  op.type = OperationType::kDiff;
  op.src_extents = {{7, 3}, {1, 1}};
  op.dst_extents = {{100, 2}, {5, 9}, {300, 1}};
  op.data_length = 12345;
  op.src_hash = Filled(1);
  op.dst_hash = Filled(2);
  std::vector<uint8_t> bytes = Encode(op);
  EXPECT_EQ(bytes.size(), kOperationHeaderSize + 5 * kExtentRecordSize);
  EXPECT_EQ(bytes[0], 5);
  EXPECT_EQ(bytes[4], 2);   // src count, little-endian
  EXPECT_EQ(bytes[8], 3);   // dst count
  EXPECT_EQ(bytes[16], 12345 & 0xFF);
  EXPECT_EQ(bytes[17], 12345 >> 8);
  Operation back;
  size_t consumed = 0;
  ASSERT_OK(DecodeOperation(bytes.data(), bytes.size(), &back, &consumed));
  EXPECT_EQ(consumed, bytes.size());
  EXPECT_TRUE(back.type == op.type);
  EXPECT_EQ(back.data_length, op.data_length);
  EXPECT_TRUE(back.src_hash == op.src_hash);
  EXPECT_TRUE(back.dst_hash == op.dst_hash);
  ASSERT_EQ(back.src_extents.size(), 2u);
  ASSERT_EQ(back.dst_extents.size(), 3u);
  EXPECT_EQ(back.src_extents[0].start_block, 7u);
  EXPECT_EQ(back.src_extents[1].num_blocks, 1u);
  EXPECT_EQ(back.dst_extents[1].start_block, 5u);
  EXPECT_EQ(back.dst_extents[1].num_blocks, 9u);
  EXPECT_EQ(back.dst_extents[2].start_block, 300u);
}

TEST(header_and_extents_decode_separately_as_a_stream_would) {
  std::vector<uint8_t> bytes = Encode(CopyOp());
  Operation op;
  size_t extents_bytes = 0;
  ASSERT_OK(DecodeOperationHeader(bytes.data(), kOperationHeaderSize, &op, &extents_bytes));
  EXPECT_EQ(extents_bytes, 3 * kExtentRecordSize);
  ASSERT_OK(DecodeOperationExtents(bytes.data() + kOperationHeaderSize, extents_bytes, &op));
  EXPECT_EQ(op.src_extents[1].start_block, 40u);
  EXPECT_OK(ValidateOperation(op, kBlock, 100, 100));
  // The extents must be exactly the announced length.
  Operation again;
  ASSERT_OK(DecodeOperationHeader(bytes.data(), kOperationHeaderSize, &again, &extents_bytes));
  EXPECT_CODE(DecodeOperationExtents(bytes.data() + kOperationHeaderSize, extents_bytes - 1, &again),
              ErrorCode::kCorrupt);
}

TEST(every_truncation_of_a_record_is_corrupt) {
  std::vector<uint8_t> bytes = Encode(CopyOp());
  for (size_t n = 0; n < bytes.size(); ++n) {
    std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + n);
    EXPECT_CODE(Decode(cut), ErrorCode::kCorrupt);
  }
  EXPECT_OK(Decode(bytes));
}

TEST(unknown_operation_types_are_unsupported) {
  for (int type : {0, 6, 7, 8, 0x80, 0xFF}) {
    std::vector<uint8_t> bytes = Encode(ZeroOp({{0, 1}}));
    bytes[0] = static_cast<uint8_t>(type);
    EXPECT_CODE(Decode(bytes), ErrorCode::kUnsupported);
  }
  Operation op = ZeroOp({{0, 1}});
  op.type = static_cast<OperationType>(9);
  EXPECT_CODE(ValidateOperation(op, kBlock, 10, 10), ErrorCode::kUnsupported);
}

TEST(nonzero_reserved_fields_are_corrupt) {
  for (size_t at : {1, 2, 3, 12, 13, 14, 15}) {
    std::vector<uint8_t> bytes = Encode(ZeroOp({{0, 1}}));
    bytes[at] = 1;
    EXPECT_CODE(Decode(bytes), ErrorCode::kCorrupt);
  }
}

TEST(absurd_extent_counts_are_refused_before_reading_extents) {
  for (uint32_t count : {65537u, 1u << 20, 1u << 31, 0xFFFFFFFFu}) {
    std::vector<uint8_t> src = Encode(CopyOp());
    PutU32At(&src, 4, count);
    EXPECT_CODE(Decode(src), ErrorCode::kBadExtent);
    std::vector<uint8_t> dst = Encode(CopyOp());
    PutU32At(&dst, 8, count);
    EXPECT_CODE(Decode(dst), ErrorCode::kBadExtent);
  }
  // The limit itself parses as far as the header goes.
  std::vector<uint8_t> bytes = Encode(ZeroOp({{0, 1}}));
  PutU32At(&bytes, 8, kMaxExtentsPerOperation);
  Operation op;
  size_t extents_bytes = 0;
  EXPECT_OK(DecodeOperationHeader(bytes.data(), bytes.size(), &op, &extents_bytes));
  EXPECT_EQ(extents_bytes, size_t{kMaxExtentsPerOperation} * kExtentRecordSize);
}

TEST(data_lengths_near_2_31_2_32_and_2_64_are_too_large) {
  for (uint64_t length : {uint64_t{1} << 31, (uint64_t{1} << 31) - 1, uint64_t{1} << 32,
                          (uint64_t{1} << 32) - 1, (uint64_t{1} << 32) + 1, uint64_t{1} << 63,
                          kMax64, kMax64 - 1, kMaxOperationData + 1}) {
    Operation op;
    op.type = OperationType::kReplaceBrotli;
    op.dst_extents = {{0, 1}};
    op.data_length = length;
    EXPECT_CODE(Decode(Encode(op)), ErrorCode::kTooLarge);
  }
  Operation op;
  op.type = OperationType::kReplaceBrotli;
  op.dst_extents = {{0, 1}};
  op.data_length = kMaxOperationData;
  EXPECT_OK(Decode(Encode(op)));
}

TEST(each_type_has_its_shape) {
  Operation zero_with_data = ZeroOp({{0, 1}});
  zero_with_data.data_length = 1;
  EXPECT_CODE(Decode(Encode(zero_with_data)), ErrorCode::kCorrupt);

  Operation copy_with_data = CopyOp();
  copy_with_data.data_length = 4;
  EXPECT_CODE(Decode(Encode(copy_with_data)), ErrorCode::kCorrupt);

  Operation copy_without_source = CopyOp();
  copy_without_source.src_extents.clear();
  EXPECT_CODE(Decode(Encode(copy_without_source)), ErrorCode::kBadExtent);

  Operation diff_without_source;
  diff_without_source.type = OperationType::kDiff;
  diff_without_source.dst_extents = {{0, 1}};
  diff_without_source.data_length = 10;
  EXPECT_CODE(Decode(Encode(diff_without_source)), ErrorCode::kBadExtent);

  Operation replace_with_source;
  replace_with_source.type = OperationType::kReplace;
  replace_with_source.src_extents = {{0, 1}};
  replace_with_source.dst_extents = {{0, 1}};
  replace_with_source.data_length = kBlock;
  EXPECT_CODE(Decode(Encode(replace_with_source)), ErrorCode::kCorrupt);

  Operation replace_without_data;
  replace_without_data.type = OperationType::kReplace;
  replace_without_data.dst_extents = {{0, 1}};
  EXPECT_CODE(Decode(Encode(replace_without_data)), ErrorCode::kCorrupt);

  Operation writes_nothing = ZeroOp({});
  EXPECT_CODE(Decode(Encode(writes_nothing)), ErrorCode::kBadExtent);

  Operation zero_with_src_hash = ZeroOp({{0, 1}});
  zero_with_src_hash.src_hash[31] = 1;
  EXPECT_CODE(Decode(Encode(zero_with_src_hash)), ErrorCode::kCorrupt);
}

TEST(empty_extents_are_bad) {
  EXPECT_CODE(ValidateOperation(ZeroOp({{3, 0}}), kBlock, 10, 10), ErrorCode::kBadExtent);
  Operation op = CopyOp();
  op.src_extents[1].num_blocks = 0;
  EXPECT_CODE(ValidateOperation(op, kBlock, 100, 100), ErrorCode::kBadExtent);
}

TEST(extents_outside_their_view_are_bad) {
  EXPECT_OK(ValidateOperation(ZeroOp({{9, 1}}), kBlock, 0, 10));
  EXPECT_CODE(ValidateOperation(ZeroOp({{10, 1}}), kBlock, 0, 10), ErrorCode::kBadExtent);
  EXPECT_CODE(ValidateOperation(ZeroOp({{8, 3}}), kBlock, 0, 10), ErrorCode::kBadExtent);
  EXPECT_CODE(ValidateOperation(ZeroOp({{kMax64, 1}}), kBlock, 0, 10), ErrorCode::kBadExtent);
  // The source side is checked against the source view, not the target's.
  Operation op = CopyOp();  // reads up to block 40
  EXPECT_OK(ValidateOperation(op, kBlock, 41, 3));
  EXPECT_CODE(ValidateOperation(op, kBlock, 40, 100), ErrorCode::kBadExtent);
  EXPECT_CODE(ValidateOperation(op, kBlock, 100, 2), ErrorCode::kBadExtent);
}

TEST(extent_end_overflowing_2_64_is_bad) {
  EXPECT_CODE(ValidateOperation(ZeroOp({{kMax64, 2}}), kBlock, 0, kMax64),
              ErrorCode::kBadExtent);
  EXPECT_CODE(ValidateOperation(ZeroOp({{2, kMax64}}), kBlock, 0, kMax64),
              ErrorCode::kBadExtent);
  EXPECT_CODE(ValidateOperation(ZeroOp({{uint64_t{1} << 63, uint64_t{1} << 63}}), kBlock, 0,
                                kMax64),
              ErrorCode::kBadExtent);
}

TEST(overlapping_targets_in_one_operation_are_bad) {
  EXPECT_CODE(ValidateOperation(ZeroOp({{0, 5}, {4, 2}}), kBlock, 0, 100), ErrorCode::kBadExtent);
  EXPECT_CODE(ValidateOperation(ZeroOp({{10, 1}, {3, 20}}), kBlock, 0, 100),
              ErrorCode::kBadExtent);
  EXPECT_CODE(ValidateOperation(ZeroOp({{7, 1}, {7, 1}}), kBlock, 0, 100), ErrorCode::kBadExtent);
  // Touching is fine; sources may overlap each other.
  EXPECT_OK(ValidateOperation(ZeroOp({{5, 2}, {0, 5}}), kBlock, 0, 100));
  Operation op = CopyOp();
  op.src_extents = {{0, 2}, {1, 1}};
  EXPECT_OK(ValidateOperation(op, kBlock, 10, 10));
}

TEST(operations_beyond_the_memory_bound_are_too_large) {
  const uint64_t limit_blocks = kMaxOperationBytes / kBlock;
  EXPECT_OK(ValidateOperation(ZeroOp({{0, limit_blocks}}), kBlock, 0, kMax64));
  EXPECT_CODE(ValidateOperation(ZeroOp({{0, limit_blocks + 1}}), kBlock, 0, kMax64),
              ErrorCode::kTooLarge);
  EXPECT_CODE(ValidateOperation(ZeroOp({{0, limit_blocks}, {limit_blocks, 1}}), kBlock, 0, kMax64),
              ErrorCode::kTooLarge);
  // Block counts whose byte size lands near 2^31, 2^32 or wraps 2^64.
  for (uint64_t blocks : {uint64_t{1} << 19, uint64_t{1} << 20, (uint64_t{1} << 20) + 1,
                          uint64_t{1} << 31, uint64_t{1} << 32, uint64_t{1} << 52,
                          (uint64_t{1} << 52) + 1, kMax64 / 2}) {
    EXPECT_CODE(ValidateOperation(ZeroOp({{0, blocks}}), kBlock, 0, kMax64),
                ErrorCode::kTooLarge);
  }
  // Block counts that sum past 2^64 across extents.
  EXPECT_CODE(ValidateOperation(ZeroOp({{0, uint64_t{1} << 63}, {uint64_t{1} << 63, (uint64_t{1} << 63) - 1}}),
                                kBlock, 0, kMax64),
              ErrorCode::kTooLarge);
  Operation op = CopyOp();
  op.src_extents = {{0, limit_blocks + 1}};
  op.dst_extents = {{0, 3}};
  EXPECT_CODE(ValidateOperation(op, kBlock, kMax64, 100), ErrorCode::kTooLarge);
}

TEST(copy_must_move_as_many_blocks_as_it_writes) {
  Operation op = CopyOp();
  op.dst_extents = {{0, 4}};
  EXPECT_CODE(ValidateOperation(op, kBlock, 100, 100), ErrorCode::kBadExtent);
}

TEST(replace_data_must_be_the_target_length) {
  Operation op;
  op.type = OperationType::kReplace;
  op.dst_extents = {{0, 2}};
  op.data_length = 2 * kBlock;
  EXPECT_OK(ValidateOperation(op, kBlock, 0, 10));
  op.data_length = 2 * kBlock - 1;
  EXPECT_CODE(ValidateOperation(op, kBlock, 0, 10), ErrorCode::kCorrupt);
  op.data_length = 2 * kBlock + 1;
  EXPECT_CODE(ValidateOperation(op, kBlock, 0, 10), ErrorCode::kCorrupt);
}

TEST(a_target_block_is_claimed_once_per_payload) {
  TargetCoverage coverage;
  EXPECT_OK(coverage.Claim({{10, 5}}));
  EXPECT_OK(coverage.Claim({{15, 1}, {0, 10}}));  // touching on both sides
  EXPECT_CODE(coverage.Claim({{14, 1}}), ErrorCode::kBadExtent);
  EXPECT_CODE(coverage.Claim({{5, 100}}), ErrorCode::kBadExtent);
  EXPECT_CODE(coverage.Claim({{20, 1}, {9, 1}}), ErrorCode::kBadExtent);
  // A refused claim records nothing: block 20 is still free.
  EXPECT_OK(coverage.Claim({{20, 1}}));
  EXPECT_CODE(coverage.Claim({{30, 2}, {31, 1}}), ErrorCode::kBadExtent);
  EXPECT_OK(coverage.Claim({{30, 2}}));
  EXPECT_CODE(coverage.Claim({{kMax64, 2}}), ErrorCode::kBadExtent);
  EXPECT_EQ(coverage.blocks(), 19u);
}
