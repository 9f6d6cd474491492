// The apply checkpoint: what an interrupted apply needs to resume instead of
// restarting (after update_engine's CheckpointUpdateProgress). The next
// operation, the payload position, and the
// layer writer's data length and index are saved together in one file,
// written atomically (temporary name, fsync, rename, directory fsync) only
// after the layer's data up to that point was fsynced. So whatever the
// checkpoint says is on disk, and a crash at any moment leaves either the
// previous checkpoint or the new one.
//
// The file is local state, never from the network, but it may be torn,
// stale or from another apply: ReadCheckpoint bounds every count by the file
// size before allocating and checks a SHA-256 over the whole file; the
// caller compares the identity with its own and ignores a checkpoint that
// differs. Nothing in it is trusted beyond "this apply got this far": the
// payload chunk it resumes in is re-verified and the layer's data is checked
// against the saved leaf hashes (LayerWriter::Resume).
//
// Format: docs/on-disk-format.md, "Checkpoint file".
#ifndef REVPATCH_ENGINE_CHECKPOINT_H_
#define REVPATCH_ENGINE_CHECKPOINT_H_

#include <cstdint>
#include <string>

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

constexpr size_t kMaxCheckpointLayerName = 255;

// Replaces `path` atomically with `checkpoint` (via `path` + ".tmp").
// *file_bytes, if given, is the size written. An fsync error is returned
// as is and is fatal for the apply.
Status WriteCheckpoint(const std::string& path, const Checkpoint& checkpoint,
                       uint64_t* file_bytes);

// kNotFound if there is none; kCorrupt for a file that is not a complete,
// consistent checkpoint (wrong magic or version, sizes or counts that do not
// add up to the file size, more entries than `max_entries`, checksum
// mismatch). Never allocates more than the file size.
Status ReadCheckpoint(const std::string& path, uint64_t max_entries, Checkpoint* out);

// Unlinks `path` and its temporary sibling; missing files are not an error.
void RemoveCheckpoint(const std::string& path);

}  // namespace revpatch

#endif  // REVPATCH_ENGINE_CHECKPOINT_H_
