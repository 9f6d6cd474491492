// The apply checkpoint: what an interrupted apply needs to resume instead of
// restarting (after update_engine's CheckpointUpdateProgress). The next
// operation, the payload position, and the layer writer's data length and
// index are saved in one file, always after the layer's data up to that
// point was fsynced, so whatever the checkpoint says is on disk.
//
// The file is a base record and then progress records. An apply's first
// save writes the base (the whole state) atomically: temporary name, fsync,
// rename, directory fsync. Each later save appends a record with the new
// position and only the index entries written since, and fsyncs it: a save
// costs O(what changed), where rewriting the index each time cost O(layer)
// and, on a large REPLACE, about a tenth of the apply's time. Each record's
// checksum covers the one before it, so the records read back in order; a
// torn or altered record ends the file there, and the checkpoint is the
// state of the last good record. A crash at any moment therefore leaves
// the previous state or the new one.
//
// The file is local state, never from the network, but it may be torn,
// stale or from another apply: ReadCheckpoint bounds every count by the file
// size before allocating and checks every record's SHA-256; the caller
// compares the identity with its own and ignores a checkpoint that
// differs. Nothing in it is trusted beyond "this apply got this far": the
// payload chunk it resumes in is re-verified and the layer's data is checked
// against the saved leaf hashes (LayerWriter::Resume).
//
// Format: docs/on-disk-format.md, "Checkpoint file".
#ifndef REVPATCH_ENGINE_CHECKPOINT_H_
#define REVPATCH_ENGINE_CHECKPOINT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "layer_file.h"
#include "payload_reader.h"
#include "sha256.h"
#include "status.h"

namespace revpatch {

// Which apply a checkpoint belongs to. Two applies with equal identities
// produce the same layer from the same payload over the same view.
struct CheckpointIdentity {
  Digest payload_digest{};
  Digest source_digest{};
  Digest target_digest{};
  uint64_t payload_size = 0;
  uint64_t operation_count = 0;
  uint64_t target_size = 0;
  uint32_t chunk_size = 0;
  uint32_t block_size = 0;
  std::string layer_name;  // the layer file's name, without its directory

  bool operator==(const CheckpointIdentity& other) const;
  bool operator!=(const CheckpointIdentity& other) const { return !(*this == other); }
};

struct Checkpoint {
  CheckpointIdentity identity;
  uint64_t next_operation = 0;  // operations [0, next_operation) are in the layer
  PayloadPosition payload;      // where operation next_operation starts
  LayerWriterState layer;
};

// A progress record: where the apply stands and the layer entries written
// since the record before it.
struct CheckpointProgress {
  uint64_t next_operation = 0;
  PayloadPosition payload;
  uint64_t data_blocks = 0;
  std::vector<LayerIndexEntry> new_entries;
};

// Where a checkpoint file's last record ends, and that record's checksum:
// what the next AppendCheckpoint continues from.
struct CheckpointLog {
  uint64_t end = 0;  // the file's size
  Digest last_checksum{};
};

constexpr size_t kMaxCheckpointLayerName = 255;

// Replaces `path` atomically with a base record of `checkpoint` (via `path`
// + ".tmp"). *log, if given, is set for the appends that follow. An fsync
// error is returned as is and is fatal for the apply.
Status WriteCheckpoint(const std::string& path, const Checkpoint& checkpoint,
                       CheckpointLog* log);

// Appends `progress` to the checkpoint `log` describes (written by this
// process through WriteCheckpoint and AppendCheckpoint only) and fsyncs it;
// advances *log. On failure the file may end in a torn record, which
// ReadCheckpoint ignores.
Status AppendCheckpoint(const std::string& path, const CheckpointProgress& progress,
                        CheckpointLog* log);

// The state of the last good record: the base with every progress record
// after it applied, up to the first one that is torn or fails its checksum.
// kNotFound if there is none; kCorrupt for a file whose base is not a
// complete, consistent record (wrong magic or version, counts that do not
// fit the file size, checksum mismatch) or that holds more entries than
// `max_entries`. Never allocates more than the file size.
Status ReadCheckpoint(const std::string& path, uint64_t max_entries, Checkpoint* out);

// Unlinks `path` and its temporary sibling; missing files are not an error.
void RemoveCheckpoint(const std::string& path);

}  // namespace revpatch

#endif  // REVPATCH_ENGINE_CHECKPOINT_H_
