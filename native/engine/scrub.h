// Scrub: every block of a view read and checked against its leaf, the
// whole view, without stopping at the first bad block (`revpatch verify`).
//
// Why: a verified read checks only what is read. A reflink export clones
// the base without reading it, and a block nobody reads may rot unseen;
// the scrub reads them all, so "clean" means every block of the view
// matches the tree whose digest the device reports.
#ifndef REVPATCH_ENGINE_SCRUB_H_
#define REVPATCH_ENGINE_SCRUB_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "status.h"
#include "view.h"

namespace revpatch {

struct ScrubResult {
  uint64_t blocks = 0;      // blocks checked (the view's block count)
  uint64_t bad = 0;         // blocks that failed their check
  uint64_t base_bad = 0;    // of which from the base
  uint64_t layer_bad = 0;   // of which from a layer
  std::vector<CorruptRead> first_bad;  // the first `max_listed`, by block
};

// Reads the view in large sequential chunks with verification on (whatever
// view.verify_reads() says), calling progress(done_blocks, total_blocks)
// now and then from the calling thread. An I/O error stops it; bad blocks
// do not. The view's corruption handler hears of every bad block.
Status ScrubView(View& view, size_t max_listed,
                 const std::function<void(uint64_t, uint64_t)>& progress,
                 ScrubResult* result);

}  // namespace revpatch

#endif  // REVPATCH_ENGINE_SCRUB_H_
