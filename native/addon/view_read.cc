#include "view_read.h"

#include <utility>
#include <vector>

#include "args.h"
#include "corrupt_reads.h"
#include "worker.h"

namespace revpatch_addon {

uint64_t GetReadLength(Napi::Env env, Napi::Value value) {
  const uint64_t length = GetUint(env, value, "length");
  if (length > (1ull << 30)) ThrowArgument(env, "length must be at most 1 GiB");
  return length;
}

Napi::Value StartViewRead(Napi::Env env, ViewSource source, uint64_t offset, uint64_t length) {
  auto data = std::make_shared<std::unique_ptr<std::vector<uint8_t>>>();
  auto corrupt = std::make_shared<CorruptReads>();
  return PromiseWorker::Start(
      env,
      [=](const ProgressFn&) {
        std::shared_ptr<revpatch::View> view;
        REVPATCH_RETURN_IF_ERROR(source(&view));
        const uint64_t size = view->size_bytes();
        const uint64_t end =
            offset >= size ? offset : (length > size - offset ? size : offset + length);
        *data = std::make_unique<std::vector<uint8_t>>(end - offset);
        std::vector<uint8_t>* bytes = data->get();
        if (bytes->empty()) return revpatch::Status::Ok();
        CorruptReads::Collecting collecting(corrupt.get());
        return view->ReadBytes(offset, bytes->size(), bytes->data());
      },
      [=](Napi::Env env) -> Napi::Value {
        if ((*data)->empty()) return Napi::Buffer<uint8_t>::New(env, 0);
        std::vector<uint8_t>* bytes = data->release();
        return Napi::Buffer<uint8_t>::New(
            env, bytes->data(), bytes->size(),
            [](Napi::Env, uint8_t*, std::vector<uint8_t>* owner) { delete owner; }, bytes);
      },
      Napi::Value(), CorruptReads::Decorator(corrupt));
}

}  // namespace revpatch_addon
