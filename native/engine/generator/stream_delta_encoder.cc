#include "stream_delta_encoder.h"

#include <algorithm>
#include <new>

#include "diff_encoder.h"
#include "executable_spans.h"
#include "little_endian.h"

namespace revpatch {
namespace {

void AddUnique(std::vector<uint32_t>* v, uint32_t x) {
  auto it = std::lower_bound(v->begin(), v->end(), x);
  if (it == v->end() || *it != x) v->insert(it, x);
}

// `buf` with each stream replaced by its expansion; the expansions' places
// in the result go to *places (offset, length).
Status Expand(const uint8_t* buf, size_t size, const std::vector<FoundStream>& streams,
              std::vector<uint8_t>* out, std::vector<StreamEntry>* entries,
              std::vector<std::pair<uint64_t, uint64_t>>* places) {
  uint64_t pos = 0;
  for (const FoundStream& s : streams) {
    if (s.offset < pos || s.offset > size || s.length > size - s.offset) {
      return Status(ErrorCode::kInvalidArgument, "stream outside its buffer");
    }
    out->insert(out->end(), buf + pos, buf + s.offset);
    const size_t at = out->size();
    const uint64_t room = kMaxExpandedBytes - std::min<uint64_t>(kMaxExpandedBytes, at);
    REVPATCH_RETURN_IF_ERROR(ExpandStream(s.codec, buf + s.offset, s.length, room, out));
    StreamEntry e;
    e.offset = s.offset;
    e.compressed_length = s.length;
    e.codec = s.codec;
    e.expanded_length = out->size() - at;
    e.recipe = s.recipe;
    entries->push_back(std::move(e));
    places->push_back({at, out->size() - at});
    pos = s.offset + s.length;
  }
  out->insert(out->end(), buf + pos, buf + size);
  if (out->size() > kMaxExpandedBytes) return Status(ErrorCode::kTooLarge, "expanded buffer too large");
  return Status::Ok();
}

}  // namespace

uint64_t StreamDeltaPeakBytes(uint64_t expanded_old, uint64_t expanded_new) {
  return expanded_old + expanded_new + DeltaMatcherInitPeakBytes(expanded_old) +
         WriteDeltaPeakBytes(expanded_new, expanded_new / 24 + 1, true) + 2 * expanded_new;
}

Status WriteStreamDelta(const uint8_t* old_data, size_t old_size,
                        const std::vector<FoundStream>& old_streams, const uint8_t* new_data,
                        size_t new_size, const std::vector<FoundStream>& new_streams,
                        uint32_t block_size, std::vector<uint8_t>* out) {
  std::vector<uint8_t> expanded_old, expanded_new;
  StreamTable table;
  std::vector<std::pair<uint64_t, uint64_t>> old_places, new_places;
  try {
    REVPATCH_RETURN_IF_ERROR(
        Expand(old_data, old_size, old_streams, &expanded_old, &table.old_streams, &old_places));
    REVPATCH_RETURN_IF_ERROR(
        Expand(new_data, new_size, new_streams, &expanded_new, &table.new_streams, &new_places));
  } catch (const std::bad_alloc&) {
    return Status(ErrorCode::kTooLarge, "stream delta: out of memory");
  }
  // Old streams carry no recipe: the device only expands them.
  for (StreamEntry& e : table.old_streams) e.recipe.clear();
  std::vector<DeltaRecord> records;
  {
    DeltaMatcher matcher;
    REVPATCH_RETURN_IF_ERROR(matcher.Init(expanded_old.data(), expanded_old.size()));
    matcher.Match(expanded_new.data(), expanded_new.size(), &records);
  }
  std::vector<uint8_t> inner;
  REVPATCH_RETURN_IF_ERROR(WriteDelta(expanded_old.data(), expanded_old.size(),
                                      expanded_new.data(), expanded_new.size(), records, &inner));
  // Executables inside the old expansions: their references, moved to
  // where the expansion sits in the expanded old (each buffer is its own
  // view in the inner delta).
  ReferenceInfo references;
  for (const auto& place : old_places) {
    std::vector<ReferenceSpan> spans;
    FindExecutableSpans(expanded_old.data() + place.first, static_cast<size_t>(place.second),
                        block_size, &spans);
    const uint64_t d = place.first;
    for (ReferenceSpan& s : spans) {
      s.start += d;
      if (s.kind != ReferenceKind::kAbs64) {
        s.low += d;
        s.high += d;
      }
      if (s.kind != ReferenceKind::kRel32) s.bias -= d;
      if (references.spans.size() < kMaxReferenceSpans) references.spans.push_back(s);
    }
  }
  if (!references.empty() && records.size() <= kMaxPredictedRecords) {
    std::vector<uint8_t> predicted;
    REVPATCH_RETURN_IF_ERROR(WriteDelta(expanded_old.data(), expanded_old.size(),
                                        expanded_new.data(), expanded_new.size(), records,
                                        &predicted, &references, nullptr));
    if (predicted.size() < inner.size()) inner.swap(predicted);
  }
  EncodeStreamDelta(new_size, table, inner, out);
  return Status::Ok();
}

void AddDeltaNeeds(const uint8_t* delta, size_t size, uint64_t old_size, uint64_t new_size,
                   DeltaNeeds* needs) {
  if (size < 8) return;
  const uint32_t version = GetU32(delta + 4);
  AddUnique(&needs->versions, version);
  if (version != kStreamDiffFormatVersion) return;
  StreamTable table;
  size_t inner = 0;
  uint64_t eo = 0, en = 0;
  if (!ParseStreamDelta(delta, size, old_size, new_size, &table, &inner, &eo, &en).ok()) return;
  if (size - inner >= 8) AddUnique(&needs->versions, GetU32(delta + inner + 4));
  for (const StreamEntry& s : table.new_streams) {
    if (s.codec == StreamCodec::kDeflate) needs->deflate = true;
    ZstdRecipe r;
    if (s.codec == StreamCodec::kZstd && DecodeZstdRecipe(s.recipe.data(), s.recipe.size(), &r).ok()) {
      AddUnique(&needs->zstd_versions, r.version);
    }
  }
  for (const StreamEntry& s : table.old_streams) {
    if (s.codec == StreamCodec::kDeflate) needs->deflate = true;
  }
}

}  // namespace revpatch
