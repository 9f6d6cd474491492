// payload_fuzzer: ScanPayload and ApplyPatch on a fuzzed payload, framed
// the way a patch file frames it, over a small fixed volume.
//
// The payload's chunk digests are computed here, so every
// input gets past PayloadReader's hash checks into the record parser and
// the executors, which is where hostile bytes would do harm. (In a real
// patch these digests come from the signed manifest; nothing is parsed
// before they check.) With the fix-up flag the harness also rewrites every
// record's source and target hashes to the ones its own model computes, so
// the executors' work is reached and the written layer can be compared.
//
// Input: u8 flags, u16 operation count, u32 target size (taken modulo
// twice the volume's size, plus one), u8 stop (used with bit 5), then the
// payload.
//   flags bit 0: fix up each record's src_hash/dst_hash from the model
//         bit 1: the 4096-byte-block volume (else 512-byte blocks)
//         bit 2: the payload sits behind a prefix and before trailing bytes
//         bit 3: pass a wrong target digest
//         bit 4: pass a wrong source digest
//         bit 5: crash and resume: a first apply with checkpoints after
//                every operation stops as a crash would before operation
//                `stop` (the u8 after the target size, modulo the count + 1);
//                a second apply with the same params must then resume and
//                end exactly as one uninterrupted apply
//
// The model walks the records as the contract says an apply does: decode,
// validate against the volume, claim the targets, produce the target bytes
// from the volume's bytes, and write them into a copy of the view. Checks:
//  - ApplyPatch succeeds exactly when the model says it must (every record
//    valid and producing bytes with the record's hashes (the target hash
//    of the types that compute their target), the payload fully consumed,
//    the digests right), and then the new view reads exactly the
//    model's bytes and has the model's digest, and the layer verifies;
//  - a failed apply leaves no layer file; its code is one of the codes a
//    bad payload may give;
//  - ScanPayload accepts whatever ApplyPatch accepts, counting the same
//    operations;
//  - progress never goes past the total, nor backwards but to 0 when a
//    resumed apply starts over;
//  - interrupted and resumed: the first apply stops exactly when every
//    operation before `stop` is good, leaving its layer for the second,
//    which reports that it resumed from `stop` and gives the same result
//    (and on failure leaves neither layer nor checkpoint).
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "apply.h"
#include "diff.h"
#include "fuzz_input.h"
#include "fuzz_support.h"
#include "fuzz_targets.h"
#include "layer_file.h"
#include "operation.h"
#include "payload_reader.h"
#include "view.h"

namespace revpatch_fuzz {
namespace {

using revpatch::Digest;
using revpatch::ErrorCode;
using revpatch::Extent;
using revpatch::Operation;
using revpatch::OperationType;
using revpatch::Status;

constexpr uint32_t kChunkSize = revpatch::kMinChunkSize;
constexpr size_t kPrefix = 1000;
constexpr size_t kTrailer = 37;
constexpr size_t kSrcHashOffset = 24;
constexpr size_t kDstHashOffset = 56;

struct Prediction {
  bool apply_ok = true;   // every record executes and the payload is consumed
  Bytes image;            // the target view, whole blocks
  uint64_t operations = 0;  // records that execute, before the first that fails
};

// Produces the target bytes of a validated `op` from the volume's bytes.
bool Produce(const Operation& op, const uint8_t* data, const Bytes& below, uint32_t bs,
             Bytes* source, Bytes* target) {
  source->clear();
  for (const Extent& e : op.src_extents) {
    source->insert(source->end(), below.begin() + e.start_block * bs,
                   below.begin() + (e.start_block + e.num_blocks) * bs);
  }
  uint64_t blocks = 0;
  revpatch::TotalBlocks(op.dst_extents, &blocks);
  target->assign(blocks * bs, 0);
  const size_t length = static_cast<size_t>(op.data_length);
  switch (op.type) {
    case OperationType::kReplace:
      std::copy(data, data + length, target->begin());
      return true;
    case OperationType::kReplaceBrotli:
      return revpatch::BrotliDecompressExact(data, length, target->data(), target->size()).ok();
    case OperationType::kZero:
      return true;
    case OperationType::kCopy:
      *target = *source;
      return true;
    case OperationType::kDiff:
      return revpatch::DecodeDiff(source->data(), source->size(), data, length, target->data(),
                                  target->size())
          .ok();
  }
  return false;
}

// The types whose target the executor hashes before writing; a raw REPLACE
// (its data) and a ZERO are left to the view digest (executor.h).
bool Computed(OperationType type) {
  return type != OperationType::kReplace && type != OperationType::kZero;
}

// Walks the records, rewriting their hashes in `payload` when `fix_up`.
Prediction Predict(Bytes* payload, uint64_t operation_count, const Volume& volume,
                   uint64_t target_size, bool fix_up) {
  const uint32_t bs = volume.block_size;
  const uint64_t target_blocks = revpatch::BlockCount(target_size, bs);
  Prediction p;
  p.image = volume.image;
  p.image.resize(target_blocks * bs, 0);
  revpatch::TargetCoverage coverage;
  Bytes source, target;
  size_t pos = 0;
  for (; p.operations < operation_count; ++p.operations) {
    uint8_t* record = payload->data() + pos;
    const size_t left = payload->size() - pos;
    Operation op;
    size_t consumed = 0;
    if (!revpatch::DecodeOperation(record, left, &op, &consumed).ok() ||
        op.data_length > left - consumed ||
        !revpatch::ValidateOperation(op, bs, volume.blocks(), target_blocks).ok() ||
        !coverage.Claim(op.dst_extents).ok() ||
        !Produce(op, record + consumed, volume.image, bs, &source, &target)) {
      p.apply_ok = false;
      return p;
    }
    Digest src_hash{};
    if (!source.empty()) src_hash = revpatch::Sha256::Hash(source.data(), source.size());
    const Digest dst_hash = revpatch::Sha256::Hash(target.data(), target.size());
    if (fix_up) {
      std::memcpy(record + kSrcHashOffset, src_hash.data(), 32);
      std::memcpy(record + kDstHashOffset, dst_hash.data(), 32);
    } else if (op.src_hash != src_hash ||
               (Computed(op.type) && op.dst_hash != dst_hash)) {
      p.apply_ok = false;
      return p;
    }
    const uint8_t* t = target.data();
    for (const Extent& e : op.dst_extents) {
      std::copy(t, t + e.num_blocks * bs, p.image.begin() + e.start_block * bs);
      t += e.num_blocks * bs;
    }
    pos += consumed + static_cast<size_t>(op.data_length);
  }
  if (pos != payload->size()) p.apply_ok = false;
  // The view's last block reads as zeros past the target size.
  std::fill(p.image.begin() + std::min<uint64_t>(target_size, p.image.size()), p.image.end(), 0);
  return p;
}

int PayloadFd() {
  static int fd = -1;
  if (fd < 0) {
    const std::string path = ScratchPath("payload");
    fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    FUZZ_CHECK(fd >= 0, "cannot create " + path);
  }
  return fd;
}

void WritePayloadFile(const Bytes& payload, bool framed) {
  Bytes file;
  if (framed) file.assign(kPrefix, 0xEE);
  file.insert(file.end(), payload.begin(), payload.end());
  if (framed) file.insert(file.end(), kTrailer, 0xEF);
  const int fd = PayloadFd();
  FUZZ_CHECK(::ftruncate(fd, 0) == 0, "ftruncate");
  size_t done = 0;
  while (done < file.size()) {
    const ssize_t n = ::pwrite(fd, file.data() + done, file.size() - done, static_cast<off_t>(done));
    FUZZ_CHECK(n > 0, "pwrite");
    done += static_cast<size_t>(n);
  }
}

revpatch::View& BelowView(VolumeId id) {
  static std::unique_ptr<revpatch::View> views[4];
  std::unique_ptr<revpatch::View>& view = views[static_cast<int>(id)];
  if (!view) {
    const Volume& v = GetVolume(id);
    const Status s = revpatch::View::Open(v.base_path, v.tree_path, v.layer_paths, &view);
    FUZZ_CHECK(s.ok(), s.ToString());
  }
  return *view;
}

void CheckAppliedView(const Volume& volume, const std::string& layer,
                      uint64_t target_size, const Digest& digest, const Bytes& image) {
  std::vector<std::string> layers = volume.layer_paths;
  layers.push_back(layer);
  std::unique_ptr<revpatch::View> view;
  Status s = revpatch::View::Open(volume.base_path, volume.tree_path, layers, &view);
  FUZZ_CHECK(s.ok(), "the applied layer does not open in a view: " + s.ToString());
  FUZZ_CHECK(view->size_bytes() == target_size, "view size");
  FUZZ_CHECK(view->digest() == digest, "view digest");
  const uint64_t blocks = view->block_count();
  Bytes read(blocks * volume.block_size);
  if (blocks > 0) {
    s = view->ReadBlocks(0, blocks, read.data());
    FUZZ_CHECK(s.ok(), s.ToString());
  }
  FUZZ_CHECK(read == image, "the applied view does not read the model's bytes");
  s = view->layer(view->layer_count() - 1).Verify();
  FUZZ_CHECK(s.ok(), "the applied layer does not verify: " + s.ToString());
}

}  // namespace

int FuzzPayload(const uint8_t* data, size_t size) {
  FuzzInput in(data, size);
  const uint8_t flags = in.Take<uint8_t>();
  const uint64_t operation_count = in.Take<uint16_t>();
  const VolumeId id = (flags & 2) ? VolumeId::kPayload4096 : VolumeId::kPayload512;
  const Volume& volume = GetVolume(id);
  const uint64_t target_size = in.Take<uint32_t>() % (2 * volume.size + 1);
  const uint64_t stop = in.Take<uint8_t>() % (operation_count + 1);
  Bytes payload = in.TakeRest();

  const Prediction model = Predict(&payload, operation_count, volume, target_size, flags & 1);
  const bool wrong_target = flags & 8;
  const bool wrong_source = flags & 16;
  const bool interrupted = flags & 32;

  WritePayloadFile(payload, flags & 4);
  revpatch::ApplyParams params;
  params.patch_fd = PayloadFd();
  params.payload_offset = (flags & 4) ? kPrefix : 0;
  params.payload_size = payload.size();
  params.chunk_size = kChunkSize;
  for (size_t off = 0; off < payload.size(); off += kChunkSize) {
    params.chunk_digests.push_back(revpatch::Sha256::Hash(
        payload.data() + off, std::min<size_t>(kChunkSize, payload.size() - off)));
  }
  params.payload_digest = revpatch::Sha256::Hash(payload.data(), payload.size());
  params.operation_count = operation_count;
  params.block_size = volume.block_size;
  params.target_size = target_size;
  params.source_digest = volume.digest;
  if (wrong_source) params.source_digest[7] ^= 1;
  params.target_digest = ModelViewDigest(model.image, target_size, volume.block_size);
  if (wrong_target) params.target_digest[0] ^= 0x80;
  params.layer_path = ScratchPath("layer");

  revpatch::PayloadStats stats;
  const Status scanned = revpatch::ScanPayload(params, &stats);

  uint64_t last_done = 0;
  auto progress = [&](uint64_t done, uint64_t total) {
    // Back to 0 only when a resumed apply starts over (apply.h).
    FUZZ_CHECK((done >= last_done || done == 0) && done <= total && total == payload.size(),
               "progress");
    last_done = done;
  };
  revpatch::ApplyResult result;
  bool stopped = false;
  if (interrupted) {
    params.checkpoint_path = ScratchPath("checkpoint");
    params.checkpoint_interval_bytes = 0;
    params.test_stop_after_operations = stop;
    const Status first = revpatch::ApplyPatch(params, BelowView(id), progress, &result);
    const bool expect_stop = !wrong_source && stop < operation_count && stop <= model.operations;
    stopped = first.code() == ErrorCode::kIo && first.message() == "stopped for test";
    FUZZ_CHECK(stopped == expect_stop, "the interrupted apply says " + first.ToString() +
                                           ", the model says " + (expect_stop ? "stop" : "no stop"));
    FUZZ_CHECK(stopped || !PathExists(params.checkpoint_path),
               "a failed apply left its checkpoint");
    params.test_stop_after_operations = revpatch::kNoTestStop;
    last_done = 0;
  }
  const Status applied = revpatch::ApplyPatch(params, BelowView(id), progress, &result);

  const bool expect_ok = model.apply_ok && !wrong_target && !wrong_source;
  FUZZ_CHECK(applied.ok() == expect_ok,
             "ApplyPatch says " + (applied.ok() ? std::string("ok") : applied.ToString()) +
                 ", the model says " + (expect_ok ? "ok" : "failure"));
  if (model.apply_ok) {
    FUZZ_CHECK(scanned.ok(), "ScanPayload refused a payload that applies: " + scanned.ToString());
    FUZZ_CHECK(stats.operations == operation_count, "ScanPayload operation count");
  }
  if (interrupted) {
    FUZZ_CHECK(!PathExists(params.checkpoint_path), "the checkpoint outlived the apply");
  }
  if (applied.ok()) {
    FUZZ_CHECK(result.operations == operation_count, "operations applied");
    FUZZ_CHECK(result.view_digest == params.target_digest, "result digest");
    if (stopped && stop > 0) {
      FUZZ_CHECK(result.resumed && result.resumed_from_operation == stop,
                 "the second apply did not resume from operation " + std::to_string(stop));
    }
    CheckAppliedView(volume, params.layer_path, target_size, params.target_digest, model.image);
    RemoveFile(params.layer_path);
  } else {
    FUZZ_CHECK(revpatch::IsContentError(applied.code()), "unexpected code: " + applied.ToString());
    FUZZ_CHECK(!PathExists(params.layer_path), "a failed apply left its layer file");
    if (wrong_source) {
      FUZZ_CHECK(applied.code() == ErrorCode::kSourceMismatch, applied.ToString());
    }
  }
  return 0;
}

}  // namespace revpatch_fuzz

REVPATCH_FUZZ_ENTRY(FuzzPayload)
