// SHA-256, the one hash of the engine: block hashes, Merkle nodes, payload
// chunk digests, layer and commit-record checksums.
//
// Portable C++ with a SHA-NI path on x86-64 (run-time detection; two
// messages interleaved for UpdatePair) and an ARMv8 crypto path where the
// compiler targets it (build time).
#ifndef REVPATCH_ENGINE_SHA256_H_
#define REVPATCH_ENGINE_SHA256_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace revpatch {

using Digest = std::array<uint8_t, 32>;

std::string DigestToHex(const Digest& digest);
// False unless `hex` is exactly 64 lowercase or uppercase hex digits.
bool DigestFromHex(const std::string& hex, Digest* out);

class Sha256 {
 public:
  Sha256();
  void Update(const void* data, size_t size);
  Digest Final();  // The object must be Reset() before reuse.
  void Reset();

  static Digest Hash(const void* data, size_t size);

  // Feeds `size` bytes of `data_a` to `a` and as many of `data_b` to `b`,
  // as a.Update() and b.Update() would. Where the SHA instructions are
  // latency-bound (SHA-NI), the rounds of the two messages are interleaved
  // on one core, which hashes nearly twice the bytes per second of two
  // Update() calls: the way to hash many equal-length messages (leaves,
  // payload chunks). `a` and `b` must have been fed the same number of
  // bytes so far; if not, they are simply updated one after the other.
  static void UpdatePair(Sha256& a, const void* data_a, Sha256& b,
                         const void* data_b, size_t size);
  // a.Final() and b.Final(), the last blocks of equal-length messages
  // compressed together as UpdatePair does: for short messages (Merkle
  // nodes) the final blocks are most of the work.
  static void FinalPair(Sha256& a, Sha256& b, Digest* digest_a, Digest* digest_b);

 private:
  // The padding Final() appends (at most 72 bytes); its length.
  size_t Padding(uint8_t pad[72]) const;
  Digest StateDigest() const;

  uint32_t state_[8];
  uint64_t total_bytes_;
  uint8_t buffer_[64];
  size_t buffered_;
};

}  // namespace revpatch

#endif  // REVPATCH_ENGINE_SHA256_H_
