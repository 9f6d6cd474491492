// The patch generator (publisher side): compares two images block by block
// and writes the payload of operations that turns the first into the second.
//
// Unchanged blocks cost nothing; all-zero blocks gather into ZERO ops, each
// op holding up to 64 MiB as many extents (one record for thousands of
// scattered blocks). The remaining changed blocks gather, in target order,
// into regions of up to 32 MiB; each region becomes one DIFF whose delta
// (diff.h) is matched against the whole source (sources up to 256 MiB; one
// suffix array built once) or, for larger sources, against the
// neighbourhood (+-64 blocks) of the region's blocks. Only in that second
// case do blocks found whole elsewhere in the source become COPY ops: the
// whole-source matcher finds them anyway, and inside a DIFF a moved block
// costs a few bytes of control where a COPY costs a record with 16 bytes
// per extent (on an ext4 image updated in place, about 4 KB of an 83 KB
// patch). The op's source
// extents are then cut down to the blocks the delta's adds actually read,
// so the device reads and hashes only those; a region whose touched source
// would pass kMaxOperationBytes is split in two. When the whole source is
// matched and holds x86-64 ELF executables (references.h), each delta is
// also written with their references predicted (version 3) and the smaller
// kept. A region with no match, or
// whose delta is no smaller, becomes REPLACE_BROTLI or raw REPLACE.
//
// Raw REPLACE data is cut into 4 MiB ops, so the device can apply one while
// it reads the next (operation_stream.h).
//
// Publisher memory: the source held whole (<= 256 MiB) plus its suffix
// array (4 bytes per byte) and 8-gram Bloom filter (2 bytes per byte), a
// region (32 MiB) and its streams, Brotli's quality-11 encoder: about 2 GiB
// for a 256 MiB source, no more for any larger one (neighbourhood matching
// over at most 256 MiB of candidates).
// The payload is written to `payload_path` (temp, fsync, rename); the
// caller frames and signs it.
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

constexpr uint64_t kDefaultRegionBytes = 32ull << 20;
constexpr uint64_t kWholeSourceLimit = 256ull << 20;

struct GenerateOptions {
  uint32_t block_size = 4096;
  uint32_t chunk_size = kDefaultChunkSize;
  // Most target bytes one data op (DIFF / REPLACE) writes, and most blocks
  // one ZERO or COPY op gathers: the device holds one op's source, target
  // and data at a time, and checkpoints fall between ops. At least one
  // block; capped at kMaxOperationBytes.
  uint64_t region_bytes = kDefaultRegionBytes;
  // Sources up to this size are matched whole (suffix array built once);
  // larger ones per region, against the neighbourhood of its blocks.
  // Capped at 256 MiB (publisher memory).
  uint64_t whole_source_bytes = kWholeSourceLimit;
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
