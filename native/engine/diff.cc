#include "diff.h"

#include <brotli/decode.h>
#include <brotli/encode.h>

#include <algorithm>
#include <cstring>
#include <new>
#include <string>

#include "little_endian.h"

namespace revpatch {
namespace {

constexpr uint8_t kMagic[4] = {'R', 'P', 'D', 'F'};
constexpr size_t kRecordSize = 24;
// Seeds shorter than this are not worth a record; a seed hashes this many.
constexpr size_t kSeedLength = 16;
// A continuation of the previous match's alignment is cheaper to take.
constexpr size_t kAlignedMinMatch = 8;
// Forward extension stops once the match score fell this far below its best.
constexpr int64_t kExtensionSlack = 64;

Status Corrupt(const std::string& what) {
  return Status(ErrorCode::kCorrupt, "delta: " + what);
}

// Pulls exact byte counts out of one Brotli stream whose compressed bytes
// are all present up front.
class BrotliReader {
 public:
  BrotliReader(const uint8_t* in, size_t size)
      : state_(BrotliDecoderCreateInstance(nullptr, nullptr, nullptr)),
        next_in_(in),
        avail_in_(size) {}
  ~BrotliReader() {
    if (state_ != nullptr) BrotliDecoderDestroyInstance(state_);
  }
  BrotliReader(const BrotliReader&) = delete;
  BrotliReader& operator=(const BrotliReader&) = delete;

  Status Read(uint8_t* out, size_t n) {
    if (state_ == nullptr) return Status(ErrorCode::kIo, "brotli: out of memory");
    while (n > 0) {
      if (finished_) return Corrupt("stream ends early");
      size_t avail_out = n;
      uint8_t* next_out = out;
      BrotliDecoderResult r = BrotliDecoderDecompressStream(
          state_, &avail_in_, &next_in_, &avail_out, &next_out, nullptr);
      size_t got = n - avail_out;
      out += got;
      n -= got;
      if (r == BROTLI_DECODER_RESULT_ERROR) return Corrupt("invalid brotli stream");
      if (r == BROTLI_DECODER_RESULT_SUCCESS) finished_ = true;
      if (r == BROTLI_DECODER_RESULT_NEEDS_MORE_INPUT && n > 0) {
        return Corrupt("truncated brotli stream");
      }
    }
    return Status::Ok();
  }

  // The stream must end here: no more output, no bytes after it.
  Status Finish() {
    if (state_ == nullptr) return Status(ErrorCode::kIo, "brotli: out of memory");
    if (!finished_) {
      uint8_t probe = 0;
      size_t avail_out = 1;
      uint8_t* next_out = &probe;
      BrotliDecoderResult r = BrotliDecoderDecompressStream(
          state_, &avail_in_, &next_in_, &avail_out, &next_out, nullptr);
      if (avail_out != 1) return Corrupt("stream longer than expected");
      if (r != BROTLI_DECODER_RESULT_SUCCESS) return Corrupt("unterminated brotli stream");
      finished_ = true;
    }
    if (avail_in_ != 0) return Corrupt("bytes after brotli stream");
    return Status::Ok();
  }

 private:
  BrotliDecoderState* state_;
  const uint8_t* next_in_;
  size_t avail_in_;
  bool finished_ = false;
};

struct Match {
  size_t new_start;
  size_t old_start;
  size_t length;
};

uint64_t SeedHash(const uint8_t* p) {
  uint64_t a, b;
  std::memcpy(&a, p, 8);
  std::memcpy(&b, p + 8, 8);
  uint64_t h = (a ^ (b * 0x9E3779B97F4A7C15ull)) * 0xC2B2AE3D27D4EB4Full;
  return h ^ (h >> 29);
}

size_t ExactLength(const uint8_t* a, size_t a_len, const uint8_t* b, size_t b_len) {
  size_t n = std::min(a_len, b_len), k = 0;
  while (k < n && a[k] == b[k]) ++k;
  return k;
}

// Greedy matcher of version 1: at each position of `new`, the longer of the
// exact match that continues the previous alignment and the exact match at
// the seed hash's candidate; an accepted match grows backwards exactly and
// forwards while matching bytes outweigh mismatches (bsdiff's scoring), so
// a few changed bytes stay inside one add.
std::vector<Match> FindMatches(const uint8_t* old_data, size_t old_size,
                               const uint8_t* new_data, size_t new_size) {
  std::vector<uint32_t> table;
  int bits = 0;
  if (old_size >= kSeedLength) {
    bits = 10;
    while (bits < 22 && (size_t{1} << bits) < old_size) ++bits;
    table.assign(size_t{1} << bits, 0);
    // Backwards, so the earliest occurrence of a seed wins.
    for (size_t pos = old_size - kSeedLength + 1; pos-- > 0;) {
      table[SeedHash(old_data + pos) >> (64 - bits)] = static_cast<uint32_t>(pos + 1);
    }
  }
  std::vector<Match> matches;
  size_t i = 0, last_end = 0;
  int64_t align = 0;  // old position minus new position of the last match
  while (i < new_size) {
    size_t best_len = 0, best_old = 0;
    int64_t aligned = static_cast<int64_t>(i) + align;
    if (aligned >= 0 && static_cast<uint64_t>(aligned) < old_size) {
      size_t p = static_cast<size_t>(aligned);
      size_t len = ExactLength(new_data + i, new_size - i, old_data + p, old_size - p);
      if (len >= kAlignedMinMatch) best_len = len, best_old = p;
    }
    if (!table.empty() && new_size - i >= kSeedLength) {
      uint32_t slot = table[SeedHash(new_data + i) >> (64 - bits)];
      if (slot != 0) {
        size_t p = slot - 1;
        size_t len = ExactLength(new_data + i, new_size - i, old_data + p, old_size - p);
        if (len >= kSeedLength && len > best_len) best_len = len, best_old = p;
      }
    }
    if (best_len == 0) {
      ++i;
      continue;
    }
    size_t start = i, old_start = best_old;
    while (start > last_end && old_start > 0 &&
           new_data[start - 1] == old_data[old_start - 1]) {
      --start;
      --old_start;
    }
    size_t limit = std::min(new_size - start, old_size - old_start);
    int64_t score = 0, best_score = 0;
    size_t length = 0;
    for (size_t k = 0; k < limit; ++k) {
      score += new_data[start + k] == old_data[old_start + k] ? 1 : -1;
      if (score > best_score) best_score = score, length = k + 1;
      if (best_score - score > kExtensionSlack) break;
    }
    matches.push_back({start, old_start, length});
    i = start + length;
    last_end = i;
    align = static_cast<int64_t>(old_start) - static_cast<int64_t>(start);
  }
  return matches;
}

void AppendRecord(int64_t seek, uint64_t add, uint64_t copy, std::vector<uint8_t>* out) {
  uint8_t rec[kRecordSize];
  PutU64(rec, static_cast<uint64_t>(seek));
  PutU64(rec + 8, add);
  PutU64(rec + 16, copy);
  out->insert(out->end(), rec, rec + kRecordSize);
}

}  // namespace

Status BrotliCompress(const uint8_t* data, size_t size, int quality,
                      std::vector<uint8_t>* out) {
  size_t bound = BrotliEncoderMaxCompressedSize(size);
  if (bound == 0) return Status(ErrorCode::kTooLarge, "brotli: input too large");
  try {
    out->resize(bound);
  } catch (const std::bad_alloc&) {
    return Status(ErrorCode::kTooLarge, "brotli: out of memory");
  }
  // A window larger than the input buys nothing and costs the encoder (and
  // later the decoder) memory and set-up time.
  int lgwin = BROTLI_MIN_WINDOW_BITS;
  while (lgwin < kBrotliWindowBits && (size_t{1} << lgwin) - 16 < size) ++lgwin;
  size_t encoded = bound;
  if (!BrotliEncoderCompress(quality, lgwin, BROTLI_MODE_GENERIC, size,
                             data, &encoded, out->data())) {
    return Status(ErrorCode::kIo, "brotli: compression failed");
  }
  out->resize(encoded);
  return Status::Ok();
}

Status BrotliDecompressExact(const uint8_t* in, size_t in_size, uint8_t* out,
                             size_t out_size) {
  BrotliReader reader(in, in_size);
  REVPATCH_RETURN_IF_ERROR(reader.Read(out, out_size));
  return reader.Finish();
}

Status EncodeDiff(const uint8_t* old_data, size_t old_size,
                  const uint8_t* new_data, size_t new_size,
                  std::vector<uint8_t>* out) {
  if (old_size >= UINT32_MAX) return Status(ErrorCode::kTooLarge, "delta: source too large");
  std::vector<Match> matches = FindMatches(old_data, old_size, new_data, new_size);
  std::vector<uint8_t> control, diff, extra;
  diff.reserve(new_size);
  size_t old_pos = 0;
  if (matches.empty() || matches[0].new_start > 0) {
    size_t first = matches.empty() ? new_size : matches[0].new_start;
    if (first > 0) {
      AppendRecord(0, 0, first, &control);
      extra.insert(extra.end(), new_data, new_data + first);
    }
  }
  for (size_t k = 0; k < matches.size(); ++k) {
    const Match& m = matches[k];
    size_t end = m.new_start + m.length;
    size_t gap_end = k + 1 < matches.size() ? matches[k + 1].new_start : new_size;
    AppendRecord(static_cast<int64_t>(m.old_start) - static_cast<int64_t>(old_pos),
                 m.length, gap_end - end, &control);
    for (size_t j = 0; j < m.length; ++j) {
      diff.push_back(static_cast<uint8_t>(new_data[m.new_start + j] - old_data[m.old_start + j]));
    }
    extra.insert(extra.end(), new_data + end, new_data + gap_end);
    old_pos = m.old_start + m.length;
  }
  std::vector<uint8_t> streams[3];
  const std::vector<uint8_t>* raw[3] = {&control, &diff, &extra};
  for (int s = 0; s < 3; ++s) {
    REVPATCH_RETURN_IF_ERROR(
        BrotliCompress(raw[s]->data(), raw[s]->size(), kBrotliQuality, &streams[s]));
  }
  out->assign(kDiffHeaderSize, 0);
  std::memcpy(out->data(), kMagic, 4);
  PutU32(out->data() + 4, kDiffFormatVersion);
  PutU64(out->data() + 8, new_size);
  for (int s = 0; s < 3; ++s) {
    PutU64(out->data() + 16 + 8 * s, streams[s].size());
  }
  for (int s = 0; s < 3; ++s) out->insert(out->end(), streams[s].begin(), streams[s].end());
  return Status::Ok();
}

Status DecodeDiff(const uint8_t* old_data, size_t old_size,
                  const uint8_t* delta, size_t delta_size, uint8_t* out,
                  size_t out_size) {
  if (delta_size < kDiffHeaderSize) return Corrupt("truncated header");
  if (std::memcmp(delta, kMagic, 4) != 0) return Corrupt("bad magic");
  uint32_t version = GetU32(delta + 4);
  if (version != kDiffFormatVersion) {
    return Status(ErrorCode::kUnsupported, "delta: version " + std::to_string(version));
  }
  if (GetU64(delta + 8) != out_size) return Corrupt("wrong output size");
  uint64_t lengths[3], total = 0;
  for (int s = 0; s < 3; ++s) {
    lengths[s] = GetU64(delta + 16 + 8 * s);
    if (__builtin_add_overflow(total, lengths[s], &total)) return Corrupt("stream lengths overflow");
  }
  if (total != delta_size - kDiffHeaderSize) return Corrupt("stream lengths do not add up");
  const uint8_t* p = delta + kDiffHeaderSize;
  BrotliReader control(p, lengths[0]);
  BrotliReader diff(p + lengths[0], lengths[1]);
  BrotliReader extra(p + lengths[0] + lengths[1], lengths[2]);

  uint64_t old_pos = 0, new_pos = 0;
  while (new_pos < out_size) {
    uint8_t rec[kRecordSize];
    REVPATCH_RETURN_IF_ERROR(control.Read(rec, kRecordSize));
    uint64_t seek_bits = GetU64(rec);
    uint64_t add = GetU64(rec + 8);
    uint64_t copy = GetU64(rec + 16);
    if (static_cast<int64_t>(seek_bits) >= 0) {
      if (seek_bits > old_size - old_pos) return Corrupt("seek past the source");
      old_pos += seek_bits;
    } else {
      uint64_t back = ~seek_bits + 1;  // magnitude, two's complement
      if (back > old_pos) return Corrupt("seek before the source");
      old_pos -= back;
    }
    if (add == 0 && copy == 0) return Corrupt("empty record");
    if (add > out_size - new_pos || add > old_size - old_pos) {
      return Corrupt("add past the source or target");
    }
    REVPATCH_RETURN_IF_ERROR(diff.Read(out + new_pos, add));
    for (uint64_t k = 0; k < add; ++k) out[new_pos + k] += old_data[old_pos + k];
    new_pos += add;
    old_pos += add;
    if (copy > out_size - new_pos) return Corrupt("copy past the target");
    REVPATCH_RETURN_IF_ERROR(extra.Read(out + new_pos, copy));
    new_pos += copy;
  }
  REVPATCH_RETURN_IF_ERROR(control.Finish());
  REVPATCH_RETURN_IF_ERROR(diff.Finish());
  return extra.Finish();
}

}  // namespace revpatch
