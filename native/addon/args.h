// Reading JavaScript arguments on the main thread (the baton's first half):
// each getter checks the value's type and range and throws a TypeError with
// code E_INVALID_ARGUMENT, so a bad argument never reaches a worker. The
// TypeScript layer validates first; these are the backstop (STYLE.md).
#ifndef REVPATCH_ADDON_ARGS_H_
#define REVPATCH_ADDON_ARGS_H_

#include <napi.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "sha256.h"
#include "status.h"
#include "view.h"

namespace revpatch_addon {

[[noreturn]] void ThrowArgument(Napi::Env env, const std::string& message);
std::string GetString(Napi::Env env, Napi::Value value, const char* what);
// A non-negative integer that a double represents exactly (< 2^53).
uint64_t GetUint(Napi::Env env, Napi::Value value, const char* what);
revpatch::Digest GetDigest(Napi::Env env, Napi::Value value, const char* what);
Napi::Object GetObject(Napi::Env env, Napi::Value value, const char* what);
// The i-th argument, or undefined past the last one.
Napi::Value Arg(const Napi::CallbackInfo& info, size_t i);

// A view as JavaScript names it ({base, baseTree, layers}), copied out so a
// worker thread can open it.
struct ViewSpec {
  std::string base;
  std::string base_tree;
  std::vector<std::string> layers;

  revpatch::Status Open(std::unique_ptr<revpatch::View>* out) const {
    return revpatch::View::Open(base, base_tree, layers, out);
  }
};

ViewSpec GetViewSpec(Napi::Env env, Napi::Value value);

}  // namespace revpatch_addon

#endif  // REVPATCH_ADDON_ARGS_H_
