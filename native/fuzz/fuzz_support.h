// What the fuzz harnesses share: a failed check that aborts with a message
// (libFuzzer then saves the input), a scratch directory for the files the
// engine insists on (layers, commit records, payloads), and the fixed
// volumes the harnesses apply to and compose over. make_corpus builds the
// same volumes, so the layers and payloads it writes as seeds fit them.
//
// Everything here is deterministic: a volume's bytes and digest depend only
// on its spec, so a seed made once keeps matching the harness.
#ifndef REVPATCH_FUZZ_FUZZ_SUPPORT_H_
#define REVPATCH_FUZZ_FUZZ_SUPPORT_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "sha256.h"
#include "status.h"

namespace revpatch_fuzz {

using Bytes = std::vector<uint8_t>;

// Prints "fuzz check failed: <what>" with the place and aborts, which is
// what libFuzzer (and the regression test) report as a crash.
[[noreturn]] void CheckFailed(const char* file, int line, const std::string& what);

#define FUZZ_CHECK(cond, what)                                                   \
  do {                                                                           \
    if (!(cond)) ::revpatch_fuzz::CheckFailed(__FILE__, __LINE__,                \
                                              std::string(#cond ": ") + (what)); \
  } while (0)

// A directory private to this process, under $REVPATCH_FUZZ_TMPDIR, else
// /dev/shm (tmpfs: the engine's fsyncs cost nothing), else $TMPDIR or /tmp.
// Created on first use, removed at exit.
const std::string& ScratchDir();
// A fresh path in ScratchDir() ("<dir>/<stem>-<n>"); the file does not exist.
std::string ScratchPath(const std::string& stem);

void WriteFileOrDie(const std::string& path, const Bytes& bytes);
Bytes ReadFileOrDie(const std::string& path);
bool PathExists(const std::string& path);
void RemoveFile(const std::string& path);

// Deterministic contents: block i of volume `tag` holds its index, the tag
// and noise, so a block read from the wrong place or layer differs.
Bytes StampedBlocks(uint64_t blocks, uint32_t block_size, uint32_t tag);

// An in-memory view digest (merkle.h's definition, computed from scratch
// without the engine's tree code): `image` holds whole blocks, at least
// ceil(size / block_size) of them; bytes past `size` are hashed as they are.
revpatch::Digest ModelViewDigest(const Bytes& image, uint64_t size, uint32_t block_size);

// The volumes the harnesses run against.
enum class VolumeId {
  kPayload512,   // 64 blocks of 512 bytes: payloads apply to this
  kPayload4096,  // 16 blocks of 4096 bytes
  kLayerBase,    // 16 blocks of 512 bytes: fuzzed layers sit on this
  kLayerStack,   // kLayerBase plus one fixed layer (changes, a zero block,
                 // growth to 19 blocks and 100 bytes)
};

struct Volume {
  uint32_t block_size = 0;
  std::string base_path;
  std::string tree_path;
  std::vector<std::string> layer_paths;  // bottom to top
  Bytes image;        // the view's bytes, whole blocks
  uint64_t size = 0;  // the view's size in bytes
  revpatch::Digest digest{};
  uint64_t blocks() const;
};

// Built in ScratchDir() on first use and kept for the process.
const Volume& GetVolume(VolumeId id);
// Builds the volume under `dir` (make_corpus uses its own directory).
revpatch::Status BuildVolume(VolumeId id, const std::string& dir, Volume* out);

}  // namespace revpatch_fuzz

#endif  // REVPATCH_FUZZ_FUZZ_SUPPORT_H_
