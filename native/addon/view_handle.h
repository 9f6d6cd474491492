// An open view for many reads: `new ViewHandle()`, `await open(view,
// verify)`, then `read(offset, length)` as often as needed (concurrent
// reads run on worker threads at once: View's reads are thread-safe), and
// `close()`. Opening a view reads its layers' indexes and, on the first
// base read, the base tree's upper level; a handle pays that once and keeps
// the verified groups of the tree cached, as a long-lived reader (an NBD
// server, a benchmark) does. readView opens a view per call.
//
// A read that fails its check rejects with E_CORRUPT and `corruptReads`,
// as readView does; close() lets reads in flight finish on their own
// reference to the view.
#ifndef REVPATCH_ADDON_VIEW_HANDLE_H_
#define REVPATCH_ADDON_VIEW_HANDLE_H_

#include <napi.h>

namespace revpatch_addon {

// Adds the ViewHandle class to the addon's exports.
void RegisterViewHandle(Napi::Env env, Napi::Object exports);

}  // namespace revpatch_addon

#endif  // REVPATCH_ADDON_VIEW_HANDLE_H_
