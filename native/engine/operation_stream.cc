#include "operation_stream.h"

#include <algorithm>
#include <exception>
#include <new>
#include <utility>

#include "merkle.h"
#include "priority.h"

namespace revpatch {
namespace {

// Blocks leaf-hashed between two looks at the slot: about 30 us of work, so
// the consumer waits no longer than that for an op that is ready.
constexpr size_t kLeafSliceBlocks = 16;

Status ReadData(PayloadReader& reader, uint64_t length, std::vector<uint8_t>* data) {
  // length <= kMaxOperationData (CheckOperationShape); refuse before
  // allocating if the payload cannot hold it anyway.
  if (length > reader.remaining()) {
    return Status(ErrorCode::kCorrupt, "payload: operation data past the end");
  }
  try {
    // `data` may be a buffer going round (operation_stream.h) that already
    // holds as many bytes, the usual case: resize() then writes nothing
    // (growing would zero-fill the new part), and the read overwrites
    // every byte.
    data->resize(static_cast<size_t>(length));
  } catch (const std::bad_alloc&) {
    return Status(ErrorCode::kTooLarge, "operation data: out of memory");
  }
  return reader.Read(data->data(), data->size());
}

}  // namespace

Status ReadOperationRecord(PayloadReader& reader, Operation* op) {
  uint8_t header[kOperationHeaderSize];
  REVPATCH_RETURN_IF_ERROR(reader.Read(header, sizeof(header)));
  size_t extents_bytes = 0;
  REVPATCH_RETURN_IF_ERROR(DecodeOperationHeader(header, sizeof(header), op, &extents_bytes));
  std::vector<uint8_t> extents(extents_bytes);
  REVPATCH_RETURN_IF_ERROR(reader.Read(extents.data(), extents.size()));
  return DecodeOperationExtents(extents.data(), extents.size(), op);
}

OperationStream::OperationStream(PayloadReader& reader, TargetCoverage& coverage,
                                 uint64_t operation_count, uint32_t block_size,
                                 uint64_t source_blocks, uint64_t target_blocks, uint64_t first)
    : reader_(reader),
      coverage_(coverage),
      operation_count_(operation_count),
      block_size_(block_size),
      source_blocks_(source_blocks),
      target_blocks_(target_blocks),
      next_(first) {}

OperationStream::~OperationStream() { Stop(); }

void OperationStream::StartThread() {
  if (thread_.joinable() || next_ > operation_count_) return;
  try {
    thread_ = std::thread([this, inherited = InheritedPriority()] {
      inherited.Apply();
      ReadAhead();
    });
  } catch (const std::exception&) {
    // No second thread to be had: Next() reads inline.
  }
}

void OperationStream::Next(ReadOperation* out) {
  if (!thread_.joinable()) {
    ReadOne(out);
    return;
  }
  std::unique_lock<std::mutex> lock(mutex_);
  ready_.wait(lock, [this] { return full_; });
  // The consumer's last item goes into the slot, for the reader to reuse.
  std::swap(*out, slot_);
  full_ = false;
  lock.unlock();
  taken_.notify_one();
}

void OperationStream::Stop() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  taken_.notify_one();
  thread_.join();
}

void OperationStream::ReadOne(ReadOperation* out) {
  out->leaves.clear();
  out->op = Operation();
  if (next_ >= operation_count_) {
    out->status = next_ == operation_count_
                      ? reader_.Finish()
                      : Status(ErrorCode::kInvalidArgument, "operation stream: past the end");
    ++next_;
    out->data.clear();
    out->after = reader_.SavePosition();
    return;
  }
  ++next_;
  out->status = ReadOperationRecord(reader_, &out->op);
  if (out->status.ok()) {
    out->status = ValidateOperation(out->op, block_size_, source_blocks_, target_blocks_);
  }
  if (out->status.ok()) out->status = coverage_.Claim(out->op.dst_extents);
  if (out->status.ok()) {
    out->status = ReadData(reader_, out->op.data_length, &out->data);
  } else {
    out->data.clear();
  }
  out->after = reader_.SavePosition();
}

void OperationStream::HashWhileSlotFull(ReadOperation* item) {
  if (!item->status.ok() || item->op.type != OperationType::kReplace) return;
  const size_t blocks = item->data.size() / block_size_;  // whole (ValidateOperation)
  size_t done = 0;
  try {
    item->leaves.resize(blocks);
  } catch (const std::bad_alloc&) {
    item->leaves.clear();
    return;  // the writer hashes them all, as without a thread
  }
  while (done < blocks) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!full_ || stop_) break;
    }
    const size_t n = std::min(kLeafSliceBlocks, blocks - done);
    LeafHashes(item->data.data() + done * block_size_, n, block_size_, &item->leaves[done]);
    done += n;
  }
  item->leaves.resize(done);
}

void OperationStream::ReadAhead() {
  ReadOperation item;
  for (;;) {
    ReadOne(&item);
    HashWhileSlotFull(&item);
    const bool last = !item.status.ok() || next_ > operation_count_;
    std::unique_lock<std::mutex> lock(mutex_);
    taken_.wait(lock, [this] { return !full_ || stop_; });
    if (stop_) return;
    // The slot holds what the consumer handed back: reused next round.
    std::swap(slot_, item);
    full_ = true;
    lock.unlock();
    ready_.notify_one();
    if (last) return;
  }
}

}  // namespace revpatch
