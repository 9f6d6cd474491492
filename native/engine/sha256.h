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

// Everything a running hash carries between Update() calls, so a long hash
// (the whole-payload digest of an apply) can be saved in a checkpoint and
// continued by another process. `buffer` holds the `length % 64` bytes not
// yet compressed; the rest of it is ignored.
struct Sha256State {
  uint32_t words[8];
  uint64_t length;  // bytes hashed so far
  uint8_t buffer[64];
};

class Sha256 {
 public:
  Sha256();
  void Update(const void* data, size_t size);
  Digest Final();  // The object must be Reset() before reuse.
  void Reset();

  // Continues exactly where the exported hash stopped: Final() after
  // ImportState(s) and the same further Update()s gives the same digest.
  void ExportState(Sha256State* out) const;
  void ImportState(const Sha256State& state);

  static Digest Hash(const void* data, size_t size);

 private:
  uint32_t state_[8];
  uint64_t total_bytes_;
  uint8_t buffer_[64];
  size_t buffered_;
};

}  // namespace revpatch

#endif  // REVPATCH_ENGINE_SHA256_H_
