// Writes version 5 stream deltas (stream_delta.h) on the publisher side.
#ifndef REVPATCH_GENERATOR_STREAM_DELTA_ENCODER_H_
#define REVPATCH_GENERATOR_STREAM_DELTA_ENCODER_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "status.h"
#include "stream_delta.h"
#include "stream_scan.h"

namespace revpatch {

// The stream delta from old to new through the given streams (offsets in
// their buffers, sorted, disjoint; the new ones with recipes that rebuild
// them, FindZstdStreams). The inner delta is matched over the expanded old
// whole; where an expansion starts with an executable (FindExecutableSpans
// on the expansion, at `block_size` boundaries of it), it is also written
// with references predicted and the smaller kept. kTooLarge when an
// expanded buffer passes kMaxExpandedBytes; kCorrupt when a stream does not
// expand.
Status WriteStreamDelta(const uint8_t* old_data, size_t old_size,
                        const std::vector<FoundStream>& old_streams, const uint8_t* new_data,
                        size_t new_size, const std::vector<FoundStream>& new_streams,
                        uint32_t block_size, std::vector<uint8_t>* out);

// Peak memory of one WriteStreamDelta call with the expanded sizes given:
// both expansions, the matcher over the old one, the records and the
// inner deltas.
uint64_t StreamDeltaPeakBytes(uint64_t expanded_old, uint64_t expanded_new);

// What a delta (of any version) needs from the device: its version (and
// for version 5 its inner delta's), and the libzstd versions its zstd
// recipes name and whether it has deflate streams. Adds to what is given,
// so one call per op accumulates a payload's needs. Ignores what it
// cannot parse (the caller wrote it).
struct DeltaNeeds {
  std::vector<uint32_t> versions;       // delta versions; sorted, unique
  std::vector<uint32_t> zstd_versions;  // sorted, unique
  bool deflate = false;
};
void AddDeltaNeeds(const uint8_t* delta, size_t size, uint64_t old_size, uint64_t new_size,
                   DeltaNeeds* needs);

}  // namespace revpatch

#endif  // REVPATCH_GENERATOR_STREAM_DELTA_ENCODER_H_
