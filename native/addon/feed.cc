#include "feed.h"

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>

namespace revpatch_addon {
namespace {

using revpatch::ErrorCode;
using revpatch::Status;

struct FeedState {
  std::mutex mutex;
  std::condition_variable changed;
  uint64_t available = 0;
  bool ended = false;
  bool failed = false;
  std::string failure;

  Status WaitFor(uint64_t end) {
    std::unique_lock<std::mutex> lock(mutex);
    changed.wait(lock, [&] { return available >= end || ended || failed; });
    if (failed) return Status(ErrorCode::kIo, "streaming install: " + failure);
    if (available < end) {
      return Status(ErrorCode::kCorrupt, "streaming install: the patch file ended at " +
                                             std::to_string(available) + " bytes, " +
                                             std::to_string(end) + " needed");
    }
    return Status::Ok();
  }

  void Update(uint64_t bytes, bool end, const std::string* fail) {
    {
      std::lock_guard<std::mutex> lock(mutex);
      if (bytes > available) available = bytes;
      if (end) ended = true;
      if (fail && !failed && !ended) {
        failed = true;
        failure = *fail;
      }
    }
    changed.notify_all();
  }
};

class Feed : public Napi::ObjectWrap<Feed> {
 public:
  explicit Feed(const Napi::CallbackInfo& info)
      : Napi::ObjectWrap<Feed>(info), state_(std::make_shared<FeedState>()) {}

  ~Feed() override {
    // A feed nobody can supply any more must not leave an apply waiting.
    std::string why = "the feed was released before the download ended";
    state_->Update(0, false, &why);
  }

  std::shared_ptr<FeedState> state() const { return state_; }

 private:
  friend void revpatch_addon::RegisterFeed(Napi::Env, Napi::Object);

  Napi::Value Supply(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsNumber()) ThrowArgument(env, "supply(bytes): bytes must be a number");
    double bytes = info[0].As<Napi::Number>().DoubleValue();
    if (!(bytes >= 0) || bytes > 9007199254740991.0) ThrowArgument(env, "supply(bytes): out of range");
    state_->Update(static_cast<uint64_t>(bytes), false, nullptr);
    return env.Undefined();
  }

  Napi::Value End(const Napi::CallbackInfo& info) {
    state_->Update(0, true, nullptr);
    return info.Env().Undefined();
  }

  Napi::Value Fail(const Napi::CallbackInfo& info) {
    std::string why = info.Length() > 0 && info[0].IsString() ? info[0].As<Napi::String>().Utf8Value()
                                                              : std::string("the download failed");
    state_->Update(0, false, &why);
    return info.Env().Undefined();
  }

  Napi::Value Available(const Napi::CallbackInfo& info) {
    std::lock_guard<std::mutex> lock(state_->mutex);
    return Napi::Number::New(info.Env(), static_cast<double>(state_->available));
  }

  [[noreturn]] static void ThrowArgument(Napi::Env env, const std::string& message) {
    Napi::Error error = Napi::TypeError::New(env, message);
    error.Set("code", Napi::String::New(env, "E_INVALID_ARGUMENT"));
    throw error;
  }

  std::shared_ptr<FeedState> state_;
};

}  // namespace

void RegisterFeed(Napi::Env env, Napi::Object exports) {
  Napi::Function ctor = Feed::DefineClass(env, "Feed",
                                          {
                                              Feed::InstanceMethod("supply", &Feed::Supply),
                                              Feed::InstanceMethod("end", &Feed::End),
                                              Feed::InstanceMethod("fail", &Feed::Fail),
                                              Feed::InstanceAccessor("available", &Feed::Available, nullptr),
                                          });
  // One reference per environment, released with it.
  auto* reference = new Napi::FunctionReference(Napi::Persistent(ctor));
  env.SetInstanceData<Napi::FunctionReference>(reference);
  exports.Set("Feed", ctor);
}

bool GetFeedWaiter(Napi::Env env, Napi::Value value, std::function<revpatch::Status(uint64_t end)>* wait) {
  if (value.IsUndefined()) return false;
  Napi::FunctionReference* ctor = env.GetInstanceData<Napi::FunctionReference>();
  if (!value.IsObject() || ctor == nullptr || !value.As<Napi::Object>().InstanceOf(ctor->Value())) {
    Napi::Error error = Napi::TypeError::New(env, "feed must be a Feed");
    error.Set("code", Napi::String::New(env, "E_INVALID_ARGUMENT"));
    throw error;
  }
  std::shared_ptr<FeedState> state = Feed::Unwrap(value.As<Napi::Object>())->state();
  *wait = [state](uint64_t end) { return state->WaitFor(end); };
  return true;
}

}  // namespace revpatch_addon
