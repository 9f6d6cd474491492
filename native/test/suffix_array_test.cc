// The suffix array against a naive sort of the suffixes, on random,
// small-alphabet and highly repetitive inputs (the shapes that exercise the
// recursion of SA-IS), and the refusal of inputs too large for 32 bits.
#include "../engine/generator/suffix_array.h"

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "testing.h"

using namespace revpatch;

namespace {

using Bytes = std::vector<uint8_t>;

std::vector<uint32_t> NaiveSuffixArray(const Bytes& text) {
  std::vector<uint32_t> sa(text.size());
  for (uint32_t i = 0; i < sa.size(); ++i) sa[i] = i;
  std::sort(sa.begin(), sa.end(), [&text](uint32_t a, uint32_t b) {
    return std::lexicographical_compare(text.begin() + a, text.end(), text.begin() + b,
                                        text.end());
  });
  return sa;
}

bool Matches(const Bytes& text) {
  std::vector<uint32_t> sa;
  if (!BuildSuffixArray(text.data(), text.size(), &sa).ok()) return false;
  return sa == NaiveSuffixArray(text);
}

Bytes RandomOver(size_t n, uint32_t alphabet, uint32_t seed) {
  std::mt19937 rng(seed);
  Bytes b(n);
  for (auto& x : b) x = static_cast<uint8_t>(rng() % alphabet);
  return b;
}

}  // namespace

TEST(empty_and_single_byte_inputs_sort_trivially) {
  std::vector<uint32_t> sa{7, 7};
  ASSERT_OK(BuildSuffixArray(nullptr, 0, &sa));
  EXPECT_TRUE(sa.empty());
  const uint8_t one = 42;
  ASSERT_OK(BuildSuffixArray(&one, 1, &sa));
  EXPECT_EQ(sa, std::vector<uint32_t>{0});
}

TEST(random_bytes_match_a_naive_sort) {
  for (uint32_t seed = 0; seed < 40; ++seed) {
    EXPECT_TRUE(Matches(RandomOver(1 + seed * 37, 256, seed)));
  }
  EXPECT_TRUE(Matches(RandomOver(20000, 256, 99)));
}

TEST(small_alphabets_match_a_naive_sort) {
  for (uint32_t alphabet : {1u, 2u, 3u, 4u}) {
    for (uint32_t n : {2u, 3u, 5u, 17u, 64u, 255u, 1000u, 4099u}) {
      EXPECT_TRUE(Matches(RandomOver(n, alphabet, n * 7 + alphabet)));
    }
  }
}

TEST(repetitive_inputs_that_force_recursion_match_a_naive_sort) {
  const std::vector<std::string> seeds = {"a", "ab", "aab", "abc", "abaab", "mississippi",
                                          "ba", "abcabd", "zyx"};
  for (const std::string& unit : seeds) {
    for (size_t reps : {1u, 2u, 3u, 10u, 100u, 333u}) {
      Bytes text;
      for (size_t r = 0; r < reps; ++r) text.insert(text.end(), unit.begin(), unit.end());
      EXPECT_TRUE(Matches(text));
      text.push_back('a');  // a repeat broken at the end
      EXPECT_TRUE(Matches(text));
    }
  }
  // Fibonacci words: the deepest recursion for their length.
  std::string a = "a", b = "ab";
  while (b.size() < 5000) {
    std::string next = b + a;
    a = b;
    b = next;
  }
  EXPECT_TRUE(Matches(Bytes(b.begin(), b.end())));
  // Runs of zeros with noise, as disk images look.
  Bytes image = RandomOver(6000, 256, 5);
  std::fill(image.begin() + 100, image.begin() + 3000, 0);
  std::fill(image.begin() + 3500, image.begin() + 5900, 0);
  EXPECT_TRUE(Matches(image));
  EXPECT_TRUE(Matches(Bytes(3000, 0xFF)));
}

TEST(inputs_past_32_bit_indices_are_refused) {
  std::vector<uint32_t> sa;
  const uint8_t byte = 0;
  // The size check comes before any read of the text.
  EXPECT_CODE(BuildSuffixArray(&byte, static_cast<size_t>(kMaxSuffixArrayInput) + 1, &sa),
              ErrorCode::kTooLarge);
}
