#include "apply.h"

#include <algorithm>
#include <exception>
#include <limits>
#include <memory>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "checkpoint.h"
#include "executor.h"
#include "file_io.h"
#include "layer_file.h"
#include "operation.h"
#include "operation_stream.h"
#include "payload_reader.h"
#include "priority.h"
#include "sha256.h"

namespace revpatch {
namespace {

Status OpenPayload(const ApplyParams& params, std::unique_ptr<PayloadReader>* reader) {
  Status opened = PayloadReader::Open(params.patch_fd, params.payload_offset, params.payload_size,
                                      params.chunk_size, params.chunk_digests, reader);
  if (opened.ok() && params.wait_for_bytes) (*reader)->SetWaitForBytes(params.wait_for_bytes);
  return opened;
}

// The whole payload against the manifest's payload digest. An apply does not
// need it (the chunk digests pin every byte); inspect checks that the name
// the publisher gave the payload is its digest.
Status CheckPayloadDigest(const ApplyParams& params) {
  File file(params.patch_fd);
  std::vector<uint8_t> buffer(static_cast<size_t>(
      std::min<uint64_t>(params.payload_size, uint64_t{1} << 20)));
  Sha256 whole;
  Status status = Status::Ok();
  for (uint64_t done = 0; done < params.payload_size && status.ok();) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(buffer.size(), params.payload_size - done));
    status = file.ReadAt(params.payload_offset + done, buffer.data(), n);
    whole.Update(buffer.data(), n);
    done += n;
  }
  file.Release();
  REVPATCH_RETURN_IF_ERROR(status);
  if (whole.Final() != params.payload_digest) {
    return Status(ErrorCode::kHashMismatch, "payload: digest does not match");
  }
  return Status::Ok();
}

std::string BaseName(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

CheckpointIdentity IdentityOf(const ApplyParams& params) {
  CheckpointIdentity id;
  id.payload_digest = params.payload_digest;
  id.source_digest = params.source_digest;
  id.target_digest = params.target_digest;
  id.payload_size = params.payload_size;
  id.operation_count = params.operation_count;
  id.target_size = params.target_size;
  id.chunk_size = params.chunk_size;
  id.block_size = params.block_size;
  id.layer_name = BaseName(params.layer_path);
  return id;
}

// Decides when to save and saves: layer data first, then the checkpoint.
//
// A save waits for the disk three times (the layer's fsync, the
// checkpoint's, the directory's) and, at the default interval, comes every
// few milliseconds of a fast apply: done inline it stalled the apply for
// about a fifth of its time. So the waiting runs on a thread of its own
// while the apply goes on: Save() flushes the layer's buffered data and
// captures the state on the applying thread, then the thread fsyncs the
// layer (LayerWriter::SyncFlushed) and only if that succeeded writes the
// checkpoint. The order on disk is the same as inline: whatever a
// checkpoint refers to was fsynced before it was written. One save at a
// time: the next Save(), and Finish(), wait for it and return its failure,
// which ends the apply (a failed fsync also poisons the writer).
//
// The first save of a run writes the checkpoint's base record, with every
// entry the layer holds (a resumed run's too); each later one appends a
// progress record with the entries written since (checkpoint.h), so
// capturing and writing a save costs O(what changed).
class Checkpointer {
 public:
  Checkpointer(const ApplyParams& params, uint64_t start_position)
      : params_(params), last_position_(start_position) {
    checkpoint_.identity = IdentityOf(params);
  }
  ~Checkpointer() { Finish(); }
  Checkpointer(const Checkpointer&) = delete;
  Checkpointer& operator=(const Checkpointer&) = delete;

  bool Due(uint64_t position) const {
    if (params_.checkpoint_path.empty()) return false;
    if (params_.checkpoint_interval_bytes == 0) return true;
    return position - last_position_ >=
           std::max(params_.checkpoint_interval_bytes, kCheckpointGrowth * file_bytes_);
  }

  // `payload` is the reader's state right after the data of the last
  // operation in the layer (captured then: the reader may be ahead).
  Status Save(uint64_t next_operation, const PayloadPosition& payload, LayerWriter& writer) {
    REVPATCH_RETURN_IF_ERROR(Finish());
    REVPATCH_RETURN_IF_ERROR(writer.Flush());
    const bool base = !based_;
    if (base) {
      checkpoint_.next_operation = next_operation;
      checkpoint_.payload = payload;
      writer.SaveState(&checkpoint_.layer);
    } else {
      LayerWriterState since;
      writer.SaveStateSince(saved_entries_, &since);
      progress_.next_operation = next_operation;
      progress_.payload = payload;
      progress_.data_blocks = since.data_blocks;
      progress_.new_entries.swap(since.entries);
    }
    pending_entries_ = writer.entry_count();
    last_position_ = payload.position;
    auto save = [this, &writer, base] {
      saved_ = writer.SyncFlushed();
      if (saved_.ok()) {
        saved_ = base ? WriteCheckpoint(params_.checkpoint_path, checkpoint_, &log_)
                      : AppendCheckpoint(params_.checkpoint_path, progress_, &log_);
      }
      if (saved_.ok()) {
        based_ = true;
        saved_entries_ = pending_entries_;
      }
      std::vector<LayerIndexEntry>().swap(checkpoint_.layer.entries);
      std::vector<LayerIndexEntry>().swap(progress_.new_entries);
    };
    try {
      saver_ = std::thread([save, inherited = InheritedPriority()] {
        inherited.Apply();
        save();
      });
      return Status::Ok();
    } catch (const std::exception&) {
      save();  // no thread to be had: wait here
      return saved_;
    }
  }

  // Waits for the save in progress, if any; its status.
  Status Finish() {
    if (saver_.joinable()) saver_.join();
    if (saved_.ok()) file_bytes_ = log_.end;
    return saved_;
  }

 private:
  const ApplyParams& params_;
  uint64_t last_position_;
  uint64_t file_bytes_ = 0;  // the checkpoint's size after the last finished save
  // The saving thread's while it runs (Finish() joins it before any read).
  Checkpoint checkpoint_;
  CheckpointProgress progress_;
  CheckpointLog log_;
  bool based_ = false;         // the base record is written: append from now on
  size_t saved_entries_ = 0;   // the layer's entries the file holds
  size_t pending_entries_ = 0;  // what it holds once the save in progress is done
  std::thread saver_;
  Status saved_ = Status::Ok();  // written by the saving thread
};

// Every operation writes every block of its targets, so the blocks the
// layer holds at an operation boundary are exactly the targets claimed.
Status RestoreCoverage(const std::vector<LayerIndexEntry>& entries, TargetCoverage* coverage) {
  std::vector<uint64_t> blocks;
  blocks.reserve(entries.size());
  for (const LayerIndexEntry& e : entries) blocks.push_back(e.block);
  std::sort(blocks.begin(), blocks.end());
  std::vector<Extent> runs;
  for (uint64_t b : blocks) {
    if (!runs.empty() && runs.back().start_block + runs.back().num_blocks == b) {
      ++runs.back().num_blocks;
    } else {
      runs.push_back({b, 1});
    }
  }
  if (runs.empty()) return Status::Ok();
  return coverage->Claim(runs);
}

// Continues an interrupted apply from its checkpoint; any failure means
// "cannot resume" and the caller starts over.
Status ResumeFromCheckpoint(const ApplyParams& params, View& below, PayloadReader& reader,
                            TargetCoverage* coverage, std::unique_ptr<LayerWriter>* writer,
                            uint64_t* next_operation) {
  Checkpoint checkpoint;
  REVPATCH_RETURN_IF_ERROR(ReadCheckpoint(params.checkpoint_path,
                                          BlockCount(params.target_size, params.block_size),
                                          &checkpoint));
  if (checkpoint.identity != IdentityOf(params)) {
    return Status(ErrorCode::kCorrupt, "checkpoint belongs to another apply");
  }
  if (checkpoint.next_operation > params.operation_count) {
    return Status(ErrorCode::kCorrupt, "checkpoint past the last operation");
  }
  REVPATCH_RETURN_IF_ERROR(reader.RestorePosition(checkpoint.payload));
  REVPATCH_RETURN_IF_ERROR(LayerWriter::Resume(params.layer_path, params.target_size, &below,
                                               checkpoint.layer, writer));
  REVPATCH_RETURN_IF_ERROR(RestoreCoverage(checkpoint.layer.entries, coverage));
  *next_operation = checkpoint.next_operation;
  return Status::Ok();
}

// A sealed layer at layer_path when checkpointing: an earlier run of this
// apply finished but its caller did not record it. Taken as the result if
// it is exactly that layer and its data checks out.
Status AdoptFinishedLayer(const ApplyParams& params, View& below, LayerReader& layer,
                          ApplyResult* result) {
  if (layer.block_size() != params.block_size || layer.target_size() != params.target_size ||
      layer.below_size() != below.size_bytes() || layer.below_digest() != below.digest() ||
      layer.view_digest() != params.target_digest) {
    return Status(ErrorCode::kExists,
                  "another sealed layer already exists at " + params.layer_path);
  }
  REVPATCH_RETURN_IF_ERROR(layer.Verify());
  RemoveCheckpoint(params.checkpoint_path);
  result->view_digest = layer.view_digest();
  result->blocks_written = layer.block_entries();
  result->operations = params.operation_count;
  result->resumed = true;
  result->resumed_from_operation = params.operation_count;
  File file;
  if (File::OpenRead(params.layer_path, &file).ok()) file.Size(&result->layer_bytes);
  return Status::Ok();
}

// The payload is read one operation ahead on a second thread
// (operation_stream.h): op i + 1 is read, chunk-checked and parsed while op
// i is executed and written here. Checkpoints save the reader state taken
// right after op i's data, as a serial read would have it.
Status ApplyOperations(const ApplyParams& params, View& below, PayloadReader& reader,
                       LayerWriter& writer, TargetCoverage& coverage, uint64_t first,
                       Checkpointer& checkpointer,
                       const std::function<void(uint64_t, uint64_t)>& progress,
                       ApplyResult* result, bool* stopped) {
  OperationStream stream(reader, coverage, params.operation_count, params.block_size,
                         below.block_count(), BlockCount(params.target_size, params.block_size),
                         first);
  // A streaming install's reader may wait for the download; an apply that
  // fails must not have to wait for it to be joined, so it reads inline.
  if (first < params.operation_count && !params.wait_for_bytes) stream.StartThread();
  ReadOperation item;
  OperationBuffers buffers;  // kept from op to op (executor.h)
  for (uint64_t i = first; i < params.operation_count; ++i) {
    if (i == params.test_stop_after_operations) {
      *stopped = true;
      return Status(ErrorCode::kIo, "stopped for test");
    }
    stream.Next(&item);
    REVPATCH_RETURN_IF_ERROR(item.status);
    Status executed = ExecuteOperation(item.op, item.data.data(), item.leaves, below, writer,
                                       &buffers);
    if (!executed.ok()) {
      return Status(executed.code(), "operation " + std::to_string(i) + ": " +
                                         executed.message());
    }
    ++result->operations;
    if (i + 1 < params.operation_count && checkpointer.Due(item.after.position)) {
      REVPATCH_RETURN_IF_ERROR(checkpointer.Save(i + 1, item.after, writer));
    }
    // After the save: it waited for the one before it, so once progress
    // passes a checkpoint's position, the checkpoint before it is on disk
    // (a caller that kills the apply part way can count on that).
    if (progress) progress(item.after.position, reader.size());
  }
  stream.Next(&item);  // the reader's Finish()
  return item.status;
}

}  // namespace

namespace {

// ApplyPatch on the calling thread.
Status ApplyHere(const ApplyParams& params, View& below,
                 const std::function<void(uint64_t, uint64_t)>& progress,
                 ApplyResult* result) {
  *result = ApplyResult();
  // The view below is read verified, as every view is by default, though
  // each operation also checks its source hash: the source hash says only
  // "not the bytes the patch was made for" (E_BASE_MISMATCH), while the
  // leaf check names the bad block and its source as corruption
  // (E_CORRUPT), which is what a rotted base is. It also covers the one
  // read no source hash covers (the last block of a shrink, in Seal). The
  // cost is a second hash of COPY/DIFF sources only, small beside decoding
  // and writing the layer.
  if (below.digest() != params.source_digest) {
    return Status(ErrorCode::kSourceMismatch,
                  "the current view is not the one the patch was made for");
  }
  if (params.block_size != below.block_size()) {
    return Status(ErrorCode::kSourceMismatch, "the patch's block size differs from the view's");
  }
  std::unique_ptr<PayloadReader> reader;
  REVPATCH_RETURN_IF_ERROR(OpenPayload(params, &reader));
  const bool checkpointing = !params.checkpoint_path.empty();
  TargetCoverage coverage;
  std::unique_ptr<LayerWriter> writer;
  uint64_t first = 0;
  if (checkpointing) {
    if (FileExists(params.layer_path)) {
      std::unique_ptr<LayerReader> sealed;
      Status opened = LayerReader::Open(params.layer_path, &sealed);
      if (opened.ok()) return AdoptFinishedLayer(params, below, *sealed, result);
      // Only an unsealed file (kCorrupt) is this apply's own leftover.
      if (opened.code() != ErrorCode::kCorrupt) return opened;
    }
    Status resumed = ResumeFromCheckpoint(params, below, *reader, &coverage, &writer, &first);
    if (resumed.ok()) {
      result->resumed = true;
      result->resumed_from_operation = first;
    } else {
      writer.reset();
      RemoveCheckpoint(params.checkpoint_path);
      UnlinkFile(params.layer_path);
      coverage = TargetCoverage();
      first = 0;
      REVPATCH_RETURN_IF_ERROR(OpenPayload(params, &reader));
    }
  }
  Status status;
  for (;;) {
    if (!writer) {
      REVPATCH_RETURN_IF_ERROR(
          LayerWriter::Create(params.layer_path, params.target_size, &below, &writer));
    }
    const uint64_t restored_blocks = writer->blocks_written();
    const uint64_t start_position = reader->position();
    result->operations = first;
    Checkpointer checkpointer(params, start_position);
    if (progress) progress(start_position, params.payload_size);
    bool stopped = false;
    status = ApplyOperations(params, below, *reader, *writer, coverage, first, checkpointer,
                             progress, result, &stopped);
    // The last save is complete before the layer is sealed, left as a crash
    // would leave it, or removed. A save that failed is the apply's error:
    // the writes after it fail only because it poisoned the writer.
    const Status saved = checkpointer.Finish();
    if (!saved.ok() && !stopped) status = saved;
    if (stopped) {
      writer->Detach();
      *result = ApplyResult();
      return status;
    }
    if (status.ok()) {
      result->blocks_written = writer->blocks_written();  // before Seal's zero fill
      result->blocks_written_this_run = result->blocks_written - restored_blocks;
      result->payload_bytes_read_this_run = reader->position() - start_position;
      status = writer->Seal(&params.target_digest, &result->view_digest);
    }
    // A resumed apply that the payload or the view refuses may have resumed
    // from a checkpoint that only looked right (a position on another
    // record): it starts over once, from nothing, and whatever that run
    // says is the answer.
    if (status.ok() || !result->resumed || !IsContentError(status.code())) break;
    writer->Abort();
    writer.reset();
    RemoveCheckpoint(params.checkpoint_path);
    *result = ApplyResult();
    coverage = TargetCoverage();
    first = 0;
    REVPATCH_RETURN_IF_ERROR(OpenPayload(params, &reader));
  }
  if (checkpointing) RemoveCheckpoint(params.checkpoint_path);
  if (!status.ok()) {
    writer->Abort();
    *result = ApplyResult();
    return status;
  }
  File layer;
  if (File::OpenRead(params.layer_path, &layer).ok()) layer.Size(&result->layer_bytes);
  return Status::Ok();
}

}  // namespace

Status ApplyPatch(const ApplyParams& params, View& below,
                  const std::function<void(uint64_t, uint64_t)>& progress,
                  ApplyResult* result) {
  if (!params.background) return ApplyHere(params, below, progress, result);
  bool lowered = false;
  Status status = RunLowered([&] { return ApplyHere(params, below, progress, result); }, &lowered);
  result->lowered = lowered;
  return status;
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
  REVPATCH_RETURN_IF_ERROR(reader->Finish());
  return CheckPayloadDigest(params);
}

}  // namespace revpatch
