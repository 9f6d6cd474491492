#include "../engine/sha256.h"

#include <cstdio>
#include <string>
#include <vector>

#include "../engine/sha256_internal.h"
#include "testing.h"

using revpatch::Digest;
using revpatch::DigestFromHex;
using revpatch::DigestToHex;
using revpatch::Sha256;

namespace {

std::string HexOf(const std::string& s) {
  return DigestToHex(Sha256::Hash(s.data(), s.size()));
}

struct Vector {
  size_t repeat_a;
  const char* hex;
};

// SHA-256 of n times 'a', around the padding boundaries.
const Vector kRepeatedA[] = {
    {55, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318"},
    {56, "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a"},
    {63, "7d3e74a05d7db15bce4ad9ec0658ea98e3f06eeecf16b4c6fff2da457ddc2f34"},
    {64, "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb"},
    {65, "635361c48bb9eab14198e76ea8ab7f1a41685d6ad62aa9146d301d4f17eb0ae0"},
    {127, "c57e9278af78fa3cab38667bef4ce29d783787a2f731d4e12200270f0c32320a"},
    {128, "6836cf13bac400e9105071cd6af47084dfacad4e5e302c94bfed24e013afb73e"},
    {129, "c12cb024a2e5551cca0e08fce8f1c5e314555cc3fef6329ee994a3db752166ae"},
};

}  // namespace

TEST(reports_which_implementation_runs) {
  std::printf("  sha256 implementation: %s\n",
              revpatch::internal::Sha256Implementation());
}

TEST(empty_abc_and_two_block_vectors) {
  EXPECT_EQ(HexOf(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(HexOf("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(HexOf("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST(one_million_a_in_one_call_and_in_pieces) {
  const std::string a(1000000, 'a');
  const std::string want = "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0";
  EXPECT_EQ(HexOf(a), want);
  Sha256 h;
  size_t done = 0, step = 1;
  while (done < a.size()) {
    size_t n = std::min(step, a.size() - done);
    h.Update(a.data() + done, n);
    done += n;
    step = step * 3 + 1;
    if (step > 10000) step = 7;
  }
  EXPECT_EQ(DigestToHex(h.Final()), want);
  EXPECT_EQ(DigestToHex(revpatch::internal::Sha256Portable(a.data(), a.size())), want);
}

TEST(lengths_around_the_padding_boundary) {
  for (const Vector& v : kRepeatedA) {
    const std::string a(v.repeat_a, 'a');
    EXPECT_EQ(HexOf(a), v.hex);
    EXPECT_EQ(DigestToHex(revpatch::internal::Sha256Portable(a.data(), a.size())), v.hex);
    // Byte by byte through the buffer.
    Sha256 h;
    for (char c : a) h.Update(&c, 1);
    EXPECT_EQ(DigestToHex(h.Final()), v.hex);
  }
}

TEST(accelerated_path_equals_portable_path_for_every_length_to_300) {
  std::vector<uint8_t> data(300);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 131 + 7);
  for (size_t n = 0; n <= data.size(); ++n) {
    EXPECT_TRUE(Sha256::Hash(data.data(), n) ==
                revpatch::internal::Sha256Portable(data.data(), n));
  }
}

TEST(reset_makes_the_object_reusable) {
  Sha256 h;
  h.Update("garbage", 7);
  h.Final();
  h.Reset();
  h.Update("abc", 3);
  EXPECT_EQ(DigestToHex(h.Final()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(hex_round_trip_and_rejects) {
  const Digest d = Sha256::Hash("abc", 3);
  Digest back{};
  EXPECT_TRUE(DigestFromHex(DigestToHex(d), &back));
  EXPECT_TRUE(back == d);
  EXPECT_TRUE(DigestFromHex(
      "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD", &back));
  EXPECT_TRUE(back == d);
  EXPECT_TRUE(!DigestFromHex("abc", &back));
  EXPECT_TRUE(!DigestFromHex(std::string(63, 'a') + "g", &back));
  EXPECT_TRUE(!DigestFromHex(std::string(65, 'a'), &back));
}

TEST(update_pair_equals_two_updates_for_every_length_and_prefix) {
  std::vector<uint8_t> a(700), b(700);
  for (size_t i = 0; i < a.size(); ++i) {
    a[i] = static_cast<uint8_t>(i * 131 + 7);
    b[i] = static_cast<uint8_t>(i * 17 + 99);
  }
  // A prefix fed to both first (as the leaf hash's 0x00) puts the pair
  // at every offset inside the 64-byte buffer.
  for (size_t prefix : {size_t{0}, size_t{1}, size_t{63}, size_t{64}, size_t{65}}) {
    for (size_t n = 0; n + prefix <= a.size(); n += (n < 300 ? 1 : 37)) {
      Sha256 ha, hb;
      ha.Update(a.data(), prefix);
      hb.Update(b.data(), prefix);
      Sha256::UpdatePair(ha, a.data() + prefix, hb, b.data() + prefix, n);
      EXPECT_TRUE(ha.Final() == revpatch::internal::Sha256Portable(a.data(), prefix + n));
      EXPECT_TRUE(hb.Final() == revpatch::internal::Sha256Portable(b.data(), prefix + n));
    }
  }
}

TEST(update_pair_of_large_messages_equals_the_portable_hashes) {
  // Many blocks in one call: the interleaved loop runs long, as on leaves
  // and payload chunks.
  std::vector<uint8_t> a(1 << 20), b(1 << 20);
  for (size_t i = 0; i < a.size(); ++i) {
    a[i] = static_cast<uint8_t>((i * 2654435761u) >> 13);
    b[i] = static_cast<uint8_t>((i * 40503u) >> 7);
  }
  for (size_t n : {size_t{4096}, size_t{65536} + 1, a.size()}) {
    Sha256 ha, hb;
    Sha256::UpdatePair(ha, a.data(), hb, b.data(), n);
    EXPECT_TRUE(ha.Final() == revpatch::internal::Sha256Portable(a.data(), n));
    EXPECT_TRUE(hb.Final() == revpatch::internal::Sha256Portable(b.data(), n));
  }
}

TEST(update_pair_of_unequal_states_still_updates_each) {
  const std::string x = "abc", y = "hello, world";
  Sha256 ha, hb;
  ha.Update("a", 1);  // one byte ahead of hb
  Sha256::UpdatePair(ha, x.data(), hb, y.data(), 3);
  EXPECT_TRUE(ha.Final() == Sha256::Hash("aabc", 4));
  EXPECT_TRUE(hb.Final() == Sha256::Hash("hel", 3));
}

// FinalPair, and UpdatePair across a partly filled block, against one Final
// each: every length to 200 (one, two and three final blocks), after
// prefixes that leave the buffers partly full.
TEST(final_pair_equals_two_finals_for_every_length_and_prefix) {
  std::vector<uint8_t> a(300), b(300);
  for (size_t i = 0; i < a.size(); ++i) {
    a[i] = static_cast<uint8_t>(i * 7 + 1);
    b[i] = static_cast<uint8_t>(i * 13 + 5);
  }
  for (size_t prefix : {size_t{0}, size_t{1}, size_t{55}, size_t{63}}) {
    for (size_t n = 0; n <= 200; ++n) {
      revpatch::Sha256 x, y;
      x.Update(a.data(), prefix);
      y.Update(b.data(), prefix);
      revpatch::Sha256::UpdatePair(x, a.data() + prefix, y, b.data() + prefix, n);
      revpatch::Digest dx, dy;
      revpatch::Sha256::FinalPair(x, y, &dx, &dy);
      EXPECT_TRUE(dx == revpatch::internal::Sha256Portable(a.data(), prefix + n));
      EXPECT_TRUE(dy == revpatch::internal::Sha256Portable(b.data(), prefix + n));
    }
  }
  // Unequal lengths: each finished on its own.
  revpatch::Sha256 x, y;
  x.Update(a.data(), 10);
  y.Update(b.data(), 70);
  revpatch::Digest dx, dy;
  revpatch::Sha256::FinalPair(x, y, &dx, &dy);
  EXPECT_TRUE(dx == revpatch::internal::Sha256Portable(a.data(), 10));
  EXPECT_TRUE(dy == revpatch::internal::Sha256Portable(b.data(), 70));
}
