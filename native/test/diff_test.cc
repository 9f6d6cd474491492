// The delta format: round trips over many shapes of input, and hostile or
// damaged deltas refused without reading or writing out of bounds (the
// output buffers are sized exactly, so AddressSanitizer sees any overrun).
#include "../engine/diff.h"

#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "../engine/generator/diff_encoder.h"
#include "../engine/little_endian.h"
#include "testing.h"

using namespace revpatch;

namespace {

using Bytes = std::vector<uint8_t>;

Bytes Random(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  Bytes b(n);
  for (auto& x : b) x = static_cast<uint8_t>(rng());
  return b;
}

// Text-like data: words from a small vocabulary, so it compresses.
Bytes Structured(size_t n, uint32_t seed) {
  static const char* kWords[] = {"patch ", "layer ", "block ", "extent ", "view ",
                                 "digest ", "seal ", "\n", "0x1f2e ", "apply "};
  std::mt19937 rng(seed);
  Bytes b;
  while (b.size() < n) {
    const char* w = kWords[rng() % 10];
    b.insert(b.end(), w, w + std::strlen(w));
  }
  b.resize(n);
  return b;
}

Status RoundTrip(const Bytes& old_data, const Bytes& new_data, size_t* delta_size = nullptr) {
  Bytes delta;
  REVPATCH_RETURN_IF_ERROR(EncodeDiff(old_data, new_data, &delta));
  if (delta_size) *delta_size = delta.size();
  Bytes out(new_data.size());
  REVPATCH_RETURN_IF_ERROR(
      DecodeDiff(old_data.data(), old_data.size(), delta.data(), delta.size(), out.data(), out.size()));
  if (out != new_data) return Status(ErrorCode::kCorrupt, "round trip differs");
  return Status::Ok();
}

struct Record {
  int64_t seek;
  uint64_t add;
  uint64_t copy;
};

Bytes CraftStreams(uint64_t new_size, const Bytes& control, const Bytes& diff,
                   const Bytes& extra, uint32_t version) {
  Bytes streams[3];
  const Bytes* raw[3] = {&control, &diff, &extra};
  for (int s = 0; s < 3; ++s) {
    Status st = BrotliCompress(raw[s]->data(), raw[s]->size(), 5, &streams[s]);
    if (!st.ok()) std::abort();
  }
  Bytes out(kDiffHeaderSize);
  std::memcpy(out.data(), "RPDF", 4);
  PutU32(out.data() + 4, version);
  PutU64(out.data() + 8, new_size);
  for (int s = 0; s < 3; ++s) PutU64(out.data() + 16 + 8 * s, streams[s].size());
  for (auto& s : streams) out.insert(out.end(), s.begin(), s.end());
  return out;
}

void PutVarint(uint64_t v, Bytes* out) {
  while (v >= 0x80) {
    out->push_back(static_cast<uint8_t>(v | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<uint8_t>(v));
}

// The version 2 diff stream of raw diff bytes: (zeros, nonzero byte) pairs.
Bytes Pairs(const Bytes& diff) {
  Bytes out;
  uint64_t zeros = 0;
  for (uint8_t d : diff) {
    if (d == 0) {
      ++zeros;
      continue;
    }
    PutVarint(zeros, &out);
    out.push_back(d);
    zeros = 0;
  }
  return out;
}

// A delta assembled by hand, for the decoder's refusals. `diff` is the raw
// diff stream of the version: bytes for 1, pairs for 2 (see Pairs).
Bytes Craft(uint64_t new_size, const std::vector<Record>& records, const Bytes& diff,
            const Bytes& extra, uint32_t version = 2) {
  Bytes control;
  for (const Record& r : records) {
    if (version == 1) {
      uint8_t rec[24];
      PutU64(rec, static_cast<uint64_t>(r.seek));
      PutU64(rec + 8, r.add);
      PutU64(rec + 16, r.copy);
      control.insert(control.end(), rec, rec + 24);
    } else {
      const uint64_t seek = static_cast<uint64_t>(r.seek);
      PutVarint((seek << 1) ^ static_cast<uint64_t>(r.seek >> 63), &control);
      PutVarint(r.add, &control);
      PutVarint(r.copy, &control);
    }
  }
  return CraftStreams(new_size, control, diff, extra, version);
}

Status DecodeInto(const Bytes& old_data, const Bytes& delta, size_t out_size) {
  Bytes out(out_size);
  return DecodeDiff(old_data.data(), old_data.size(), delta.data(), delta.size(), out.data(),
                    out.size());
}

TEST(empty_and_trivial_inputs_round_trip) {
  EXPECT_OK(RoundTrip({}, {}));
  EXPECT_OK(RoundTrip({}, Random(1000, 1)));
  EXPECT_OK(RoundTrip(Random(1000, 2), {}));
  EXPECT_OK(RoundTrip({7}, {7}));
  EXPECT_OK(RoundTrip({7}, {8}));
  EXPECT_OK(RoundTrip(Random(15, 3), Random(15, 3)));  // shorter than a seed
}

TEST(identical_inputs_make_a_tiny_delta) {
  Bytes data = Random(1 << 20, 4);
  size_t size = 0;
  EXPECT_OK(RoundTrip(data, data, &size));
  EXPECT_TRUE(size < 200);
}

TEST(unrelated_random_inputs_round_trip) {
  for (uint32_t seed = 0; seed < 8; ++seed) {
    EXPECT_OK(RoundTrip(Random(4096 * (seed + 1), seed), Random(3000 * (seed + 2), seed + 100)));
  }
}

TEST(small_edits_make_a_small_delta) {
  Bytes old_data = Random(256 * 1024, 5);
  Bytes new_data = old_data;
  std::mt19937 rng(6);
  for (int i = 0; i < 50; ++i) new_data[rng() % new_data.size()] ^= 0x5A;
  size_t size = 0;
  EXPECT_OK(RoundTrip(old_data, new_data, &size));
  EXPECT_TRUE(size < 2000);
}

TEST(insertions_deletions_and_moves_round_trip_compactly) {
  Bytes old_data = Random(200 * 1024, 7);
  Bytes new_data;
  // Move the second half to the front, insert fresh bytes, drop a slice.
  new_data.insert(new_data.end(), old_data.begin() + 100 * 1024, old_data.end());
  Bytes fresh = Random(777, 8);
  new_data.insert(new_data.end(), fresh.begin(), fresh.end());
  new_data.insert(new_data.end(), old_data.begin(), old_data.begin() + 50 * 1024);
  new_data.insert(new_data.end(), old_data.begin() + 60 * 1024, old_data.begin() + 100 * 1024);
  size_t size = 0;
  EXPECT_OK(RoundTrip(old_data, new_data, &size));
  EXPECT_TRUE(size < 2000);
}

TEST(structured_data_round_trips) {
  for (uint32_t seed = 0; seed < 4; ++seed) {
    Bytes old_data = Structured(100000, seed);
    Bytes new_data = old_data;
    new_data.insert(new_data.begin() + 5000, 13, 'x');
    new_data.erase(new_data.begin() + 40000, new_data.begin() + 40100);
    for (size_t i = 60000; i < 60100; i += 7) new_data[i] = '#';
    EXPECT_OK(RoundTrip(old_data, new_data));
    EXPECT_OK(RoundTrip(new_data, old_data));
    EXPECT_OK(RoundTrip(old_data, Structured(90000, seed + 50)));
  }
  Bytes zeros(65536, 0);
  Bytes ones(65536, 1);
  EXPECT_OK(RoundTrip(zeros, ones));
  EXPECT_OK(RoundTrip(ones, zeros));
  EXPECT_OK(RoundTrip(zeros, zeros));
}

TEST(the_output_size_must_be_the_announced_one) {
  Bytes old_data = Random(5000, 9), new_data = Random(5000, 10);
  Bytes delta;
  ASSERT_OK(EncodeDiff(old_data, new_data, &delta));
  EXPECT_OK(DecodeInto(old_data, delta, 5000));
  EXPECT_CODE(DecodeInto(old_data, delta, 4999), ErrorCode::kCorrupt);
  EXPECT_CODE(DecodeInto(old_data, delta, 5001), ErrorCode::kCorrupt);
}

TEST(every_truncation_and_trailing_byte_is_refused) {
  Bytes old_data = Structured(20000, 11), new_data = old_data;
  new_data[100] = '!';
  Bytes delta;
  ASSERT_OK(EncodeDiff(old_data, new_data, &delta));
  for (size_t n = 0; n < delta.size(); ++n) {
    Bytes cut(delta.begin(), delta.begin() + n);
    EXPECT_CODE(DecodeInto(old_data, cut, new_data.size()), ErrorCode::kCorrupt);
  }
  Bytes longer = delta;
  longer.push_back(0);
  EXPECT_CODE(DecodeInto(old_data, longer, new_data.size()), ErrorCode::kCorrupt);
}

TEST(flipped_bytes_never_overrun) {
  Bytes old_data = Structured(30000, 12), new_data = Structured(30000, 13);
  Bytes delta;
  ASSERT_OK(EncodeDiff(old_data, new_data, &delta));
  int refused = 0;
  for (size_t i = 0; i < delta.size(); ++i) {
    for (uint8_t mask : {0x01, 0x80, 0xFF}) {
      Bytes bad = delta;
      bad[i] ^= mask;
      Bytes out(new_data.size());
      Status s = DecodeDiff(old_data.data(), old_data.size(), bad.data(), bad.size(), out.data(),
                            out.size());
      // Brotli carries no checksum, so a flip may decode to other bytes;
      // the operation's dst_hash catches that. It must never overrun.
      if (!s.ok()) ++refused;
      if (i < kDiffHeaderSize) EXPECT_TRUE(!s.ok());
    }
  }
  EXPECT_TRUE(refused > 0);
}

TEST(a_short_source_is_refused_not_overread) {
  Bytes old_data = Random(10000, 14), new_data = old_data;
  new_data[5] ^= 1;
  Bytes delta;
  ASSERT_OK(EncodeDiff(old_data, new_data, &delta));
  Bytes shorter(old_data.begin(), old_data.begin() + 9000);
  EXPECT_CODE(DecodeInto(shorter, delta, new_data.size()), ErrorCode::kCorrupt);
}

// The record checks, for both control encodings. Raw diff bytes are all
// ones here, so every add byte shows in the version 2 pairs too.
void ExpectHostileRecordsRefused(uint32_t v) {
  const Bytes old_data = Random(100, 15);
  auto diff = [v](size_t n) { return v == 1 ? Bytes(n, 1) : Pairs(Bytes(n, 1)); };
  const Bytes d10 = diff(10), e10(10, 0);
  constexpr int64_t kMin = std::numeric_limits<int64_t>::min();
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  constexpr uint64_t kMaxU = std::numeric_limits<uint64_t>::max();
  auto decode = [&](const std::vector<Record>& records, const Bytes& d, const Bytes& e) {
    return DecodeInto(old_data, Craft(20, records, d, e, v), 20);
  };
  // Well-formed baseline: add 10 from old[90..], copy 10.
  EXPECT_OK(decode({{90, 10, 10}}, d10, e10));
  // Seeks outside [0, old_size].
  EXPECT_CODE(decode({{101, 10, 10}}, d10, e10), ErrorCode::kCorrupt);
  EXPECT_CODE(decode({{-1, 10, 10}}, d10, e10), ErrorCode::kCorrupt);
  EXPECT_CODE(decode({{kMin, 10, 10}}, d10, e10), ErrorCode::kCorrupt);
  EXPECT_CODE(decode({{kMax, 10, 10}}, d10, e10), ErrorCode::kCorrupt);
  // Add reaching past old, or past new.
  EXPECT_CODE(decode({{91, 10, 10}}, d10, e10), ErrorCode::kCorrupt);
  EXPECT_CODE(decode({{0, 21, 0}}, diff(21), {}), ErrorCode::kCorrupt);
  EXPECT_CODE(decode({{0, kMaxU, 0}}, d10, {}), ErrorCode::kCorrupt);
  EXPECT_CODE(decode({{0, uint64_t{1} << 32, 0}}, d10, {}), ErrorCode::kCorrupt);
  // Copy past new.
  EXPECT_CODE(decode({{0, 10, 11}}, d10, Bytes(11)), ErrorCode::kCorrupt);
  EXPECT_CODE(decode({{0, 0, kMaxU}}, {}, e10), ErrorCode::kCorrupt);
  EXPECT_CODE(decode({{0, 0, uint64_t{1} << 31}}, {}, e10), ErrorCode::kCorrupt);
  // A record without progress (would loop for ever).
  EXPECT_CODE(decode({{0, 0, 0}, {0, 10, 10}}, d10, e10), ErrorCode::kCorrupt);
  // Streams longer than the records need (and, for version 1, shorter; in
  // version 2 the diff bytes after the last pair are zeros by definition).
  if (v == 1) EXPECT_CODE(decode({{0, 10, 10}}, diff(9), e10), ErrorCode::kCorrupt);
  EXPECT_CODE(decode({{0, 10, 10}}, diff(11), e10), ErrorCode::kCorrupt);
  EXPECT_CODE(decode({{0, 10, 10}}, d10, Bytes(9)), ErrorCode::kCorrupt);
  EXPECT_CODE(decode({{0, 10, 10}}, d10, Bytes(11)), ErrorCode::kCorrupt);
  EXPECT_CODE(decode({{0, 10, 5}}, d10, e10), ErrorCode::kCorrupt);
  EXPECT_CODE(decode({{0, 10, 10}, {0, 1, 0}}, d10, e10), ErrorCode::kCorrupt);
}

}  // namespace

TEST(hostile_control_records_are_corrupt_in_both_versions) {
  ExpectHostileRecordsRefused(1);
  ExpectHostileRecordsRefused(2);
}

TEST(version_1_deltas_still_decode) {
  const Bytes old_data = Random(100, 20);
  Bytes diff(10, 0);
  diff[3] = 5;
  Bytes want(old_data.begin() + 50, old_data.begin() + 60);
  want[3] = static_cast<uint8_t>(want[3] + 5);
  want.insert(want.end(), 4, 'x');
  Bytes out(14);
  Bytes delta = Craft(14, {{50, 10, 4}}, diff, Bytes(4, 'x'), 1);
  ASSERT_OK(DecodeDiff(old_data.data(), old_data.size(), delta.data(), delta.size(), out.data(),
                       out.size()));
  EXPECT_TRUE(out == want);
}

TEST(unknown_versions_are_unsupported) {
  const Bytes old_data = Random(100, 15);
  for (uint32_t version : {0u, 99u, 0xFFFFFFFFu}) {
    EXPECT_CODE(DecodeInto(old_data, Craft(20, {{90, 10, 10}}, Bytes(10, 0), Bytes(10, 0), version),
                           20),
                ErrorCode::kUnsupported);
  }
}

TEST(malformed_varints_and_diff_pairs_are_corrupt) {
  const Bytes old_data = Random(100, 21);
  const Bytes e10(10, 0);
  auto decode = [&](const Bytes& control, const Bytes& diff) {
    return DecodeInto(old_data, CraftStreams(20, control, diff, e10, 2), 20);
  };
  Bytes good;
  PutVarint(0, &good);
  PutVarint(10, &good);
  PutVarint(10, &good);
  EXPECT_OK(decode(good, {}));
  // Eleven continuation bytes, and a tenth byte carrying bits past 64.
  Bytes too_long(10, 0x80);
  too_long.push_back(0);
  EXPECT_CODE(decode(too_long, {}), ErrorCode::kCorrupt);
  Bytes past_64(9, 0xFF);
  past_64.push_back(0x02);
  EXPECT_CODE(decode(past_64, {}), ErrorCode::kCorrupt);
  // A record cut inside a varint, and a stray byte after the records.
  EXPECT_CODE(decode(Bytes{0, 10}, {}), ErrorCode::kCorrupt);
  Bytes stray = good;
  stray.push_back(0);
  EXPECT_CODE(decode(stray, {}), ErrorCode::kCorrupt);
  // Pairs: a zero "nonzero" byte, a pair cut after its count, a pair whose
  // zeros run past the adds, and one pair too many.
  EXPECT_CODE(decode(good, Bytes{3, 0}), ErrorCode::kCorrupt);
  EXPECT_CODE(decode(good, Bytes{3}), ErrorCode::kCorrupt);
  EXPECT_CODE(decode(good, Bytes{10, 1}), ErrorCode::kCorrupt);
  EXPECT_OK(decode(good, Bytes{9, 1}));
  EXPECT_CODE(decode(good, Bytes{9, 1, 0, 1}), ErrorCode::kCorrupt);
  Bytes huge_zeros;
  PutVarint(std::numeric_limits<uint64_t>::max(), &huge_zeros);
  huge_zeros.push_back(1);
  EXPECT_CODE(decode(good, huge_zeros), ErrorCode::kCorrupt);
}

TEST(one_matcher_serves_many_targets_and_records_are_checked) {
  Bytes old_data = Random(64 * 1024, 22);
  DeltaMatcher matcher;
  ASSERT_OK(matcher.Init(old_data.data(), old_data.size()));
  for (uint32_t seed = 0; seed < 4; ++seed) {
    Bytes new_data(old_data.begin() + seed * 8000, old_data.begin() + seed * 8000 + 20000);
    new_data[100] ^= 1;
    std::vector<DeltaRecord> records;
    matcher.Match(new_data.data(), new_data.size(), &records);
    uint64_t covered = 0;
    for (const DeltaRecord& r : records) covered += r.add_length + r.copy_length;
    EXPECT_EQ(covered, new_data.size());
    Bytes delta, out(new_data.size());
    ASSERT_OK(WriteDelta(old_data.data(), old_data.size(), new_data.data(), new_data.size(),
                         records, &delta));
    EXPECT_TRUE(delta.size() < 300);
    ASSERT_OK(DecodeDiff(old_data.data(), old_data.size(), delta.data(), delta.size(), out.data(),
                         out.size()));
    EXPECT_TRUE(out == new_data);
  }
  Bytes new_data(100, 1), delta;
  DeltaRecord past_old{old_data.size() - 10, 20, 80};
  EXPECT_CODE(WriteDelta(old_data.data(), old_data.size(), new_data.data(), 100, {past_old}, &delta),
              ErrorCode::kInvalidArgument);
  DeltaRecord short_cover{0, 10, 10};
  EXPECT_CODE(WriteDelta(old_data.data(), old_data.size(), new_data.data(), 100, {short_cover},
                         &delta),
              ErrorCode::kInvalidArgument);
  DeltaRecord empty{0, 0, 0};
  EXPECT_CODE(WriteDelta(old_data.data(), old_data.size(), new_data.data(), 100,
                         {empty, DeltaRecord{0, 0, 100}}, &delta),
              ErrorCode::kInvalidArgument);
}

TEST(relocated_pointers_make_a_small_delta) {
  // Executable-like: many 4-byte fields shifted by the same amount, as when
  // code moves; the diff bytes are mostly zeros with a few repeated values.
  Bytes old_data = Structured(512 * 1024, 23);
  Bytes new_data = old_data;
  for (size_t i = 1000; i + 4 < new_data.size(); i += 1000 + (i % 7) * 13) {
    uint32_t v;
    std::memcpy(&v, new_data.data() + i, 4);
    v += 0x40;
    std::memcpy(new_data.data() + i, &v, 4);
  }
  size_t size = 0;
  EXPECT_OK(RoundTrip(old_data, new_data, &size));
  EXPECT_TRUE(size < 4000);
}

TEST(stream_lengths_that_wrap_are_corrupt) {
  Bytes delta = Craft(20, {{0, 10, 10}}, Bytes(10), Bytes(10));
  const Bytes old_data = Random(100, 16);
  uint64_t control = GetU64(delta.data() + 16);
  // control + diff + extra == actual length only modulo 2^64.
  Bytes wrapped = delta;
  PutU64(wrapped.data() + 24, GetU64(delta.data() + 24) + (uint64_t{1} << 63));
  PutU64(wrapped.data() + 32, GetU64(delta.data() + 32) + (uint64_t{1} << 63));
  EXPECT_CODE(DecodeInto(old_data, wrapped, 20), ErrorCode::kCorrupt);
  Bytes huge = delta;
  PutU64(huge.data() + 16, std::numeric_limits<uint64_t>::max());
  EXPECT_CODE(DecodeInto(old_data, huge, 20), ErrorCode::kCorrupt);
  Bytes shifted = delta;
  PutU64(shifted.data() + 16, control - 1);
  PutU64(shifted.data() + 24, GetU64(delta.data() + 24) + 1);
  EXPECT_CODE(DecodeInto(old_data, shifted, 20), ErrorCode::kCorrupt);
}

TEST(brotli_output_must_be_exactly_the_expected_length) {
  Bytes data = Structured(50000, 17);
  Bytes packed;
  ASSERT_OK(BrotliCompress(data.data(), data.size(), 9, &packed));
  Bytes out(data.size());
  ASSERT_OK(BrotliDecompressExact(packed.data(), packed.size(), out.data(), out.size()));
  EXPECT_TRUE(out == data);
  Bytes small(data.size() - 1), large(data.size() + 1);
  EXPECT_CODE(BrotliDecompressExact(packed.data(), packed.size(), small.data(), small.size()),
              ErrorCode::kCorrupt);
  EXPECT_CODE(BrotliDecompressExact(packed.data(), packed.size(), large.data(), large.size()),
              ErrorCode::kCorrupt);
  EXPECT_CODE(BrotliDecompressExact(packed.data(), packed.size() - 1, out.data(), out.size()),
              ErrorCode::kCorrupt);
  Bytes trailing = packed;
  trailing.push_back(0);
  EXPECT_CODE(BrotliDecompressExact(trailing.data(), trailing.size(), out.data(), out.size()),
              ErrorCode::kCorrupt);
  EXPECT_CODE(BrotliDecompressExact(nullptr, 0, out.data(), out.size()), ErrorCode::kCorrupt);
}

// Expected output of hand-made records whose adds take old[seek..] plus the
// raw diff bytes and whose copies take extra in order.
Bytes ApplyByHand(const Bytes& old_data, const std::vector<Record>& records, const Bytes& diff,
                  const Bytes& extra) {
  Bytes out;
  uint64_t old_pos = 0, d = 0, e = 0;
  for (const Record& r : records) {
    old_pos = static_cast<uint64_t>(static_cast<int64_t>(old_pos) + r.seek);
    for (uint64_t k = 0; k < r.add; ++k) {
      out.push_back(static_cast<uint8_t>(old_data[old_pos + k] + diff[d++]));
    }
    old_pos += r.add;
    out.insert(out.end(), extra.begin() + e, extra.begin() + e + r.copy);
    e += r.copy;
  }
  return out;
}

// More records than one batch, with adds and copies each large enough to
// be filled on two threads: both versions give exactly the bytes the
// records say, and a damage to either stream, or both, is still kCorrupt.
TEST(large_deltas_decode_in_batches_with_adds_and_copies_side_by_side) {
  const Bytes old_data = Random(1 << 16, 30);
  std::mt19937 rng(31);
  std::vector<Record> records;
  uint64_t old_pos = 0, add_total = 0, copy_total = 0;
  for (int i = 0; i < 40000; ++i) {
    const uint64_t add = 1 + rng() % 12, copy = rng() % 12;
    const uint64_t to = rng() % (old_data.size() - add);
    records.push_back({static_cast<int64_t>(to) - static_cast<int64_t>(old_pos), add, copy});
    old_pos = to + add;
    add_total += add;
    copy_total += copy;
  }
  ASSERT_TRUE(add_total >= (64u << 10) && copy_total >= (64u << 10));
  // Mostly zeros, with runs long enough for varints of two and three bytes.
  Bytes diff(add_total, 0);
  for (uint64_t k = 0; k < add_total; k += 1 + rng() % (rng() % 8 == 0 ? 40000 : 20)) {
    diff[k] = static_cast<uint8_t>(1 + rng() % 255);
  }
  const Bytes extra = Random(copy_total, 32);
  const Bytes want = ApplyByHand(old_data, records, diff, extra);
  for (uint32_t version : {1u, 2u}) {
    const Bytes raw_diff = version == 1 ? diff : Pairs(diff);
    Bytes out(want.size());
    Bytes delta = Craft(want.size(), records, raw_diff, extra, version);
    ASSERT_OK(DecodeDiff(old_data.data(), old_data.size(), delta.data(), delta.size(),
                         out.data(), out.size()));
    EXPECT_TRUE(out == want);

    Bytes short_extra(extra.begin(), extra.end() - 1);
    EXPECT_CODE(DecodeInto(old_data, Craft(want.size(), records, raw_diff, short_extra, version),
                           want.size()),
                ErrorCode::kCorrupt);
    Bytes long_diff = raw_diff;  // one diff byte past the adds
    if (version == 1) {
      long_diff.push_back(1);
    } else {
      PutVarint(add_total, &long_diff);
      long_diff.push_back(1);
    }
    EXPECT_CODE(DecodeInto(old_data, Craft(want.size(), records, long_diff, extra, version),
                           want.size()),
                ErrorCode::kCorrupt);
    EXPECT_CODE(DecodeInto(old_data, Craft(want.size(), records, long_diff, short_extra, version),
                           want.size()),
                ErrorCode::kCorrupt);
  }
  // A zero "nonzero" byte deep in the pairs, read on the fast path.
  Bytes bad_pairs = Pairs(diff);
  std::vector<size_t> literals;
  for (size_t k = 0; k < bad_pairs.size(); ++k) {
    while (bad_pairs[k] & 0x80) ++k;  // the count's bytes
    literals.push_back(++k);
  }
  bad_pairs[literals[literals.size() / 2]] = 0;
  Status damaged = DecodeInto(old_data, Craft(want.size(), records, bad_pairs, extra, 2),
                              want.size());
  EXPECT_CODE(damaged, ErrorCode::kCorrupt);
}

// The encoder's own deltas of a megabyte with scattered edits, insertions
// and new runs: big enough for both decoding sides to run at once.
TEST(large_encoded_deltas_round_trip) {
  Bytes old_data = Structured(1 << 20, 33);
  Bytes new_data = old_data;
  std::mt19937 rng(34);
  for (int i = 0; i < 3000; ++i) new_data[rng() % new_data.size()] ^= 0x5A;
  const Bytes fresh = Random(200 << 10, 35);
  new_data.insert(new_data.begin() + (300 << 10), fresh.begin(), fresh.end());
  new_data.erase(new_data.begin() + (700 << 10), new_data.begin() + (720 << 10));
  ASSERT_OK(RoundTrip(old_data, new_data));
}
