#include "diff.h"

#include <brotli/decode.h>

#include <cstring>
#include <string>

#include "little_endian.h"
#include "references.h"
#include "stream_delta.h"

namespace revpatch {
namespace {

constexpr size_t kFixedRecordSize = 24;  // version 1
constexpr size_t kMaxVarint = 10;

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

  // Up to `n` bytes, fewer only where the stream ends.
  Status ReadSome(uint8_t* out, size_t n, size_t* got) {
    if (state_ == nullptr) return Status(ErrorCode::kIo, "brotli: out of memory");
    *got = 0;
    while (*got < n && !finished_) {
      size_t avail_out = n - *got;
      uint8_t* next_out = out + *got;
      BrotliDecoderResult r = BrotliDecoderDecompressStream(
          state_, &avail_in_, &next_in_, &avail_out, &next_out, nullptr);
      *got = n - avail_out;
      if (r == BROTLI_DECODER_RESULT_ERROR) return Corrupt("invalid brotli stream");
      if (r == BROTLI_DECODER_RESULT_SUCCESS) finished_ = true;
      if (r == BROTLI_DECODER_RESULT_NEEDS_MORE_INPUT) {
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

// A Brotli stream read through a small buffer, so items of a few bytes do
// not each cost a decoder call (the control stream, the diff pairs).
class BufferedStream {
 public:
  BufferedStream(const uint8_t* in, size_t size, const char* name)
      : stream_(in, size), name_(name) {}

  // True once every byte was taken and the stream has no more.
  Status AtEnd(bool* at_end) {
    if (pos_ == fill_) {
      REVPATCH_RETURN_IF_ERROR(stream_.ReadSome(buffer_, sizeof(buffer_), &fill_));
      pos_ = 0;
    }
    *at_end = fill_ == 0;
    return Status::Ok();
  }

  Status Byte(uint8_t* out) {
    bool end = false;
    REVPATCH_RETURN_IF_ERROR(AtEnd(&end));
    if (end) return Corrupt(std::string(name_) + " stream ends early");
    *out = buffer_[pos_++];
    return Status::Ok();
  }

  Status Varint(uint64_t* out) {
    uint64_t value = 0;
    for (size_t i = 0; i < kMaxVarint; ++i) {
      uint8_t b = 0;
      REVPATCH_RETURN_IF_ERROR(Byte(&b));
      if (i == kMaxVarint - 1 && b > 1) return Corrupt("varint past 64 bits");
      value |= uint64_t{b & 0x7Fu} << (7 * i);
      if ((b & 0x80) == 0) {
        *out = value;
        return Status::Ok();
      }
    }
    return Corrupt("varint too long");
  }

  Status Fixed(uint8_t* out, size_t n) {
    for (size_t i = 0; i < n; ++i) REVPATCH_RETURN_IF_ERROR(Byte(out + i));
    return Status::Ok();
  }

  Status Finish() {
    if (pos_ != fill_) return Corrupt(std::string(name_) + " stream longer than its records");
    return stream_.Finish();
  }

 private:
  BrotliReader stream_;
  const char* name_;
  uint8_t buffer_[4096];
  size_t pos_ = 0;
  size_t fill_ = 0;
};

// The diff bytes of version 2: pairs (varint zeros, nonzero byte), the
// bytes after the last pair zeros. Adds start as a copy of old and only
// the nonzero bytes are touched.
class DiffPairs {
 public:
  DiffPairs(const uint8_t* in, size_t size) : stream_(in, size, "diff") {}

  // out[0, n) holds the old bytes; adds the diff bytes onto them.
  Status Apply(uint8_t* out, uint64_t n) {
    uint64_t k = 0;
    while (k < n) {
      if (!pending_) {
        if (exhausted_) return Status::Ok();
        bool end = false;
        REVPATCH_RETURN_IF_ERROR(stream_.AtEnd(&end));
        if (end) {
          exhausted_ = true;
          return Status::Ok();
        }
        REVPATCH_RETURN_IF_ERROR(stream_.Varint(&zeros_));
        REVPATCH_RETURN_IF_ERROR(stream_.Byte(&literal_));
        if (literal_ == 0) return Corrupt("zero byte in a diff pair");
        pending_ = true;
      }
      if (zeros_ >= n - k) {
        zeros_ -= n - k;
        return Status::Ok();
      }
      k += zeros_;
      zeros_ = 0;
      out[k] = static_cast<uint8_t>(out[k] + literal_);
      ++k;
      pending_ = false;
    }
    return Status::Ok();
  }

  Status Finish() {
    if (pending_) return Corrupt("diff stream longer than its records");
    return stream_.Finish();
  }

 private:
  BufferedStream stream_;
  uint64_t zeros_ = 0;
  uint8_t literal_ = 0;
  bool pending_ = false;
  bool exhausted_ = false;
};

}  // namespace

Status BrotliDecompressExact(const uint8_t* in, size_t in_size, uint8_t* out,
                             size_t out_size) {
  BrotliReader reader(in, in_size);
  REVPATCH_RETURN_IF_ERROR(reader.Read(out, out_size));
  return reader.Finish();
}

namespace {

// Reads one control record, checks it against both buffers and applies its
// seek to *old_pos.
Status NextRecord(BufferedStream* control, uint32_t version, uint64_t old_size, uint64_t out_size,
                  uint64_t new_pos, uint64_t* old_pos, uint64_t* add, uint64_t* copy) {
  uint64_t seek_bits;
  bool forward;
  uint64_t magnitude;
  if (version == 1) {
    uint8_t rec[kFixedRecordSize];
    REVPATCH_RETURN_IF_ERROR(control->Fixed(rec, kFixedRecordSize));
    seek_bits = GetU64(rec);
    *add = GetU64(rec + 8);
    *copy = GetU64(rec + 16);
    forward = static_cast<int64_t>(seek_bits) >= 0;
    magnitude = forward ? seek_bits : ~seek_bits + 1;  // two's complement
  } else {
    REVPATCH_RETURN_IF_ERROR(control->Varint(&seek_bits));
    REVPATCH_RETURN_IF_ERROR(control->Varint(add));
    REVPATCH_RETURN_IF_ERROR(control->Varint(copy));
    forward = (seek_bits & 1) == 0;  // zigzag
    magnitude = forward ? seek_bits >> 1 : (seek_bits >> 1) + 1;
  }
  if (forward) {
    if (magnitude > old_size - *old_pos) return Corrupt("seek past the source");
    *old_pos += magnitude;
  } else {
    if (magnitude > *old_pos) return Corrupt("seek before the source");
    *old_pos -= magnitude;
  }
  if (*add == 0 && *copy == 0) return Corrupt("empty record");
  if (*add > out_size - new_pos || *add > old_size - *old_pos) {
    return Corrupt("add past the source or target");
  }
  if (*copy > out_size - new_pos - *add) return Corrupt("copy past the target");
  return Status::Ok();
}

// Version 3: every record is read first (the prediction of one add may
// depend on where any other add went), the adds' old bytes are laid down
// and their references predicted, then the diff and extra streams follow.
Status DecodePredicted(const uint8_t* old_data, size_t old_size, BufferedStream* control,
                       DiffPairs* diff, BrotliReader* extra, const uint8_t* reference_part,
                       size_t reference_size, const DeltaLayout* layout, uint8_t* out,
                       size_t out_size) {
  ReferenceInfo references;
  REVPATCH_RETURN_IF_ERROR(DecodeReferenceInfo(reference_part, reference_size, &references));
  std::vector<DeltaRecord> records;
  std::vector<Equivalence> adds;
  uint64_t old_pos = 0, new_pos = 0;
  while (new_pos < out_size) {
    if (records.size() == kMaxPredictedRecords) return Corrupt("too many records");
    uint64_t add, copy;
    REVPATCH_RETURN_IF_ERROR(
        NextRecord(control, kDiffFormatVersion, old_size, out_size, new_pos, &old_pos, &add, &copy));
    records.push_back({old_pos, add, copy});
    if (add > 0) {
      std::memcpy(out + new_pos, old_data + old_pos, add);
      adds.push_back({old_pos, new_pos, add});
    }
    old_pos += add;
    new_pos += add + copy;
  }
  REVPATCH_RETURN_IF_ERROR(control->Finish());
  REVPATCH_RETURN_IF_ERROR(PredictReferences(references, layout ? *layout : DeltaLayout{},
                                             old_data, old_size, adds, out, out_size));
  new_pos = 0;
  for (const DeltaRecord& r : records) {
    REVPATCH_RETURN_IF_ERROR(diff->Apply(out + new_pos, r.add_length));
    new_pos += r.add_length;
    REVPATCH_RETURN_IF_ERROR(extra->Read(out + new_pos, r.copy_length));
    new_pos += r.copy_length;
  }
  REVPATCH_RETURN_IF_ERROR(diff->Finish());
  return extra->Finish();
}

}  // namespace

Status DecodeDiff(const uint8_t* old_data, size_t old_size,
                  const uint8_t* delta, size_t delta_size, uint8_t* out,
                  size_t out_size, const DeltaLayout* layout) {
  if (delta_size < kDiffHeaderSize) return Corrupt("truncated header");
  if (std::memcmp(delta, kDiffMagic, 4) != 0) return Corrupt("bad magic");
  const uint32_t version = GetU32(delta + 4);
  if (version == kStreamDiffFormatVersion) {
    return DecodeStreamDelta(old_data, old_size, delta, delta_size, out, out_size);
  }
  if (version != 1 && version != kPlainDiffFormatVersion && version != kDiffFormatVersion) {
    return Status(ErrorCode::kUnsupported, "delta: version " + std::to_string(version));
  }
  const size_t header = version == kDiffFormatVersion ? kPredictedHeaderSize : kDiffHeaderSize;
  if (delta_size < header) return Corrupt("truncated header");
  if (GetU64(delta + 8) != out_size) return Corrupt("wrong output size");
  const int parts = version == kDiffFormatVersion ? 4 : 3;
  uint64_t lengths[4] = {0, 0, 0, 0}, total = 0;
  for (int s = 0; s < parts; ++s) {
    lengths[s] = GetU64(delta + 16 + 8 * s);
    if (__builtin_add_overflow(total, lengths[s], &total)) return Corrupt("stream lengths overflow");
  }
  if (total != delta_size - header) return Corrupt("stream lengths do not add up");
  const uint8_t* p = delta + header;
  BufferedStream control(p, lengths[0], "control");
  BrotliReader diff_v1(p + lengths[0], lengths[1]);
  DiffPairs diff(p + lengths[0], lengths[1]);
  BrotliReader extra(p + lengths[0] + lengths[1], lengths[2]);
  if (version == kDiffFormatVersion) {
    return DecodePredicted(old_data, old_size, &control, &diff, &extra,
                           p + lengths[0] + lengths[1] + lengths[2], lengths[3], layout, out,
                           out_size);
  }

  uint64_t old_pos = 0, new_pos = 0;
  while (new_pos < out_size) {
    uint64_t add, copy;
    REVPATCH_RETURN_IF_ERROR(
        NextRecord(&control, version, old_size, out_size, new_pos, &old_pos, &add, &copy));
    uint8_t* o = out + new_pos;
    const uint8_t* s = old_data + old_pos;
    if (version == 1) {
      REVPATCH_RETURN_IF_ERROR(diff_v1.Read(o, add));
      for (uint64_t k = 0; k < add; ++k) o[k] = static_cast<uint8_t>(o[k] + s[k]);
    } else if (add > 0) {
      std::memcpy(o, s, add);
      REVPATCH_RETURN_IF_ERROR(diff.Apply(o, add));
    }
    new_pos += add;
    old_pos += add;
    REVPATCH_RETURN_IF_ERROR(extra.Read(out + new_pos, copy));
    new_pos += copy;
  }
  REVPATCH_RETURN_IF_ERROR(control.Finish());
  REVPATCH_RETURN_IF_ERROR(version == 1 ? diff_v1.Finish() : diff.Finish());
  return extra.Finish();
}

}  // namespace revpatch
