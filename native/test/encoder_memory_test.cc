// The encoder's memory bounds (diff_encoder.h) against what it allocates:
// this binary counts every operator new (the matcher's and WriteDelta's
// vectors) and gives libbrotli a counting allocator, and each bound must
// hold over text-like, random, zero and repetitive inputs, without being
// wildly above the measurement (a bound ten times too high would starve
// the generator's workers as surely as a low one overruns the budget).
#include "../engine/generator/diff_encoder.h"

#include <brotli/encode.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <new>
#include <random>
#include <vector>

#include "testing.h"

using namespace revpatch;

namespace {

std::atomic<int64_t> g_live{0};
std::atomic<int64_t> g_peak{0};

void Count(int64_t delta) {
  const int64_t now = g_live.fetch_add(delta) + delta;
  int64_t peak = g_peak.load();
  while (now > peak && !g_peak.compare_exchange_weak(peak, now)) {
  }
}

// Each block carries its size in front (16 bytes keep the alignment).
void* CountedAlloc(size_t n) {
  void* p = std::malloc(n + 16);
  if (p == nullptr) return nullptr;
  *static_cast<size_t*>(p) = n;
  Count(static_cast<int64_t>(n));
  return static_cast<char*>(p) + 16;
}
void CountedFree(void* q) {
  if (q == nullptr) return;
  void* p = static_cast<char*>(q) - 16;
  Count(-static_cast<int64_t>(*static_cast<size_t*>(p)));
  std::free(p);
}

// Starts a measurement: the peak from here on, above what is live now.
int64_t StartCounting() {
  const int64_t base = g_live.load();
  g_peak.store(base);
  return base;
}
int64_t PeakSince(int64_t base) { return g_peak.load() - base; }

using Bytes = std::vector<uint8_t>;

// The bench volumes' data blocks: 1 KiB random, 3 KiB of 16 letters.
Bytes Mixed(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  Bytes b(n);
  for (size_t i = 0; i < n; ++i) {
    b[i] = i % 4096 < 1024 ? static_cast<uint8_t>(rng()) : static_cast<uint8_t>(0x61 + (rng() & 15));
  }
  return b;
}
Bytes Random(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  Bytes b(n);
  for (auto& x : b) x = static_cast<uint8_t>(rng());
  return b;
}

// Peak bytes libbrotli allocates compressing `data` as BrotliCompress
// configures it at `quality`.
uint64_t MeasuredBrotli(const Bytes& data, int quality) {
  struct Counter {
    static void* Alloc(void*, size_t n) { return CountedAlloc(n); }
    static void Free(void*, void* p) { CountedFree(p); }
  };
  Bytes out(BrotliEncoderMaxCompressedSize(data.size()) + 16);
  const int64_t base = StartCounting();
  BrotliEncoderState* state = BrotliEncoderCreateInstance(Counter::Alloc, Counter::Free, nullptr);
  BrotliEncoderSetParameter(state, BROTLI_PARAM_QUALITY, static_cast<uint32_t>(quality));
  BrotliEncoderSetParameter(state, BROTLI_PARAM_LGWIN,
                            static_cast<uint32_t>(BrotliWindowBits(data.size(), quality)));
  BrotliEncoderSetParameter(state, BROTLI_PARAM_SIZE_HINT, static_cast<uint32_t>(data.size()));
  size_t avail_in = data.size(), avail_out = out.size();
  const uint8_t* next_in = data.data();
  uint8_t* next_out = out.data();
  const bool ok = BrotliEncoderCompressStream(state, BROTLI_OPERATION_FINISH, &avail_in, &next_in,
                                              &avail_out, &next_out, nullptr);
  BrotliEncoderDestroyInstance(state);
  EXPECT_TRUE(ok);
  return static_cast<uint64_t>(PeakSince(base));
}

}  // namespace

void* operator new(size_t n) {
  void* p = CountedAlloc(n);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}
void* operator new[](size_t n) { return operator new(n); }
void operator delete(void* p) noexcept { CountedFree(p); }
void operator delete[](void* p) noexcept { CountedFree(p); }
void operator delete(void* p, size_t) noexcept { CountedFree(p); }
void operator delete[](void* p, size_t) noexcept { CountedFree(p); }

TEST(zopfli_qualities_keep_a_4_mib_window_and_the_others_16_mib) {
  EXPECT_EQ(BrotliWindowBits(100, 11), 10);
  EXPECT_EQ(BrotliWindowBits(1 << 20, 11), 21);
  EXPECT_EQ(BrotliWindowBits(64u << 20, 11), kBrotliZopfliWindowBits);
  EXPECT_EQ(BrotliWindowBits(64u << 20, 10), kBrotliZopfliWindowBits);
  EXPECT_EQ(BrotliWindowBits(64u << 20, 9), kBrotliWindowBits);
  EXPECT_EQ(BrotliWindowBits(64u << 20, 1), kBrotliWindowBits);
}

TEST(brotli_peak_bound_holds_for_every_quality_and_input) {
  struct Input {
    Bytes data;
    std::vector<int> qualities;
  };
  // Quality 11 on incompressible data runs at about a megabyte a second:
  // the large inputs at quality 11 are zeros and text-like data.
  std::vector<Input> inputs;
  inputs.push_back({Bytes(3000, 0), {1, 5, 9, 11}});
  inputs.push_back({Mixed(200 << 10, 1), {1, 5, 9, 10, 11}});
  inputs.push_back({Random(300 << 10, 2), {1, 5, 11}});
  inputs.push_back({Mixed(2 << 20, 3), {1, 5, 9}});
  inputs.push_back({Bytes(6 << 20, 0), {1, 5, 9, 11}});
  inputs.push_back({Random(20 << 20, 4), {1, 5}});
  for (const Input& in : inputs) {
    for (int q : in.qualities) {
      const uint64_t measured = MeasuredBrotli(in.data, q) + in.data.size();
      const uint64_t bound = BrotliPeakBytes(in.data.size(), q);
      if (!(measured <= bound && bound <= 4 * measured + (uint64_t{48} << 20))) {
        std::fprintf(stderr, "  size %zu quality %d: measured %llu, bound %llu\n", in.data.size(), q,
                     static_cast<unsigned long long>(measured),
                     static_cast<unsigned long long>(bound));
      }
      EXPECT_TRUE(measured <= bound);
      EXPECT_TRUE(bound <= 4 * measured + (uint64_t{48} << 20));
    }
  }
}

TEST(matcher_init_stays_within_its_bounds) {
  std::vector<Bytes> olds;
  olds.push_back(Random(3 << 20, 5));
  olds.push_back(Mixed(4 << 20, 6));
  Bytes repetitive(3 << 20);  // many equal LMS substrings: SA-IS recurses
  for (size_t i = 0; i < repetitive.size(); ++i) repetitive[i] = "abcabcabd"[i % 9];
  olds.push_back(repetitive);
  olds.push_back(Bytes(2 << 20, 0));
  DeltaMatcher reused;
  for (const Bytes& old : olds) {
    for (DeltaMatcher* m : {static_cast<DeltaMatcher*>(nullptr), &reused}) {
      DeltaMatcher fresh;
      DeltaMatcher& matcher = m == nullptr ? fresh : *m;
      const int64_t base = StartCounting();
      ASSERT_OK(matcher.Init(old.data(), old.size()));
      const uint64_t peak = static_cast<uint64_t>(PeakSince(base));
      EXPECT_TRUE(peak <= DeltaMatcherInitPeakBytes(old.size()));
      // About 6 bytes per byte: the bound is not far above what it holds.
      EXPECT_TRUE(DeltaMatcherInitPeakBytes(old.size()) <= 7 * old.size() + (uint64_t{2} << 20));
      if (m != nullptr) continue;  // the last source's arrays are counted in base
      EXPECT_TRUE(g_live.load() - base <= static_cast<int64_t>(DeltaMatcherBytes(old.size())));
      EXPECT_TRUE(peak >= 5 * old.size());
    }
  }
}

TEST(write_delta_allocates_within_its_bound) {
  const Bytes old = Mixed(1 << 20, 7);
  Bytes edited = old;  // a few bytes changed per block, and new data after
  for (size_t i = 0; i < edited.size(); i += 4096) edited[i + 100] ^= 0x5a;
  const Bytes fresh = Mixed(512 << 10, 8);
  edited.insert(edited.end(), fresh.begin(), fresh.end());
  DeltaMatcher matcher;
  ASSERT_OK(matcher.Init(old.data(), old.size()));
  std::vector<DeltaRecord> records;
  matcher.Match(edited.data(), edited.size(), &records);
  std::vector<uint8_t> delta;
  const int64_t base = StartCounting();
  ASSERT_OK(WriteDelta(old.data(), old.size(), edited.data(), edited.size(), records, &delta));
  // Brotli's own allocations go through malloc, not counted here; the
  // bound holds them too, so the vectors alone must fit well inside.
  const uint64_t vectors = static_cast<uint64_t>(PeakSince(base));
  EXPECT_TRUE(vectors + 2 * MeasuredBrotli(edited, kBrotliQuality) <=
              WriteDeltaPeakBytes(edited.size(), records.size(), false));
  EXPECT_TRUE(WriteDeltaPeakBytes(edited.size(), records.size(), true) >
              WriteDeltaPeakBytes(edited.size(), records.size(), false));
}
