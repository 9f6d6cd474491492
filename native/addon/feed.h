// The streaming-install feed: how JavaScript tells an apply running on a
// worker thread how much of a patch file that is still downloading is
// written. JS makes a `new Feed()`, passes it as `params.feed` to
// applyPatch, and calls feed.supply(bytesWritten) as the download goes,
// then feed.end() (the file is complete) or feed.fail(message) (the
// download failed: the apply stops with E_IO and, as every failed apply,
// removes its unfinished layer and checkpoint; the partial download is what
// a later attempt resumes).
//
// The engine side is ApplyParams::wait_for_bytes (payload_reader.h): it
// blocks the worker thread on a condition variable until the requested end
// offset is supplied. The state is shared, so the apply keeps working if the
// JS object is collected; a collected feed that never ended fails the wait.
#ifndef REVPATCH_ADDON_FEED_H_
#define REVPATCH_ADDON_FEED_H_

#include <napi.h>

#include <cstdint>
#include <functional>

#include "status.h"

namespace revpatch_addon {

// Adds the Feed class to the addon's exports.
void RegisterFeed(Napi::Env env, Napi::Object exports);

// If `value` is a Feed, sets `*wait` to wait on it and returns true; returns
// false for undefined; throws a TypeError (E_INVALID_ARGUMENT) otherwise.
bool GetFeedWaiter(Napi::Env env, Napi::Value value,
                   std::function<revpatch::Status(uint64_t end)>* wait);

}  // namespace revpatch_addon

#endif  // REVPATCH_ADDON_FEED_H_
