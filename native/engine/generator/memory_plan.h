// Upper estimates of the publisher memory the generator's parts take, so it
// can choose its mode, region size and matching window to keep the whole
// run inside GenerateOptions::memory_budget (generator.h).
//
// The estimates follow the code they describe: the suffix array and Bloom
// filter of DeltaMatcher (diff_encoder.h), the streams WriteDelta builds and
// the Brotli quality-11 encoder (a hash tree of 8 bytes per window byte, a
// ring buffer of the window, and buffers in proportion to the input, as
// measured with libbrotlienc 1.0/1.1).
#ifndef REVPATCH_ENGINE_GENERATOR_MEMORY_PLAN_H_
#define REVPATCH_ENGINE_GENERATOR_MEMORY_PLAN_H_

#include <cstdint>

namespace revpatch {

// One Brotli compression (BrotliCompress) of `n` bytes, its output included.
uint64_t BrotliPeakBytes(uint64_t n);
// A DeltaMatcher over `n` old bytes, the old bytes themselves included, at
// the peak of its construction.
uint64_t MatcherPeakBytes(uint64_t n);
// WriteDelta of a target of `n` bytes: its streams, their compression (two
// at once) and the delta it returns; `predicted`: the delta with references
// predicted is written too and both held.
uint64_t WriteDeltaPeakBytes(uint64_t n, bool predicted);

}  // namespace revpatch

#endif  // REVPATCH_ENGINE_GENERATOR_MEMORY_PLAN_H_
