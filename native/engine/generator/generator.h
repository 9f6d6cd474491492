// The patch generator (publisher side): compares two images block by block
// and writes the payload of operations that turns the first into the second,
// in memory bounded by GenerateOptions::memory_budget however large the
// images, using every core.
//
// Unchanged blocks cost nothing (ranges that are holes in both images are
// not even read); all-zero blocks gather into ZERO ops, each op holding up
// to 64 MiB as many extents (one record for thousands of scattered blocks).
// The remaining changed blocks gather, in target order, into regions; each
// region becomes one DIFF whose delta (diff.h) is matched in one of two
// modes:
//
// - Whole source, when the source (held whole, with its suffix array and
//   Bloom filter: about 8 bytes per source byte) fits the budget beside one
//   region's encoding, up to 256 MiB: one suffix array built once serves
//   every region, regions are up to region_bytes (32 MiB), and when the
//   source holds x86-64 ELF executables (references.h) each delta is also
//   written with their references predicted (version 3) and the smaller
//   kept. Blocks moved whole stay inside the DIFFs: there a moved block
//   costs a few bytes of control where a COPY costs a record with 16 bytes
//   per extent (on an ext4 image updated in place, about 4 KB of an 83 KB
//   patch).
// - Streaming, otherwise: the source is indexed once (source_index.h: its
//   data blocks by hash, 16 bytes each, and content-defined anchors, 8
//   bytes per ~1 KiB of data); target blocks found whole become COPY ops;
//   regions are a few MiB, and each is matched against a bounded window of
//   source blocks: the same offsets first, then the blocks its anchors
//   point at (content that moved), then its neighbourhood (+-64 blocks),
//   as far as the window holds (sized from the budget, at most four times
//   the region).
//
// Either way the op's source extents are then cut down to the blocks the
// delta's adds actually read, so the device reads and hashes only those; a
// region whose touched source would pass kMaxOperationBytes is split in
// two. A region with no match, or whose delta is no smaller, becomes
// REPLACE_BROTLI or raw REPLACE (cut into 4 MiB ops, so the device can apply
// one while it reads the next: operation_stream.h).
//
// Threads: one thread (the caller's) reads and classifies, in large
// batches; regions are encoded (match, delta, Brotli) on `threads` workers
// (ordered_pool.h), each region's reserved memory counted against the
// budget until its ops are written; ops are written in the order the
// classification produced them. The payload is the same bytes for any
// thread count and any run; it depends on the images, block size, region
// size and memory budget only.
//
// Memory: the budget covers the source index, the read batches, the region
// being gathered and the regions in flight (diff_encoder.h bounds what
// the matcher, WriteDelta and Brotli take). A budget too small for even one
// small region is kInvalidArgument, before anything is written.
//
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
constexpr uint64_t kDefaultMemoryBudget = 1ull << 30;
constexpr unsigned kMaxGeneratorThreads = 256;

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
  // Bytes the generator may use at its peak (not counting the process it
  // runs in). Decides the mode, the region size and the matching window,
  // so it is part of what makes the payload.
  uint64_t memory_budget = kDefaultMemoryBudget;
  // Region encoders; 0: one per core. Changes speed, never the payload.
  // At most kMaxGeneratorThreads.
  unsigned threads = 0;
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
  // How it was made (not part of the payload's meaning).
  bool whole_source = false;   // the whole-source mode
  // The highest delta version among the payload's DIFF ops (0: none); a
  // device must decode it (4: references through address maps).
  uint32_t max_delta_version = 0;
  uint64_t region_bytes = 0;   // most target bytes per region
  uint64_t window_bytes = 0;   // streaming: most source bytes per region's window
  unsigned threads = 0;        // region encoders used
  uint64_t planned_bytes = 0;  // estimated peak: fixed parts + most reserved by regions in flight
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
