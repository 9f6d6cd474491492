// The suffix array of a byte string, for the delta encoder's match finder
// (publisher side only; the device never builds one).
//
// SA-IS (Nong, Zhang and Chan, "Two Efficient Algorithms for Linear Time
// Suffix Array Construction", 2011): induced sorting of the LMS substrings,
// recursion on their names when two are equal, then one more induced sort.
// Linear time; memory is the array itself (4 bytes per input byte, 32-bit
// indices), a type bit per byte, one bucket table of the alphabet size and,
// for the recursion, the reduced string's type bits and buckets (the reduced
// string and its suffix array live in the output array; a level's tables
// are freed while it recurses). At most about 6.25 bytes per input byte
// beyond the input, in practice 4.2-4.7 (DeltaMatcherInitPeakBytes).
//
// The induction scans read the text and type bits at random: they fetch a
// few slots ahead, and the array asks for transparent huge pages
// (huge_pages.h).
//
// The end of the string is a virtual sentinel smaller than every byte, so
// a suffix that is a prefix of another sorts first, as std::lexicographical
// compare would order them.
#ifndef REVPATCH_ENGINE_SUFFIX_ARRAY_H_
#define REVPATCH_ENGINE_SUFFIX_ARRAY_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "status.h"

namespace revpatch {

// Inputs at or above this size need 64-bit indices; refused (kTooLarge).
constexpr uint64_t kMaxSuffixArrayInput = uint64_t{0xFFFFFFFF} - 1;

// Fills `sa` with the n start positions of the suffixes of `text` in
// lexicographic order. kTooLarge past kMaxSuffixArrayInput or when memory
// runs out.
Status BuildSuffixArray(const uint8_t* text, size_t n, std::vector<uint32_t>* sa);

}  // namespace revpatch

#endif  // REVPATCH_ENGINE_SUFFIX_ARRAY_H_
