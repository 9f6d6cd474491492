#include "fuzz_support.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>

#include "block_io.h"
#include "layer_file.h"
#include "merkle.h"
#include "view.h"

namespace revpatch_fuzz {

using revpatch::Digest;
using revpatch::ErrorCode;
using revpatch::Status;

void CheckFailed(const char* file, int line, const std::string& what) {
  std::fprintf(stderr, "fuzz check failed at %s:%d: %s\n", file, line, what.c_str());
  std::fflush(stderr);
  std::abort();
}

namespace {

std::string* scratch_dir = nullptr;

void RemoveScratchDir() {
  if (scratch_dir == nullptr) return;
  std::error_code ignored;
  std::filesystem::remove_all(*scratch_dir, ignored);
}

bool UsableDir(const char* dir) {
  return dir != nullptr && *dir != '\0' && ::access(dir, W_OK | X_OK) == 0;
}

}  // namespace

const std::string& ScratchDir() {
  if (scratch_dir == nullptr) {
    const char* base = std::getenv("REVPATCH_FUZZ_TMPDIR");
    if (!UsableDir(base)) base = UsableDir("/dev/shm") ? "/dev/shm" : std::getenv("TMPDIR");
    if (!UsableDir(base)) base = "/tmp";
    std::string templ = std::string(base) + "/revpatch-fuzz-XXXXXX";
    if (::mkdtemp(&templ[0]) == nullptr) {
      CheckFailed(__FILE__, __LINE__, "mkdtemp " + templ + ": " + std::strerror(errno));
    }
    scratch_dir = new std::string(templ);
    std::atexit(RemoveScratchDir);
  }
  return *scratch_dir;
}

std::string ScratchPath(const std::string& stem) {
  static uint64_t counter = 0;
  return ScratchDir() + "/" + stem + "-" + std::to_string(counter++);
}

void WriteFileOrDie(const std::string& path, const Bytes& bytes) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) CheckFailed(__FILE__, __LINE__, "cannot create " + path);
  bool ok = bytes.empty() || std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
  if (std::fclose(f) != 0 || !ok) CheckFailed(__FILE__, __LINE__, "cannot write " + path);
}

Bytes ReadFileOrDie(const std::string& path) {
  Bytes out;
  FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) CheckFailed(__FILE__, __LINE__, "cannot open " + path);
  uint8_t buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) out.insert(out.end(), buf, buf + n);
  std::fclose(f);
  return out;
}

bool PathExists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

void RemoveFile(const std::string& path) { ::unlink(path.c_str()); }

Bytes StampedBlocks(uint64_t blocks, uint32_t block_size, uint32_t tag) {
  Bytes image(blocks * block_size);
  uint64_t state = 0x9e3779b97f4a7c15ull * (tag + 1);
  for (uint64_t b = 0; b < blocks; ++b) {
    uint8_t* block = &image[b * block_size];
    for (uint32_t i = 0; i < block_size; ++i) {
      state ^= state << 13;
      state ^= state >> 7;
      state ^= state << 17;
      block[i] = static_cast<uint8_t>(state >> 32);
    }
    for (int k = 0; k < 8; ++k) block[k] = static_cast<uint8_t>(b >> (8 * k));
    for (int k = 0; k < 4; ++k) block[8 + k] = static_cast<uint8_t>(tag >> (8 * k));
  }
  return image;
}

Digest ModelViewDigest(const Bytes& image, uint64_t size, uint32_t block_size) {
  const uint64_t n = revpatch::BlockCount(size, block_size);
  FUZZ_CHECK(image.size() / block_size >= n, "model image shorter than its size");
  Digest root;
  if (n == 0) {
    static const uint8_t kNothing[1] = {0};
    root = revpatch::Sha256::Hash(kNothing, 0);
  } else {
    std::vector<Digest> level(n);
    for (uint64_t i = 0; i < n; ++i) {
      revpatch::Sha256 h;
      const uint8_t prefix = 0x00;
      h.Update(&prefix, 1);
      h.Update(&image[i * block_size], block_size);
      level[i] = h.Final();
    }
    while (level.size() > 1) {
      std::vector<Digest> up((level.size() + 1) / 2);
      for (size_t i = 0; i < up.size(); ++i) {
        if (2 * i + 1 >= level.size()) {
          up[i] = level[2 * i];  // promoted, not rehashed
          continue;
        }
        revpatch::Sha256 h;
        const uint8_t prefix = 0x01;
        h.Update(&prefix, 1);
        h.Update(level[2 * i].data(), 32);
        h.Update(level[2 * i + 1].data(), 32);
        up[i] = h.Final();
      }
      level.swap(up);
    }
    root = level[0];
  }
  revpatch::Sha256 h;
  static const char kDomain[] = "revpatch-view-v1";
  h.Update(reinterpret_cast<const uint8_t*>(kDomain), sizeof(kDomain) - 1);
  uint8_t fields[12];
  for (int k = 0; k < 8; ++k) fields[k] = static_cast<uint8_t>(size >> (8 * k));
  for (int k = 0; k < 4; ++k) fields[8 + k] = static_cast<uint8_t>(block_size >> (8 * k));
  h.Update(fields, sizeof(fields));
  h.Update(root.data(), 32);
  return h.Final();
}

uint64_t Volume::blocks() const { return revpatch::BlockCount(size, block_size); }

namespace {

struct VolumeSpec {
  const char* name;
  uint32_t block_size;
  uint64_t base_blocks;
  bool fixed_layer;
};

VolumeSpec SpecOf(VolumeId id) {
  switch (id) {
    case VolumeId::kPayload512: return {"payload512", 512, 64, false};
    case VolumeId::kPayload4096: return {"payload4096", 4096, 16, false};
    case VolumeId::kLayerBase: return {"layerbase", 512, 16, false};
    case VolumeId::kLayerStack: return {"layerstack", 512, 16, true};
  }
  return {"", 0, 0, false};
}

// The fixed layer of kLayerStack: two changed blocks, a zeroed one, and
// growth to a partial last block, so stacks exercise every entry kind.
Status WriteFixedLayer(const std::string& path, revpatch::View& below) {
  const uint32_t bs = below.block_size();
  const uint64_t target_size = 19ull * bs + 100;
  std::unique_ptr<revpatch::LayerWriter> writer;
  REVPATCH_RETURN_IF_ERROR(revpatch::LayerWriter::Create(path, target_size, &below, &writer));
  const Bytes changed = StampedBlocks(20, bs, 2);
  for (uint64_t b : {3ull, 4ull, 17ull, 19ull}) {
    REVPATCH_RETURN_IF_ERROR(writer->WriteBlock(b, &changed[b * bs]));
  }
  REVPATCH_RETURN_IF_ERROR(writer->WriteZeroBlock(9));
  return writer->Seal(nullptr, nullptr);
}

}  // namespace

Status BuildVolume(VolumeId id, const std::string& dir, Volume* out) {
  const VolumeSpec spec = SpecOf(id);
  Volume v;
  v.block_size = spec.block_size;
  v.base_path = dir + "/" + spec.name + ".img";
  v.tree_path = dir + "/" + spec.name + ".tree";
  WriteFileOrDie(v.base_path, StampedBlocks(spec.base_blocks, spec.block_size, 1));
  Digest digest;
  uint64_t size = 0;
  REVPATCH_RETURN_IF_ERROR(
      revpatch::HashImage(v.base_path, spec.block_size, v.tree_path, &digest, &size));
  if (spec.fixed_layer) {
    std::unique_ptr<revpatch::View> below;
    REVPATCH_RETURN_IF_ERROR(revpatch::View::Open(v.base_path, v.tree_path, {}, &below));
    const std::string layer = dir + "/" + spec.name + ".layer";
    RemoveFile(layer);
    REVPATCH_RETURN_IF_ERROR(WriteFixedLayer(layer, *below));
    v.layer_paths.push_back(layer);
  }
  std::unique_ptr<revpatch::View> view;
  REVPATCH_RETURN_IF_ERROR(revpatch::View::Open(v.base_path, v.tree_path, v.layer_paths, &view));
  v.size = view->size_bytes();
  v.digest = view->digest();
  v.image.resize(v.blocks() * v.block_size);
  if (v.blocks() > 0) {
    REVPATCH_RETURN_IF_ERROR(view->ReadBlocks(0, v.blocks(), v.image.data()));
  }
  if (ModelViewDigest(v.image, v.size, v.block_size) != v.digest) {
    return Status(ErrorCode::kHashMismatch,
                  std::string("fixture ") + spec.name + ": the engine's digest is not the model's");
  }
  *out = std::move(v);
  return Status::Ok();
}

const Volume& GetVolume(VolumeId id) {
  static Volume volumes[4];
  static bool built[4] = {};
  const int i = static_cast<int>(id);
  if (!built[i]) {
    Status s = BuildVolume(id, ScratchDir(), &volumes[i]);
    if (!s.ok()) CheckFailed(__FILE__, __LINE__, "fixture volume: " + s.ToString());
    built[i] = true;
  }
  return volumes[i];
}

}  // namespace revpatch_fuzz
