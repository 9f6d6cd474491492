// The operation executors: one operation, its data, a source to read and a
// sink to write. They know nothing of files, layers, payloads or Node, so
// tests drive them with in-memory fakes and the fuzzer with the real parser.
//
// Order of work, for every type (after update_engine's executors, with the
// hash checks moved before the first write):
//   1. validate the operation against the source's block count (extents,
//      byte bounds); the sink refuses target blocks past its view;
//   2. read every source block the op names (a source of 1 MiB or more in
//      two halves on two threads), hash them in extent order and compare
//      with src_hash (kSourceMismatch);
//   3. produce the whole target in memory (REPLACE uses the data in place,
//      REPLACE_BROTLI decompresses to exactly the target length, ZERO
//      zeros, COPY takes the source bytes, DIFF applies the delta to them);
//      for a DIFF of 1 MiB of source or more, the source hash of step 2
//      runs on a second thread while the delta decodes (the decoder is
//      bounds-checked whatever the source holds) and is compared once the
//      decode is done, a mismatch winning over a decode error;
//   4. for the types that compute their target (REPLACE_BROTLI, COPY,
//      DIFF), hash it and compare with dst_hash (kHashMismatch). A raw
//      REPLACE's target is its data, which the payload reader has checked
//      against the signed chunk digests, and a ZERO's is zeros: hashing
//      them again would cost a pass over every byte of a large REPLACE for
//      nothing; the apply's check of the sealed layer's view digest against
//      the signed target digest catches a dst_hash that disagrees;
//   5. only then write the blocks, in extent order; all-zero blocks go
//      through WriteZeroBlock, each run of other blocks through one
//      WriteBlocks.
// A failure in steps 1-4 writes nothing. The source and the target are
// different views (the view below the new layer and the layer itself), so
// COPY and DIFF read old bytes even where an op overwrites its own source.
#ifndef REVPATCH_ENGINE_EXECUTOR_H_
#define REVPATCH_ENGINE_EXECUTOR_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "block_io.h"
#include "operation.h"
#include "sha256.h"
#include "status.h"

namespace revpatch {

// A byte buffer whose contents are undefined after Resize(): no zero-fill.
// Each op writes every byte of its source and target buffers before it
// reads one, so filling them first is a pass over every byte for nothing.
class OperationBuffer {
 public:
  // At least `size` bytes, keeping the allocation when it is large enough;
  // kTooLarge when the memory cannot be had.
  Status Resize(uint64_t size);
  uint8_t* data() { return bytes_.get(); }
  const uint8_t* data() const { return bytes_.get(); }
  size_t size() const { return size_; }
  void Swap(OperationBuffer& other) {
    bytes_.swap(other.bytes_);
    std::swap(capacity_, other.capacity_);
    std::swap(size_, other.size_);
  }

 private:
  std::unique_ptr<uint8_t[]> bytes_;
  size_t capacity_ = 0;
  size_t size_ = 0;
};

// The memory an apply keeps from one operation to the next: an op's source
// and target bytes. Allocated anew for every op, both buffers were zeroed
// and faulted in page by page again, which on a large DIFF cost as much as
// a third of the executor's time. Kept, they grow to the largest op's
// source and target and no further: the same bound as one op's peak
// (each at most kMaxOperationBytes, operation.h), held until the apply ends.
struct OperationBuffers {
  OperationBuffer source;
  OperationBuffer target;
};

// `data` holds op.data_length bytes (may be null when that is 0).
Status ExecuteOperation(const Operation& op, const uint8_t* data,
                        BlockSource& source, BlockSink& sink);
// The same, for a raw REPLACE whose data's first `leaves.size()` blocks
// were leaf-hashed ahead (the read-ahead thread does that while it would
// otherwise wait: operation_stream.h): the blocks they cover go to the sink
// through WriteHashedBlocks. Other types ignore `leaves`; more leaves than
// the op has blocks is kInvalidArgument.
Status ExecuteOperation(const Operation& op, const uint8_t* data,
                        const std::vector<Digest>& leaves, BlockSource& source,
                        BlockSink& sink);
// The same, with buffers kept across calls (an apply's loop over its ops).
Status ExecuteOperation(const Operation& op, const uint8_t* data,
                        const std::vector<Digest>& leaves, BlockSource& source,
                        BlockSink& sink, OperationBuffers* buffers);

}  // namespace revpatch

#endif  // REVPATCH_ENGINE_EXECUTOR_H_
