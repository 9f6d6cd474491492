// Background installs: the engine threads doing an install lower their own
// CPU and I/O priority, so the device's foreground work goes first.
//
// Why per thread: the apply runs on threads the engine owns or borrows (a
// libuv pool thread in the addon); the rest of the process (the agent's
// event loop, its HTTP download) keeps its priority. A lowered nice value
// cannot be raised back without privilege, so a borrowed thread is never
// lowered: RunLowered() runs the work on a thread of its own, which ends
// with it. Threads a lowered thread starts (read-ahead, checkpoint saver)
// lower themselves too, through InheritedPriority.
//
// What "lowered" means:
//   - Linux: nice 19 for the thread (setpriority(PRIO_PROCESS, tid)) and the
//     idle I/O class (ioprio_set(IOPRIO_WHO_PROCESS, tid, IOPRIO_CLASS_IDLE)).
//     The I/O class is honoured by the BFQ scheduler only; under
//     mq-deadline or none it is kept but has no effect. (Pacing the layer
//     writeback on a lowered thread, sync_file_range and a wait, was
//     measured and did not help the foreground measurably: bench/RESULTS.md,
//     "Background etiquette".)
//   - macOS: setiopolicy_np(IOPOL_TYPE_DISK, IOPOL_SCOPE_THREAD,
//     IOPOL_THROTTLE) and the QOS_CLASS_BACKGROUND class.
//   - elsewhere: nothing (kUnsupported).
// Lowering is best effort for the install: a failure is reported in the
// result, never a reason to stop patching.
#ifndef REVPATCH_ENGINE_PRIORITY_H_
#define REVPATCH_ENGINE_PRIORITY_H_

#include <functional>

#include "status.h"

namespace revpatch {

// Lowers the calling thread as above; remembers that it did
// (CurrentThreadLowered).
Status LowerCurrentThread();

// Whether the calling thread was lowered by LowerCurrentThread().
bool CurrentThreadLowered();

// Runs `work` on a new thread that lowers itself first, and waits for it.
// `lowered` (may be null) tells whether the lowering succeeded. If no thread
// can be started the work runs here, unlowered.
Status RunLowered(const std::function<Status()>& work, bool* lowered);

// The calling thread's priority as the OS reports it, for tests and
// diagnostics: its nice value (on macOS the process's), and on Linux its
// I/O class (0 none, 1 realtime, 2 best effort, 3 idle; -1 elsewhere).
struct ThreadPriority {
  int nice = 0;
  int io_class = -1;
};
Status ReadCurrentThreadPriority(ThreadPriority* out);

// Captured on a thread that is about to start another; Apply() on the new
// thread lowers it if the starting thread was lowered.
class InheritedPriority {
 public:
  InheritedPriority() : lowered_(CurrentThreadLowered()) {}
  void Apply() const {
    if (lowered_) (void)LowerCurrentThread();
  }

 private:
  bool lowered_;
};

}  // namespace revpatch

#endif  // REVPATCH_ENGINE_PRIORITY_H_
