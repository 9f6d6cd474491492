// Apply: a verified patch payload into a new sealed layer.
//
// The caller (the TypeScript lifecycle) has already checked the patch's
// Ed25519 signature over header and manifest, and passes in from the trusted
// manifest: where the payload is in the open patch file, the digest of each
// payload chunk, the digest of the whole payload, the operation count and
// the source and target view digests. Apply then:
//   1. checks that `below` (the view the patch must apply to) has the
//      manifest's source digest (kSourceMismatch otherwise; O(1));
//   2. reads the payload chunk by chunk from the one held descriptor,
//      checking each chunk's digest before any byte of it is parsed
//      (invariant 4), and the whole-payload digest at the end;
//   3. for each operation: checks extents, reads and hashes its source
//      blocks (kSourceMismatch), produces the target blocks in memory,
//      checks their hash (kHashMismatch), and only then writes them;
//   4. seals the layer only if the resulting view digest equals the target
//      digest. On any failure the layer file is removed.
// Memory is bounded by the chunk size and the per-operation limits, not by
// the volume size.
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
  std::string layer_path;        // created; must not exist
};

struct ApplyResult {
  Digest view_digest{};
  uint64_t blocks_written = 0;
  uint64_t layer_bytes = 0;
  uint64_t operations = 0;
};

// progress(payload bytes done, payload size), from the calling thread.
Status ApplyPatch(const ApplyParams& params, View& below,
                  const std::function<void(uint64_t, uint64_t)>& progress,
                  ApplyResult* result);

// Statistics of a payload, for `revpatch inspect`. The same chunk checks
// as ApplyPatch run before anything is parsed.
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
