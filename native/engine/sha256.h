// SHA-256, the one hash of the engine: block hashes, Merkle nodes, payload
// chunk digests, layer and commit-record checksums.
//
// Portable C++ with a SHA-NI path on x86-64 and an ARMv8 crypto path where
// the compiler targets it, chosen at run time (x86) or build time (arm64).
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

 private:
  uint32_t state_[8];
  uint64_t total_bytes_;
  uint8_t buffer_[64];
  size_t buffered_;
};

}  // namespace revpatch

#endif  // REVPATCH_ENGINE_SHA256_H_
