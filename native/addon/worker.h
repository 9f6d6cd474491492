// The baton pattern shared by every async call of the addon.
//
// A call copies its arguments into plain C++ values on the main thread,
// runs `work` on a libuv worker thread (no Node-API there), and resolves the
// promise with `resolve(env)` or rejects it with an Error whose `code` is
// the engine's stable name. An optional JS progress function receives
// (done, total) on the main thread; only the latest value is delivered, so a
// fast engine never floods the event loop.
#ifndef REVPATCH_ADDON_WORKER_H_
#define REVPATCH_ADDON_WORKER_H_

#include <napi.h>

#include <cstdint>
#include <functional>
#include <new>
#include <utility>

#include "status.h"

namespace revpatch_addon {

struct ProgressValue {
  uint64_t done;
  uint64_t total;
};

using ProgressFn = std::function<void(uint64_t, uint64_t)>;

class PromiseWorker : public Napi::AsyncProgressWorker<ProgressValue> {
 public:
  using Work = std::function<revpatch::Status(const ProgressFn&)>;
  using Resolve = std::function<Napi::Value(Napi::Env)>;
  // Adds fields to the rejection's Error (on the main thread), for errors
  // that carry more than a code and a message (the blocks of a corrupt read).
  using Decorate = std::function<void(Napi::Env, Napi::Error&)>;

  // Queues the work and returns the promise.
  static Napi::Value Start(Napi::Env env, Work work, Resolve resolve,
                           Napi::Value progress = Napi::Value(), Decorate decorate = nullptr) {
    auto* worker = new PromiseWorker(env, std::move(work), std::move(resolve));
    worker->decorate_ = std::move(decorate);
    if (!progress.IsEmpty() && progress.IsFunction()) {
      worker->progress_ = Napi::Persistent(progress.As<Napi::Function>());
    }
    Napi::Promise promise = worker->deferred_.Promise();
    worker->Queue();
    return promise;
  }

 protected:
  void Execute(const ExecutionProgress& progress) override {
    ProgressFn report;
    if (!progress_.IsEmpty()) {
      report = [&progress](uint64_t done, uint64_t total) {
        ProgressValue value{done, total};
        progress.Send(&value, 1);
      };
    } else {
      report = [](uint64_t, uint64_t) {};
    }
    try {
      status_ = work_(report);
    } catch (const std::bad_alloc&) {
      status_ = revpatch::Status(revpatch::ErrorCode::kTooLarge, "out of memory");
    } catch (const std::exception& e) {
      status_ = revpatch::Status(revpatch::ErrorCode::kIo, e.what());
    }
    if (!status_.ok()) SetError(status_.message());
  }

  void OnProgress(const ProgressValue* data, size_t count) override {
    if (count == 0 || progress_.IsEmpty()) return;
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    progress_.Call({Napi::Number::New(env, static_cast<double>(data->done)),
                    Napi::Number::New(env, static_cast<double>(data->total))});
  }

  void OnOK() override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    try {
      deferred_.Resolve(resolve_(env));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    }
  }

  void OnError(const Napi::Error&) override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    Napi::Error error = Napi::Error::New(env, status_.message());
    error.Set("code", Napi::String::New(env, revpatch::ErrorCodeName(status_.code())));
    if (decorate_) decorate_(env, error);
    deferred_.Reject(error.Value());
  }

 private:
  PromiseWorker(Napi::Env env, Work work, Resolve resolve)
      : Napi::AsyncProgressWorker<ProgressValue>(env, "revpatch"),
        deferred_(Napi::Promise::Deferred::New(env)),
        work_(std::move(work)),
        resolve_(std::move(resolve)) {}

  Napi::Promise::Deferred deferred_;
  Work work_;
  Resolve resolve_;
  Decorate decorate_;
  Napi::FunctionReference progress_;
  revpatch::Status status_;
};

}  // namespace revpatch_addon

#endif  // REVPATCH_ADDON_WORKER_H_
