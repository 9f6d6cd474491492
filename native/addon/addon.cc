// Node-API glue: argument checks on the main thread, engine calls on a
// worker thread (worker.h), results as plain objects. No logic lives here;
// lib/engine/engine.ts is its only caller and validates first, this backstops.
#include <napi.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "apply.h"
#include "commit_record.h"
#include "export.h"
#include "fault_injection.h"
#include "feed.h"
#include "file_io.h"
#include "generator.h"
#include "layer_file.h"
#include "merkle.h"
#include "scrub.h"
#include "sha256.h"
#include "view.h"
#include "args.h"
#include "corrupt_reads.h"
#include "view_handle.h"
#include "view_read.h"
#include "worker.h"

namespace revpatch_addon {
namespace {

using revpatch::Digest;
using revpatch::ErrorCode;
using revpatch::Status;

uint32_t GetBlockSize(Napi::Env env, Napi::Value value) {
  uint64_t block_size = GetUint(env, value, "blockSize");
  if (block_size > UINT32_MAX || !revpatch::ValidBlockSize(static_cast<uint32_t>(block_size))) {
    ThrowArgument(env, "blockSize must be a power of two from 512 to 1 MiB");
  }
  return static_cast<uint32_t>(block_size);
}

revpatch::ApplyParams GetApplyParams(Napi::Env env, Napi::Value value) {
  Napi::Object object = GetObject(env, value, "params");
  revpatch::ApplyParams params;
  uint64_t fd = GetUint(env, object.Get("fd"), "fd");
  if (fd > INT32_MAX) ThrowArgument(env, "fd out of range");
  params.patch_fd = static_cast<int>(fd);
  params.payload_offset = GetUint(env, object.Get("payloadOffset"), "payloadOffset");
  params.payload_size = GetUint(env, object.Get("payloadSize"), "payloadSize");
  uint64_t chunk_size = GetUint(env, object.Get("chunkSize"), "chunkSize");
  if (chunk_size > UINT32_MAX) ThrowArgument(env, "chunkSize out of range");
  params.chunk_size = static_cast<uint32_t>(chunk_size);
  Napi::Value chunks = object.Get("chunkDigests");
  if (!chunks.IsArray()) ThrowArgument(env, "chunkDigests must be an array");
  Napi::Array array = chunks.As<Napi::Array>();
  params.chunk_digests.reserve(array.Length());
  for (uint32_t i = 0; i < array.Length(); ++i) {
    params.chunk_digests.push_back(GetDigest(env, array.Get(i), "chunkDigests[i]"));
  }
  params.payload_digest = GetDigest(env, object.Get("payloadDigest"), "payloadDigest");
  params.operation_count = GetUint(env, object.Get("operationCount"), "operationCount");
  params.block_size = GetBlockSize(env, object.Get("blockSize"));
  params.target_size = GetUint(env, object.Get("targetSize"), "targetSize");
  params.source_digest = GetDigest(env, object.Get("sourceDigest"), "sourceDigest");
  params.target_digest = GetDigest(env, object.Get("targetDigest"), "targetDigest");
  Napi::Value layer_path = object.Get("layerPath");
  if (!layer_path.IsUndefined()) params.layer_path = GetString(env, layer_path, "layerPath");
  Napi::Value checkpoint_path = object.Get("checkpointPath");
  if (!checkpoint_path.IsUndefined()) {
    params.checkpoint_path = GetString(env, checkpoint_path, "checkpointPath");
  }
  GetFeedWaiter(env, object.Get("feed"), &params.wait_for_bytes);
  Napi::Value background = object.Get("background");
  if (!background.IsUndefined()) {
    if (!background.IsBoolean()) ThrowArgument(env, "background must be a boolean");
    params.background = background.As<Napi::Boolean>().Value();
  }
  Napi::Value interval = object.Get("checkpointIntervalBytes");
  if (!interval.IsUndefined()) {
    params.checkpoint_interval_bytes = GetUint(env, interval, "checkpointIntervalBytes");
  }
  return params;
}

Napi::Value Hex(Napi::Env env, const Digest& digest) {
  return Napi::String::New(env, revpatch::DigestToHex(digest));
}
Napi::Value Num(Napi::Env env, uint64_t value) {
  return Napi::Number::New(env, static_cast<double>(value));
}

const char* const kOperationNames[] = {nullptr, "REPLACE", "REPLACE_BROTLI", "ZERO", "COPY", "DIFF"};

Napi::Object StatsObject(Napi::Env env, const revpatch::PayloadStats& stats) {
  Napi::Object out = Napi::Object::New(env);
  out.Set("operations", Num(env, stats.operations));
  Napi::Object by_type = Napi::Object::New(env);
  for (int type = 1; type <= 5; ++type) {
    Napi::Object entry = Napi::Object::New(env);
    entry.Set("count", Num(env, stats.by_type[type].count));
    entry.Set("targetBlocks", Num(env, stats.by_type[type].target_blocks));
    entry.Set("dataBytes", Num(env, stats.by_type[type].data_bytes));
    by_type.Set(kOperationNames[type], entry);
  }
  out.Set("byType", by_type);
  return out;
}

// hashImage(file, blockSize, treePath) -> {digest, size}
Napi::Value HashImage(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string file = GetString(env, Arg(info, 0), "file");
  uint32_t block_size = GetBlockSize(env, Arg(info, 1));
  std::string tree = GetString(env, Arg(info, 2), "treePath");
  auto out = std::make_shared<std::pair<Digest, uint64_t>>();
  return PromiseWorker::Start(
      env,
      [=](const ProgressFn&) {
        return revpatch::HashImage(file, block_size, tree, &out->first, &out->second);
      },
      [=](Napi::Env env) {
        Napi::Object result = Napi::Object::New(env);
        result.Set("digest", Hex(env, out->first));
        result.Set("size", Num(env, out->second));
        return result;
      });
}

// viewInfo(view) -> {digest, size, blockSize, layerCount}
Napi::Value ViewInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ViewSpec spec = GetViewSpec(env, Arg(info, 0));
  struct Out {
    Digest digest;
    uint64_t size;
    uint32_t block_size;
    size_t layers;
  };
  auto out = std::make_shared<Out>();
  return PromiseWorker::Start(
      env,
      [=](const ProgressFn&) {
        std::unique_ptr<revpatch::View> view;
        REVPATCH_RETURN_IF_ERROR(spec.Open(&view));
        *out = Out{view->digest(), view->size_bytes(), view->block_size(), view->layer_count()};
        return Status::Ok();
      },
      [=](Napi::Env env) {
        Napi::Object result = Napi::Object::New(env);
        result.Set("digest", Hex(env, out->digest));
        result.Set("size", Num(env, out->size));
        result.Set("blockSize", Num(env, out->block_size));
        result.Set("layerCount", Num(env, out->layers));
        return result;
      });
}

// readView(view, offset, length, verify = true) -> Buffer (the bytes are
// handed over, not copied)
Napi::Value ReadView(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ViewSpec spec = GetViewSpec(env, Arg(info, 0));
  uint64_t offset = GetUint(env, Arg(info, 1), "offset");
  uint64_t length = GetReadLength(env, Arg(info, 2));
  bool verify = true;
  if (!Arg(info, 3).IsUndefined()) {
    if (!Arg(info, 3).IsBoolean()) ThrowArgument(env, "verify must be a boolean");
    verify = Arg(info, 3).As<Napi::Boolean>().Value();
  }
  return StartViewRead(
      env,
      [spec, verify](std::shared_ptr<revpatch::View>* out) {
        std::unique_ptr<revpatch::View> view;
        REVPATCH_RETURN_IF_ERROR(OpenWatchedView(spec, verify, &view));
        *out = std::move(view);
        return Status::Ok();
      },
      offset, length);
}

// scrubView(view, maxListed, progress?) -> {blocks, bad, baseBad, layerBad,
// badBlocks: [{block, layer, detail}]}
Napi::Value ScrubView(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ViewSpec spec = GetViewSpec(env, Arg(info, 0));
  uint64_t max_listed = GetUint(env, Arg(info, 1), "maxListed");
  if (max_listed > 100000) ThrowArgument(env, "maxListed must be at most 100000");
  auto out = std::make_shared<revpatch::ScrubResult>();
  return PromiseWorker::Start(
      env,
      [=](const ProgressFn& progress) {
        std::unique_ptr<revpatch::View> view;
        REVPATCH_RETURN_IF_ERROR(spec.Open(&view));
        return revpatch::ScrubView(*view, static_cast<size_t>(max_listed), progress, out.get());
      },
      [=](Napi::Env env) {
        Napi::Object result = Napi::Object::New(env);
        result.Set("blocks", Num(env, out->blocks));
        result.Set("bad", Num(env, out->bad));
        result.Set("baseBad", Num(env, out->base_bad));
        result.Set("layerBad", Num(env, out->layer_bad));
        result.Set("badBlocks", CorruptReadsToArray(env, out->first_bad));
        return result;
      },
      Arg(info, 2));
}

// applyPatch(view, params, progress?) -> {viewDigest, blocksWritten, layerBytes, operations}
Napi::Value ApplyPatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ViewSpec spec = GetViewSpec(env, Arg(info, 0));
  revpatch::ApplyParams params = GetApplyParams(env, Arg(info, 1));
  if (params.layer_path.empty()) ThrowArgument(env, "layerPath is required");
  auto out = std::make_shared<revpatch::ApplyResult>();
  return PromiseWorker::Start(
      env,
      [=](const ProgressFn& progress) {
        std::unique_ptr<revpatch::View> view;
        REVPATCH_RETURN_IF_ERROR(spec.Open(&view));
        return revpatch::ApplyPatch(params, *view, progress, out.get());
      },
      [=](Napi::Env env) {
        Napi::Object result = Napi::Object::New(env);
        result.Set("viewDigest", Hex(env, out->view_digest));
        result.Set("blocksWritten", Num(env, out->blocks_written));
        result.Set("layerBytes", Num(env, out->layer_bytes));
        result.Set("operations", Num(env, out->operations));
        result.Set("resumed", Napi::Boolean::New(env, out->resumed));
        result.Set("resumedFromOperation", Num(env, out->resumed_from_operation));
        result.Set("payloadBytesReadThisRun", Num(env, out->payload_bytes_read_this_run));
        result.Set("blocksWrittenThisRun", Num(env, out->blocks_written_this_run));
        result.Set("lowered", Napi::Boolean::New(env, out->lowered));
        return result;
      },
      Arg(info, 2));
}

// scanPayload(params) -> PayloadStats
Napi::Value ScanPayload(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  revpatch::ApplyParams params = GetApplyParams(env, Arg(info, 0));
  auto out = std::make_shared<revpatch::PayloadStats>();
  return PromiseWorker::Start(
      env, [=](const ProgressFn&) { return revpatch::ScanPayload(params, out.get()); },
      [=](Napi::Env env) { return StatsObject(env, *out); });
}

// generatePayload(source, target, payloadPath,
//                 {blockSize, chunkSize, memoryBudget?, threads?}, progress?)
Napi::Value GeneratePayload(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string source = GetString(env, Arg(info, 0), "source");
  std::string target = GetString(env, Arg(info, 1), "target");
  std::string payload = GetString(env, Arg(info, 2), "payloadPath");
  Napi::Object options_object = GetObject(env, Arg(info, 3), "options");
  revpatch::GenerateOptions options;
  options.block_size = GetBlockSize(env, options_object.Get("blockSize"));
  uint64_t chunk_size = GetUint(env, options_object.Get("chunkSize"), "chunkSize");
  if (chunk_size > UINT32_MAX) ThrowArgument(env, "chunkSize out of range");
  options.chunk_size = static_cast<uint32_t>(chunk_size);
  Napi::Value budget = options_object.Get("memoryBudget");
  if (!budget.IsUndefined()) options.memory_budget = GetUint(env, budget, "memoryBudget");
  Napi::Value threads = options_object.Get("threads");
  if (!threads.IsUndefined()) {
    uint64_t n = GetUint(env, threads, "threads");
    if (n > revpatch::kMaxGeneratorThreads) ThrowArgument(env, "threads out of range");
    options.threads = static_cast<unsigned>(n);
  }
  auto out = std::make_shared<revpatch::GenerateResult>();
  return PromiseWorker::Start(
      env,
      [=](const ProgressFn& progress) {
        return revpatch::GeneratePayload(source, target, payload, options, progress, out.get());
      },
      [=](Napi::Env env) {
        Napi::Object result = Napi::Object::New(env);
        result.Set("sourceSize", Num(env, out->source_size));
        result.Set("targetSize", Num(env, out->target_size));
        result.Set("sourceDigest", Hex(env, out->source_digest));
        result.Set("targetDigest", Hex(env, out->target_digest));
        result.Set("payloadSize", Num(env, out->payload_size));
        result.Set("payloadDigest", Hex(env, out->payload_digest));
        result.Set("wholeSource", Napi::Boolean::New(env, out->whole_source));
        result.Set("maxDeltaVersion", Napi::Number::New(env, out->max_delta_version));
        result.Set("regionBytes", Num(env, out->region_bytes));
        result.Set("windowBytes", Num(env, out->window_bytes));
        result.Set("threads", Num(env, out->threads));
        Napi::Array chunks = Napi::Array::New(env, out->chunk_digests.size());
        for (size_t i = 0; i < out->chunk_digests.size(); ++i) {
          chunks.Set(static_cast<uint32_t>(i), Hex(env, out->chunk_digests[i]));
        }
        result.Set("chunkDigests", chunks);
        result.Set("operationCount", Num(env, out->operation_count));
        result.Set("changedBlocks", Num(env, out->changed_blocks));
        result.Set("stats", StatsObject(env, out->stats));
        return result;
      },
      Arg(info, 4));
}

// exportView(view, out, mode, progress?) -> {reflinked, bytesWritten, size}
Napi::Value ExportView(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ViewSpec spec = GetViewSpec(env, Arg(info, 0));
  std::string out_path = GetString(env, Arg(info, 1), "out");
  std::string mode_name = GetString(env, Arg(info, 2), "mode");
  revpatch::ExportMode mode;
  if (mode_name == "auto") {
    mode = revpatch::ExportMode::kAuto;
  } else if (mode_name == "copy") {
    mode = revpatch::ExportMode::kCopy;
  } else if (mode_name == "reflink") {
    mode = revpatch::ExportMode::kReflink;
  } else {
    ThrowArgument(env, "mode must be auto, copy or reflink");
  }
  auto out = std::make_shared<revpatch::ExportResult>();
  auto corrupt = std::make_shared<CorruptReads>();
  return PromiseWorker::Start(
      env,
      [=](const ProgressFn& progress) {
        std::unique_ptr<revpatch::View> view;
        REVPATCH_RETURN_IF_ERROR(OpenWatchedView(spec, true, &view));
        CorruptReads::Collecting collecting(corrupt.get());
        return revpatch::ExportView(*view, out_path, mode, progress, out.get());
      },
      [=](Napi::Env env) {
        Napi::Object result = Napi::Object::New(env);
        result.Set("reflinked", Napi::Boolean::New(env, out->reflinked));
        result.Set("baseVerified", Napi::Boolean::New(env, out->base_verified));
        result.Set("bytesWritten", Num(env, out->bytes_written));
        result.Set("size", Num(env, out->size_bytes));
        return result;
      },
      Arg(info, 3), CorruptReads::Decorator(corrupt));
}

Napi::Value LayerInfoCall(const Napi::CallbackInfo& info, bool verify) {
  Napi::Env env = info.Env();
  std::string file = GetString(env, Arg(info, 0), "file");
  struct Out {
    uint32_t block_size;
    uint64_t target_size;
    Digest digest;
    uint64_t blocks;
  };
  auto out = std::make_shared<Out>();
  return PromiseWorker::Start(
      env,
      [=](const ProgressFn&) {
        std::unique_ptr<revpatch::LayerReader> layer;
        REVPATCH_RETURN_IF_ERROR(revpatch::LayerReader::Open(file, &layer));
        if (verify) REVPATCH_RETURN_IF_ERROR(layer->Verify());
        *out = Out{layer->block_size(), layer->target_size(), layer->view_digest(),
                   layer->block_entries()};
        return Status::Ok();
      },
      [=](Napi::Env env) {
        Napi::Object result = Napi::Object::New(env);
        result.Set("blockSize", Num(env, out->block_size));
        result.Set("targetSize", Num(env, out->target_size));
        result.Set("viewDigest", Hex(env, out->digest));
        result.Set("blocks", Num(env, out->blocks));
        return result;
      });
}

Napi::Value LayerInfo(const Napi::CallbackInfo& info) { return LayerInfoCall(info, false); }
Napi::Value VerifyLayer(const Napi::CallbackInfo& info) { return LayerInfoCall(info, true); }

Napi::Value IsSealedLayer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string file = GetString(env, Arg(info, 0), "file");
  auto sealed = std::make_shared<bool>(false);
  return PromiseWorker::Start(
      env,
      [=](const ProgressFn&) {
        *sealed = revpatch::IsSealedLayer(file);
        return Status::Ok();
      },
      [=](Napi::Env env) { return Napi::Boolean::New(env, *sealed); });
}

// readCommitRecord(file) -> {generation, body}
Napi::Value ReadCommitRecord(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string file = GetString(env, Arg(info, 0), "file");
  auto out = std::make_shared<revpatch::CommitRecordState>();
  return PromiseWorker::Start(
      env, [=](const ProgressFn&) { return revpatch::ReadCommitRecord(file, out.get()); },
      [=](Napi::Env env) {
        Napi::Object result = Napi::Object::New(env);
        result.Set("generation", Num(env, out->generation));
        result.Set("body", Napi::String::New(env, out->body));
        return result;
      });
}

// writeCommitRecord(file, expectedGeneration, body) -> new generation
Napi::Value WriteCommitRecord(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string file = GetString(env, Arg(info, 0), "file");
  uint64_t expected = GetUint(env, Arg(info, 1), "expectedGeneration");
  std::string body = GetString(env, Arg(info, 2), "body");
  auto generation = std::make_shared<uint64_t>(0);
  return PromiseWorker::Start(
      env,
      [=](const ProgressFn&) {
        return revpatch::WriteCommitRecord(file, expected, body, generation.get());
      },
      [=](Napi::Env env) { return Num(env, *generation); });
}

Napi::Value SyncFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string file = GetString(env, Arg(info, 0), "file");
  return PromiseWorker::Start(
      env,
      [=](const ProgressFn&) {
        revpatch::File handle;
        REVPATCH_RETURN_IF_ERROR(revpatch::File::OpenRead(file, &handle));
        return handle.FullSync();
      },
      [](Napi::Env env) { return env.Undefined(); });
}

Napi::Value SyncDirectory(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string dir = GetString(env, Arg(info, 0), "dir");
  return PromiseWorker::Start(
      env, [=](const ProgressFn&) { return revpatch::SyncDirectory(dir); },
      [](Napi::Env env) { return env.Undefined(); });
}

Napi::Value FreeSpace(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string dir = GetString(env, Arg(info, 0), "dir");
  auto bytes = std::make_shared<uint64_t>(0);
  return PromiseWorker::Start(
      env, [=](const ProgressFn&) { return revpatch::FreeSpace(dir, bytes.get()); },
      [=](Napi::Env env) { return Num(env, *bytes); });
}

// removeFile(path): unlinks (a missing file is fine) and fsyncs the
// directory, so TypeScript deletes layers through the engine's counted I/O.
Napi::Value RemoveFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string file = GetString(env, Arg(info, 0), "file");
  return PromiseWorker::Start(
      env,
      [=](const ProgressFn&) {
        REVPATCH_RETURN_IF_ERROR(revpatch::UnlinkFile(file));
        return revpatch::SyncDirectory(revpatch::DirName(file));
      },
      [](Napi::Env env) { return env.Undefined(); });
}

// ---------------------------------------------------------------- faults
// The fault injector of native/engine/fault_injection.h, for tests. The
// plan is process-wide; these calls are synchronous and touch no file,
// except recoverFromPowerLoss, which rolls files back off the main thread.

// setFaultPlan({mode, failAt, seed})
Napi::Value SetFaultPlan(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object object = GetObject(env, Arg(info, 0), "plan");
  revpatch::FaultPlan plan;
  if (!revpatch::ParseFaultMode(GetString(env, object.Get("mode"), "plan.mode"), &plan.mode)) {
    ThrowArgument(env, "plan.mode must be none, eio, enospc, short-write, power-loss "
                       "or power-loss-torn");
  }
  Napi::Value fail_at = object.Get("failAt");
  if (!fail_at.IsUndefined()) plan.fail_at = GetUint(env, fail_at, "plan.failAt");
  Napi::Value seed = object.Get("seed");
  if (!seed.IsUndefined()) plan.seed = GetUint(env, seed, "plan.seed");
  Status s = revpatch::SetFaultPlan(plan);
  if (!s.ok()) {
    Napi::Error error = Napi::Error::New(env, s.message());
    error.Set("code", Napi::String::New(env, revpatch::ErrorCodeName(s.code())));
    throw error;
  }
  return env.Undefined();
}

Napi::Value ClearFaultPlan(const Napi::CallbackInfo& info) {
  revpatch::ClearFaultPlan();
  return info.Env().Undefined();
}

// faultStatus() -> {calls, triggered, mode, failAt}
Napi::Value FaultStatus(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const revpatch::FaultPlan plan = revpatch::CurrentFaultPlan();
  Napi::Object result = Napi::Object::New(env);
  result.Set("calls", Num(env, revpatch::FaultCallCount()));
  result.Set("triggered", Napi::Boolean::New(env, revpatch::FaultTriggered()));
  result.Set("mode", Napi::String::New(env, revpatch::FaultModeName(plan.mode)));
  result.Set("failAt", Num(env, plan.fail_at));
  return result;
}

Napi::Value RecoverFromPowerLoss(const Napi::CallbackInfo& info) {
  return PromiseWorker::Start(
      info.Env(), [](const ProgressFn&) { return revpatch::RecoverFromPowerLoss(); },
      [](Napi::Env env) { return env.Undefined(); });
}

// REVPATCH_FAULT="mode:N[:seed]" arms a plan once per process, when the
// addon first loads, for integrators' command-line tests. A power cut it
// causes is applied to the disk when the process exits, so the next process
// finds what a device would find after the cut.
void ArmFaultPlanFromEnvironment() {
  static std::once_flag once;
  std::call_once(once, [] {
    const char* spec = std::getenv("REVPATCH_FAULT");
    if (spec == nullptr || *spec == 0) return;
    revpatch::FaultPlan plan;
    Status s = revpatch::ParseFaultPlan(spec, &plan);
    if (s.ok()) s = revpatch::SetFaultPlan(plan);
    if (!s.ok()) {
      std::fprintf(stderr, "revpatch: REVPATCH_FAULT ignored: %s\n", s.message().c_str());
      return;
    }
    if (plan.mode == revpatch::FaultMode::kPowerLoss ||
        plan.mode == revpatch::FaultMode::kPowerLossTorn) {
      std::atexit([] {
        if (revpatch::FaultTriggered()) {
          revpatch::RecoverFromPowerLoss();
        } else {
          revpatch::ClearFaultPlan();  // removes the simulator's backups
        }
      });
    }
  });
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  ArmFaultPlanFromEnvironment();
  RegisterFeed(env, exports);
  RegisterViewHandle(env, exports);
  exports.Set("hashImage", Napi::Function::New(env, HashImage, "hashImage"));
  exports.Set("viewInfo", Napi::Function::New(env, ViewInfo, "viewInfo"));
  exports.Set("readView", Napi::Function::New(env, ReadView, "readView"));
  exports.Set("scrubView", Napi::Function::New(env, ScrubView, "scrubView"));
  exports.Set("applyPatch", Napi::Function::New(env, ApplyPatch, "applyPatch"));
  exports.Set("scanPayload", Napi::Function::New(env, ScanPayload, "scanPayload"));
  exports.Set("generatePayload", Napi::Function::New(env, GeneratePayload, "generatePayload"));
  exports.Set("exportView", Napi::Function::New(env, ExportView, "exportView"));
  exports.Set("layerInfo", Napi::Function::New(env, LayerInfo, "layerInfo"));
  exports.Set("verifyLayer", Napi::Function::New(env, VerifyLayer, "verifyLayer"));
  exports.Set("isSealedLayer", Napi::Function::New(env, IsSealedLayer, "isSealedLayer"));
  exports.Set("readCommitRecord", Napi::Function::New(env, ReadCommitRecord, "readCommitRecord"));
  exports.Set("writeCommitRecord", Napi::Function::New(env, WriteCommitRecord, "writeCommitRecord"));
  exports.Set("syncFile", Napi::Function::New(env, SyncFile, "syncFile"));
  exports.Set("syncDirectory", Napi::Function::New(env, SyncDirectory, "syncDirectory"));
  exports.Set("freeSpace", Napi::Function::New(env, FreeSpace, "freeSpace"));
  exports.Set("removeFile", Napi::Function::New(env, RemoveFile, "removeFile"));
  exports.Set("setFaultPlan", Napi::Function::New(env, SetFaultPlan, "setFaultPlan"));
  exports.Set("clearFaultPlan", Napi::Function::New(env, ClearFaultPlan, "clearFaultPlan"));
  exports.Set("faultStatus", Napi::Function::New(env, FaultStatus, "faultStatus"));
  exports.Set("recoverFromPowerLoss",
              Napi::Function::New(env, RecoverFromPowerLoss, "recoverFromPowerLoss"));
  return exports;
}

}  // namespace
}  // namespace revpatch_addon

static Napi::Object InitRevpatch(Napi::Env env, Napi::Object exports) {
  return revpatch_addon::Init(env, exports);
}

NODE_API_MODULE(revpatch, InitRevpatch)
