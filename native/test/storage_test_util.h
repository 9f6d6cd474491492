// Helpers shared by the storage tests (sha256, merkle, layer, view, commit
// record, export): files from byte vectors, block stamps, and a model image
// that a view must read back exactly.
#ifndef REVPATCH_TEST_STORAGE_TEST_UTIL_H_
#define REVPATCH_TEST_STORAGE_TEST_UTIL_H_

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "../engine/file_io.h"
#include "../engine/merkle.h"
#include "testing.h"

namespace revpatch_test {

using Bytes = std::vector<uint8_t>;

inline bool WriteBytes(const std::string& path, const Bytes& data) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return false;
  bool ok = data.empty() || std::fwrite(data.data(), 1, data.size(), f) == data.size();
  return std::fclose(f) == 0 && ok;
}

inline Bytes ReadBytes(const std::string& path) {
  Bytes out;
  FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return out;
  uint8_t buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) out.insert(out.end(), buf, buf + n);
  std::fclose(f);
  return out;
}

inline uint64_t FileSizeOf(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
}

// Flat directories only: what the tests create.
inline void RemoveDir(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d != nullptr) {
    while (dirent* e = ::readdir(d)) {
      if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
      ::unlink((dir + "/" + e->d_name).c_str());
    }
    ::closedir(d);
  }
  ::rmdir(dir.c_str());
}

inline size_t CountEntries(const std::string& dir) {
  size_t n = 0;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return 0;
  while (dirent* e = ::readdir(d)) {
    if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) ++n;
  }
  ::closedir(d);
  return n;
}

// A block whose every 16-byte cell holds its own index and a tag, so a
// block read from the wrong place or the wrong layer is obvious.
inline void Stamp(uint64_t block, uint32_t tag, uint32_t block_size, uint8_t* out) {
  for (uint32_t i = 0; i + 16 <= block_size; i += 16) {
    for (int k = 0; k < 8; ++k) out[i + k] = static_cast<uint8_t>(block >> (8 * k));
    for (int k = 0; k < 4; ++k) out[i + 8 + k] = static_cast<uint8_t>(tag >> (8 * k));
    for (int k = 0; k < 4; ++k) out[i + 12 + k] = static_cast<uint8_t>(i >> (8 * k));
  }
}

// An image of `size` bytes whose blocks are stamped with `tag`.
inline Bytes StampedImage(uint64_t size, uint32_t tag, uint32_t block_size) {
  Bytes image(revpatch::BlockCount(size, block_size) * block_size);
  for (uint64_t b = 0; b * block_size < image.size(); ++b) {
    Stamp(b, tag, block_size, &image[b * block_size]);
  }
  image.resize(size);
  return image;
}

// The view digest of `image` as HashImage computes it from a file.
inline revpatch::Digest DigestOf(const std::string& dir, const Bytes& image,
                                 uint32_t block_size) {
  const std::string path = dir + "/digest-scratch.img";
  revpatch::Digest d{};
  if (!WriteBytes(path, image)) {
    Fail(__FILE__, __LINE__, "cannot write " + path);
    return d;
  }
  revpatch::Status s = revpatch::HashImage(path, block_size, "", &d, nullptr);
  if (!s.ok()) Fail(__FILE__, __LINE__, "HashImage: " + s.ToString());
  ::unlink(path.c_str());
  return d;
}

// Deterministic pseudo-random numbers for the tests.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed * 0x9e3779b97f4a7c15ULL + 1) {}
  uint64_t Next() {
    state_ ^= state_ << 13;
    state_ ^= state_ >> 7;
    state_ ^= state_ << 17;
    return state_;
  }
  uint64_t Below(uint64_t n) { return n == 0 ? 0 : Next() % n; }

 private:
  uint64_t state_;
};

}  // namespace revpatch_test

#endif  // REVPATCH_TEST_STORAGE_TEST_UTIL_H_
