// The corrupt reads of one addon call, handed to JavaScript on the rejected
// Error as `corruptReads: [{block, layer, detail}]` (layer: index from the
// bottom, -1 for the base), so the library can write the audit trail with
// names it knows.
//
// A view reports a failed check to its handler on the reading thread
// (View::SetCorruptionHandler). A view opened with OpenWatchedView sends
// each report to the collector of the call reading on that thread: the one
// a CorruptReads::Collecting scope names there. So a view that many calls
// read at once (a ViewHandle's) keeps each call's reads apart, and a view
// opened for one call reads the same way.
#ifndef REVPATCH_ADDON_CORRUPT_READS_H_
#define REVPATCH_ADDON_CORRUPT_READS_H_

#include <napi.h>

#include <cstddef>
#include <memory>
#include <mutex>
#include <vector>

#include "args.h"
#include "status.h"
#include "view.h"
#include "worker.h"

namespace revpatch_addon {

class CorruptReads {
 public:
  // A call keeps the first few: one bad block is enough to act on, and a
  // scan of a damaged image must not grow the error without bound.
  static constexpr size_t kMaxKept = 16;

  // While alive, reads on this thread report to `reads` (nullptr: to no one).
  class Collecting {
   public:
    explicit Collecting(CorruptReads* reads);
    ~Collecting();
    Collecting(const Collecting&) = delete;
    Collecting& operator=(const Collecting&) = delete;

   private:
    CorruptReads* previous_;
  };

  void Add(const revpatch::CorruptRead& read);

  // For PromiseWorker::Start: sets `corruptReads` on the rejection's Error
  // when the call collected any.
  static PromiseWorker::Decorate Decorator(std::shared_ptr<CorruptReads> reads);

 private:
  std::mutex mu_;
  std::vector<revpatch::CorruptRead> reads_;
};

// [{block, layer, detail}] (the scrub's badBlocks, the error's corruptReads).
Napi::Array CorruptReadsToArray(Napi::Env env, const std::vector<revpatch::CorruptRead>& reads);

// Opens `spec` with verified reads on or off, its corruption reports going
// to the calling thread's Collecting scope. On a worker thread.
revpatch::Status OpenWatchedView(const ViewSpec& spec, bool verify,
                                 std::unique_ptr<revpatch::View>* out);

}  // namespace revpatch_addon

#endif  // REVPATCH_ADDON_CORRUPT_READS_H_
