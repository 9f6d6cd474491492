// The encoder of DIFF deltas (publisher side only; the device decodes them
// with diff.h, which describes the format).
//
// The encoder is bsdiff's: a suffix array of the old data
// (suffix_array.h) gives, at each new position, the longest exact match;
// a match is taken when it beats the current alignment by more than 8 bytes,
// and the stretch between two taken matches is split into a forward
// extension of the previous one and a backward extension of the next where
// more than half of the bytes agree, so a few changed bytes (a shifted
// address, a bumped constant) stay inside one add as a mostly-zero diff.
// Streams are compressed with Brotli at quality 11 with a window fit to
// them (up to 4 MiB: BrotliWindowBits). DeltaMatcher keeps the suffix array so one source
// serves many targets.
#ifndef REVPATCH_ENGINE_DIFF_ENCODER_H_
#define REVPATCH_ENGINE_DIFF_ENCODER_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "diff.h"
#include "references.h"
#include "status.h"

namespace revpatch {

// Brotli quality and largest window of everything the generator writes
// (BrotliCompress uses a smaller window for a smaller input). 24 bits is
// the largest window every Brotli decoder accepts without opting in.
constexpr int kBrotliQuality = 11;
constexpr int kBrotliWindowBits = 24;

// Quality 10 and 11 (whose match finder costs 8 bytes per window byte)
// use at most this window.
constexpr int kBrotliZopfliWindowBits = 22;

// One-shot compression of `size` bytes into `out` (replaced). Inputs of
// 64 KiB or more go through a quality-1 pass first; when that saves less
// than 1/64, its output is kept (incompressible data costs quality 11 about
// a second per megabyte for nothing).
Status BrotliCompress(const uint8_t* data, size_t size, int quality,
                      std::vector<uint8_t>* out);
// The window BrotliCompress uses for `size` bytes at `quality`: the
// smallest that holds the input, at most kBrotliWindowBits (quality <= 9)
// or kBrotliZopfliWindowBits (10 and 11).
int BrotliWindowBits(uint64_t size, int quality);

// Memory, for a caller that budgets it (e.g. how many regions to encode
// at once): upper bounds of the heap bytes each call allocates, beyond the
// buffers the caller passes in. Checked against measurements in
// diff_encoder_test.
//
// One BrotliCompress call: the encoder and the output.
uint64_t BrotliPeakBytes(uint64_t size, int quality);
// What a DeltaMatcher holds after Init over old_size bytes (suffix array
// 4 bytes per byte, Bloom filter 2, bucket table 256 KiB) and the most it
// holds during Init (the suffix array's construction, about 6.25 bytes per
// byte; a matcher used again frees its last filter first).
uint64_t DeltaMatcherBytes(uint64_t old_size);
uint64_t DeltaMatcherInitPeakBytes(uint64_t old_size);
// One WriteDelta call for new_size bytes in `records` records, with
// references predicted or not: the raw and compressed streams, the
// predicted bytes and two encoders at once (PredictReferences's own tables
// not included). Match itself allocates only the records (24 bytes each).
uint64_t WriteDeltaPeakBytes(uint64_t new_size, uint64_t records, bool predicted);

// The match finder over one old buffer (borrowed; must outlive it).
class DeltaMatcher {
 public:
  // Builds the suffix array (4 bytes per old byte; kTooLarge past 4 GiB)
  // and a Bloom filter of old's 8-byte windows (2 bytes per old byte) that
  // lets probes with no possible match skip the search. Memory:
  // DeltaMatcherBytes, DeltaMatcherInitPeakBytes.
  Status Init(const uint8_t* old_data, size_t old_size);
  // The records that turn old into new, covering all of new in order.
  void Match(const uint8_t* new_data, size_t new_size,
             std::vector<DeltaRecord>* records) const;
  size_t old_size() const { return old_size_; }

 private:
  size_t Search(const uint8_t* needle, size_t length, size_t* position) const;
  // False when no match of 8 bytes or more can start at `needle`.
  bool MayMatch(const uint8_t* needle, size_t length) const;

  const uint8_t* old_ = nullptr;
  size_t old_size_ = 0;
  std::vector<uint32_t> sa_;
  std::vector<uint32_t> buckets_;  // by first two bytes, 65537 slots
  std::vector<uint64_t> grams_;    // Bloom filter of old's 8-byte windows
};

// Serializes `records` (which must cover new exactly, adds inside old) as a
// delta, compressing its three streams: version 3 (4 when the info is of
// version 4) when `references` has spans (the buffers laid out in their
// views by `layout`, null for the views themselves), else version 2. kTooLarge past kMaxPredictedRecords
// records with references.
Status WriteDelta(const uint8_t* old_data, size_t old_size, const uint8_t* new_data,
                  size_t new_size, const std::vector<DeltaRecord>& records,
                  std::vector<uint8_t>* out, const ReferenceInfo* references = nullptr,
                  const DeltaLayout* layout = nullptr);

// Writes a delta that turns `old_data` into `new_data` into `out` (replaced).
Status EncodeDiff(const uint8_t* old_data, size_t old_size,
                  const uint8_t* new_data, size_t new_size,
                  std::vector<uint8_t>* out);
inline Status EncodeDiff(const std::vector<uint8_t>& old_data,
                         const std::vector<uint8_t>& new_data,
                         std::vector<uint8_t>* out) {
  return EncodeDiff(old_data.data(), old_data.size(), new_data.data(),
                    new_data.size(), out);
}

}  // namespace revpatch

#endif  // REVPATCH_ENGINE_DIFF_ENCODER_H_
