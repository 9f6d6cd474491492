#include "scrub.h"

#include <algorithm>

namespace revpatch {
namespace {

constexpr size_t kChunkBytes = size_t{4} << 20;

}  // namespace

Status ScrubView(View& view, size_t max_listed,
                 const std::function<void(uint64_t, uint64_t)>& progress,
                 ScrubResult* result) {
  ScrubResult res;
  const uint64_t blocks = view.block_count();
  res.blocks = blocks;
  const bool was_verifying = view.verify_reads();
  view.SetVerifyReads(true);
  const uint64_t chunk = std::max<uint64_t>(1, kChunkBytes / view.block_size());
  std::vector<uint8_t> buffer(static_cast<size_t>(chunk * view.block_size()));
  std::vector<CorruptRead> bad;
  Status s = Status::Ok();
  if (progress) progress(0, blocks);
  for (uint64_t b = 0; b < blocks && s.ok(); b += chunk) {
    const uint64_t n = std::min(chunk, blocks - b);
    bad.clear();
    s = view.CheckBlocks(b, n, buffer.data(), &bad);
    for (CorruptRead& r : bad) {
      ++res.bad;
      ++(r.layer < 0 ? res.base_bad : res.layer_bad);
      if (res.first_bad.size() < max_listed) res.first_bad.push_back(std::move(r));
    }
    if (progress) progress(b + n, blocks);
  }
  view.SetVerifyReads(was_verifying);
  REVPATCH_RETURN_IF_ERROR(s);
  *result = std::move(res);
  return Status::Ok();
}

}  // namespace revpatch
