#include "apply.h"

#include <limits>
#include <memory>
#include <new>
#include <string>

#include "executor.h"
#include "file_io.h"
#include "layer_file.h"
#include "operation.h"
#include "payload_reader.h"

namespace revpatch {
namespace {

Status OpenPayload(const ApplyParams& params, std::unique_ptr<PayloadReader>* reader) {
  return PayloadReader::Open(params.patch_fd, params.payload_offset, params.payload_size,
                             params.chunk_size, params.chunk_digests,
                             params.payload_digest, reader);
}

// Reads one record's header and extents (checked for shape) from the stream.
Status ReadOperationRecord(PayloadReader& reader, Operation* op) {
  uint8_t header[kOperationHeaderSize];
  REVPATCH_RETURN_IF_ERROR(reader.Read(header, sizeof(header)));
  size_t extents_bytes = 0;
  REVPATCH_RETURN_IF_ERROR(DecodeOperationHeader(header, sizeof(header), op, &extents_bytes));
  std::vector<uint8_t> extents(extents_bytes);
  REVPATCH_RETURN_IF_ERROR(reader.Read(extents.data(), extents.size()));
  return DecodeOperationExtents(extents.data(), extents.size(), op);
}

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

Status ApplyOperations(const ApplyParams& params, View& below, PayloadReader& reader,
                       LayerWriter& writer,
                       const std::function<void(uint64_t, uint64_t)>& progress,
                       ApplyResult* result) {
  const uint64_t source_blocks = below.block_count();
  const uint64_t target_blocks = BlockCount(params.target_size, params.block_size);
  TargetCoverage coverage;
  Operation op;
  std::vector<uint8_t> data;
  for (uint64_t i = 0; i < params.operation_count; ++i) {
    REVPATCH_RETURN_IF_ERROR(ReadOperationRecord(reader, &op));
    REVPATCH_RETURN_IF_ERROR(
        ValidateOperation(op, params.block_size, source_blocks, target_blocks));
    REVPATCH_RETURN_IF_ERROR(coverage.Claim(op.dst_extents));
    REVPATCH_RETURN_IF_ERROR(ReadData(reader, op.data_length, &data));
    Status executed = ExecuteOperation(op, data.data(), below, writer);
    if (!executed.ok()) {
      return Status(executed.code(), "operation " + std::to_string(i) + ": " +
                                         executed.message());
    }
    ++result->operations;
    if (progress) progress(reader.position(), reader.size());
  }
  return reader.Finish();
}

}  // namespace

Status ApplyPatch(const ApplyParams& params, View& below,
                  const std::function<void(uint64_t, uint64_t)>& progress,
                  ApplyResult* result) {
  *result = ApplyResult();
  if (below.digest() != params.source_digest) {
    return Status(ErrorCode::kSourceMismatch,
                  "the current view is not the one the patch was made for");
  }
  if (params.block_size != below.block_size()) {
    return Status(ErrorCode::kSourceMismatch, "the patch's block size differs from the view's");
  }
  std::unique_ptr<PayloadReader> reader;
  REVPATCH_RETURN_IF_ERROR(OpenPayload(params, &reader));
  std::unique_ptr<LayerWriter> writer;
  REVPATCH_RETURN_IF_ERROR(
      LayerWriter::Create(params.layer_path, params.target_size, &below, &writer));
  if (progress) progress(0, params.payload_size);
  Status status = ApplyOperations(params, below, *reader, *writer, progress, result);
  if (status.ok()) {
    result->blocks_written = writer->blocks_written();  // before Seal's zero fill
    status = writer->Seal(&params.target_digest, &result->view_digest);
  }
  if (!status.ok()) {
    writer->Abort();
    *result = ApplyResult();
    return status;
  }
  File layer;
  if (File::OpenRead(params.layer_path, &layer).ok()) layer.Size(&result->layer_bytes);
  return Status::Ok();
}

Status ScanPayload(const ApplyParams& params, PayloadStats* stats) {
  *stats = PayloadStats();
  if (!ValidBlockSize(params.block_size)) {
    return Status(ErrorCode::kInvalidArgument, "invalid block size");
  }
  std::unique_ptr<PayloadReader> reader;
  REVPATCH_RETURN_IF_ERROR(OpenPayload(params, &reader));
  const uint64_t target_blocks = BlockCount(params.target_size, params.block_size);
  TargetCoverage coverage;
  Operation op;
  for (uint64_t i = 0; i < params.operation_count; ++i) {
    REVPATCH_RETURN_IF_ERROR(ReadOperationRecord(*reader, &op));
    // No source view here: only the target side can be checked.
    REVPATCH_RETURN_IF_ERROR(ValidateOperation(op, params.block_size,
                                               std::numeric_limits<uint64_t>::max(),
                                               target_blocks));
    REVPATCH_RETURN_IF_ERROR(coverage.Claim(op.dst_extents));
    REVPATCH_RETURN_IF_ERROR(reader->Skip(op.data_length));
    uint64_t blocks = 0;
    TotalBlocks(op.dst_extents, &blocks);
    OperationStats& s = stats->by_type[static_cast<uint8_t>(op.type)];
    ++s.count;
    s.target_blocks += blocks;
    s.data_bytes += op.data_length;
    ++stats->operations;
  }
  return reader->Finish();
}

}  // namespace revpatch
