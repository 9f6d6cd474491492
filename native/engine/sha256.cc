#include "sha256.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "sha256_internal.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif
#if defined(__ARM_FEATURE_SHA2)
#include <arm_neon.h>
#endif

namespace revpatch {
namespace {

alignas(16) const uint32_t kK[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1,
    0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3,
    0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
    0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147,
    0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
    0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
    0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
    0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

const uint32_t kInitialState[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372,
                                   0xa54ff53a, 0x510e527f, 0x9b05688c,
                                   0x1f83d9ab, 0x5be0cd19};

// Compresses `blocks` consecutive 64-byte blocks into `state`.
using CompressFn = void (*)(uint32_t state[8], const uint8_t* data,
                            size_t blocks);

inline uint32_t Rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

void CompressPortable(uint32_t state[8], const uint8_t* data, size_t blocks) {
  uint32_t w[64];
  while (blocks-- > 0) {
    for (int i = 0; i < 16; ++i) {
      w[i] = (uint32_t{data[4 * i]} << 24) | (uint32_t{data[4 * i + 1]} << 16) |
             (uint32_t{data[4 * i + 2]} << 8) | uint32_t{data[4 * i + 3]};
    }
    for (int i = 16; i < 64; ++i) {
      uint32_t s0 = Rotr(w[i - 15], 7) ^ Rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      uint32_t s1 = Rotr(w[i - 2], 17) ^ Rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = state[0], b = state[1], c = state[2], d = state[3];
    uint32_t e = state[4], f = state[5], g = state[6], h = state[7];
    for (int i = 0; i < 64; ++i) {
      uint32_t s1 = Rotr(e, 6) ^ Rotr(e, 11) ^ Rotr(e, 25);
      uint32_t ch = (e & f) ^ (~e & g);
      uint32_t t1 = h + s1 + ch + kK[i] + w[i];
      uint32_t s0 = Rotr(a, 2) ^ Rotr(a, 13) ^ Rotr(a, 22);
      uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
      uint32_t t2 = s0 + maj;
      h = g;
      g = f;
      f = e;
      e = d + t1;
      d = c;
      c = b;
      b = a;
      a = t1 + t2;
    }
    state[0] += a;
    state[1] += b;
    state[2] += c;
    state[3] += d;
    state[4] += e;
    state[5] += f;
    state[6] += g;
    state[7] += h;
    data += 64;
  }
}

#if defined(__x86_64__)
// SHA-NI: two rounds per sha256rnds2, message schedule with msg1/msg2. The
// state is kept as ABEF/CDGH as the instructions expect.
//
// N independent messages ("lanes") go through one loop, round for round:
// sha256rnds2 has a latency of several cycles and each round of a message
// depends on the one before, so a single message leaves the unit idle much
// of the time and a second message's rounds fill those slots (UpdatePair:
// ~1.3-1.5x the bytes per second of one lane on the machines measured).
// The 16 groups of four rounds are unrolled at compile time (Quad<J>), so
// the message words and states stay in registers (a loop over j kept them
// in memory: one lane alone runs ~20 % faster unrolled).
#define REVPATCH_SHA_NI __attribute__((target("sha,sse4.1,ssse3")))

template <int N>
struct ShaNiLanes {
  __m128i abef[N], cdgh[N], w[N][4];
};

template <int J, int N>
REVPATCH_SHA_NI __attribute__((always_inline)) inline void Quad(ShaNiLanes<N>& l) {
  const __m128i k = _mm_load_si128(reinterpret_cast<const __m128i*>(&kK[4 * J]));
  for (int s = 0; s < N; ++s) {
    __m128i* w = l.w[s];
    if (J >= 4) {
      __m128i t = _mm_sha256msg1_epu32(w[J & 3], w[(J + 1) & 3]);
      t = _mm_add_epi32(t, _mm_alignr_epi8(w[(J + 3) & 3], w[(J + 2) & 3], 4));
      w[J & 3] = _mm_sha256msg2_epu32(t, w[(J + 3) & 3]);
    }
    __m128i msg = _mm_add_epi32(w[J & 3], k);
    l.cdgh[s] = _mm_sha256rnds2_epu32(l.cdgh[s], l.abef[s], msg);
    msg = _mm_shuffle_epi32(msg, 0x0E);
    l.abef[s] = _mm_sha256rnds2_epu32(l.abef[s], l.cdgh[s], msg);
  }
}

template <int N, int... J>
REVPATCH_SHA_NI __attribute__((always_inline)) inline void SixteenQuads(
    ShaNiLanes<N>& l, std::integer_sequence<int, J...>) {
  (Quad<J, N>(l), ...);
}

template <int N>
REVPATCH_SHA_NI void CompressShaNiLanes(uint32_t* const state[N],
                                        const uint8_t* const data[N], size_t blocks) {
  const __m128i kMask =
      _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
  ShaNiLanes<N> l;
  for (int s = 0; s < N; ++s) {
    __m128i tmp = _mm_loadu_si128(reinterpret_cast<const __m128i*>(&state[s][0]));
    __m128i st1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(&state[s][4]));
    tmp = _mm_shuffle_epi32(tmp, 0xB1);             // CDAB
    st1 = _mm_shuffle_epi32(st1, 0x1B);             // EFGH
    l.abef[s] = _mm_alignr_epi8(tmp, st1, 8);       // ABEF
    l.cdgh[s] = _mm_blend_epi16(st1, tmp, 0xF0);    // CDGH
  }
  for (size_t b = 0; b < blocks; ++b) {
    __m128i abef_save[N], cdgh_save[N];
    for (int s = 0; s < N; ++s) {
      abef_save[s] = l.abef[s];
      cdgh_save[s] = l.cdgh[s];
      const uint8_t* p = data[s] + 64 * b;
      for (int j = 0; j < 4; ++j) {
        l.w[s][j] = _mm_shuffle_epi8(
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16 * j)), kMask);
      }
    }
    SixteenQuads<N>(l, std::make_integer_sequence<int, 16>());
    for (int s = 0; s < N; ++s) {
      l.abef[s] = _mm_add_epi32(l.abef[s], abef_save[s]);
      l.cdgh[s] = _mm_add_epi32(l.cdgh[s], cdgh_save[s]);
    }
  }
  for (int s = 0; s < N; ++s) {
    const __m128i tmp = _mm_shuffle_epi32(l.abef[s], 0x1B);  // FEBA
    const __m128i st1 = _mm_shuffle_epi32(l.cdgh[s], 0xB1);  // DCHG
    _mm_storeu_si128(reinterpret_cast<__m128i*>(&state[s][0]),
                     _mm_blend_epi16(tmp, st1, 0xF0));      // DCBA
    _mm_storeu_si128(reinterpret_cast<__m128i*>(&state[s][4]),
                     _mm_alignr_epi8(st1, tmp, 8));         // HGFE
  }
}

void CompressShaNi(uint32_t state[8], const uint8_t* data, size_t blocks) {
  uint32_t* const states[1] = {state};
  const uint8_t* const datas[1] = {data};
  CompressShaNiLanes<1>(states, datas, blocks);
}

void CompressShaNiPair(uint32_t state_a[8], uint32_t state_b[8], const uint8_t* data_a,
                       const uint8_t* data_b, size_t blocks) {
  uint32_t* const states[2] = {state_a, state_b};
  const uint8_t* const datas[2] = {data_a, data_b};
  CompressShaNiLanes<2>(states, datas, blocks);
}
#undef REVPATCH_SHA_NI

bool CpuHasShaNi() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return false;
  const bool ssse3 = (ecx & (1u << 9)) != 0;
  const bool sse41 = (ecx & (1u << 19)) != 0;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
  const bool sha = (ebx & (1u << 29)) != 0;
  return ssse3 && sse41 && sha;
}
#endif  // __x86_64__

#if defined(__ARM_FEATURE_SHA2)
void CompressArm(uint32_t state[8], const uint8_t* data, size_t blocks) {
  uint32x4_t state0 = vld1q_u32(&state[0]);
  uint32x4_t state1 = vld1q_u32(&state[4]);
  while (blocks-- > 0) {
    const uint32x4_t abcd_save = state0;
    const uint32x4_t efgh_save = state1;
    uint32x4_t w[4];
    for (int j = 0; j < 4; ++j) {
      w[j] = vreinterpretq_u32_u8(vrev32q_u8(vld1q_u8(data + 16 * j)));
    }
    for (int j = 0; j < 16; ++j) {
      if (j >= 4) {
        w[j & 3] = vsha256su1q_u32(vsha256su0q_u32(w[j & 3], w[(j + 1) & 3]),
                                   w[(j + 2) & 3], w[(j + 3) & 3]);
      }
      const uint32x4_t wk = vaddq_u32(w[j & 3], vld1q_u32(&kK[4 * j]));
      const uint32x4_t prev0 = state0;
      state0 = vsha256hq_u32(state0, state1, wk);
      state1 = vsha256h2q_u32(state1, prev0, wk);
    }
    state0 = vaddq_u32(state0, abcd_save);
    state1 = vaddq_u32(state1, efgh_save);
    data += 64;
  }
  vst1q_u32(&state[0], state0);
  vst1q_u32(&state[4], state1);
}
#endif  // __ARM_FEATURE_SHA2

// Compresses `blocks` blocks of `data_a` into `state_a` and as many of
// `data_b` into `state_b`.
using CompressPairFn = void (*)(uint32_t state_a[8], uint32_t state_b[8],
                                const uint8_t* data_a, const uint8_t* data_b,
                                size_t blocks);

CompressFn Compress();

void CompressPairOneByOne(uint32_t state_a[8], uint32_t state_b[8],
                          const uint8_t* data_a, const uint8_t* data_b,
                          size_t blocks) {
  Compress()(state_a, data_a, blocks);
  Compress()(state_b, data_b, blocks);
}

CompressFn SelectCompress() {
#if defined(__ARM_FEATURE_SHA2)
  return CompressArm;
#else
#if defined(__x86_64__)
  if (CpuHasShaNi()) return CompressShaNi;
#endif
  return CompressPortable;
#endif
}

// Chosen once, on first use (thread-safe static initialisation).
CompressFn Compress() {
  static const CompressFn fn = SelectCompress();
  return fn;
}

CompressPairFn CompressPair() {
#if defined(__x86_64__)
  static const CompressPairFn fn =
      Compress() == CompressShaNi ? CompressShaNiPair : CompressPairOneByOne;
  return fn;
#else
  return CompressPairOneByOne;
#endif
}

}  // namespace

std::string DigestToHex(const Digest& digest) {
  static const char kHex[] = "0123456789abcdef";
  std::string out(64, '0');
  for (size_t i = 0; i < digest.size(); ++i) {
    out[2 * i] = kHex[digest[i] >> 4];
    out[2 * i + 1] = kHex[digest[i] & 15];
  }
  return out;
}

bool DigestFromHex(const std::string& hex, Digest* out) {
  if (hex.size() != 64) return false;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  Digest d;
  for (size_t i = 0; i < 32; ++i) {
    int hi = nibble(hex[2 * i]);
    int lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    d[i] = static_cast<uint8_t>((hi << 4) | lo);
  }
  *out = d;
  return true;
}

namespace internal {

const char* Sha256Implementation() {
#if defined(__ARM_FEATURE_SHA2)
  return "armv8";
#else
#if defined(__x86_64__)
  if (Compress() == CompressShaNi) return "sha-ni";
#endif
  return "portable";
#endif
}

Digest Sha256Portable(const void* data, size_t size) {
  // Padding done independently of Sha256::Update, so the test cross-checks it.
  uint32_t state[8];
  std::memcpy(state, kInitialState, sizeof(state));
  const uint8_t* p = static_cast<const uint8_t*>(data);
  const size_t blocks = size / 64;
  CompressPortable(state, p, blocks);
  uint8_t tail[128] = {};
  const size_t rest = size - blocks * 64;
  if (rest > 0) std::memcpy(tail, p + blocks * 64, rest);
  tail[rest] = 0x80;
  const size_t tail_len = rest < 56 ? 64 : 128;
  const uint64_t bits = static_cast<uint64_t>(size) * 8;
  for (int i = 0; i < 8; ++i) {
    tail[tail_len - 1 - i] = static_cast<uint8_t>(bits >> (8 * i));
  }
  CompressPortable(state, tail, tail_len / 64);
  Digest out;
  for (int i = 0; i < 8; ++i) {
    out[4 * i] = static_cast<uint8_t>(state[i] >> 24);
    out[4 * i + 1] = static_cast<uint8_t>(state[i] >> 16);
    out[4 * i + 2] = static_cast<uint8_t>(state[i] >> 8);
    out[4 * i + 3] = static_cast<uint8_t>(state[i]);
  }
  return out;
}

}  // namespace internal

Sha256::Sha256() { Reset(); }

void Sha256::Reset() {
  std::memcpy(state_, kInitialState, sizeof(state_));
  total_bytes_ = 0;
  buffered_ = 0;
}

void Sha256::Update(const void* data, size_t size) {
  if (size == 0) return;
  const uint8_t* p = static_cast<const uint8_t*>(data);
  total_bytes_ += size;
  if (buffered_ > 0) {
    size_t take = 64 - buffered_;
    if (take > size) take = size;
    std::memcpy(buffer_ + buffered_, p, take);
    buffered_ += take;
    p += take;
    size -= take;
    if (buffered_ < 64) return;
    Compress()(state_, buffer_, 1);
    buffered_ = 0;
  }
  const size_t blocks = size / 64;
  if (blocks > 0) {
    Compress()(state_, p, blocks);
    p += blocks * 64;
    size -= blocks * 64;
  }
  if (size > 0) {
    std::memcpy(buffer_, p, size);
    buffered_ = size;
  }
}

void Sha256::UpdatePair(Sha256& a, const void* data_a, Sha256& b,
                        const void* data_b, size_t size) {
  if (a.total_bytes_ != b.total_bytes_ || &a == &b) {
    a.Update(data_a, size);
    b.Update(data_b, size);
    return;
  }
  // Same length so far, so the same number of bytes buffered: the two stay
  // in step through every branch below.
  const uint8_t* pa = static_cast<const uint8_t*>(data_a);
  const uint8_t* pb = static_cast<const uint8_t*>(data_b);
  if (a.buffered_ > 0) {
    const size_t take = std::min(64 - a.buffered_, size);
    if (a.buffered_ + take < 64) {
      a.Update(pa, take);
      b.Update(pb, take);
      return;  // take == size: all of it buffered
    }
    // Both buffers fill up: their blocks go through together too.
    std::memcpy(a.buffer_ + a.buffered_, pa, take);
    std::memcpy(b.buffer_ + b.buffered_, pb, take);
    CompressPair()(a.state_, b.state_, a.buffer_, b.buffer_, 1);
    a.total_bytes_ += take;
    b.total_bytes_ += take;
    a.buffered_ = b.buffered_ = 0;
    pa += take;
    pb += take;
    size -= take;
  }
  const size_t blocks = size / 64;
  if (blocks > 0) {
    CompressPair()(a.state_, b.state_, pa, pb, blocks);
    a.total_bytes_ += blocks * 64;
    b.total_bytes_ += blocks * 64;
    pa += blocks * 64;
    pb += blocks * 64;
    size -= blocks * 64;
  }
  a.Update(pa, size);
  b.Update(pb, size);
}

size_t Sha256::Padding(uint8_t pad[72]) const {
  const uint64_t bit_length = total_bytes_ * 8;
  std::memset(pad, 0, 72);
  pad[0] = 0x80;
  // Pad to 56 mod 64, then the 64-bit big-endian bit length.
  const size_t pad_len = (buffered_ < 56) ? 56 - buffered_ : 120 - buffered_;
  for (int i = 0; i < 8; ++i) {
    pad[pad_len + i] = static_cast<uint8_t>(bit_length >> (56 - 8 * i));
  }
  return pad_len + 8;
}

Digest Sha256::StateDigest() const {
  Digest out;
  for (int i = 0; i < 8; ++i) {
    out[4 * i] = static_cast<uint8_t>(state_[i] >> 24);
    out[4 * i + 1] = static_cast<uint8_t>(state_[i] >> 16);
    out[4 * i + 2] = static_cast<uint8_t>(state_[i] >> 8);
    out[4 * i + 3] = static_cast<uint8_t>(state_[i]);
  }
  return out;
}

Digest Sha256::Final() {
  uint8_t pad[72];
  Update(pad, Padding(pad));
  return StateDigest();
}

void Sha256::FinalPair(Sha256& a, Sha256& b, Digest* digest_a, Digest* digest_b) {
  // Equal lengths pad alike; UpdatePair falls back for unequal ones.
  uint8_t pad_a[72], pad_b[72];
  const size_t length_a = a.Padding(pad_a);
  if (b.Padding(pad_b) == length_a) {
    UpdatePair(a, pad_a, b, pad_b, length_a);
    *digest_a = a.StateDigest();
    *digest_b = b.StateDigest();
  } else {
    *digest_a = a.Final();
    *digest_b = b.Final();
  }
}

Digest Sha256::Hash(const void* data, size_t size) {
  Sha256 h;
  h.Update(data, size);
  return h.Final();
}

}  // namespace revpatch
