// The patch generator (publisher side): compares two images block by block
// and writes the payload of operations that turns the first into the second.
//
// Unchanged blocks cost nothing; all-zero blocks become ZERO; a block found
// elsewhere in the source becomes COPY; the rest become DIFF against the
// source block at the same place or compressed REPLACE, whichever is smaller.
// Runs are coalesced into extents. The payload is written to `payload_path`
// (temp, fsync, rename); the caller frames and signs it.
#ifndef REVPATCH_ENGINE_GENERATOR_H_
#define REVPATCH_ENGINE_GENERATOR_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "apply.h"
#include "sha256.h"
#include "status.h"

namespace revpatch {

constexpr uint32_t kDefaultChunkSize = 1u << 20;

struct GenerateOptions {
  uint32_t block_size = 4096;
  uint32_t chunk_size = kDefaultChunkSize;
};

struct GenerateResult {
  uint64_t source_size = 0;
  uint64_t target_size = 0;
  Digest source_digest{};
  Digest target_digest{};
  uint64_t payload_size = 0;
  Digest payload_digest{};
  std::vector<Digest> chunk_digests;
  uint64_t operation_count = 0;
  uint64_t changed_blocks = 0;   // target blocks the layer will hold
  PayloadStats stats;
};

// progress(target bytes examined, target size), from the calling thread.
Status GeneratePayload(const std::string& source_path,
                       const std::string& target_path,
                       const std::string& payload_path,
                       const GenerateOptions& options,
                       const std::function<void(uint64_t, uint64_t)>& progress,
                       GenerateResult* result);

}  // namespace revpatch

#endif  // REVPATCH_ENGINE_GENERATOR_H_
