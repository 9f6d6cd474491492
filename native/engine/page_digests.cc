#include "page_digests.h"

#include <algorithm>
#include <string>

#include "sha256.h"

namespace revpatch {
namespace {

Status Corrupt(const std::string& what) {
  return Status(ErrorCode::kCorrupt, "delta page digests: " + what);
}

void PutVarint(uint64_t v, std::vector<uint8_t>* out) {
  while (v >= 0x80) {
    out->push_back(static_cast<uint8_t>(v | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<uint8_t>(v));
}

// Reads LEB128 varints of at most 64 bits; every value it returns is below
// 2^62 (offsets and lengths here, so sums of two never overflow).
class Reader {
 public:
  Reader(const uint8_t* data, size_t size) : p_(data), end_(data + size) {}

  Status Next(uint64_t* out) {
    uint64_t value = 0;
    for (int i = 0; i < 10; ++i) {
      if (p_ == end_) return Corrupt("truncated");
      const uint8_t b = *p_++;
      if (i == 9 && b > 1) return Corrupt("varint past 64 bits");
      value |= uint64_t{b & 0x7Fu} << (7 * i);
      if ((b & 0x80) == 0) {
        if (value >= kMaxDigestOffset) return Corrupt("value out of range");
        *out = value;
        return Status::Ok();
      }
    }
    return Corrupt("varint too long");
  }

  bool done() const { return p_ == end_; }

 private:
  const uint8_t* p_;
  const uint8_t* end_;
};

uint64_t PageCount(const PageDigests& r) {
  const uint64_t page = uint64_t{1} << r.page_shift;
  return (r.limit - r.pages + page - 1) / page;
}

// One contiguous run of the buffer in the view.
struct Piece {
  uint64_t view;
  uint64_t buf;
  uint64_t length;
};

// View offset -> buffer offset for a buffer laid out by extents, sorted by
// view offset (where hostile extents overlap, the first piece starting at
// or before an offset is the one that counts, on both sides alike).
class BufferMap {
 public:
  Status Init(uint32_t block_size, const std::vector<Extent>* extents, size_t size) {
    pieces_.clear();
    if (extents == nullptr) {
      if (size > 0) pieces_.push_back({0, 0, size});
      return Status::Ok();
    }
    uint64_t at = 0;
    for (const Extent& e : *extents) {
      if (at >= size) break;
      uint64_t view = 0, length = 0;
      if (__builtin_mul_overflow(e.start_block, uint64_t{block_size}, &view) ||
          __builtin_mul_overflow(e.num_blocks, uint64_t{block_size}, &length) ||
          view >= kMaxDigestOffset || length >= kMaxDigestOffset - view) {
        return Corrupt("extent out of range");
      }
      length = std::min<uint64_t>(length, size - at);
      if (length == 0) continue;
      pieces_.push_back({view, at, length});
      at += length;
    }
    if (at < size) return Corrupt("extents do not cover the buffer");
    std::stable_sort(pieces_.begin(), pieces_.end(),
                     [](const Piece& a, const Piece& b) { return a.view < b.view; });
    return Status::Ok();
  }

  const std::vector<Piece>& pieces() const { return pieces_; }

  // The piece holding view offset v, or null.
  const Piece* Locate(uint64_t v) const {
    auto it = std::upper_bound(pieces_.begin(), pieces_.end(), v,
                               [](uint64_t x, const Piece& p) { return x < p.view; });
    if (it == pieces_.begin()) return nullptr;
    const Piece* p = &*(it - 1);
    return v - p->view < p->length ? p : nullptr;
  }

  // Calls f(buffer offset, length) for the pieces of view [v, v + n), in
  // order, when all of it is in the buffer; false (and no call) otherwise.
  template <typename F>
  bool Cover(uint64_t v, uint64_t n, F f) const {
    // Checked whole first, so f sees nothing of a range that is only partly
    // in the buffer.
    for (int pass = 0; pass < 2; ++pass) {
      for (uint64_t at = v, left = n; left > 0;) {
        const Piece* p = Locate(at);
        if (p == nullptr) return false;
        const uint64_t k = std::min(left, p->view + p->length - at);
        if (pass == 1) f(p->buf + (at - p->view), k);
        at += k;
        left -= k;
      }
    }
    return true;
  }

 private:
  std::vector<Piece> pieces_;
};

void ApplyRun(const PageDigests& r, const BufferMap& map, DigestDirection direction,
              uint8_t* buf) {
  const uint64_t page = uint64_t{1} << r.page_shift;
  const uint64_t count = PageCount(r);
  Sha256 hasher;
  for (const Piece& p : map.pieces()) {
    // The pages starting in this piece (each page once: in the piece that
    // Locate() names for its start).
    const uint64_t piece_end = p.view + p.length;
    if (piece_end <= r.pages || p.view >= r.limit) continue;
    uint64_t i = p.view <= r.pages ? 0 : (p.view - r.pages + page - 1) / page;
    for (; i < count; ++i) {
      const uint64_t start = r.pages + i * page;
      if (start >= piece_end) break;
      if (map.Locate(start) != &p) continue;
      const uint64_t length = std::min(page, r.limit - start);
      hasher.Reset();
      if (!map.Cover(start, length, [&](uint64_t at, uint64_t n) { hasher.Update(buf + at, n); })) {
        continue;
      }
      const Digest digest = hasher.Final();
      size_t k = 0;
      map.Cover(r.slots + i * r.hash_size, r.hash_size, [&](uint64_t at, uint64_t n) {
        for (uint64_t j = 0; j < n; ++j, ++k) {
          buf[at + j] = static_cast<uint8_t>(direction == DigestDirection::kAdd
                                                 ? buf[at + j] + digest[k]
                                                 : buf[at + j] - digest[k]);
        }
      });
    }
  }
}

}  // namespace

bool ValidPageDigests(const std::vector<PageDigests>& runs) {
  if (runs.size() > kMaxPageDigestRuns) return false;
  uint64_t end = 0;
  for (const PageDigests& r : runs) {
    if (r.page_shift < 9 || r.page_shift > 16 || r.hash_size < 1 || r.hash_size > 32 ||
        r.pages >= r.limit || r.limit > r.slots || r.slots < end || r.slots >= kMaxDigestOffset) {
      return false;
    }
    const uint64_t count = PageCount(r);
    if (r.count != count || count > (kMaxDigestOffset - r.slots) / r.hash_size) return false;
    end = r.slots + count * r.hash_size;
  }
  return true;
}

void EncodePageDigests(const std::vector<PageDigests>& runs, std::vector<uint8_t>* out) {
  PutVarint(runs.size(), out);
  uint64_t end = 0;
  for (const PageDigests& r : runs) {
    PutVarint(r.slots - end, out);
    PutVarint(r.slots - r.limit, out);
    PutVarint(r.limit - r.pages, out);
    PutVarint(r.page_shift, out);
    PutVarint(r.hash_size, out);
    end = r.slots + r.count * r.hash_size;
  }
}

Status DecodePageDigests(const uint8_t* data, size_t size, std::vector<PageDigests>* runs) {
  Reader in(data, size);
  uint64_t n = 0;
  REVPATCH_RETURN_IF_ERROR(in.Next(&n));
  if (n > kMaxPageDigestRuns) return Corrupt("too many runs");
  std::vector<PageDigests> got;
  uint64_t end = 0;
  for (uint64_t i = 0; i < n; ++i) {
    uint64_t gap = 0, before = 0, hashed = 0, shift = 0, hash_size = 0;
    REVPATCH_RETURN_IF_ERROR(in.Next(&gap));
    REVPATCH_RETURN_IF_ERROR(in.Next(&before));
    REVPATCH_RETURN_IF_ERROR(in.Next(&hashed));
    REVPATCH_RETURN_IF_ERROR(in.Next(&shift));
    REVPATCH_RETURN_IF_ERROR(in.Next(&hash_size));
    PageDigests r;
    r.slots = end + gap;
    if (r.slots >= kMaxDigestOffset || before > r.slots || hashed == 0 || hashed > r.slots - before ||
        shift < 9 || shift > 16 || hash_size < 1 || hash_size > 32) {
      return Corrupt("run out of range");
    }
    r.limit = r.slots - before;
    r.pages = r.limit - hashed;
    r.page_shift = static_cast<uint8_t>(shift);
    r.hash_size = static_cast<uint8_t>(hash_size);
    r.count = PageCount(r);
    if (r.count > (kMaxDigestOffset - r.slots) / r.hash_size) return Corrupt("slots out of range");
    end = r.slots + r.count * r.hash_size;
    got.push_back(r);
  }
  if (!in.done()) return Corrupt("bytes after the runs");
  *runs = std::move(got);
  return Status::Ok();
}

Status ApplyPageDigests(const std::vector<PageDigests>& runs, uint32_t block_size,
                        const std::vector<Extent>* extents, DigestDirection direction,
                        uint8_t* buf, size_t size) {
  if (runs.empty()) return Status::Ok();
  BufferMap map;
  REVPATCH_RETURN_IF_ERROR(map.Init(block_size, extents, size));
  if (direction == DigestDirection::kAdd) {
    for (const PageDigests& r : runs) ApplyRun(r, map, direction, buf);
  } else {
    for (auto it = runs.rbegin(); it != runs.rend(); ++it) ApplyRun(*it, map, direction, buf);
  }
  return Status::Ok();
}

}  // namespace revpatch
