// One read of a view as JavaScript sees it, shared by readView (a view
// opened for the call) and ViewHandle.read (a view opened once): bytes
// [offset, offset + length) clamped to the view's size, read on a worker
// thread, resolved as a Buffer that owns them (handed over, not copied).
// A read that fails its check rejects with E_CORRUPT and `corruptReads`
// (corrupt_reads.h).
#ifndef REVPATCH_ADDON_VIEW_READ_H_
#define REVPATCH_ADDON_VIEW_READ_H_

#include <napi.h>

#include <cstdint>
#include <functional>
#include <memory>

#include "status.h"
#include "view.h"

namespace revpatch_addon {

// The view to read, on the worker thread; opened with OpenWatchedView.
using ViewSource = std::function<revpatch::Status(std::shared_ptr<revpatch::View>*)>;

// A read's `length` argument: at most 1 GiB, else E_INVALID_ARGUMENT.
uint64_t GetReadLength(Napi::Env env, Napi::Value value);

// Returns the promise of the read's Buffer.
Napi::Value StartViewRead(Napi::Env env, ViewSource source, uint64_t offset, uint64_t length);

}  // namespace revpatch_addon

#endif  // REVPATCH_ADDON_VIEW_READ_H_
