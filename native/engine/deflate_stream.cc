#include "deflate_stream.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "little_endian.h"

namespace revpatch {
namespace {

constexpr int kMaxCodeBits = 15;
constexpr int kFastBits = 9;
constexpr int kMaxLitLenSymbols = 288;
constexpr int kMaxDistSymbols = 32;
constexpr int kCodeLengthSymbols = 19;
constexpr uint32_t kMaxDistance = 32768;
constexpr uint32_t kMaxStoredLength = 65535;
// HLIT, HDIST, HCLEN, 19 three-bit lengths, 320 code lengths of at most
// 7 + 7 bits (the longest code length code and 18's extra bits).
constexpr uint64_t kMaxHeaderBits = 14 + 19 * 3 + 320 * 14;

constexpr uint16_t kLengthBase[29] = {3,  4,  5,  6,  7,  8,  9,  10, 11,  13,
                                      15, 17, 19, 23, 27, 31, 35, 43, 51,  59,
                                      67, 83, 99, 115, 131, 163, 195, 227, 258};
constexpr uint8_t kLengthExtra[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                                      2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
constexpr uint16_t kDistBase[30] = {1,    2,    3,    4,    5,    7,     9,     13,
                                    17,   25,   33,   49,   65,   97,    129,   193,
                                    257,  385,  513,  769,  1025, 1537,  2049,  3073,
                                    4097, 6145, 8193, 12289, 16385, 24577};
constexpr uint8_t kDistExtra[30] = {0, 0, 0, 0, 1, 1, 2, 2,  3,  3,  4,  4,  5,  5,  6,
                                    6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};
constexpr uint8_t kCodeLengthOrder[kCodeLengthSymbols] = {16, 17, 18, 0, 8,  7, 9,  6, 10, 5,
                                                          11, 4,  12, 3, 13, 2, 14, 1, 15};

Status Corrupt(const std::string& what) {
  return Status(ErrorCode::kCorrupt, "deflate: " + what);
}

// Symbol of every match length 3..258 (index length - 3), and of every
// distance: d - 1 below 256 directly, above through (d - 1) >> 7.
struct SymbolTables {
  uint8_t length[256];
  uint8_t dist_low[256];
  uint8_t dist_high[256];
  SymbolTables() {
    for (int s = 0; s < 29; ++s) {
      for (int l = kLengthBase[s]; l < kLengthBase[s] + (1 << kLengthExtra[s]) && l <= 258; ++l) {
        length[l - 3] = static_cast<uint8_t>(s);
      }
    }
    length[255] = 28;  // 258 is symbol 285, not 284 + 31
    for (int s = 0; s < 30; ++s) {
      for (uint32_t d = kDistBase[s]; d < kDistBase[s] + (1u << kDistExtra[s]); ++d) {
        if (d <= 256) dist_low[d - 1] = static_cast<uint8_t>(s);
        if (d > 256 && ((d - 1) >> 7) < 256) dist_high[(d - 1) >> 7] = static_cast<uint8_t>(s);
      }
    }
  }
  int Dist(uint32_t d) const { return d <= 256 ? dist_low[d - 1] : dist_high[(d - 1) >> 7]; }
};

const SymbolTables& Symbols() {
  static const SymbolTables tables;
  return tables;
}

// Reads bits LSB first from a byte range, 57 or more ahead when it can.
class BitReader {
 public:
  BitReader(const uint8_t* p, size_t size) : p_(p), size_(size) {}

  void Refill() {
#ifdef REVPATCH_LITTLE_ENDIAN_HOST
    if (size_ - pos_ >= 8) {
      uint64_t w;
      std::memcpy(&w, p_ + pos_, 8);
      buf_ |= w << cnt_;
      pos_ += (63 - cnt_) >> 3;
      cnt_ |= 56;
      return;
    }
#endif
    while (cnt_ <= 56 && pos_ < size_) {
      buf_ |= static_cast<uint64_t>(p_[pos_++]) << cnt_;
      cnt_ += 8;
    }
  }
  // The next bits (at least min(57, what is left) valid: cnt()).
  uint64_t Peek() {
    Refill();
    return buf_;
  }
  unsigned cnt() const { return cnt_; }
  void Drop(unsigned n) {
    buf_ >>= n;
    cnt_ -= n;
  }
  bool Bits(unsigned n, uint32_t* v) {
    if (cnt_ < n) {
      Refill();
      if (cnt_ < n) return false;
    }
    *v = static_cast<uint32_t>(buf_ & ((uint64_t{1} << n) - 1));
    Drop(n);
    return true;
  }
  uint64_t BitPosition() const { return uint64_t{pos_} * 8 - cnt_; }
  // At a byte boundary: copies n bytes to dst.
  bool CopyBytes(uint8_t* dst, size_t n) {
    while (cnt_ >= 8 && n > 0) {
      *dst++ = static_cast<uint8_t>(buf_);
      Drop(8);
      --n;
    }
    if (n == 0) return true;
    // cnt_ is 0 here; bits past it may be loaded ahead, drop them.
    buf_ = 0;
    if (size_ - pos_ < n) return false;
    std::memcpy(dst, p_ + pos_, n);
    pos_ += n;
    return true;
  }

 private:
  const uint8_t* p_;
  size_t size_;
  size_t pos_ = 0;
  uint64_t buf_ = 0;
  unsigned cnt_ = 0;
};

// Writes bits LSB first into exactly out_size bytes; anything past them
// sets overflow().
class BitWriter {
 public:
  BitWriter(uint8_t* out, size_t size) : out_(out), size_(size) {}

  // n <= 32
  void Put(uint32_t v, unsigned n) {
    buf_ |= static_cast<uint64_t>(v) << cnt_;
    cnt_ += n;
    if (cnt_ >= 32) Flush();
  }
  void Flush() {
#ifdef REVPATCH_LITTLE_ENDIAN_HOST
    if (size_ - pos_ >= 8) {
      std::memcpy(out_ + pos_, &buf_, 8);
      const unsigned bytes = cnt_ >> 3;
      pos_ += bytes;
      buf_ = bytes == 8 ? 0 : buf_ >> (bytes * 8);
      cnt_ -= bytes * 8;
      return;
    }
#endif
    while (cnt_ >= 8) {
      if (pos_ == size_) {
        overflow_ = true;
        buf_ = 0;
        cnt_ = 0;
        return;
      }
      out_[pos_++] = static_cast<uint8_t>(buf_);
      buf_ >>= 8;
      cnt_ -= 8;
    }
  }
  uint64_t BitPosition() const { return uint64_t{pos_} * 8 + cnt_; }
  // At a byte boundary.
  void CopyBytes(const uint8_t* src, size_t n) {
    Flush();
    if (overflow_ || size_ - pos_ < n) {
      overflow_ = true;
      return;
    }
    std::memcpy(out_ + pos_, src, n);
    pos_ += n;
  }
  bool overflow() const { return overflow_; }
  size_t bytes() const { return pos_; }
  unsigned pending() const { return cnt_; }

 private:
  uint8_t* out_;
  size_t size_;
  size_t pos_ = 0;
  uint64_t buf_ = 0;
  unsigned cnt_ = 0;
  bool overflow_ = false;
};

// A canonical Huffman code from its code lengths: decoding (a table for
// codes up to kFastBits, counting for longer ones and for patterns an
// incomplete code leaves unassigned) and encoding (each symbol's code,
// reversed for LSB-first output, and length; 0 = no code).
struct Huffman {
  uint16_t count[kMaxCodeBits + 1];
  uint16_t sorted[kMaxLitLenSymbols];
  uint32_t fast[1 << kFastBits];  // (length << 16) | symbol; 0: look further
  uint16_t code[kMaxLitLenSymbols];
  uint8_t length[kMaxLitLenSymbols];

  // False when the lengths over-subscribe the code space.
  bool Build(const uint8_t* lengths, int n) {
    std::memset(count, 0, sizeof(count));
    for (int s = 0; s < n; ++s) ++count[lengths[s]];
    count[0] = 0;
    int left = 1;
    for (int len = 1; len <= kMaxCodeBits; ++len) {
      left <<= 1;
      left -= count[len];
      if (left < 0) return false;
    }
    uint16_t offset[kMaxCodeBits + 2];
    uint32_t next_code[kMaxCodeBits + 2];
    offset[1] = 0;
    next_code[1] = 0;
    for (int len = 1; len <= kMaxCodeBits; ++len) {
      offset[len + 1] = static_cast<uint16_t>(offset[len] + count[len]);
      next_code[len + 1] = (next_code[len] + count[len]) << 1;
    }
    std::memset(fast, 0, sizeof(fast));
    std::memset(length, 0, sizeof(length));
    for (int s = 0; s < n; ++s) {
      const int len = lengths[s];
      if (len == 0) continue;
      sorted[offset[len]++] = static_cast<uint16_t>(s);
      const uint32_t c = next_code[len]++;
      uint32_t r = 0;
      for (int i = 0; i < len; ++i) r |= ((c >> i) & 1) << (len - 1 - i);
      code[s] = static_cast<uint16_t>(r);
      length[s] = static_cast<uint8_t>(len);
      if (len <= kFastBits) {
        for (uint32_t i = r; i < (1u << kFastBits); i += 1u << len) {
          fast[i] = (static_cast<uint32_t>(len) << 16) | static_cast<uint32_t>(s);
        }
      }
    }
    return true;
  }

  // The next symbol, or -1 when the bits are no code (or run out).
  int Decode(BitReader* br) const {
    const uint64_t bits = br->Peek();
    const uint32_t e = fast[bits & ((1u << kFastBits) - 1)];
    if (e != 0) {
      const unsigned len = e >> 16;
      if (len > br->cnt()) return -1;
      br->Drop(len);
      return static_cast<int>(e & 0xFFFF);
    }
    int c = 0, first = 0, index = 0;
    for (unsigned len = 1; len <= kMaxCodeBits; ++len) {
      c |= static_cast<int>((bits >> (len - 1)) & 1);
      const int n = count[len];
      if (c - first < n) {
        if (len > br->cnt()) return -1;
        br->Drop(len);
        return sorted[index + c - first];
      }
      index += n;
      first = (first + n) << 1;
      c <<= 1;
    }
    return -1;
  }
};

struct FixedCodes {
  Huffman lit, dist;
  FixedCodes() {
    uint8_t l[kMaxLitLenSymbols];
    for (int s = 0; s < 288; ++s) l[s] = s < 144 ? 8 : s < 256 ? 9 : s < 280 ? 7 : 8;
    lit.Build(l, 288);
    uint8_t d[kMaxDistSymbols];
    std::fill(d, d + kMaxDistSymbols, 5);
    dist.Build(d, kMaxDistSymbols);
  }
};

const FixedCodes& Fixed() {
  static const FixedCodes codes;
  return codes;
}

// Reads a dynamic block's header (after BTYPE) and builds its two codes.
Status ReadDynamicHeader(BitReader* br, Huffman* lit, Huffman* dist) {
  uint32_t hlit, hdist, hclen;
  if (!br->Bits(5, &hlit) || !br->Bits(5, &hdist) || !br->Bits(4, &hclen)) {
    return Corrupt("truncated block header");
  }
  hlit += 257;
  hdist += 1;
  hclen += 4;
  uint8_t cl_lengths[kCodeLengthSymbols] = {};
  for (uint32_t i = 0; i < hclen; ++i) {
    uint32_t v;
    if (!br->Bits(3, &v)) return Corrupt("truncated block header");
    cl_lengths[kCodeLengthOrder[i]] = static_cast<uint8_t>(v);
  }
  Huffman cl;
  if (!cl.Build(cl_lengths, kCodeLengthSymbols)) return Corrupt("over-subscribed code length code");
  uint8_t lengths[kMaxLitLenSymbols + kMaxDistSymbols];
  const uint32_t total = hlit + hdist;
  uint32_t n = 0;
  while (n < total) {
    const int sym = cl.Decode(br);
    if (sym < 0) return Corrupt("bad code length code");
    if (sym < 16) {
      lengths[n++] = static_cast<uint8_t>(sym);
      continue;
    }
    uint32_t rep, value = 0;
    if (sym == 16) {
      if (n == 0) return Corrupt("repeat with no previous length");
      value = lengths[n - 1];
      if (!br->Bits(2, &rep)) return Corrupt("truncated block header");
      rep += 3;
    } else if (sym == 17) {
      if (!br->Bits(3, &rep)) return Corrupt("truncated block header");
      rep += 3;
    } else {
      if (!br->Bits(7, &rep)) return Corrupt("truncated block header");
      rep += 11;
    }
    if (rep > total - n) return Corrupt("code lengths repeat past their count");
    std::memset(lengths + n, static_cast<int>(value), rep);
    n += rep;
  }
  if (!lit->Build(lengths, static_cast<int>(hlit))) return Corrupt("over-subscribed literal code");
  if (!dist->Build(lengths + hlit, static_cast<int>(hdist))) {
    return Corrupt("over-subscribed distance code");
  }
  return Status::Ok();
}

void PutVarint(std::vector<uint8_t>* v, uint64_t x) {
  while (x >= 0x80) {
    v->push_back(static_cast<uint8_t>(x | 0x80));
    x >>= 7;
  }
  v->push_back(static_cast<uint8_t>(x));
}

// Bits [start, start + count) of p, LSB first, as bytes.
void AppendBits(const uint8_t* p, uint64_t start, uint64_t count, std::vector<uint8_t>* v) {
  for (uint64_t i = 0; i < count; i += 8) {
    uint32_t byte = 0;
    for (uint64_t b = 0; b < 8 && i + b < count; ++b) {
      const uint64_t at = start + i + b;
      byte |= ((p[at >> 3] >> (at & 7)) & 1u) << b;
    }
    v->push_back(static_cast<uint8_t>(byte));
  }
}

// The decompressed data grows in *out from `base`; nothing before base is
// reachable by a distance.
class DataSink {
 public:
  DataSink(std::vector<uint8_t>* out, uint64_t limit)
      : out_(out), base_(out->size()), n_(out->size()), limit_(limit) {}
  size_t produced() const { return n_ - base_; }
  size_t base() const { return base_; }
  size_t end() const { return n_; }
  bool Room(size_t k) {
    if (k > limit_ || produced() > limit_ - k) return false;
    if (n_ + k > out_->size()) {
      size_t want = std::max<size_t>(out_->size() * 2, n_ + k);
      want = std::max<size_t>(want, base_ + 4096);
      if (want - base_ > limit_) want = base_ + static_cast<size_t>(limit_);
      out_->resize(want);
    }
    return true;
  }
  uint8_t* at() { return out_->data() + n_; }
  void Advance(size_t k) { n_ += k; }
  void Literal(uint8_t b) { (*out_)[n_++] = b; }
  void Copy(uint32_t distance, uint32_t length) {
    uint8_t* d = out_->data() + n_;
    const uint8_t* s = d - distance;
    if (distance >= length) {
      std::memcpy(d, s, length);
    } else {
      for (uint32_t i = 0; i < length; ++i) d[i] = s[i];
    }
    n_ += length;
  }
  void Finish() { out_->resize(n_); }
  void Undo() { out_->resize(base_); }

 private:
  std::vector<uint8_t>* out_;
  size_t base_, n_;
  uint64_t limit_;
};

// Finds, for a match at position p of the data, the earlier positions
// whose next `length` bytes equal p's, most recent first: the distance
// a compressor chose is coded as its rank in that order (0 when it took
// the first, as zlib and most matchers do), which repeats far more than
// distances do. Positions are chained by a hash of their first 3 bytes,
// within deflate's 32 KiB window; a walk takes at most kMaxRankSteps
// links, so a distance further down is coded as itself.
class MatchRanker {
 public:
  static constexpr int kHashBits = 15;
  static constexpr uint32_t kNone = 0xFFFFFFFFu;
  static constexpr int kMaxRankSteps = 256;

  MatchRanker(const uint8_t* data, uint64_t size)
      : data_(data), size_(size), head_(size_t{1} << kHashBits, kNone), prev_(kMaxDistance) {}

  // Chains every position before p.
  void InsertUpTo(uint64_t p) {
    for (; inserted_ < p && inserted_ + 3 <= size_; ++inserted_) {
      const uint32_t h = Hash(data_ + inserted_);
      prev_[inserted_ & (kMaxDistance - 1)] = head_[h];
      head_[h] = static_cast<uint32_t>(inserted_);
    }
    if (inserted_ < p) inserted_ = p;
  }

  // Walks p's candidates for a match of `length`: stops at `want_pos`
  // (returns its rank) or at the `want_rank`-th candidate (returns its
  // position in *pos); -1 when neither is reached within the steps.
  int64_t Walk(uint64_t p, uint32_t length, uint64_t want_pos, uint64_t want_rank, uint64_t* pos) {
    if (p + 3 > size_) return -1;
    uint32_t q = head_[Hash(data_ + p)];
    int64_t rank = 0;
    for (int step = 0; step < kMaxRankSteps && q != kNone && q < p && p - q <= kMaxDistance;
         ++step) {
      if (q == want_pos) return rank;
      if (Matches(q, p, length)) {
        if (static_cast<uint64_t>(rank) == want_rank) {
          *pos = q;
          return rank;
        }
        ++rank;
      }
      const uint32_t next = prev_[q & (kMaxDistance - 1)];
      if (next == kNone || next >= q) break;
      q = next;
    }
    return -1;
  }

  // data[q + k] == data[p + k] for k < length (p + length <= size). The
  // data is all there, so ranges that overlap compare as they are.
  bool Matches(uint64_t q, uint64_t p, uint32_t length) const {
    const uint8_t* a = data_ + q;
    const uint8_t* b = data_ + p;
    return a[length - 1] == b[length - 1] && std::memcmp(a, b, length) == 0;
  }

 private:
  static uint32_t Hash(const uint8_t* s) {
    const uint32_t v = s[0] | (uint32_t{s[1]} << 8) | (uint32_t{s[2]} << 16);
    return (v * 2654435761u) >> (32 - kHashBits);
  }

  const uint8_t* data_;
  uint64_t size_;
  uint64_t inserted_ = 0;
  std::vector<uint32_t> head_;
  std::vector<uint32_t> prev_;
};

// A block as read, before its structure is written (the distances'
// ranks need the data after the block too).
struct BlockRecord {
  uint8_t tag = 0;              // BFINAL | BTYPE << 1 | has odd list << 3
  uint32_t pad = 0;             // stored: the skipped bits
  uint32_t stored_length = 0;   // stored
  uint64_t header_start = 0, header_bits = 0;  // dynamic: in the input
  size_t first_token = 0, tokens = 0;
  uint64_t final_run = 0;
  size_t first_odd = 0, odds = 0;
};

struct Token {
  uint32_t run;      // literals before the match
  uint16_t length;   // 3..258
  uint16_t distance_minus_1;
};

Status ExpandBlocks(const uint8_t* in, size_t in_size, DataSink* data,
                    std::vector<BlockRecord>* blocks, std::vector<Token>* tokens,
                    std::vector<uint64_t>* odd, uint32_t* final_pad, size_t* consumed) {
  BitReader br(in, in_size);
  Huffman dyn_lit, dyn_dist;
  for (;;) {
    uint32_t bfinal, btype;
    if (!br.Bits(1, &bfinal) || !br.Bits(2, &btype)) return Corrupt("truncated block");
    if (btype == 3) return Corrupt("reserved block type");
    BlockRecord b;
    b.tag = static_cast<uint8_t>(bfinal | (btype << 1));
    if (btype == 0) {
      const unsigned npad = static_cast<unsigned>((8 - br.BitPosition() % 8) % 8);
      uint32_t len, nlen;
      if (!br.Bits(npad, &b.pad) || !br.Bits(16, &len) || !br.Bits(16, &nlen)) {
        return Corrupt("truncated stored block");
      }
      if ((len ^ 0xFFFF) != nlen) return Corrupt("stored block length check");
      if (!data->Room(len)) return Corrupt("expands past the limit");
      if (!br.CopyBytes(data->at(), len)) return Corrupt("truncated stored block");
      data->Advance(len);
      b.stored_length = len;
    } else {
      const Huffman* lit = &Fixed().lit;
      const Huffman* dist = &Fixed().dist;
      b.header_start = br.BitPosition();
      if (btype == 2) {
        REVPATCH_RETURN_IF_ERROR(ReadDynamicHeader(&br, &dyn_lit, &dyn_dist));
        lit = &dyn_lit;
        dist = &dyn_dist;
        b.header_bits = br.BitPosition() - b.header_start;
      }
      b.first_token = tokens->size();
      b.first_odd = odd->size();
      uint64_t matches = 0, run = 0;
      for (;;) {
        const int sym = lit->Decode(&br);
        if (sym < 0) return Corrupt("bad literal/length code");
        if (sym < 256) {
          if (!data->Room(1)) return Corrupt("expands past the limit");
          data->Literal(static_cast<uint8_t>(sym));
          ++run;
          continue;
        }
        if (sym == 256) break;
        const int ls = sym - 257;
        if (ls >= 29) return Corrupt("invalid length symbol");
        uint32_t extra, dextra;
        if (!br.Bits(kLengthExtra[ls], &extra)) return Corrupt("truncated length");
        const uint32_t length = kLengthBase[ls] + extra;
        if (length == 258 && ls == 27) odd->push_back(matches);
        const int ds = dist->Decode(&br);
        if (ds < 0) return Corrupt("bad distance code");
        if (ds >= 30) return Corrupt("invalid distance symbol");
        if (!br.Bits(kDistExtra[ds], &dextra)) return Corrupt("truncated distance");
        const uint32_t distance = kDistBase[ds] + dextra;
        if (distance > data->produced()) return Corrupt("distance before the start");
        if (!data->Room(length)) return Corrupt("expands past the limit");
        if (run > 0xFFFFFFFFu) return Corrupt("literal run too long");
        data->Copy(distance, length);
        tokens->push_back({static_cast<uint32_t>(run), static_cast<uint16_t>(length),
                           static_cast<uint16_t>(distance - 1)});
        run = 0;
        ++matches;
      }
      b.tokens = tokens->size() - b.first_token;
      b.odds = odd->size() - b.first_odd;
      b.final_run = run;
      if (b.odds > 0) b.tag |= 8;
    }
    blocks->push_back(b);
    if (bfinal) break;
  }
  const unsigned npad = static_cast<unsigned>((8 - br.BitPosition() % 8) % 8);
  if (!br.Bits(npad, final_pad)) return Corrupt("truncated end");
  *consumed = static_cast<size_t>(br.BitPosition() / 8);
  return Status::Ok();
}

// The structure of a stream read by ExpandBlocks, over its whole data.
void WriteStructure(const uint8_t* in, const uint8_t* data, uint64_t data_size,
                    const std::vector<BlockRecord>& blocks, const std::vector<Token>& tokens,
                    const std::vector<uint64_t>& odd, uint32_t final_pad, std::vector<uint8_t>* st) {
  st->push_back(kDeflateStructureVersion);
  MatchRanker ranker(data, data_size);
  uint64_t p = 0;
  for (const BlockRecord& b : blocks) {
    st->push_back(b.tag);
    if (((b.tag >> 1) & 3) == 0) {
      st->push_back(static_cast<uint8_t>(b.pad));
      PutVarint(st, b.stored_length);
      p += b.stored_length;
      continue;
    }
    if (((b.tag >> 1) & 3) == 2) {
      PutVarint(st, b.header_bits);
      AppendBits(in, b.header_start, b.header_bits, st);
    }
    PutVarint(st, b.tokens);
    if (b.odds > 0) {
      PutVarint(st, b.odds);
      for (size_t i = 0; i < b.odds; ++i) {
        const uint64_t at = odd[b.first_odd + i];
        PutVarint(st, i == 0 ? at : at - odd[b.first_odd + i - 1] - 1);
      }
    }
    for (size_t i = 0; i < b.tokens; ++i) {
      const Token& t = tokens[b.first_token + i];
      PutVarint(st, t.run);
      p += t.run;
      st->push_back(static_cast<uint8_t>(t.length - 3));
      ranker.InsertUpTo(p);
      const uint64_t distance = uint64_t{t.distance_minus_1} + 1;
      uint64_t unused;
      const int64_t rank = ranker.Walk(p, t.length, p - distance, ~uint64_t{0}, &unused);
      if (rank >= 0) {
        PutVarint(st, static_cast<uint64_t>(rank) + 1);
      } else {
        st->push_back(0);
        PutVarint(st, t.distance_minus_1);
      }
      p += t.length;
    }
    PutVarint(st, b.final_run);
    p += b.final_run;
  }
  st->push_back(static_cast<uint8_t>(final_pad));
}

Status Expand(const uint8_t* in, size_t in_size, uint64_t limit, std::vector<uint8_t>* out,
              size_t* consumed, bool whole) {
  DataSink data(out, limit);
  std::vector<BlockRecord> blocks;
  std::vector<Token> tokens;
  std::vector<uint64_t> odd;
  uint32_t final_pad = 0;
  Status s = ExpandBlocks(in, in_size, &data, &blocks, &tokens, &odd, &final_pad, consumed);
  if (s.ok() && whole && *consumed != in_size) s = Corrupt("bytes after the final block");
  if (!s.ok()) {
    data.Undo();
    return s;
  }
  data.Finish();
  const size_t base = data.base();
  std::vector<uint8_t> st;
  WriteStructure(in, out->data() + base, data.produced(), blocks, tokens, odd, final_pad, &st);
  if (data.produced() + st.size() + kDeflateTrailerSize > limit) {
    data.Undo();
    return Corrupt("expands past the limit");
  }
  out->insert(out->end(), st.begin(), st.end());
  uint8_t trailer[kDeflateTrailerSize];
  PutU64(trailer, st.size());
  out->insert(out->end(), trailer, trailer + kDeflateTrailerSize);
  return Status::Ok();
}

// Reads the structure, refusing anything DeflateExpand would not write.
class StructureReader {
 public:
  StructureReader(const uint8_t* p, size_t size) : p_(p), size_(size) {}
  bool U8(uint8_t* v) {
    if (pos_ == size_) return false;
    *v = p_[pos_++];
    return true;
  }
  // Minimal LEB128 of at most 64 bits.
  bool Varint(uint64_t* v) {
    uint64_t x = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
      if (pos_ == size_) return false;
      const uint8_t b = p_[pos_++];
      if (shift == 63 && b > 1) return false;
      x |= static_cast<uint64_t>(b & 0x7F) << shift;
      if ((b & 0x80) == 0) {
        if (b == 0 && shift != 0) return false;  // not minimal
        *v = x;
        return true;
      }
    }
    return false;
  }
  const uint8_t* Bytes(size_t n) {
    if (size_ - pos_ < n) return nullptr;
    const uint8_t* r = p_ + pos_;
    pos_ += n;
    return r;
  }
  bool AtEnd() const { return pos_ == size_; }

 private:
  const uint8_t* p_;
  size_t size_;
  size_t pos_ = 0;
};

class Rebuilder {
 public:
  Rebuilder(const uint8_t* data, uint64_t data_size, const uint8_t* st, size_t st_size,
            uint8_t* out, size_t out_size)
      : data_(data), data_size_(data_size), sr_(st, st_size), bw_(out, out_size),
        ranker_(data, data_size) {}

  Status Run() {
    uint8_t version;
    if (!sr_.U8(&version)) return Corrupt("empty structure");
    if (version != kDeflateStructureVersion) {
      return Status(ErrorCode::kUnsupported, "deflate: structure version " +
                                                 std::to_string(version) + " is not known here");
    }
    for (;;) {
      uint8_t tag;
      if (!sr_.U8(&tag)) return Corrupt("structure ends before the final block");
      if (tag & 0xF0) return Corrupt("reserved bits in a block tag");
      const uint32_t bfinal = tag & 1, btype = (tag >> 1) & 3;
      if (btype == 3) return Corrupt("reserved block type");
      if (btype == 0 && (tag & 8)) return Corrupt("stored block with a length list");
      bw_.Put(bfinal, 1);
      bw_.Put(btype, 2);
      if (btype == 0) {
        REVPATCH_RETURN_IF_ERROR(Stored());
      } else {
        REVPATCH_RETURN_IF_ERROR(HuffmanBlock(btype, (tag & 8) != 0));
      }
      if (bw_.overflow()) return Corrupt("rebuilds past its length");
      if (bfinal) break;
    }
    REVPATCH_RETURN_IF_ERROR(Pad());
    if (!sr_.AtEnd()) return Corrupt("structure continues after the final block");
    if (dp_ != data_size_) return Corrupt("data left after the final block");
    bw_.Flush();
    if (bw_.overflow() || bw_.pending() != 0) return Corrupt("rebuilds past its length");
    return Status::Ok();
  }

  size_t written() const { return bw_.bytes(); }

 private:
  Status Pad() {
    uint8_t pad;
    if (!sr_.U8(&pad)) return Corrupt("truncated structure");
    const unsigned npad = static_cast<unsigned>((8 - bw_.BitPosition() % 8) % 8);
    if (pad >> npad) return Corrupt("padding wider than its bits");
    bw_.Put(pad, npad);
    return Status::Ok();
  }

  Status Stored() {
    REVPATCH_RETURN_IF_ERROR(Pad());
    uint64_t len;
    if (!sr_.Varint(&len) || len > kMaxStoredLength) return Corrupt("bad stored length");
    if (len > data_size_ - dp_) return Corrupt("stored block past the data");
    bw_.Put(static_cast<uint32_t>(len), 16);
    bw_.Put(static_cast<uint32_t>(len) ^ 0xFFFF, 16);
    bw_.CopyBytes(data_ + dp_, static_cast<size_t>(len));
    dp_ += len;
    return Status::Ok();
  }

  Status Literals(uint64_t run) {
    if (run > data_size_ - dp_) return Corrupt("literals past the data");
    for (uint64_t i = 0; i < run; ++i) {
      const uint8_t b = data_[dp_ + i];
      const unsigned len = lit_->length[b];
      if (len == 0) return Corrupt("literal without a code");
      bw_.Put(lit_->code[b], len);
    }
    dp_ += run;
    if (bw_.overflow()) return Corrupt("rebuilds past its length");
    return Status::Ok();
  }

  Status HuffmanBlock(uint32_t btype, bool has_odd) {
    if (btype == 2) {
      uint64_t header_bits;
      if (!sr_.Varint(&header_bits) || header_bits > kMaxHeaderBits) {
        return Corrupt("bad block header length");
      }
      const size_t nbytes = static_cast<size_t>((header_bits + 7) / 8);
      const uint8_t* h = sr_.Bytes(nbytes);
      if (h == nullptr) return Corrupt("truncated block header");
      if (header_bits % 8 != 0 && (h[nbytes - 1] >> (header_bits % 8)) != 0) {
        return Corrupt("bits after the block header");
      }
      BitReader hr(h, nbytes);
      REVPATCH_RETURN_IF_ERROR(ReadDynamicHeader(&hr, &dyn_lit_, &dyn_dist_));
      if (hr.BitPosition() != header_bits) return Corrupt("block header length");
      for (uint64_t i = 0; i < header_bits; i += 8) {
        bw_.Put(h[i / 8], static_cast<unsigned>(std::min<uint64_t>(8, header_bits - i)));
      }
      lit_ = &dyn_lit_;
      dist_ = &dyn_dist_;
    } else {
      lit_ = &Fixed().lit;
      dist_ = &Fixed().dist;
    }
    uint64_t matches;
    if (!sr_.Varint(&matches) || matches > (data_size_ - dp_) / 3) return Corrupt("bad match count");
    uint64_t odd_left = 0, next_odd = ~uint64_t{0};
    if (has_odd) {
      uint64_t first;
      if (!sr_.Varint(&odd_left) || odd_left == 0 || odd_left > matches || !sr_.Varint(&first) ||
          first >= matches) {
        return Corrupt("bad length list");
      }
      next_odd = first;
    }
    const SymbolTables& sym = Symbols();
    for (uint64_t m = 0; m < matches; ++m) {
      uint64_t run, dcode;
      uint8_t len_minus_3;
      if (!sr_.Varint(&run) || !sr_.U8(&len_minus_3)) return Corrupt("truncated tokens");
      REVPATCH_RETURN_IF_ERROR(Literals(run));
      const uint32_t length = len_minus_3 + 3u;
      if (length > data_size_ - dp_) return Corrupt("match past the data");
      if (!sr_.Varint(&dcode)) return Corrupt("truncated tokens");
      ranker_.InsertUpTo(dp_);
      uint32_t distance;
      uint64_t pos = 0;
      if (dcode == 0) {
        uint64_t dist_minus_1;
        if (!sr_.Varint(&dist_minus_1)) return Corrupt("truncated tokens");
        if (dist_minus_1 >= kMaxDistance || dist_minus_1 >= dp_) return Corrupt("bad distance");
        distance = static_cast<uint32_t>(dist_minus_1) + 1;
        if (!ranker_.Matches(dp_ - distance, dp_, length)) {
          return Corrupt("a match the data does not repeat");
        }
        if (ranker_.Walk(dp_, length, dp_ - distance, ~uint64_t{0}, &pos) >= 0) {
          return Corrupt("a distance spelled out that has a rank");
        }
      } else {
        if (ranker_.Walk(dp_, length, ~uint64_t{0}, dcode - 1, &pos) < 0) {
          return Corrupt("a match rank with no match");
        }
        distance = static_cast<uint32_t>(dp_ - pos);
      }
      int ls = sym.length[len_minus_3];
      uint32_t extra = length - kLengthBase[ls];
      if (m == next_odd) {
        if (length != 258) return Corrupt("length list names a match not of 258");
        ls = 27;
        extra = 31;
        --odd_left;
        if (odd_left > 0) {
          uint64_t gap;
          if (!sr_.Varint(&gap) || gap >= matches - m - 1) return Corrupt("bad length list");
          next_odd = m + 1 + gap;
        } else {
          next_odd = ~uint64_t{0};
        }
      }
      const int lsym = 257 + ls;
      if (lit_->length[lsym] == 0) return Corrupt("length without a code");
      bw_.Put(lit_->code[lsym], lit_->length[lsym]);
      bw_.Put(extra, kLengthExtra[ls]);
      const int ds = sym.Dist(distance);
      if (dist_->length[ds] == 0) return Corrupt("distance without a code");
      bw_.Put(dist_->code[ds], dist_->length[ds]);
      bw_.Put(distance - kDistBase[ds], kDistExtra[ds]);
      dp_ += length;
    }
    if (odd_left != 0) return Corrupt("bad length list");
    uint64_t run;
    if (!sr_.Varint(&run)) return Corrupt("truncated tokens");
    REVPATCH_RETURN_IF_ERROR(Literals(run));
    if (lit_->length[256] == 0) return Corrupt("end of block without a code");
    bw_.Put(lit_->code[256], lit_->length[256]);
    return Status::Ok();
  }

  const uint8_t* data_;
  uint64_t data_size_;
  uint64_t dp_ = 0;
  StructureReader sr_;
  BitWriter bw_;
  MatchRanker ranker_;
  Huffman dyn_lit_, dyn_dist_;
  const Huffman* lit_ = nullptr;
  const Huffman* dist_ = nullptr;
};

}  // namespace

Status DeflateExpand(const uint8_t* in, size_t in_size, uint64_t limit,
                     std::vector<uint8_t>* out) {
  size_t consumed = 0;
  return Expand(in, in_size, limit, out, &consumed, true);
}

Status DeflateExpandPrefix(const uint8_t* in, size_t in_size, uint64_t limit,
                           std::vector<uint8_t>* out, size_t* consumed) {
  return Expand(in, in_size, limit, out, consumed, false);
}

Status DeflateExpansionDataSize(const uint8_t* expanded, size_t expanded_size,
                                uint64_t* data_size) {
  if (expanded_size < kDeflateTrailerSize) return Corrupt("expansion shorter than its trailer");
  const uint64_t st_size = GetU64(expanded + expanded_size - kDeflateTrailerSize);
  if (st_size > expanded_size - kDeflateTrailerSize) return Corrupt("structure longer than the expansion");
  *data_size = expanded_size - kDeflateTrailerSize - st_size;
  return Status::Ok();
}

Status DeflateRebuild(const uint8_t* expanded, size_t expanded_size, uint8_t* out,
                      size_t out_size) {
  uint64_t data_size;
  REVPATCH_RETURN_IF_ERROR(DeflateExpansionDataSize(expanded, expanded_size, &data_size));
  const size_t st_size = expanded_size - kDeflateTrailerSize - static_cast<size_t>(data_size);
  Rebuilder r(expanded, data_size, expanded + data_size, st_size, out, out_size);
  REVPATCH_RETURN_IF_ERROR(r.Run());
  if (r.written() != out_size) return Corrupt("rebuilds fewer bytes than its length");
  return Status::Ok();
}

}  // namespace revpatch
