#include "operation_stream.h"

#include <exception>
#include <new>
#include <utility>

namespace revpatch {
namespace {

Status ReadData(PayloadReader& reader, uint64_t length, std::vector<uint8_t>* data) {
  // length <= kMaxOperationData (CheckOperationShape); refuse before
  // allocating if the payload cannot hold it anyway.
  if (length > reader.remaining()) {
    return Status(ErrorCode::kCorrupt, "payload: operation data past the end");
  }
  try {
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
    thread_ = std::thread([this] { ReadAhead(); });
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
  *out = std::move(slot_);
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
  out->data.clear();
  out->op = Operation();
  if (next_ >= operation_count_) {
    out->status = next_ == operation_count_
                      ? reader_.Finish()
                      : Status(ErrorCode::kInvalidArgument, "operation stream: past the end");
    ++next_;
    out->after = reader_.SavePosition();
    return;
  }
  ++next_;
  out->status = ReadOperationRecord(reader_, &out->op);
  if (out->status.ok()) {
    out->status = ValidateOperation(out->op, block_size_, source_blocks_, target_blocks_);
  }
  if (out->status.ok()) out->status = coverage_.Claim(out->op.dst_extents);
  if (out->status.ok()) out->status = ReadData(reader_, out->op.data_length, &out->data);
  out->after = reader_.SavePosition();
}

void OperationStream::ReadAhead() {
  for (;;) {
    ReadOperation item;
    ReadOne(&item);
    const bool last = !item.status.ok() || next_ > operation_count_;
    std::unique_lock<std::mutex> lock(mutex_);
    taken_.wait(lock, [this] { return !full_ || stop_; });
    if (stop_) return;
    slot_ = std::move(item);
    full_ = true;
    lock.unlock();
    ready_.notify_one();
    if (last) return;
  }
}

}  // namespace revpatch
