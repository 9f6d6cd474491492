#include "corrupt_reads.h"

#include <utility>

namespace revpatch_addon {
namespace {

// The collector of the call reading on this thread.
thread_local CorruptReads* current = nullptr;

}  // namespace

CorruptReads::Collecting::Collecting(CorruptReads* reads) : previous_(current) { current = reads; }

CorruptReads::Collecting::~Collecting() { current = previous_; }

void CorruptReads::Add(const revpatch::CorruptRead& read) {
  std::lock_guard<std::mutex> lock(mu_);
  if (reads_.size() < kMaxKept) reads_.push_back(read);
}

PromiseWorker::Decorate CorruptReads::Decorator(std::shared_ptr<CorruptReads> reads) {
  return [reads](Napi::Env env, Napi::Error& error) {
    std::lock_guard<std::mutex> lock(reads->mu_);
    if (!reads->reads_.empty()) error.Set("corruptReads", CorruptReadsToArray(env, reads->reads_));
  };
}

Napi::Array CorruptReadsToArray(Napi::Env env, const std::vector<revpatch::CorruptRead>& reads) {
  Napi::Array array = Napi::Array::New(env, reads.size());
  for (size_t i = 0; i < reads.size(); ++i) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("block", Napi::Number::New(env, static_cast<double>(reads[i].block)));
    o.Set("layer", Napi::Number::New(env, reads[i].layer));
    o.Set("detail", Napi::String::New(env, reads[i].detail));
    array.Set(static_cast<uint32_t>(i), o);
  }
  return array;
}

revpatch::Status OpenWatchedView(const ViewSpec& spec, bool verify,
                                 std::unique_ptr<revpatch::View>* out) {
  std::unique_ptr<revpatch::View> view;
  REVPATCH_RETURN_IF_ERROR(spec.Open(&view));
  view->SetVerifyReads(verify);
  view->SetCorruptionHandler([](const revpatch::CorruptRead& read) {
    if (current != nullptr) current->Add(read);
  });
  *out = std::move(view);
  return revpatch::Status::Ok();
}

}  // namespace revpatch_addon
