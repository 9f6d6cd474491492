// The executors against in-memory volumes whose blocks are stamped with
// their own index: each op writes exactly its target blocks with the right
// bytes, and a hash mismatch of either side writes nothing at all.
#include "../engine/executor.h"
#include "../engine/merkle.h"

#include <cstring>
#include <map>
#include <set>
#include <vector>

#include "../engine/generator/diff_encoder.h"
#include "../engine/sha256.h"
#include "testing.h"

using namespace revpatch;

namespace {

using Bytes = std::vector<uint8_t>;
constexpr uint32_t kBlock = 512;

// Block i of volume `tag`: every 8-byte word holds (tag, i, word index).
Bytes Stamp(uint64_t i, uint8_t tag) {
  Bytes b(kBlock);
  for (uint32_t w = 0; w < kBlock / 8; ++w) {
    uint64_t v = (uint64_t{tag} << 56) | (i << 16) | w;
    std::memcpy(b.data() + 8 * w, &v, 8);
  }
  return b;
}

class MemorySource : public BlockSource {
 public:
  explicit MemorySource(uint64_t blocks) {
    for (uint64_t i = 0; i < blocks; ++i) {
      Bytes b = Stamp(i, 'S');
      data_.insert(data_.end(), b.begin(), b.end());
    }
  }
  uint32_t block_size() const override { return kBlock; }
  uint64_t size_bytes() const override { return data_.size(); }
  Status ReadBlocks(uint64_t first, uint64_t count, uint8_t* out) override {
    if (count == 0 || first >= block_count() || count > block_count() - first) {
      return Status(ErrorCode::kBadExtent, "read outside the source");
    }
    std::memcpy(out, data_.data() + first * kBlock, count * kBlock);
    return Status::Ok();
  }
  Bytes Blocks(uint64_t first, uint64_t count) const {
    return Bytes(data_.begin() + first * kBlock, data_.begin() + (first + count) * kBlock);
  }
  Bytes& data() { return data_; }

 private:
  Bytes data_;
};

class MemorySink : public BlockSink {
 public:
  explicit MemorySink(uint64_t blocks) : blocks_(blocks) {}
  Status WriteBlock(uint64_t block, const uint8_t* data) override {
    REVPATCH_RETURN_IF_ERROR(Check(block));
    written_[block] = Bytes(data, data + kBlock);
    return Status::Ok();
  }
  Status WriteZeroBlock(uint64_t block) override {
    REVPATCH_RETURN_IF_ERROR(Check(block));
    written_[block] = Bytes(kBlock, 0);
    zero_.insert(block);
    return Status::Ok();
  }
  const std::map<uint64_t, Bytes>& written() const { return written_; }
  const std::set<uint64_t>& zero() const { return zero_; }

 private:
  Status Check(uint64_t block) {
    if (block >= blocks_ || written_.count(block)) {
      return Status(ErrorCode::kBadExtent, "sink refuses block");
    }
    return Status::Ok();
  }
  uint64_t blocks_;
  std::map<uint64_t, Bytes> written_;
  std::set<uint64_t> zero_;
};

Bytes Concat(const std::vector<Bytes>& parts) {
  Bytes out;
  for (const Bytes& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

Bytes TargetBytes(uint64_t first, uint64_t count) {
  Bytes out;
  for (uint64_t i = first; i < first + count; ++i) {
    Bytes b = Stamp(i, 'T');
    out.insert(out.end(), b.begin(), b.end());
  }
  return out;
}

// Exactly the blocks of `extents` were written, with `expected` in order.
void ExpectWritten(const MemorySink& sink, const std::vector<Extent>& extents,
                   const Bytes& expected) {
  size_t at = 0, count = 0;
  for (const Extent& e : extents) {
    for (uint64_t b = e.start_block; b < e.start_block + e.num_blocks; ++b) {
      auto it = sink.written().find(b);
      ASSERT_TRUE(it != sink.written().end());
      EXPECT_TRUE(std::memcmp(it->second.data(), expected.data() + at, kBlock) == 0);
      at += kBlock;
      ++count;
    }
  }
  EXPECT_EQ(sink.written().size(), count);  // nothing outside the targets
}

Operation MakeOp(OperationType type, std::vector<Extent> src, std::vector<Extent> dst,
                 const Bytes& source_bytes, const Bytes& target_bytes, uint64_t data_length) {
  Operation op;
  op.type = type;
  op.src_extents = std::move(src);
  op.dst_extents = std::move(dst);
  op.data_length = data_length;
  if (!source_bytes.empty()) op.src_hash = Sha256::Hash(source_bytes.data(), source_bytes.size());
  op.dst_hash = Sha256::Hash(target_bytes.data(), target_bytes.size());
  return op;
}

}  // namespace

TEST(replace_writes_exactly_its_targets) {
  MemorySource source(32);
  MemorySink sink(40);
  Bytes target = TargetBytes(0, 3);
  std::vector<Extent> dst = {{35, 1}, {4, 2}};
  Operation op = MakeOp(OperationType::kReplace, {}, dst, {}, target, target.size());
  ASSERT_OK(ExecuteOperation(op, target.data(), source, sink));
  ExpectWritten(sink, dst, target);
  EXPECT_TRUE(sink.zero().empty());
}

// A sink that records which blocks came with leaves, and the leaves.
class HashedSink : public MemorySink {
 public:
  using MemorySink::MemorySink;
  Status WriteHashedBlocks(uint64_t first, uint64_t count, uint32_t block_size,
                           const uint8_t* data, const Digest* leaves) override {
    for (uint64_t i = 0; i < count; ++i) given_[first + i] = leaves[i];
    return WriteBlocks(first, count, block_size, data);
  }
  const std::map<uint64_t, Digest>& given() const { return given_; }

 private:
  std::map<uint64_t, Digest> given_;
};

// Leaves hashed ahead go with exactly the blocks they belong to (by their
// place in the op's data, zero blocks skipped); the blocks past them go
// without; other types never pass them on.
TEST(leaves_given_for_a_replace_reach_the_sink_with_their_blocks) {
  MemorySource source(32);
  Bytes target = TargetBytes(0, 5);
  std::memset(&target[2 * kBlock], 0, kBlock);  // a zero block inside the run
  const std::vector<Extent> dst = {{35, 1}, {4, 4}};  // data blocks 0 | 1 2 3 4
  Operation op = MakeOp(OperationType::kReplace, {}, dst, {}, target, target.size());
  std::vector<Digest> leaves;
  for (int i = 0; i < 4; ++i) leaves.push_back(Sha256::Hash(&i, sizeof(i)));  // markers
  HashedSink sink(40);
  ASSERT_OK(ExecuteOperation(op, target.data(), leaves, source, sink));
  ExpectWritten(sink, dst, target);
  const std::map<uint64_t, Digest> want = {{35, leaves[0]}, {4, leaves[1]}, {6, leaves[3]}};
  EXPECT_TRUE(sink.given() == want);  // block 5 is zero; block 7 had none
  EXPECT_TRUE(sink.zero() == std::set<uint64_t>{5});

  leaves.resize(6);
  HashedSink too_many(40);
  EXPECT_CODE(ExecuteOperation(op, target.data(), leaves, source, too_many),
              ErrorCode::kInvalidArgument);
  EXPECT_TRUE(too_many.written().empty());

  const Bytes copied = source.Blocks(3, 2);
  Operation copy = MakeOp(OperationType::kCopy, {{3, 2}}, {{10, 2}}, copied, copied, 0);
  leaves.resize(2);
  HashedSink copy_sink(40);
  ASSERT_OK(ExecuteOperation(copy, nullptr, leaves, source, copy_sink));
  EXPECT_TRUE(copy_sink.given().empty());
}

// A computed output of 1 MiB or more is hashed on a second thread while
// its leaves are hashed here; the sink gets those leaves with the blocks,
// and a wrong dst_hash still writes nothing.
TEST(a_large_computed_output_reaches_the_sink_with_its_leaves) {
  const uint64_t blocks = (1u << 20) / kBlock + 7;  // over 1 MiB
  MemorySource source(blocks + 8);
  const Bytes copied = source.Blocks(8, blocks);
  Operation copy = MakeOp(OperationType::kCopy, {{8, blocks}}, {{0, blocks}}, copied, copied, 0);
  HashedSink sink(blocks + 8);
  ASSERT_OK(ExecuteOperation(copy, nullptr, source, sink));
  ExpectWritten(sink, {{0, blocks}}, copied);
  ASSERT_EQ(sink.given().size(), blocks);
  for (uint64_t b = 0; b < blocks; ++b) {
    EXPECT_TRUE(sink.given().at(b) == revpatch::LeafHash(&copied[b * kBlock], kBlock));
  }
  copy.dst_hash[0] ^= 1;
  HashedSink refused(blocks + 8);
  EXPECT_CODE(ExecuteOperation(copy, nullptr, source, refused), ErrorCode::kHashMismatch);
  EXPECT_TRUE(refused.written().empty());
}

TEST(replace_brotli_decompresses_to_exactly_its_targets) {
  MemorySource source(8);
  MemorySink sink(8);
  Bytes target = TargetBytes(100, 4);
  Bytes packed;
  ASSERT_OK(BrotliCompress(target.data(), target.size(), 9, &packed));
  std::vector<Extent> dst = {{1, 2}, {5, 2}};
  Operation op = MakeOp(OperationType::kReplaceBrotli, {}, dst, {}, target, packed.size());
  ASSERT_OK(ExecuteOperation(op, packed.data(), source, sink));
  ExpectWritten(sink, dst, target);

  // A stream one block short of the targets is corrupt and writes nothing.
  MemorySink other(8);
  Bytes shorter;
  ASSERT_OK(BrotliCompress(target.data(), target.size() - kBlock, 9, &shorter));
  Operation short_op = MakeOp(OperationType::kReplaceBrotli, {}, dst, {}, target, shorter.size());
  EXPECT_CODE(ExecuteOperation(short_op, shorter.data(), source, other), ErrorCode::kCorrupt);
  Bytes garbage(64, 0xEE);
  Operation garbage_op = MakeOp(OperationType::kReplaceBrotli, {}, dst, {}, target, garbage.size());
  EXPECT_CODE(ExecuteOperation(garbage_op, garbage.data(), source, other), ErrorCode::kCorrupt);
  EXPECT_TRUE(other.written().empty());
}

TEST(zero_writes_zero_blocks_only_at_its_targets) {
  MemorySource source(4);
  MemorySink sink(20);
  std::vector<Extent> dst = {{10, 3}, {2, 1}};
  Operation op = MakeOp(OperationType::kZero, {}, dst, {}, Bytes(4 * kBlock, 0), 0);
  ASSERT_OK(ExecuteOperation(op, nullptr, source, sink));
  ExpectWritten(sink, dst, Bytes(4 * kBlock, 0));
  EXPECT_EQ(sink.zero().size(), 4u);
}

TEST(copy_reads_the_source_view_even_where_it_overwrites_it) {
  MemorySource source(16);
  MemorySink sink(16);
  // Shift blocks 2..5 up by one and gather block 9 after them.
  std::vector<Extent> src = {{2, 4}, {9, 1}};
  std::vector<Extent> dst = {{3, 5}};
  Bytes moved = Concat({source.Blocks(2, 4), source.Blocks(9, 1)});
  Operation op = MakeOp(OperationType::kCopy, src, dst, moved, moved, 0);
  ASSERT_OK(ExecuteOperation(op, nullptr, source, sink));
  ExpectWritten(sink, dst, moved);
  // Block 3 holds old block 2, not a copy of a freshly written block.
  EXPECT_TRUE(sink.written().at(4) == Stamp(3, 'S'));
}

TEST(diff_rebuilds_targets_from_the_source_blocks) {
  MemorySource source(64);
  MemorySink sink(64);
  std::vector<Extent> src = {{10, 8}, {40, 2}};
  Bytes old_bytes = Concat({source.Blocks(10, 8), source.Blocks(40, 2)});
  Bytes target = old_bytes;
  target.resize(9 * kBlock);
  for (size_t i = 0; i < target.size(); i += 777) target[i] ^= 0x3C;
  std::vector<Extent> dst = {{10, 5}, {50, 4}};
  Bytes delta;
  ASSERT_OK(EncodeDiff(old_bytes, target, &delta));
  EXPECT_TRUE(delta.size() < target.size() / 4);
  Operation op = MakeOp(OperationType::kDiff, src, dst, old_bytes, target, delta.size());
  ASSERT_OK(ExecuteOperation(op, delta.data(), source, sink));
  ExpectWritten(sink, dst, target);

  // A delta damaged inside its header fails before any write.
  MemorySink other(64);
  Bytes bad = delta;
  bad[8] ^= 1;  // announced output size
  EXPECT_CODE(ExecuteOperation(op, bad.data(), source, other), ErrorCode::kCorrupt);
  EXPECT_TRUE(other.written().empty());
}

TEST(source_hash_mismatch_writes_nothing) {
  MemorySource source(16);
  std::vector<Extent> src = {{0, 2}};
  std::vector<Extent> dst = {{5, 2}};
  Bytes old_bytes = source.Blocks(0, 2);
  Operation copy = MakeOp(OperationType::kCopy, src, dst, old_bytes, old_bytes, 0);
  Bytes target = TargetBytes(0, 2);
  Bytes delta;
  ASSERT_OK(EncodeDiff(old_bytes, target, &delta));
  Operation diff = MakeOp(OperationType::kDiff, src, dst, old_bytes, target, delta.size());

  source.data()[kBlock + 17] ^= 1;  // the device's block 1 is not the expected one
  for (const Operation* op : {&copy, &diff}) {
    MemorySink sink(16);
    EXPECT_CODE(ExecuteOperation(*op, delta.data(), source, sink), ErrorCode::kSourceMismatch);
    EXPECT_TRUE(sink.written().empty());
  }
}

TEST(computed_targets_are_checked_before_writing) {
  MemorySource source(16);
  Bytes target = TargetBytes(0, 2);
  std::vector<Extent> dst = {{3, 2}};
  Bytes wrong_target = target;
  wrong_target[kBlock * 2 - 1] ^= 0x80;  // the last byte of the last block

  Operation replace = MakeOp(OperationType::kReplace, {}, dst, {}, wrong_target, target.size());
  Bytes packed;
  ASSERT_OK(BrotliCompress(target.data(), target.size(), 9, &packed));
  Operation brotli = MakeOp(OperationType::kReplaceBrotli, {}, dst, {}, wrong_target, packed.size());
  Operation zero = MakeOp(OperationType::kZero, {}, dst, {}, wrong_target, 0);
  Bytes old_bytes = source.Blocks(7, 2);
  Operation copy = MakeOp(OperationType::kCopy, {{7, 2}}, dst, old_bytes, wrong_target, 0);
  Bytes delta;
  ASSERT_OK(EncodeDiff(old_bytes, target, &delta));
  Operation diff = MakeOp(OperationType::kDiff, {{7, 2}}, dst, old_bytes, wrong_target, delta.size());

  struct Case {
    const Operation* op;
    const uint8_t* data;
  } cases[] = {{&brotli, packed.data()}, {&copy, nullptr}, {&diff, delta.data()}};
  for (const Case& c : cases) {
    MemorySink sink(16);
    EXPECT_CODE(ExecuteOperation(*c.op, c.data, source, sink), ErrorCode::kHashMismatch);
    EXPECT_TRUE(sink.written().empty());
  }
  // A raw REPLACE writes its (chunk-checked) data and a ZERO zeros, without
  // hashing them again: their dst_hash is left to the apply's check of the
  // view digest against the signed target digest (apply_test).
  MemorySink replaced(16);
  ASSERT_OK(ExecuteOperation(replace, target.data(), source, replaced));
  EXPECT_EQ(replaced.written().size(), size_t{2});
  MemorySink zeroed(16);
  ASSERT_OK(ExecuteOperation(zero, nullptr, source, zeroed));
  EXPECT_EQ(zeroed.written().size(), size_t{2});
}

TEST(invalid_operations_are_refused_before_reading_or_writing) {
  MemorySource source(8);
  MemorySink sink(8);
  Bytes old_bytes = source.Blocks(6, 2);
  Operation past_source = MakeOp(OperationType::kCopy, {{7, 2}}, {{0, 2}}, old_bytes, old_bytes, 0);
  EXPECT_CODE(ExecuteOperation(past_source, nullptr, source, sink), ErrorCode::kBadExtent);
  Operation overlapping = MakeOp(OperationType::kZero, {}, {{0, 2}, {1, 1}}, {}, Bytes(3 * kBlock), 0);
  EXPECT_CODE(ExecuteOperation(overlapping, nullptr, source, sink), ErrorCode::kBadExtent);
  Operation too_large =
      MakeOp(OperationType::kZero, {}, {{0, kMaxOperationBytes / kBlock + 1}}, {}, {}, 0);
  EXPECT_CODE(ExecuteOperation(too_large, nullptr, source, sink), ErrorCode::kTooLarge);
  Bytes target = TargetBytes(0, 1);
  Operation short_replace = MakeOp(OperationType::kReplace, {}, {{0, 1}}, {}, target, kBlock - 1);
  EXPECT_CODE(ExecuteOperation(short_replace, target.data(), source, sink), ErrorCode::kCorrupt);
  EXPECT_TRUE(sink.written().empty());
}

TEST(a_target_past_the_sink_is_refused_by_the_sink) {
  MemorySource source(4);
  MemorySink sink(4);
  Operation op = MakeOp(OperationType::kZero, {}, {{4, 1}}, {}, Bytes(kBlock), 0);
  EXPECT_CODE(ExecuteOperation(op, nullptr, source, sink), ErrorCode::kBadExtent);
  EXPECT_TRUE(sink.written().empty());
}

// One set of buffers carried through ops of every type and of growing and
// shrinking sizes, as an apply carries it: each op writes exactly its own
// bytes, whatever an earlier op left in the buffers (a ZERO after a DIFF
// writes zeros, a small DIFF sees only its own source), and a refused op
// in the middle writes nothing and spoils nothing after it.
TEST(buffers_kept_across_operations_never_leak_one_ops_bytes_into_another) {
  MemorySource source(4096);  // 2 MiB: the large DIFF runs its hashes beside
  OperationBuffers buffers;
  MemorySink sink(8192);
  const std::vector<Digest> none;

  const std::vector<Extent> big_src = {{0, 3000}};
  const Bytes big_old = source.Blocks(0, 3000);
  Bytes big_new = big_old;
  for (size_t i = 0; i < big_new.size(); i += 4099) big_new[i] ^= 0x77;
  big_new.resize(3100 * kBlock, 0x42);
  Bytes big_delta;
  ASSERT_OK(EncodeDiff(big_old, big_new, &big_delta));
  const std::vector<Extent> big_dst = {{100, 3100}};
  Operation big = MakeOp(OperationType::kDiff, big_src, big_dst, big_old, big_new,
                         big_delta.size());
  ASSERT_OK(ExecuteOperation(big, big_delta.data(), none, source, sink, &buffers));

  const std::vector<Extent> zero_dst = {{4000, 7}};
  Operation zero = MakeOp(OperationType::kZero, {}, zero_dst, {}, Bytes(7 * kBlock, 0), 0);
  ASSERT_OK(ExecuteOperation(zero, nullptr, none, source, sink, &buffers));

  // A small DIFF after the large one: shorter source and target.
  const std::vector<Extent> small_src = {{3900, 2}};
  const Bytes small_old = source.Blocks(3900, 2);
  const Bytes fresh = TargetBytes(0, 5);
  Bytes fresh_delta;
  ASSERT_OK(EncodeDiff(small_old, fresh, &fresh_delta));
  const std::vector<Extent> fresh_dst = {{4100, 5}};
  Operation small = MakeOp(OperationType::kDiff, small_src, fresh_dst, small_old, fresh,
                           fresh_delta.size());
  ASSERT_OK(ExecuteOperation(small, fresh_delta.data(), none, source, sink, &buffers));

  const std::vector<Extent> copy_src = {{3500, 4}}, copy_dst = {{4200, 4}};
  const Bytes copied = source.Blocks(3500, 4);
  Operation copy = MakeOp(OperationType::kCopy, copy_src, copy_dst, copied, copied, 0);
  Operation bad_copy = copy;
  bad_copy.dst_hash[0] ^= 1;
  MemorySink refused(8192);
  EXPECT_CODE(ExecuteOperation(bad_copy, nullptr, none, source, refused, &buffers),
              ErrorCode::kHashMismatch);
  EXPECT_TRUE(refused.written().empty());
  ASSERT_OK(ExecuteOperation(copy, nullptr, none, source, sink, &buffers));

  // The large DIFF once more after the small ops: the swapped and shrunk
  // buffers grow back.
  MemorySink again(8192);
  ASSERT_OK(ExecuteOperation(big, big_delta.data(), none, source, again, &buffers));
  ExpectWritten(again, big_dst, big_new);

  Bytes want_all = Concat({big_new, Bytes(7 * kBlock, 0), fresh, copied});
  ExpectWritten(sink, {{100, 3100}, {4000, 7}, {4100, 5}, {4200, 4}}, want_all);
}

// A source that fails to read one block, as a View does on a bad leaf.
class FailingSource : public MemorySource {
 public:
  FailingSource(uint64_t blocks, uint64_t bad) : MemorySource(blocks), bad_(bad) {}
  Status ReadBlocks(uint64_t first, uint64_t count, uint8_t* out) override {
    if (bad_ >= first && bad_ < first + count) return Status(ErrorCode::kCorrupt, "bad block");
    return MemorySource::ReadBlocks(first, count, out);
  }

 private:
  uint64_t bad_;
};

// A source of a megabyte or more is read in two halves at once: the halves
// meet inside an extent and the bytes still come in extent order; a failed
// read in either half fails the op before any write.
TEST(a_large_source_read_in_halves_keeps_extent_order_and_its_failures) {
  const std::vector<Extent> src = {{3000, 700}, {10, 1500}, {2000, 300}};  // 2500 blocks
  const std::vector<Extent> dst = {{5000, 2500}};
  MemorySource source(4000);
  const Bytes moved = Concat({source.Blocks(3000, 700), source.Blocks(10, 1500),
                              source.Blocks(2000, 300)});
  Operation copy = MakeOp(OperationType::kCopy, src, dst, moved, moved, 0);
  MemorySink sink(8000);
  ASSERT_OK(ExecuteOperation(copy, nullptr, source, sink));
  ExpectWritten(sink, dst, moved);

  for (uint64_t bad : {3001u, 1200u, 2299u}) {  // first half, the middle extent's far side, last
    FailingSource failing(4000, bad);
    MemorySink untouched(8000);
    EXPECT_CODE(ExecuteOperation(copy, nullptr, failing, untouched), ErrorCode::kCorrupt);
    EXPECT_TRUE(untouched.written().empty());
  }
}
