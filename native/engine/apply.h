// Apply: a verified patch payload into a new sealed layer.
//
// The caller (the TypeScript lifecycle) has already checked the patch's
// Ed25519 signature over header and manifest, and passes in from the trusted
// manifest: where the payload is in the open patch file, the digest of each
// payload chunk, the digest of the whole payload (the payload's name, in
// the checkpoint identity), the operation count and the source and target
// view digests. Apply then:
//   1. checks that `below` (the view the patch must apply to) has the
//      manifest's source digest (kSourceMismatch otherwise; O(1));
//   2. reads the payload chunk by chunk from the one held descriptor,
//      checking each chunk's digest before any byte of it is parsed
//      (invariant 4); the signed chunk digests pin every byte, so the
//      payload is not hashed a second time as a whole;
//   3. for each operation: checks extents, reads and hashes its source
//      blocks (kSourceMismatch), produces the target blocks in memory,
//      checks the hash of a computed target (kHashMismatch; executor.h),
//      and only then writes them;
//   4. seals the layer only if the resulting view digest equals the target
//      digest. On any failure the layer file is removed.
// Memory is bounded by the chunk size and the per-operation limits, not by
// the volume size. Operations are read one ahead on a second thread
// (operation_stream.h), so memory is two operations' data.
//
// Checkpoints (checkpoint.h). With a checkpoint_path, the apply saves its
// progress at operation boundaries, once at least checkpoint_interval_bytes
// of payload were applied since the last save: it fsyncs the layer's data,
// then replaces the checkpoint atomically. A later ApplyPatch with the same
// params (and the same layer_path) finds it and resumes:
//   - a checkpoint whose identity (payload, source and target digests and
//     sizes, operation count, chunk and block size, layer file name) matches
//     and whose layer file still holds the saved data continues from the
//     saved operation; the payload chunk it resumes in is read and checked
//     again, the layer's saved data is checked against its leaf hashes, and
//     the file is cut back to the saved length;
//   - anything else (no checkpoint, torn, another apply's, layer missing or
//     short or changed) is discarded with any unsealed file at layer_path,
//     and the apply starts over;
//   - a resumed apply that then fails on content (kCorrupt, kHashMismatch,
//     kSourceMismatch, kBadExtent, kUnsupported, kTooLarge: a checkpoint
//     that passed its checks but pointed at the wrong record would fail
//     so) discards its layer and checkpoint and starts over once; that
//     run's result is the answer;
//   - a sealed layer already at layer_path with this apply's below and
//     target digests is an earlier run that finished (crash between seal
//     and the caller's commit): it is verified and returned as is, with
//     resumed set. Any other sealed file there is kExists and left alone.
// On success the checkpoint is removed after the seal's fsync. On any
// failure with a status, the layer and the checkpoint are both removed:
// only a crash leaves them behind, and invariant 7 holds.
//
// A run's first save writes the checkpoint's base record; later saves
// append progress records with only the entries written since
// (checkpoint.h), so a save costs O(what changed). Saves still space out as
// the layer grows: one waits until the payload applied since the last one
// is at least kCheckpointGrowth times the checkpoint's size (interval 0,
// for tests, saves after every operation). With 4 KiB blocks an entry is
// 1/85 of its block: the factor takes over from the 8 MiB interval past
// about 85 MiB of layer, keeps the number of saves (each waits for the
// disk) logarithmic in the layer's size, and keeps the work a crash can
// lose at about a tenth of what was applied.
#ifndef REVPATCH_ENGINE_APPLY_H_
#define REVPATCH_ENGINE_APPLY_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "sha256.h"
#include "status.h"
#include "view.h"

namespace revpatch {

constexpr uint64_t kDefaultCheckpointIntervalBytes = uint64_t{8} << 20;
constexpr uint64_t kCheckpointGrowth = 8;
constexpr uint64_t kNoTestStop = ~uint64_t{0};

struct ApplyParams {
  int patch_fd = -1;             // borrowed; read with pread only
  uint64_t payload_offset = 0;
  uint64_t payload_size = 0;
  uint32_t chunk_size = 0;       // every chunk but the last is this long
  std::vector<Digest> chunk_digests;
  Digest payload_digest{};
  uint64_t operation_count = 0;
  uint32_t block_size = 0;       // must equal below.block_size()
  uint64_t target_size = 0;
  Digest source_digest{};
  Digest target_digest{};
  std::string layer_path;        // created; must not exist unless checkpointing
  std::string checkpoint_path;   // empty: no checkpoints, no resume
  uint64_t checkpoint_interval_bytes = kDefaultCheckpointIntervalBytes;
  // Background install: the apply runs on a thread of its own at the lowest
  // CPU and I/O priority, as do the threads it starts (priority.h).
  bool background = false;
  // Streaming install: the patch file is still being downloaded; the payload
  // reader waits through this before reading past what is written
  // (payload_reader.h). Empty: the file is complete.
  std::function<Status(uint64_t end)> wait_for_bytes;
  // Test only: stop as a crash would, when this many operations (counted
  // from the start of the payload) are in the layer. The layer file and the
  // checkpoint are left as they are and the status is kIo "stopped for
  // test". Never set outside tests.
  uint64_t test_stop_after_operations = kNoTestStop;
};

struct ApplyResult {
  Digest view_digest{};
  uint64_t blocks_written = 0;   // by the operations, all runs; for a layer
                                 // found finished, its entry count
  uint64_t layer_bytes = 0;
  uint64_t operations = 0;       // all runs: operation_count on success
  bool resumed = false;          // continued from a checkpoint or found done
  uint64_t resumed_from_operation = 0;
  uint64_t payload_bytes_read_this_run = 0;  // payload consumed by this call
  uint64_t blocks_written_this_run = 0;
  bool lowered = false;          // background: the threads were lowered
};

// progress(payload bytes done, payload size), from the calling thread; a
// resumed apply starts at the checkpoint's position, and one that starts
// over reports from 0 again.
Status ApplyPatch(const ApplyParams& params, View& below,
                  const std::function<void(uint64_t, uint64_t)>& progress,
                  ApplyResult* result);

// Statistics of a payload, for `revpatch inspect`. The same chunk checks
// as ApplyPatch run before anything is parsed; then the whole payload is
// checked against payload_digest (kHashMismatch).
struct OperationStats {
  uint64_t count = 0;
  uint64_t target_blocks = 0;
  uint64_t data_bytes = 0;
};
struct PayloadStats {
  OperationStats by_type[8];  // indexed by OperationType
  uint64_t operations = 0;
};
Status ScanPayload(const ApplyParams& params, PayloadStats* stats);

}  // namespace revpatch

#endif  // REVPATCH_ENGINE_APPLY_H_
