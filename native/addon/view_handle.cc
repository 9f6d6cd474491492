#include "view_handle.h"

#include <memory>
#include <mutex>
#include <string>

#include "args.h"
#include "corrupt_reads.h"
#include "view.h"
#include "view_read.h"
#include "worker.h"

namespace revpatch_addon {
namespace {

using revpatch::Status;

struct HandleState {
  std::mutex mutex;
  std::shared_ptr<revpatch::View> view;
};

class ViewHandle : public Napi::ObjectWrap<ViewHandle> {
 public:
  explicit ViewHandle(const Napi::CallbackInfo& info)
      : Napi::ObjectWrap<ViewHandle>(info), state_(std::make_shared<HandleState>()) {}

  // open(view, verify) -> Promise<void>
  Napi::Value Open(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const ViewSpec spec = GetViewSpec(env, Arg(info, 0));
    bool verify = true;
    if (info.Length() > 1 && !info[1].IsUndefined()) {
      if (!info[1].IsBoolean()) ThrowArgument(env, "verify must be a boolean");
      verify = info[1].As<Napi::Boolean>().Value();
    }
    std::shared_ptr<HandleState> state = state_;
    return PromiseWorker::Start(
        env,
        [=](const ProgressFn&) {
          std::unique_ptr<revpatch::View> view;
          REVPATCH_RETURN_IF_ERROR(OpenWatchedView(spec, verify, &view));
          std::lock_guard<std::mutex> lock(state->mutex);
          state->view = std::move(view);
          return Status::Ok();
        },
        [](Napi::Env env) { return env.Undefined(); });
  }

  // read(offset, length) -> Promise<Buffer>
  Napi::Value Read(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint64_t offset = GetUint(env, Arg(info, 0), "offset");
    uint64_t length = GetReadLength(env, Arg(info, 1));
    std::shared_ptr<revpatch::View> view;
    {
      std::lock_guard<std::mutex> lock(state_->mutex);
      view = state_->view;
    }
    if (!view) ThrowArgument(env, "the view is not open (or was closed)");
    return StartViewRead(
        env,
        [view](std::shared_ptr<revpatch::View>* out) {
          *out = view;
          return Status::Ok();
        },
        offset, length);
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    std::lock_guard<std::mutex> lock(state_->mutex);
    state_->view.reset();
    return info.Env().Undefined();
  }

 private:
  std::shared_ptr<HandleState> state_;
};

}  // namespace

void RegisterViewHandle(Napi::Env env, Napi::Object exports) {
  exports.Set("ViewHandle", ViewHandle::DefineClass(env, "ViewHandle",
                                                    {
                                                        ViewHandle::InstanceMethod("open", &ViewHandle::Open),
                                                        ViewHandle::InstanceMethod("read", &ViewHandle::Read),
                                                        ViewHandle::InstanceMethod("close", &ViewHandle::Close),
                                                    }));
}

}  // namespace revpatch_addon
