// The operations of a payload, read in order for an apply: each record is
// parsed, checked against the views (ValidateOperation) and its targets
// claimed (TargetCoverage), then its data is read; all through the
// PayloadReader, so no byte is used before its chunk's digest was checked.
//
// Why a class of its own: the reading can run on a second thread one
// operation ahead of the apply, so that the next op's payload is read,
// checked against its chunk digests and parsed while the current
// op's blocks are hashed and written: on two cores the install then costs
// about the larger of the two halves instead of their sum. Inline or ahead,
// every op goes through the same steps in the same order, so the apply
// produces the same layer; the read-ahead only moves the reading to
// another thread. Memory: one op's data ahead (<= kMaxOperationData).
//
// The two halves are seldom even. Writing a raw REPLACE's blocks costs
// their leaf hashes and the copy into the page cache, reading them one
// chunk-digest pass and a copy, so on a large REPLACE the reading thread
// finishes an op while the slot still holds the one before. Instead of
// waiting it leaf-hashes the op in hand, a few blocks at a time, until the
// slot is taken, and hands over the leaves it made: the writer hashes only
// the rest. How much moves adapts to the two threads' speeds, and the
// leaves are those of the same bytes, so the layer is the same either way.
//
// Data buffers go round between the slot and the consumer, so that an op's
// buffer is not allocated and zero-filled anew each time.
//
// A failed read is handed over as the status of the op it failed in (so an
// error in op i + 1 surfaces only after op i was applied, as inline); the
// reader's Finish() comes as the status of one more item after the last.
#ifndef REVPATCH_ENGINE_OPERATION_STREAM_H_
#define REVPATCH_ENGINE_OPERATION_STREAM_H_

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#include "operation.h"
#include "payload_reader.h"
#include "status.h"

namespace revpatch {

// Reads one record's header and extents (checked for shape) from `reader`.
Status ReadOperationRecord(PayloadReader& reader, Operation* op);

struct ReadOperation {
  Status status;
  Operation op;
  std::vector<uint8_t> data;
  // For a raw REPLACE read ahead: the leaf hashes (merkle.h LeafHash) of
  // the first leaves.size() blocks of `data`, made while the reading thread
  // waited for the slot (ExecuteOperation takes them). Empty otherwise.
  std::vector<Digest> leaves;
  PayloadPosition after;  // the reader's state right after this op's data
};

class OperationStream {
 public:
  // Operations [first, operation_count) of the payload `reader` stands at
  // (it must be at op `first`). `reader` and `coverage` belong to the stream
  // (and its thread) until Stop() or destruction.
  OperationStream(PayloadReader& reader, TargetCoverage& coverage, uint64_t operation_count,
                  uint32_t block_size, uint64_t source_blocks, uint64_t target_blocks,
                  uint64_t first);
  ~OperationStream();
  OperationStream(const OperationStream&) = delete;
  OperationStream& operator=(const OperationStream&) = delete;

  // Starts reading ahead on a second thread; without it (or if no thread
  // can be had) Next() reads inline.
  void StartThread();
  bool reading_ahead() const { return thread_.joinable(); }

  // The next operation; after the last, an item whose status is the
  // reader's Finish(). Not to be called again after an item with an error.
  void Next(ReadOperation* out);

  // Stops and joins the thread (it finishes the read it is in).
  void Stop();

 private:
  void ReadOne(ReadOperation* out);
  void ReadAhead();
  // Leaf-hashes `item`'s data (a raw REPLACE) while the slot stays full.
  void HashWhileSlotFull(ReadOperation* item);

  PayloadReader& reader_;
  TargetCoverage& coverage_;
  const uint64_t operation_count_;
  const uint32_t block_size_;
  const uint64_t source_blocks_;
  const uint64_t target_blocks_;
  uint64_t next_;  // the op ReadOne reads next; operation_count_: the end

  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable ready_, taken_;
  ReadOperation slot_;
  bool full_ = false;
  bool stop_ = false;
};

}  // namespace revpatch

#endif  // REVPATCH_ENGINE_OPERATION_STREAM_H_
