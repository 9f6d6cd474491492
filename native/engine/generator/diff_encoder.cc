#include "diff_encoder.h"

#include <brotli/encode.h>

#include <algorithm>
#include <cstring>
#include <new>
#include <thread>

#include "huge_pages.h"
#include "little_endian.h"
#include "references.h"
#include "suffix_array.h"

namespace revpatch {
namespace {

// A match must beat the current alignment by this many bytes to be taken.
constexpr size_t kMatchMargin = 8;
// Longest match one probe measures; longer ones continue at the next probe,
// so a long repeat costs linear time instead of quadratic.
constexpr size_t kMaxProbe = 4096;
// A probe whose first kGram bytes occur nowhere in old cannot match more
// than kGram - 1 bytes, never enough to be taken: it skips the search.
constexpr size_t kGram = 8;
static_assert(kGram <= kMatchMargin + 1, "a skipped probe must be one that cannot win");
// Bloom filter bits per window of old (DeltaMatcher::Init).
constexpr size_t kGramBitsPerByte = 16;

// 64-bit words of the Bloom filter over old_size bytes.
uint64_t GramWords(uint64_t old_size) {
  const uint64_t windows = old_size >= kGram ? old_size - kGram + 1 : 0;
  return std::max<uint64_t>(1, (windows * kGramBitsPerByte + 63) / 64);
}

void PutVarint(uint64_t v, std::vector<uint8_t>* out) {
  while (v >= 0x80) {
    out->push_back(static_cast<uint8_t>(v | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<uint8_t>(v));
}

size_t MatchLength(const uint8_t* a, size_t a_len, const uint8_t* b, size_t b_len) {
  size_t n = std::min(std::min(a_len, b_len), kMaxProbe), k = 0;
  while (k + 8 <= n) {
    uint64_t x, y;
    std::memcpy(&x, a + k, 8);
    std::memcpy(&y, b + k, 8);
    if (x != y) return k + static_cast<size_t>(__builtin_ctzll(x ^ y) >> 3);
    k += 8;
  }
  while (k < n && a[k] == b[k]) ++k;
  return k;
}

// Where the 8 bytes at p go in the Bloom filter of `words` 64-bit words:
// one word (a multiply-shift of the bytes' hash onto [0, words), so the
// filter need not be a power of two) and two bits inside it. One word per
// gram costs one cache miss to set or test where two independent bits
// cost two; the false positive rate at 16 bits per gram stays about 2%.
struct GramSlot {
  size_t word;
  uint64_t bits;
};
inline GramSlot GramSlotOf(const uint8_t* p, size_t words) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  const uint64_t h = (v ^ (v >> 29)) * 0xC2B2AE3D27D4EB4Full;
  const uint64_t g = v * 0x9E3779B97F4A7C15ull;
  // words < 2^32 (old is below 4 GiB), so 32 bits of hash times words fit.
  const size_t word = static_cast<size_t>(((h >> 32) * words) >> 32);
  return {word, (uint64_t{1} << (g >> 58)) | (uint64_t{1} << ((g >> 52) & 63))};
}

// Compresses with one encoder instance so the window can be fit to the
// input and the size given as a hint.
Status CompressAt(const uint8_t* data, size_t size, int quality, std::vector<uint8_t>* out);

// Incompressible data (already compressed files, encrypted blocks) costs
// quality 11 seconds per megabyte for nothing: a quality-1 pass, at
// hundreds of megabytes a second, finds it, and its output is kept.
constexpr size_t kProbeMinSize = 64 << 10;
Status Compress(const uint8_t* data, size_t size, int quality, std::vector<uint8_t>* out) {
  if (quality > 1 && size >= kProbeMinSize) {
    REVPATCH_RETURN_IF_ERROR(CompressAt(data, size, 1, out));
    if (out->size() >= size - size / 64) return Status::Ok();
  }
  return CompressAt(data, size, quality, out);
}

Status CompressAt(const uint8_t* data, size_t size, int quality, std::vector<uint8_t>* out) {
  size_t bound = BrotliEncoderMaxCompressedSize(size);
  if (bound == 0) return Status(ErrorCode::kTooLarge, "brotli: input too large");
  try {
    out->resize(bound);
  } catch (const std::bad_alloc&) {
    return Status(ErrorCode::kTooLarge, "brotli: out of memory");
  }
  const int lgwin = BrotliWindowBits(size, quality);
  BrotliEncoderState* state = BrotliEncoderCreateInstance(nullptr, nullptr, nullptr);
  if (state == nullptr) return Status(ErrorCode::kTooLarge, "brotli: out of memory");
  BrotliEncoderSetParameter(state, BROTLI_PARAM_QUALITY, static_cast<uint32_t>(quality));
  BrotliEncoderSetParameter(state, BROTLI_PARAM_LGWIN, static_cast<uint32_t>(lgwin));
  BrotliEncoderSetParameter(state, BROTLI_PARAM_SIZE_HINT,
                            static_cast<uint32_t>(std::min<size_t>(size, 1u << 30)));
  size_t avail_in = size, avail_out = bound;
  const uint8_t* next_in = data;
  uint8_t* next_out = out->data();
  bool ok = BrotliEncoderCompressStream(state, BROTLI_OPERATION_FINISH, &avail_in, &next_in,
                                        &avail_out, &next_out, nullptr) &&
            BrotliEncoderIsFinished(state);
  BrotliEncoderDestroyInstance(state);
  if (!ok) return Status(ErrorCode::kIo, "brotli: compression failed");
  out->resize(bound - avail_out);
  return Status::Ok();
}

}  // namespace

int BrotliWindowBits(uint64_t size, int quality) {
  // A window larger than the input buys nothing and costs the encoder (and
  // later the decoder) memory and set-up time. Qualities 10 and 11 keep a
  // binary tree of 8 bytes per window byte: their window stops at 4 MiB
  // (about 70 MB of encoder instead of about 220 MB at 16 MiB), which only
  // a repeat inside one stream more than 4 MiB back would miss.
  const int most = quality >= 10 ? kBrotliZopfliWindowBits : kBrotliWindowBits;
  int lgwin = BROTLI_MIN_WINDOW_BITS;
  while (lgwin < most && (uint64_t{1} << lgwin) - 16 < size) ++lgwin;
  return lgwin;
}

uint64_t BrotliPeakBytes(uint64_t size, int quality) {
  // The encoder's own allocations, bounded from measurements of libbrotli
  // (1.0.9) with a counting allocator on text, random and zero inputs
  // (diff_encoder_test checks the bound): they follow the window, not the
  // input, past it. The quality-1 probe's encoder is gone before the main
  // one starts; both write into the same output buffer.
  auto encoder = [size](int q) -> uint64_t {
    const uint64_t window = uint64_t{1} << BrotliWindowBits(size, q);
    if (q <= 1) return window * 5 / 2 + (uint64_t{2} << 20);
    if (q <= 9) return window * 5 + (uint64_t{40} << 20);
    return window * 16 + (uint64_t{24} << 20);
  };
  uint64_t peak = encoder(quality);
  if (quality > 1 && size >= kProbeMinSize) peak = std::max(peak, encoder(1));
  return peak + size + size / 64 + 1024;
}

uint64_t DeltaMatcherBytes(uint64_t old_size) {
  return 4 * old_size + GramWords(old_size) * 8 + 65537 * 4;
}

uint64_t DeltaMatcherInitPeakBytes(uint64_t old_size) {
  // SA-IS beside the array: its type bits (1/8 byte per byte, and half of
  // that again for each level of recursion) and at most one level's bucket
  // table (4 bytes per name of the reduced string, which is at most half as
  // long); the Bloom filter comes after it.
  const uint64_t building = 4 * old_size + old_size / 4 + 2 * old_size + (uint64_t{1} << 20);
  return std::max(building, DeltaMatcherBytes(old_size));
}

uint64_t WriteDeltaPeakBytes(uint64_t new_size, uint64_t records, bool predicted) {
  // Raw streams: control at most 30 bytes per record (three varints), diff
  // at most 2 bytes per add byte, extra the copied bytes: together at most
  // 2 * new + 30 * records. Their compressed forms are no larger (plus
  // Brotli's bound), and replace them when the delta is assembled. The
  // diff stream is compressed beside the other two (two encoders at once).
  const uint64_t raw = 2 * new_size + 30 * records + (uint64_t{1} << 10);
  const uint64_t prediction = predicted ? new_size + 24 * records : 0;
  const uint64_t encoders = 2 * BrotliPeakBytes(std::max<uint64_t>(2 * new_size, 30 * records),
                                                kBrotliQuality);
  return 2 * raw + prediction + encoders;
}

Status BrotliCompress(const uint8_t* data, size_t size, int quality,
                      std::vector<uint8_t>* out) {
  return Compress(data, size, quality, out);
}

Status DeltaMatcher::Init(const uint8_t* old_data, size_t old_size) {
  old_ = old_data;
  old_size_ = old_size;
  // The last source's filter goes first, so it never sits beside this
  // one's suffix array build (DeltaMatcherInitPeakBytes).
  std::vector<uint64_t>().swap(grams_);
  REVPATCH_RETURN_IF_ERROR(BuildSuffixArray(old_data, old_size, &sa_));
  // buckets_[k] is the first suffix array slot whose suffix starts with the
  // two bytes k or more (a one-byte suffix counts as its byte then 0): the
  // counts of each two-byte key, summed. Counted over old in order, which
  // the suffix array being a permutation of old's positions makes the same
  // as counting over it, without a random read per suffix.
  buckets_.assign(65537, 0);
  if (old_size > 0) {
    uint32_t key = old_data[0];
    for (size_t i = 1; i < old_size; ++i) {
      key = (key << 8 | old_data[i]) & 0xFFFF;
      ++buckets_[key + 1];
    }
    ++buckets_[(uint32_t{old_data[old_size - 1]} << 8) + 1];
  }
  for (size_t k = 1; k < buckets_.size(); ++k) buckets_[k] += buckets_[k - 1];
  // Every 8-byte window of old in a Bloom filter of 16 bits per window
  // (GramSlotOf). Setting bits is bound by cache misses: the slot of a
  // window a little ahead is fetched while this one is set.
  const size_t windows = old_size >= kGram ? old_size - kGram + 1 : 0;
  const size_t words = static_cast<size_t>(GramWords(old_size));
  try {
    grams_.clear();
    grams_.reserve(words);
    AdviseHugePages(grams_.data(), words * sizeof(uint64_t));
    grams_.resize(words, 0);
  } catch (const std::bad_alloc&) {
    return Status(ErrorCode::kTooLarge, "delta: out of memory");
  }
  constexpr size_t kAhead = 16;
  uint64_t* const bits = grams_.data();
  for (size_t i = 0; i < windows; ++i) {
    if (i + kAhead < windows) __builtin_prefetch(bits + GramSlotOf(old_data + i + kAhead, words).word, 1);
    const GramSlot slot = GramSlotOf(old_data + i, words);
    bits[slot.word] |= slot.bits;
  }
  return Status::Ok();
}

bool DeltaMatcher::MayMatch(const uint8_t* needle, size_t length) const {
  if (length < kGram) return true;
  const GramSlot slot = GramSlotOf(needle, grams_.size());
  return (grams_[slot.word] & slot.bits) == slot.bits;
}

// The old suffix sharing the longest prefix with `needle` (bsdiff's binary
// search over the suffix array).
size_t DeltaMatcher::Search(const uint8_t* needle, size_t length, size_t* position) const {
  if (old_size_ == 0) {
    *position = 0;
    return 0;
  }
  size_t lo = 0, hi = old_size_ - 1;
  if (length >= 2) {
    // Narrow to the suffixes sharing the first two bytes, when there are
    // any; the binary search then skips the levels a random probe misses
    // the cache on.
    const uint32_t key = uint32_t{needle[0]} << 8 | needle[1];
    if (buckets_[key + 1] > buckets_[key]) {
      lo = buckets_[key];
      hi = buckets_[key + 1] - 1;
    }
  }
  while (hi - lo >= 2) {
    size_t mid = lo + (hi - lo) / 2;
    size_t at = sa_[mid];
    size_t n = std::min(std::min(old_size_ - at, length), kMaxProbe);
    if (std::memcmp(old_ + at, needle, n) < 0) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  size_t x = MatchLength(old_ + sa_[lo], old_size_ - sa_[lo], needle, length);
  size_t y = MatchLength(old_ + sa_[hi], old_size_ - sa_[hi], needle, length);
  if (x > y) {
    *position = sa_[lo];
    return x;
  }
  *position = sa_[hi];
  return y;
}

void DeltaMatcher::Match(const uint8_t* new_data, size_t new_size,
                         std::vector<DeltaRecord>* records) const {
  records->clear();
  const uint8_t* old_data = old_;
  const size_t old_size = old_size_;
  size_t scan = 0, len = 0, pos = 0;
  size_t last_scan = 0, last_pos = 0;
  int64_t last_offset = 0;  // old minus new position of the last match
  auto aligned_equal = [&](size_t at) {
    int64_t o = static_cast<int64_t>(at) + last_offset;
    return o >= 0 && static_cast<uint64_t>(o) < old_size &&
           old_data[static_cast<size_t>(o)] == new_data[at];
  };
  while (scan < new_size) {
    // old_score counts the bytes of [scan, scsc) that the last match's
    // alignment predicts; a match is taken when it beats that by a margin.
    int64_t old_score = 0;
    scan += len;
    size_t scsc = scan;
    for (; scan < new_size; ++scan) {
      if (scsc < scan) {
        scsc = scan;
        old_score = 0;
      }
      len = MayMatch(new_data + scan, new_size - scan) ? Search(new_data + scan, new_size - scan, &pos)
                                                         : 0;
      for (; scsc < scan + len; ++scsc) {
        if (aligned_equal(scsc)) ++old_score;
      }
      const int64_t n = static_cast<int64_t>(len);
      if ((n == old_score && n != 0) || n > old_score + static_cast<int64_t>(kMatchMargin)) break;
      if (scsc > scan && aligned_equal(scan)) --old_score;
    }
    if (static_cast<int64_t>(len) == old_score && scan != new_size) continue;

    // Forward extension of the last match: the prefix where matches
    // outnumber mismatches the most.
    size_t lenf = 0;
    {
      int64_t s = 0, best = 0;
      for (size_t i = 0; last_scan + i < scan && last_pos + i < old_size;) {
        if (old_data[last_pos + i] == new_data[last_scan + i]) ++s;
        ++i;
        if (s * 2 - static_cast<int64_t>(i) > best * 2 - static_cast<int64_t>(lenf)) {
          best = s;
          lenf = i;
        }
      }
    }
    // Backward extension of the new match.
    size_t lenb = 0;
    if (scan < new_size) {
      int64_t s = 0, best = 0;
      for (size_t i = 1; scan >= last_scan + i && pos >= i; ++i) {
        if (old_data[pos - i] == new_data[scan - i]) ++s;
        if (s * 2 - static_cast<int64_t>(i) > best * 2 - static_cast<int64_t>(lenb)) {
          best = s;
          lenb = i;
        }
      }
    }
    // Where the two overlap, split at the best point.
    if (last_scan + lenf > scan - lenb) {
      size_t overlap = (last_scan + lenf) - (scan - lenb);
      int64_t s = 0, best = 0;
      size_t lens = 0;
      for (size_t i = 0; i < overlap; ++i) {
        if (new_data[last_scan + lenf - overlap + i] == old_data[last_pos + lenf - overlap + i]) {
          ++s;
        }
        if (new_data[scan - lenb + i] == old_data[pos - lenb + i]) --s;
        if (s > best) {
          best = s;
          lens = i + 1;
        }
      }
      lenf += lens - overlap;
      lenb -= lens;
    }
    DeltaRecord r;
    r.old_start = last_pos;
    r.add_length = lenf;
    r.copy_length = (scan - lenb) - (last_scan + lenf);
    if (r.add_length + r.copy_length > 0) records->push_back(r);
    last_scan = scan - lenb;
    last_pos = pos - lenb;
    last_offset = static_cast<int64_t>(pos) - static_cast<int64_t>(scan);
  }
}

Status WriteDelta(const uint8_t* old_data, size_t old_size, const uint8_t* new_data,
                  size_t new_size, const std::vector<DeltaRecord>& records,
                  std::vector<uint8_t>* out, const ReferenceInfo* references,
                  const DeltaLayout* layout) {
  const bool predicted = references != nullptr && !references->empty();
  if (predicted && records.size() > kMaxPredictedRecords) {
    return Status(ErrorCode::kTooLarge, "delta: too many records to predict references");
  }
  std::vector<uint8_t> control, diff, extra, pred, reference_part, shifted;
  try {
    if (predicted) {
      // The bytes each add starts from, as the decoder will predict them.
      pred.assign(new_size, 0);
      std::vector<Equivalence> adds;
      uint64_t new_pos = 0;
      for (const DeltaRecord& r : records) {
        if (r.add_length > 0) {
          if (r.old_start > old_size || r.add_length > old_size - r.old_start ||
              r.add_length > new_size - new_pos) {
            return Status(ErrorCode::kInvalidArgument, "delta: record outside the data");
          }
          std::memcpy(pred.data() + new_pos, old_data + r.old_start, r.add_length);
          adds.push_back({r.old_start, new_pos, r.add_length});
        }
        new_pos += r.add_length + r.copy_length;
        if (new_pos > new_size) {
          return Status(ErrorCode::kInvalidArgument, "delta: record outside the data");
        }
      }
      REVPATCH_RETURN_IF_ERROR(PredictReferences(*references, layout ? *layout : DeltaLayout{},
                                                 old_data, old_size, adds, pred.data(),
                                                 pred.size()));
      EncodeReferenceInfo(*references, &reference_part);
      if (!references->digests.empty() && references->version == kAddressReferenceVersion) {
        // The device adds each page's hash to its slot after decoding
        // (page_digests.h): encode the target with them taken off.
        shifted.assign(new_data, new_data + new_size);
        REVPATCH_RETURN_IF_ERROR(ApplyPageDigests(
            references->digests, layout ? layout->block_size : 0, layout ? layout->target : nullptr,
            DigestDirection::kSubtract, shifted.data(), shifted.size()));
        new_data = shifted.data();
      }
    }
    control.reserve(records.size() * 4);
    uint64_t add_total = 0;
    for (const DeltaRecord& r : records) add_total += r.add_length;
    extra.reserve(new_size - static_cast<size_t>(std::min<uint64_t>(add_total, new_size)));
    uint64_t old_pos = 0, new_pos = 0, zeros = 0;
    for (const DeltaRecord& r : records) {
      const uint64_t start = r.add_length > 0 ? r.old_start : old_pos;
      if (start + r.add_length > old_size || new_pos + r.add_length + r.copy_length > new_size ||
          r.add_length + r.copy_length == 0) {
        return Status(ErrorCode::kInvalidArgument, "delta: record outside the data");
      }
      const int64_t seek = static_cast<int64_t>(start - old_pos);
      PutVarint((static_cast<uint64_t>(seek) << 1) ^ static_cast<uint64_t>(seek >> 63),
                &control);
      PutVarint(r.add_length, &control);
      PutVarint(r.copy_length, &control);
      const uint8_t* o = predicted ? pred.data() + new_pos : old_data + start;
      const uint8_t* n = new_data + new_pos;
      for (uint64_t k = 0; k < r.add_length; ++k) {
        const uint8_t d = static_cast<uint8_t>(n[k] - o[k]);
        if (d == 0) {
          ++zeros;
        } else {
          PutVarint(zeros, &diff);
          diff.push_back(d);
          zeros = 0;
        }
      }
      extra.insert(extra.end(), n + r.add_length, n + r.add_length + r.copy_length);
      old_pos = start + r.add_length;
      new_pos += r.add_length + r.copy_length;
    }
    if (new_pos != new_size) {
      return Status(ErrorCode::kInvalidArgument, "delta: records do not cover the data");
    }
  } catch (const std::bad_alloc&) {
    return Status(ErrorCode::kTooLarge, "delta: out of memory");
  }
  // The diff stream is the largest; the other two compress alongside it.
  std::vector<uint8_t> streams[3];
  Status side;
  std::thread helper([&] {
    side = Compress(control.data(), control.size(), kBrotliQuality, &streams[0]);
    if (side.ok()) side = Compress(extra.data(), extra.size(), kBrotliQuality, &streams[2]);
  });
  Status main = Compress(diff.data(), diff.size(), kBrotliQuality, &streams[1]);
  helper.join();
  REVPATCH_RETURN_IF_ERROR(main);
  REVPATCH_RETURN_IF_ERROR(side);
  // The raw streams are done with: gone before the delta is assembled.
  std::vector<uint8_t>().swap(control);
  std::vector<uint8_t>().swap(diff);
  std::vector<uint8_t>().swap(extra);
  std::vector<uint8_t>().swap(pred);
  std::vector<uint8_t>().swap(shifted);
  const size_t header = predicted ? kPredictedHeaderSize : kDiffHeaderSize;
  out->assign(header, 0);
  std::memcpy(out->data(), kDiffMagic, 4);
  PutU32(out->data() + 4,
         !predicted ? kPlainDiffFormatVersion
         : references->version == kAddressReferenceVersion ? kAddressDiffFormatVersion
                                                            : kDiffFormatVersion);
  PutU64(out->data() + 8, new_size);
  for (int s = 0; s < 3; ++s) PutU64(out->data() + 16 + 8 * s, streams[s].size());
  if (predicted) PutU64(out->data() + 40, reference_part.size());
  for (int s = 0; s < 3; ++s) out->insert(out->end(), streams[s].begin(), streams[s].end());
  out->insert(out->end(), reference_part.begin(), reference_part.end());
  return Status::Ok();
}

Status EncodeDiff(const uint8_t* old_data, size_t old_size,
                  const uint8_t* new_data, size_t new_size,
                  std::vector<uint8_t>* out) {
  DeltaMatcher matcher;
  REVPATCH_RETURN_IF_ERROR(matcher.Init(old_data, old_size));
  std::vector<DeltaRecord> records;
  matcher.Match(new_data, new_size, &records);
  return WriteDelta(old_data, old_size, new_data, new_size, records, out);
}

}  // namespace revpatch
