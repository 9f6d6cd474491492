#include "executor.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "diff.h"
#include "merkle.h"
#include "sha256.h"

namespace revpatch {
namespace {

// Below this, a thread costs more than the hash it would overlap.
constexpr uint64_t kParallelHashBytes = 1u << 20;

bool AllZero(const uint8_t* p, size_t n) {
  // Blocks are at least 512 bytes: compare word-sized pieces.
  static const uint8_t kZeros[512] = {};
  while (n >= sizeof(kZeros)) {
    if (std::memcmp(p, kZeros, sizeof(kZeros)) != 0) return false;
    p += sizeof(kZeros);
    n -= sizeof(kZeros);
  }
  return n == 0 || std::memcmp(p, kZeros, n) == 0;
}

// Reads the blocks of `extents` (`blocks` in all) into `out`, in order.
// A large source is read in two halves at once, the second on a thread of
// its own: a View's read checks every block against its leaf hash, and
// that and the copy out of the page cache took a seventh of a large DIFF's
// time on one core. BlockSource reads may run on several threads at once
// (block_io.h). The first half's failure wins, as a serial read's would.
Status ReadSource(const std::vector<Extent>& extents, uint64_t blocks, uint32_t block_size,
                  bool parallel, BlockSource& source, uint8_t* out) {
  auto read_range = [&](uint64_t from, uint64_t to) -> Status {
    // Blocks [from, to) of the op's source, in extent order.
    uint64_t at = 0;
    for (const Extent& e : extents) {
      const uint64_t lo = std::max(from, at), hi = std::min(to, at + e.num_blocks);
      if (lo < hi) {
        REVPATCH_RETURN_IF_ERROR(source.ReadBlocks(e.start_block + (lo - at), hi - lo,
                                                   out + lo * block_size));
      }
      at += e.num_blocks;
      if (at >= to) break;
    }
    return Status::Ok();
  };
  const uint64_t half = blocks / 2;
  if (parallel && half > 0) {
    Status second = Status::Ok();
    std::thread reader;
    try {
      reader = std::thread([&] { second = read_range(half, blocks); });
    } catch (const std::exception&) {
      return read_range(0, blocks);  // no thread to be had
    }
    Status first = read_range(0, half);
    reader.join();
    REVPATCH_RETURN_IF_ERROR(first);
    return second;
  }
  return read_range(0, blocks);
}

}  // namespace

Status OperationBuffer::Resize(uint64_t size) {
  constexpr uint64_t kGrain = uint64_t{1} << 20;
  if (size > capacity_) {
    bytes_.reset();
    capacity_ = size_ = 0;
    if (size > std::numeric_limits<size_t>::max() - kGrain) {
      return Status(ErrorCode::kTooLarge, "operation buffer: out of memory");
    }
    // Rounded up to a whole MiB, so ops of nearly the same size (a large
    // DIFF's pieces) share one allocation instead of faulting a slightly
    // larger one in each time; at most a MiB more than the op needs.
    const uint64_t rounded = size > kGrain ? (size + kGrain - 1) / kGrain * kGrain : size;
    // Default-initialized: no pass over the bytes until the op writes them.
    bytes_.reset(new (std::nothrow) uint8_t[static_cast<size_t>(rounded)]);
    if (!bytes_) return Status(ErrorCode::kTooLarge, "operation buffer: out of memory");
    capacity_ = static_cast<size_t>(rounded);
  }
  size_ = static_cast<size_t>(size);
  return Status::Ok();
}

Status ExecuteOperation(const Operation& op, const uint8_t* data,
                        BlockSource& source, BlockSink& sink) {
  OperationBuffers buffers;
  return ExecuteOperation(op, data, std::vector<Digest>(), source, sink, &buffers);
}

Status ExecuteOperation(const Operation& op, const uint8_t* data,
                        const std::vector<Digest>& leaves, BlockSource& source,
                        BlockSink& sink) {
  OperationBuffers buffers;
  return ExecuteOperation(op, data, leaves, source, sink, &buffers);
}

Status ExecuteOperation(const Operation& op, const uint8_t* data,
                        const std::vector<Digest>& leaves, BlockSource& source,
                        BlockSink& sink, OperationBuffers* buffers) {
  const uint32_t block_size = source.block_size();
  REVPATCH_RETURN_IF_ERROR(ValidateOperation(
      op, block_size, source.block_count(), std::numeric_limits<uint64_t>::max()));
  if (op.data_length != 0 && data == nullptr) {
    return Status(ErrorCode::kInvalidArgument, "operation data missing");
  }
  uint64_t src_blocks = 0, dst_blocks = 0;
  TotalBlocks(op.src_extents, &src_blocks);  // checked by ValidateOperation
  TotalBlocks(op.dst_extents, &dst_blocks);
  if (leaves.size() > dst_blocks) {
    return Status(ErrorCode::kInvalidArgument, "more leaf hashes than target blocks");
  }
  const uint64_t src_bytes = src_blocks * block_size;
  const uint64_t dst_bytes = dst_blocks * block_size;

  OperationBuffer& source_bytes = buffers->source;
  OperationBuffer& target = buffers->target;
  REVPATCH_RETURN_IF_ERROR(source_bytes.Resize(src_bytes));  // 0: none, whatever came before
  if (src_blocks > 0) {
    REVPATCH_RETURN_IF_ERROR(ReadSource(op.src_extents, src_blocks, block_size,
                                        src_bytes >= kParallelHashBytes, source,
                                        source_bytes.data()));
  }
  // The source hash runs beside the decoding of a large DIFF (the decoder
  // is bounds-checked whatever the source holds); either way it is checked
  // before anything is written. Ops that read nothing carry an all-zero
  // src_hash (CheckOperationShape).
  Digest source_digest{};
  std::thread source_hasher;
  if (src_blocks > 0) {
    auto hash_source = [&source_bytes, &source_digest] {
      source_digest = Sha256::Hash(source_bytes.data(), source_bytes.size());
    };
    bool started = false;
    if (op.type == OperationType::kDiff && src_bytes >= kParallelHashBytes) {
      try {
        source_hasher = std::thread(hash_source);
        started = true;
      } catch (const std::exception&) {
        // No thread to be had: hash here instead.
      }
    }
    if (!started) hash_source();
  }
  auto source_checked = [&]() -> Status {
    if (source_hasher.joinable()) source_hasher.join();
    if (src_blocks > 0 && source_digest != op.src_hash) {
      return Status(ErrorCode::kSourceMismatch,
                    std::string(OperationTypeName(op.type)) +
                        ": source blocks differ from the ones the patch was made for");
    }
    return Status::Ok();
  };
  if (op.type != OperationType::kDiff) REVPATCH_RETURN_IF_ERROR(source_checked());

  const uint8_t* produced = nullptr;
  Status made = Status::Ok();
  switch (op.type) {
    case OperationType::kReplace:
      produced = data;  // data_length == dst_bytes (ValidateOperation)
      break;
    case OperationType::kReplaceBrotli:
      made = target.Resize(dst_bytes);
      if (made.ok()) {
        made = BrotliDecompressExact(data, static_cast<size_t>(op.data_length), target.data(),
                                     target.size());
      }
      break;
    case OperationType::kZero:
      made = target.Resize(dst_bytes);
      if (made.ok() && dst_bytes > 0) std::memset(target.data(), 0, target.size());
      break;
    case OperationType::kCopy:
      target.Swap(source_bytes);  // equal block counts (ValidateOperation)
      break;
    case OperationType::kDiff:
      made = target.Resize(dst_bytes);
      if (made.ok()) {
        const DeltaLayout layout{block_size, &op.src_extents, &op.dst_extents};
        made = DecodeDiff(source_bytes.data(), source_bytes.size(), data,
                          static_cast<size_t>(op.data_length), target.data(), target.size(),
                          &layout);
      }
      break;
  }
  if (op.type == OperationType::kDiff) {
    // A wrong source explains a failed decode better than the decode does.
    REVPATCH_RETURN_IF_ERROR(source_checked());
  }
  REVPATCH_RETURN_IF_ERROR(made);
  if (produced == nullptr) produced = target.data();
  // A raw REPLACE writes its data and a ZERO writes zeros: nothing is
  // computed, so hashing the output would only hash the (chunk-checked)
  // payload or a constant once more. A publisher's dst_hash that disagrees
  // still cannot land: the layer's view digest must equal the signed target
  // digest before it is sealed. Every op that computes its output (Brotli,
  // COPY, DIFF) is checked here, before anything is written.
  //
  // Leaves given for a raw REPLACE are of its data; for the other types
  // they are not of the output and go unused. A large computed output's
  // hash runs on a second thread beside its leaf hashes, which the write
  // then takes instead of hashing the blocks again.
  const bool computed = op.type != OperationType::kReplace && op.type != OperationType::kZero;
  const std::vector<Digest>* write_leaves = &leaves;
  size_t hashed = op.type == OperationType::kReplace ? leaves.size() : 0;
  std::vector<Digest> output_leaves;
  if (computed) {
    Digest produced_digest{};
    auto hash_output = [&] {
      produced_digest = Sha256::Hash(produced, static_cast<size_t>(dst_bytes));
    };
    std::thread output_hasher;
    if (dst_bytes >= kParallelHashBytes) {
      try {
        output_leaves.resize(static_cast<size_t>(dst_blocks));
        output_hasher = std::thread(hash_output);
      } catch (const std::exception&) {
        output_leaves.clear();  // no memory or no thread: hash here, as below
      }
    }
    if (output_hasher.joinable()) {
      LeafHashes(produced, output_leaves.size(), block_size, output_leaves.data());
      output_hasher.join();
      write_leaves = &output_leaves;
      hashed = output_leaves.size();
    } else {
      hash_output();
    }
    if (produced_digest != op.dst_hash) {
      return Status(ErrorCode::kHashMismatch,
                    std::string(OperationTypeName(op.type)) +
                        ": produced blocks do not match the operation's hash");
    }
  }

  // Runs of non-zero blocks go to the sink in one call each (two where
  // leaves given ahead cover the run's start): a layer hashes their leaves
  // two at a time and writes them with one pwrite.
  const uint8_t* p = produced;
  uint64_t k = 0;  // index of the block at p among the op's target blocks
  for (const Extent& e : op.dst_extents) {
    uint64_t b = 0;
    while (b < e.num_blocks) {
      if (AllZero(p, block_size)) {
        REVPATCH_RETURN_IF_ERROR(sink.WriteZeroBlock(e.start_block + b));
        ++b;
        ++k;
        p += block_size;
        continue;
      }
      uint64_t run = 1;
      while (b + run < e.num_blocks && !AllZero(p + run * block_size, block_size)) ++run;
      const uint64_t given = k < hashed ? std::min<uint64_t>(run, hashed - k) : 0;
      if (given > 0) {
        REVPATCH_RETURN_IF_ERROR(
            sink.WriteHashedBlocks(e.start_block + b, given, block_size, p, &(*write_leaves)[k]));
      }
      if (given < run) {
        REVPATCH_RETURN_IF_ERROR(sink.WriteBlocks(e.start_block + b + given, run - given,
                                                  block_size, p + given * block_size));
      }
      b += run;
      k += run;
      p += run * block_size;
    }
  }
  return Status::Ok();
}

}  // namespace revpatch
