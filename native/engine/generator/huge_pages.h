// Transparent huge pages for the encoder's large arrays (publisher side).
//
// The suffix array and the Bloom filter of a large source are hundreds of
// megabytes touched at random: with 4 KiB pages nearly every access misses
// the TLB, and the first touch of each page faults. Where the kernel grants
// huge pages only on request (Linux's THP "madvise" mode, the usual default),
// asking for them on a block not yet touched halves the time of those
// scans. Elsewhere the call does nothing; memory use is the same either way.
#ifndef REVPATCH_ENGINE_GENERATOR_HUGE_PAGES_H_
#define REVPATCH_ENGINE_GENERATOR_HUGE_PAGES_H_

#include <cstddef>

namespace revpatch {

// Advises huge pages for the whole 2 MiB pages inside [data, data + size).
// Call before the memory is first written. A hint: never fails.
void AdviseHugePages(void* data, size_t size);

}  // namespace revpatch

#endif  // REVPATCH_ENGINE_GENERATOR_HUGE_PAGES_H_
