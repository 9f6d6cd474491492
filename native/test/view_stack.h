// A view test's image: a base file and its tree in a temporary directory,
// the layers sealed over it so far, the view over all of them, and the
// image that view must read as (`model`). Shared by the view and
// verified-read tests, which build their stacks the same way and differ in
// what they do to them.
#ifndef REVPATCH_TEST_VIEW_STACK_H_
#define REVPATCH_TEST_VIEW_STACK_H_

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "../engine/layer_file.h"
#include "../engine/merkle.h"
#include "../engine/view.h"
#include "storage_test_util.h"
#include "testing.h"

namespace revpatch_test {

struct ViewStack {
  // In AddLayer's `writes`: a block written as zeros, not stamped.
  static constexpr uint32_t kZero = 0xffffffff;

  std::string dir;
  uint32_t block_size;
  Bytes base;
  Bytes model;
  std::vector<std::string> layers;  // paths, bottom to top
  std::unique_ptr<revpatch::View> view;

  ViewStack(const Bytes& base_image, uint32_t block_size)
      : dir(TempDir()), block_size(block_size), base(base_image), model(base_image) {
    WriteBytes(base_path(), base);
    revpatch::Digest d{};
    revpatch::Status s = revpatch::HashImage(base_path(), block_size, tree_path(), &d, nullptr);
    if (s.ok()) s = Reopen();
    if (!s.ok()) Fail(__FILE__, __LINE__, s.ToString());
  }
  ~ViewStack() {
    view.reset();
    RemoveDir(dir);
  }
  ViewStack(const ViewStack&) = delete;
  ViewStack& operator=(const ViewStack&) = delete;

  std::string base_path() const { return dir + "/base"; }
  std::string tree_path() const { return dir + "/base.tree"; }

  revpatch::Status Reopen() { return revpatch::View::Open(base_path(), tree_path(), layers, &view); }

  // Seals a layer of `target_size` bytes writing `writes` (block -> tag, or
  // kZero) in block order, checking the sealed digest against HashImage of
  // the model, and reopens the view over it.
  revpatch::Status AddLayer(uint64_t target_size, const std::map<uint64_t, uint32_t>& writes) {
    const std::string path = dir + "/layer" + std::to_string(layers.size());
    std::unique_ptr<revpatch::LayerWriter> w;
    REVPATCH_RETURN_IF_ERROR(revpatch::LayerWriter::Create(path, target_size, view.get(), &w));
    model.resize(target_size, 0);
    Bytes padded(model);
    padded.resize(revpatch::BlockCount(target_size, block_size) * block_size, 0);
    Bytes block(block_size);
    for (const auto& entry : writes) {
      if (entry.second == kZero) {
        REVPATCH_RETURN_IF_ERROR(w->WriteZeroBlock(entry.first));
        std::fill(block.begin(), block.end(), 0);
      } else {
        Stamp(entry.first, entry.second, block_size, block.data());
        REVPATCH_RETURN_IF_ERROR(w->WriteBlock(entry.first, block.data()));
      }
      std::copy(block.begin(), block.end(), padded.begin() + entry.first * block_size);
    }
    padded.resize(target_size);
    model = padded;
    const revpatch::Digest want = DigestOf(dir, model, block_size);
    revpatch::Digest got{};
    REVPATCH_RETURN_IF_ERROR(w->Seal(&want, &got));
    if (got != want) return revpatch::Status(revpatch::ErrorCode::kHashMismatch, "seal digest");
    layers.push_back(path);
    return Reopen();
  }

  // The whole view equals the model, block reads and byte reads alike.
  void CheckView(const char* file, int line) {
    auto fail = [&](const std::string& what) { Fail(file, line, what); };
    if (view->size_bytes() != model.size()) return fail("view size");
    if (view->digest() != DigestOf(dir, model, block_size)) fail("view digest");
    const uint64_t blocks = view->block_count();
    if (blocks == 0) return;
    Bytes got(blocks * block_size, 0xee);
    revpatch::Status s = view->ReadBlocks(0, blocks, got.data());
    if (!s.ok()) return fail("ReadBlocks: " + s.ToString());
    Bytes want(model);
    want.resize(blocks * block_size, 0);
    if (got != want) {
      for (uint64_t b = 0; b < blocks; ++b) {
        if (!std::equal(got.begin() + b * block_size, got.begin() + (b + 1) * block_size,
                        want.begin() + b * block_size)) {
          return fail("block " + std::to_string(b) + " differs");
        }
      }
    }
    // One block at a time, too.
    Bytes one(block_size);
    for (uint64_t b = 0; b < blocks; ++b) {
      s = view->ReadBlocks(b, 1, one.data());
      if (!s.ok() || !std::equal(one.begin(), one.end(), want.begin() + b * block_size)) {
        return fail("single read of block " + std::to_string(b));
      }
    }
  }
};

#define CHECK_VIEW(stack) (stack).CheckView(__FILE__, __LINE__)

}  // namespace revpatch_test

#endif  // REVPATCH_TEST_VIEW_STACK_H_
