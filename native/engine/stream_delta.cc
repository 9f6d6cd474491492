#include "stream_delta.h"

#include <cstring>
#include <new>
#include <string>

#include "diff.h"
#include "little_endian.h"

namespace revpatch {
namespace {

Status Corrupt(const std::string& what) { return Status(ErrorCode::kCorrupt, "stream delta: " + what); }

constexpr size_t kEntryFixedBytes = 8 + 8 + 1 + 8 + 4;

Status ParseEntries(const uint8_t* p, size_t size, size_t* at, uint32_t count, uint64_t buffer_size,
                    bool with_recipe, std::vector<StreamEntry>* out, uint64_t* expanded) {
  uint64_t end = 0;  // of the previous stream
  uint64_t total = buffer_size;
  for (uint32_t i = 0; i < count; ++i) {
    if (size - *at < kEntryFixedBytes) return Corrupt("truncated stream table");
    const uint8_t* e = p + *at;
    StreamEntry s;
    s.offset = GetU64(e);
    s.compressed_length = GetU64(e + 8);
    const uint8_t codec = e[16];
    s.expanded_length = GetU64(e + 17);
    const uint32_t recipe_length = GetU32(e + 25);
    *at += kEntryFixedBytes;
    if (codec != static_cast<uint8_t>(StreamCodec::kZstd) &&
        codec != static_cast<uint8_t>(StreamCodec::kDeflate)) {
      return Corrupt("unknown codec " + std::to_string(codec));
    }
    s.codec = static_cast<StreamCodec>(codec);
    if (s.compressed_length == 0) return Corrupt("empty stream");
    if (s.offset < end || s.offset > buffer_size || s.compressed_length > buffer_size - s.offset) {
      return Corrupt("stream out of order or outside its buffer");
    }
    end = s.offset + s.compressed_length;
    if (s.expanded_length > kMaxExpandedBytes) return Corrupt("stream expands too far");
    total = total - s.compressed_length + s.expanded_length;  // stays <= buffer + cap * count
    if (total > kMaxExpandedBytes) return Corrupt("expanded buffer too large");
    if (recipe_length > kMaxRecipeBytes || (!with_recipe && recipe_length != 0)) {
      return Corrupt("bad recipe length");
    }
    if (size - *at < recipe_length) return Corrupt("truncated recipe");
    s.recipe.assign(p + *at, p + *at + recipe_length);
    *at += recipe_length;
    out->push_back(std::move(s));
  }
  *expanded = total;
  return Status::Ok();
}

}  // namespace

void EncodeStreamDelta(uint64_t new_size, const StreamTable& table,
                       const std::vector<uint8_t>& inner, std::vector<uint8_t>* out) {
  out->clear();
  uint8_t h[kStreamDeltaHeaderSize];
  std::memcpy(h, kDiffMagic, 4);
  PutU32(h + 4, kStreamDiffFormatVersion);
  PutU64(h + 8, new_size);
  PutU32(h + 16, static_cast<uint32_t>(table.old_streams.size()));
  PutU32(h + 20, static_cast<uint32_t>(table.new_streams.size()));
  out->insert(out->end(), h, h + sizeof(h));
  for (const auto* list : {&table.old_streams, &table.new_streams}) {
    for (const StreamEntry& s : *list) {
      uint8_t e[kEntryFixedBytes];
      PutU64(e, s.offset);
      PutU64(e + 8, s.compressed_length);
      e[16] = static_cast<uint8_t>(s.codec);
      PutU64(e + 17, s.expanded_length);
      PutU32(e + 25, static_cast<uint32_t>(s.recipe.size()));
      out->insert(out->end(), e, e + sizeof(e));
      out->insert(out->end(), s.recipe.begin(), s.recipe.end());
    }
  }
  out->insert(out->end(), inner.begin(), inner.end());
}

Status ParseStreamDelta(const uint8_t* delta, size_t delta_size, uint64_t old_size,
                        uint64_t new_size, StreamTable* table, size_t* inner_offset,
                        uint64_t* expanded_old, uint64_t* expanded_new) {
  if (delta_size < kStreamDeltaHeaderSize) return Corrupt("truncated header");
  if (std::memcmp(delta, kDiffMagic, 4) != 0) return Corrupt("bad magic");
  if (GetU32(delta + 4) != kStreamDiffFormatVersion) return Corrupt("not version 5");
  if (GetU64(delta + 8) != new_size) return Corrupt("wrong output size");
  const uint32_t old_count = GetU32(delta + 16);
  const uint32_t new_count = GetU32(delta + 20);
  if (old_count > kMaxStreams || new_count > kMaxStreams) return Corrupt("too many streams");
  if (new_count == 0 && old_count == 0) return Corrupt("no streams");
  StreamTable t;
  size_t at = kStreamDeltaHeaderSize;
  REVPATCH_RETURN_IF_ERROR(
      ParseEntries(delta, delta_size, &at, old_count, old_size, false, &t.old_streams, expanded_old));
  REVPATCH_RETURN_IF_ERROR(
      ParseEntries(delta, delta_size, &at, new_count, new_size, true, &t.new_streams, expanded_new));
  if (delta_size - at < 8) return Corrupt("no inner delta");
  const uint32_t inner_version = GetU32(delta + at + 4);
  if (inner_version == kStreamDiffFormatVersion) return Corrupt("a stream delta inside another");
  *table = std::move(t);
  *inner_offset = at;
  return Status::Ok();
}

Status DecodeStreamDelta(const uint8_t* old_data, size_t old_size, const uint8_t* delta,
                         size_t delta_size, uint8_t* out, size_t out_size) {
  StreamTable table;
  size_t inner = 0;
  uint64_t expanded_old_size = 0, expanded_new_size = 0;
  REVPATCH_RETURN_IF_ERROR(ParseStreamDelta(delta, delta_size, old_size, out_size, &table, &inner,
                                            &expanded_old_size, &expanded_new_size));
  // A recipe this engine cannot follow is refused before any work.
  for (const StreamEntry& s : table.new_streams) {
    if (s.codec == StreamCodec::kZstd) {
      ZstdRecipe r;
      REVPATCH_RETURN_IF_ERROR(DecodeZstdRecipe(s.recipe.data(), s.recipe.size(), &r));
      if (r.version != EngineZstdVersion()) {
        return Status(ErrorCode::kUnsupported,
                      "stream delta: needs libzstd " + ZstdVersionString(r.version) +
                          ", this engine has " + ZstdVersionString(EngineZstdVersion()));
      }
    }
  }
  std::vector<uint8_t> expanded_old, expanded_new;
  try {
    expanded_old.reserve(static_cast<size_t>(expanded_old_size));
    expanded_new.resize(static_cast<size_t>(expanded_new_size));
  } catch (const std::bad_alloc&) {
    return Status(ErrorCode::kTooLarge, "stream delta: out of memory");
  }
  uint64_t pos = 0;
  for (const StreamEntry& s : table.old_streams) {
    expanded_old.insert(expanded_old.end(), old_data + pos, old_data + s.offset);
    const size_t before = expanded_old.size();
    REVPATCH_RETURN_IF_ERROR(ExpandStream(s.codec, old_data + s.offset,
                                          static_cast<size_t>(s.compressed_length),
                                          s.expanded_length, &expanded_old));
    if (expanded_old.size() - before != s.expanded_length) {
      return Corrupt("an old stream expands to another length than its entry says");
    }
    pos = s.offset + s.compressed_length;
  }
  expanded_old.insert(expanded_old.end(), old_data + pos, old_data + old_size);
  if (expanded_old.size() != expanded_old_size) return Corrupt("expanded old size");
  REVPATCH_RETURN_IF_ERROR(DecodeDiff(expanded_old.data(), expanded_old.size(), delta + inner,
                                      delta_size - inner, expanded_new.data(),
                                      expanded_new.size(), nullptr));
  std::vector<uint8_t>().swap(expanded_old);
  uint64_t from = 0;  // in expanded new
  pos = 0;            // in out
  for (const StreamEntry& s : table.new_streams) {
    const uint64_t gap = s.offset - pos;
    std::memcpy(out + pos, expanded_new.data() + from, static_cast<size_t>(gap));
    from += gap;
    REVPATCH_RETURN_IF_ERROR(RebuildStream(s.codec, s.recipe.data(), s.recipe.size(),
                                           expanded_new.data() + from,
                                           static_cast<size_t>(s.expanded_length),
                                           out + s.offset,
                                           static_cast<size_t>(s.compressed_length)));
    from += s.expanded_length;
    pos = s.offset + s.compressed_length;
  }
  std::memcpy(out + pos, expanded_new.data() + from, static_cast<size_t>(out_size - pos));
  return Status::Ok();
}

}  // namespace revpatch
