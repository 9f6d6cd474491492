#include "suffix_array.h"

#include <algorithm>
#include <new>

#include "huge_pages.h"

namespace revpatch {
namespace {

constexpr uint32_t kEmpty = 0xFFFFFFFF;
// How many slots ahead the induction scans fetch what a slot will read.
constexpr uint32_t kPrefetchAhead = 32;

// One bit per position: set for S-type suffixes.
class TypeBits {
 public:
  explicit TypeBits(uint32_t n) : words_(n / 64 + 1, 0) {}
  bool Get(uint32_t i) const { return (words_[i >> 6] >> (i & 63)) & 1; }
  void Set(uint32_t i) { words_[i >> 6] |= uint64_t{1} << (i & 63); }
  void Prefetch(uint32_t i) const { __builtin_prefetch(&words_[i >> 6]); }

 private:
  std::vector<uint64_t> words_;
};

// How often each character occurs; four interleaved tables for a small
// alphabet, so a run of one byte is not a chain of dependent increments.
template <typename Char>
void Count(const Char* s, uint32_t n, uint32_t k, uint32_t* counts) {
  std::fill(counts, counts + k, 0);
  if (k <= 256) {
    uint32_t part[4][256] = {};
    uint32_t i = 0;
    for (; i + 4 <= n; i += 4) {
      ++part[0][s[i]];
      ++part[1][s[i + 1]];
      ++part[2][s[i + 2]];
      ++part[3][s[i + 3]];
    }
    for (; i < n; ++i) ++part[0][s[i]];
    for (uint32_t c = 0; c < k; ++c) counts[c] = part[0][c] + part[1][c] + part[2][c] + part[3][c];
    return;
  }
  for (uint32_t i = 0; i < n; ++i) ++counts[s[i]];
}

// Bucket starts (or ends) from the character counts. A small alphabet's
// counts are taken once per level (`counts`); a large one's (the reduced
// strings, where a second table would cost up to 2 bytes per input byte)
// are counted again each time (`counts` null).
template <typename Char>
void Buckets(const Char* s, uint32_t n, uint32_t k, const uint32_t* counts, uint32_t* bkt,
             bool ends) {
  if (counts == nullptr) {
    Count(s, n, k, bkt);
  } else {
    std::copy(counts, counts + k, bkt);
  }
  uint32_t sum = 0;
  for (uint32_t c = 0; c < k; ++c) {
    sum += bkt[c];
    bkt[c] = ends ? sum : sum - bkt[c];
  }
}

// L-type suffixes from the sorted ones, left to right. The sentinel sorts
// before everything, so its predecessor (always L-type) goes first.
template <typename Char>
void InduceL(const Char* s, uint32_t n, uint32_t k, const TypeBits& t, const uint32_t* counts,
             uint32_t* sa, uint32_t* bkt) {
  Buckets(s, n, k, counts, bkt, false);
  sa[bkt[s[n - 1]]++] = n - 1;
  for (uint32_t i = 0; i < n; ++i) {
    // The text and type bits of a suffix a little ahead, fetched while
    // this one is placed: the scan is bound by those random reads.
    if (i + kPrefetchAhead < n) {
      const uint32_t q = sa[i + kPrefetchAhead];
      if (q != kEmpty && q > 0) {
        __builtin_prefetch(s + q - 1);
        t.Prefetch(q - 1);
      }
    }
    uint32_t p = sa[i];
    if (p != kEmpty && p > 0 && !t.Get(p - 1)) sa[bkt[s[p - 1]]++] = p - 1;
  }
}

// S-type suffixes, right to left from the bucket ends.
template <typename Char>
void InduceS(const Char* s, uint32_t n, uint32_t k, const TypeBits& t, const uint32_t* counts,
             uint32_t* sa, uint32_t* bkt) {
  Buckets(s, n, k, counts, bkt, true);
  for (uint32_t i = n; i-- > 0;) {
    if (i >= kPrefetchAhead) {
      const uint32_t q = sa[i - kPrefetchAhead];
      if (q != kEmpty && q > 0) {
        __builtin_prefetch(s + q - 1);
        t.Prefetch(q - 1);
      }
    }
    uint32_t p = sa[i];
    if (p != kEmpty && p > 0 && t.Get(p - 1)) sa[--bkt[s[p - 1]]] = p - 1;
  }
}

// Suffix array of s[0, n) over the alphabet [0, k), with a virtual sentinel.
template <typename Char>
void Sais(const Char* s, uint32_t n, uint32_t k, uint32_t* sa) {
  if (n == 0) return;
  if (n == 1) {
    sa[0] = 0;
    return;
  }
  TypeBits t(n);  // position n - 1 is L-type: the sentinel follows it
  for (uint32_t i = n - 1; i-- > 0;) {
    if (s[i] < s[i + 1] || (s[i] == s[i + 1] && t.Get(i + 1))) t.Set(i);
  }
  auto lms = [&t](uint32_t i) { return i > 0 && t.Get(i) && !t.Get(i - 1); };
  std::vector<uint32_t> bkt(k);
  constexpr uint32_t kCountedAlphabet = 1 << 16;
  std::vector<uint32_t> count_table;
  if (k <= kCountedAlphabet) {
    count_table.resize(k);
    Count(s, n, k, count_table.data());
  }
  const uint32_t* counts = count_table.empty() ? nullptr : count_table.data();

  // Stage 1: sort the LMS substrings by induction from their bucket ends.
  std::fill(sa, sa + n, kEmpty);
  Buckets(s, n, k, counts, bkt.data(), true);
  for (uint32_t i = n - 1; i >= 1; --i) {
    if (lms(i)) sa[--bkt[s[i]]] = i;
  }
  InduceL(s, n, k, t, counts, sa, bkt.data());
  InduceS(s, n, k, t, counts, sa, bkt.data());

  // Stage 2: name them; equal substrings share a name.
  uint32_t n1 = 0;
  for (uint32_t i = 0; i < n; ++i) {
    if (lms(sa[i])) sa[n1++] = sa[i];
  }
  uint32_t names = 0;
  if (n1 > 0) {
    // LMS positions are at least two apart, so p / 2 is a free slot of
    // sa[n1, n) for each, in text order.
    std::fill(sa + n1, sa + n, kEmpty);
    uint32_t prev = kEmpty;
    for (uint32_t i = 0; i < n1; ++i) {
      if (i + kPrefetchAhead < n1) __builtin_prefetch(s + sa[i + kPrefetchAhead]);
      const uint32_t p = sa[i];
      bool differs = prev == kEmpty;
      for (uint32_t d = 0; !differs; ++d) {
        if (p + d == n || prev + d == n || s[p + d] != s[prev + d] ||
            t.Get(p + d) != t.Get(prev + d)) {
          differs = true;
        } else if (d > 0 && (lms(p + d) || lms(prev + d))) {
          break;  // both end here (same types so far): equal
        }
      }
      if (differs) {
        ++names;
        prev = p;
      }
      sa[n1 + p / 2] = names - 1;
    }
    uint32_t j = n;
    for (uint32_t i = n; i-- > n1;) {
      if (sa[i] != kEmpty) sa[--j] = sa[i];
    }
    // Stage 3: sort the reduced string (recursing if names repeat).
    uint32_t* s1 = sa + n - n1;
    if (names < n1) {
      // The bucket and count tables are rebuilt for stage 4; freed
      // meanwhile, so the recursion's own tables are the only ones alive.
      std::vector<uint32_t>().swap(bkt);
      const bool counted = !count_table.empty();
      std::vector<uint32_t>().swap(count_table);
      Sais<uint32_t>(s1, n1, names, sa);
      bkt.resize(k);
      if (counted) {
        count_table.resize(k);
        Count(s, n, k, count_table.data());
        counts = count_table.data();
      }
    } else {
      for (uint32_t i = 0; i < n1; ++i) sa[s1[i]] = i;
    }
    j = n1;
    for (uint32_t i = n - 1; i >= 1; --i) {
      if (lms(i)) s1[--j] = i;
    }
    for (uint32_t i = 0; i < n1; ++i) sa[i] = s1[sa[i]];
  }
  // Stage 4: the sorted LMS suffixes at their bucket ends, then induce.
  std::fill(sa + n1, sa + n, kEmpty);
  Buckets(s, n, k, counts, bkt.data(), true);
  for (uint32_t i = n1; i-- > 0;) {
    const uint32_t p = sa[i];
    sa[i] = kEmpty;
    sa[--bkt[s[p]]] = p;
  }
  InduceL(s, n, k, t, counts, sa, bkt.data());
  InduceS(s, n, k, t, counts, sa, bkt.data());
}

}  // namespace

Status BuildSuffixArray(const uint8_t* text, size_t n, std::vector<uint32_t>* sa) {
  if (n > kMaxSuffixArrayInput) {
    return Status(ErrorCode::kTooLarge, "suffix array: input too large");
  }
  try {
    // Huge pages where the system grants them on request: the induction
    // scans touch the array at random, and 4 KiB pages cost a TLB miss
    // (and, when fresh, a page fault) for nearly every access.
    sa->clear();
    sa->reserve(n);
    AdviseHugePages(sa->data(), n * sizeof(uint32_t));
    sa->resize(n);
    Sais<uint8_t>(text, static_cast<uint32_t>(n), 256, sa->data());
  } catch (const std::bad_alloc&) {
    sa->clear();
    return Status(ErrorCode::kTooLarge, "suffix array: out of memory");
  }
  return Status::Ok();
}

}  // namespace revpatch
