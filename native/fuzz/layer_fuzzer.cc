// layer_fuzzer: LayerReader::Open, its reads and Verify on fuzzed file
// bytes, and a view composed over the fuzzed layer.
//
// A layer is written by the device itself and checksummed, not signed, so
// what matters is that no bytes on disk (torn, bit-rotted, planted) make
// the reader or the view crash, read out of bounds or allocate without
// bound. To get past the footer checksum, the fix-up flag makes the harness
// copy the footer's fields into the header and recompute the checksum, as
// a writer would have; the checks behind it are then reached.
//
// Input: u8 flags, then the layer file's bytes.
//   flags bit 0: fix up header and checksum
//         bit 1: the layer sits on kLayerStack (base + a fixed layer);
//                else directly on kLayerBase
//         bit 2: also export the composed view and compare the image
//
// Checks, once Open succeeds:
//  - LowerBound/EntryBlock/HasBlock/ReadBlock agree with Blocks();
//  - ReadEntries over a range equals the blocks read one by one, and a
//    range past the end is kBadExtent;
//  - after Verify succeeds, every stored block has its leaf hash;
//  - if the view opens, ReadBlocks over all blocks, over pieces of them,
//    and ReadBytes all read what composing block by block gives (topmost
//    holder wins; zero tail past the size), and tree() serves every node;
//  - the exported image is exactly the view's bytes.
#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "export.h"
#include "fuzz_input.h"
#include "fuzz_support.h"
#include "fuzz_targets.h"
#include "layer_file.h"
#include "little_endian.h"
#include "merkle.h"
#include "view.h"

namespace revpatch_fuzz {
namespace {

using revpatch::Digest;
using revpatch::ErrorCode;
using revpatch::LayerReader;
using revpatch::Status;

// docs/on-disk-format.md, "Layer file".
constexpr size_t kHeaderFields = 64;
constexpr size_t kFooterSize = 168;
constexpr size_t kFooterChecksumOffset = 136;
constexpr size_t kMaxEntriesChecked = 4096;
constexpr uint64_t kMaxViewBlocks = 1u << 16;

void FixUp(Bytes* file) {
  if (file->size() < kHeaderFields + kFooterSize) return;
  uint8_t* footer = file->data() + file->size() - kFooterSize;
  static const char kHeaderMagic[8] = {'R', 'V', 'P', 'L', 'A', 'Y', 'R', '1'};
  std::memcpy(file->data(), kHeaderMagic, 8);
  std::memcpy(file->data() + 8, footer + 8, kHeaderFields - 8);
  const uint64_t footer_offset = file->size() - kFooterSize;
  const uint64_t index_offset = revpatch::GetU64(footer + 104);
  if (index_offset > footer_offset) return;
  revpatch::Sha256 h;
  h.Update(file->data(), kHeaderFields);
  h.Update(file->data() + index_offset, static_cast<size_t>(footer_offset - index_offset));
  h.Update(footer, kFooterChecksumOffset);
  const Digest sum = h.Final();
  std::memcpy(footer + kFooterChecksumOffset, sum.data(), 32);
}

void CheckReader(LayerReader& layer) {
  const uint32_t bs = layer.block_size();
  const std::vector<uint64_t> blocks = layer.Blocks();
  FUZZ_CHECK(blocks.size() == layer.block_entries(), "Blocks() size");
  const size_t n = std::min(blocks.size(), kMaxEntriesChecked);
  Bytes one(bs), run;
  for (size_t pos = 0; pos < n; ++pos) {
    const uint64_t b = blocks[pos];
    FUZZ_CHECK(pos == 0 || blocks[pos - 1] < b, "Blocks() not sorted");
    FUZZ_CHECK(layer.EntryBlock(pos) == b, "EntryBlock");
    FUZZ_CHECK(layer.LowerBound(b) == pos, "LowerBound");
    FUZZ_CHECK(layer.HasBlock(b), "HasBlock");
    if (b > 0 && (pos == 0 || blocks[pos - 1] != b - 1)) {
      FUZZ_CHECK(!layer.HasBlock(b - 1), "HasBlock of a block not held");
    }
    bool found = false;
    Status s = layer.ReadBlock(b, one.data(), &found);
    if (!s.ok()) {
      // A data offset inside the file but past its end reads short.
      FUZZ_CHECK(s.code() == ErrorCode::kCorrupt || s.code() == ErrorCode::kIo, s.ToString());
      continue;
    }
    FUZZ_CHECK(found, "ReadBlock of a held block");
    Digest leaf;
    FUZZ_CHECK(layer.FindNode(0, b, &leaf), "FindNode(0) of a held block");
  }
  // Runs of entries, read at once and one by one.
  for (size_t pos = 0; pos < n; pos += 7) {
    const size_t count = std::min<size_t>(5, blocks.size() - pos);
    run.assign(count * size_t{bs}, 0);
    if (!layer.ReadEntries(pos, count, run.data()).ok()) continue;
    for (size_t k = 0; k < count; ++k) {
      bool found = false;
      FUZZ_CHECK(layer.ReadBlock(blocks[pos + k], one.data(), &found).ok() && found,
                 "a block read in a run does not read alone");
      FUZZ_CHECK(std::equal(one.begin(), one.end(), run.begin() + k * size_t{bs}),
                 "ReadEntries differs from ReadBlock");
    }
  }
  run.assign(bs, 0);
  FUZZ_CHECK(layer.ReadEntries(blocks.size(), 1, run.data()).code() == ErrorCode::kBadExtent,
             "ReadEntries past the end");
  if (layer.Verify().ok()) {
    for (size_t pos = 0; pos < n; ++pos) {
      bool found = false;
      FUZZ_CHECK(layer.ReadBlock(blocks[pos], one.data(), &found).ok() && found,
                 "a verified layer's block does not read");
      Digest leaf;
      layer.FindNode(0, blocks[pos], &leaf);
      FUZZ_CHECK(revpatch::LeafHash(one.data(), bs) == leaf, "Verify passed a wrong block");
    }
  }
}

// What the view must read, block by block: the fuzzed layer's block if it
// holds it, else what the volume beneath reads (zeros past its blocks are
// not readable: the view must refuse them).
bool ComposeBlock(LayerReader& top, const revpatch_fuzz::Volume& below, uint64_t block,
                  uint64_t view_size, uint8_t* out) {
  const uint32_t bs = below.block_size;
  bool found = false;
  if (!top.ReadBlock(block, out, &found).ok()) return false;
  if (!found) {
    if (block >= below.blocks()) return false;
    std::memcpy(out, &below.image[block * bs], bs);
  }
  // The last block reads as zeros past the view's size.
  const uint64_t start = block * bs;
  if (start + bs > view_size) std::memset(out + (view_size - start), 0, start + bs - view_size);
  return true;
}

void CheckView(revpatch::View& view, const revpatch_fuzz::Volume& below, bool export_image) {
  LayerReader& top = view.layer(view.layer_count() - 1);
  const uint32_t bs = view.block_size();
  const uint64_t blocks = view.block_count();
  if (blocks > kMaxViewBlocks) return;
  // The composition is checked with the hash checks off: a fuzzed layer's
  // data need not match its leaves (its checksum does not cover the data).
  // The checked reads are tested at the end: the composed bytes or kCorrupt.
  view.SetVerifyReads(false);
  Bytes model(blocks * bs);
  bool composable = true;
  for (uint64_t b = 0; b < blocks && composable; ++b) {
    composable = ComposeBlock(top, below, b, view.size_bytes(), &model[b * bs]);
  }
  Bytes read(blocks * bs);
  const Status all = blocks > 0 ? view.ReadBlocks(0, blocks, read.data()) : Status::Ok();
  if (!composable) {
    FUZZ_CHECK(!all.ok(), "the view read blocks that are in no layer and past the base");
    return;
  }
  FUZZ_CHECK(all.ok(), "ReadBlocks: " + all.ToString());
  FUZZ_CHECK(read == model, "the view does not read the composed blocks");
  // Pieces: odd starts and lengths cross layer boundaries differently.
  for (uint64_t first = 0; first < blocks; first += 3) {
    const uint64_t count = std::min<uint64_t>(5, blocks - first);
    Bytes piece(count * bs);
    const Status s = view.ReadBlocks(first, count, piece.data());
    FUZZ_CHECK(s.ok() && std::equal(piece.begin(), piece.end(), model.begin() + first * bs),
               "ReadBlocks of a piece differs");
  }
  FUZZ_CHECK(view.ReadBlocks(blocks, 1, read.data()).code() == ErrorCode::kBadExtent,
             "ReadBlocks past the end");
  Bytes bytes(view.size_bytes() + 100);
  Status s = view.ReadBytes(0, bytes.size(), bytes.data());
  FUZZ_CHECK(s.ok(), "ReadBytes: " + s.ToString());
  FUZZ_CHECK(std::equal(bytes.begin(), bytes.begin() + view.size_bytes(), model.begin()),
             "ReadBytes differs from ReadBlocks");
  FUZZ_CHECK(std::all_of(bytes.begin() + view.size_bytes(), bytes.end(),
                         [](uint8_t b) { return b == 0; }),
             "ReadBytes past the end is not zeros");

  revpatch::MerkleNodeSource& tree = view.tree();
  const uint32_t height = revpatch::MerkleHeight(blocks);
  for (uint32_t level = 0; level < height; ++level) {
    const uint64_t width = revpatch::MerkleLevelWidth(blocks, level);
    for (uint64_t i = 0; i < width; ++i) {
      Digest node;
      const Status got = tree.GetNode(level, i, &node);
      FUZZ_CHECK(got.ok() || got.code() == ErrorCode::kCorrupt, got.ToString());
    }
  }

  if (export_image) {
    const std::string out = ScratchPath("export");
    revpatch::ExportResult result;
    s = revpatch::ExportView(view, out, revpatch::ExportMode::kCopy, nullptr, &result);
    FUZZ_CHECK(s.ok(), "ExportView: " + s.ToString());
    const Bytes image = ReadFileOrDie(out);
    RemoveFile(out);
    FUZZ_CHECK(image.size() == view.size_bytes() &&
                   std::equal(image.begin(), image.end(), model.begin()),
               "the exported image is not the view");
  }

  // With the checks on (View's default), a read returns exactly the composed
  // bytes or fails with kCorrupt; never other bytes.
  view.SetVerifyReads(true);
  Bytes checked(blocks * bs);
  const Status v = blocks > 0 ? view.ReadBlocks(0, blocks, checked.data()) : Status::Ok();
  FUZZ_CHECK(v.ok() ? checked == model : v.code() == ErrorCode::kCorrupt,
             "a verified read: " + v.ToString());
}

}  // namespace

int FuzzLayer(const uint8_t* data, size_t size) {
  FuzzInput in(data, size);
  const uint8_t flags = in.Take<uint8_t>();
  Bytes file = in.TakeRest();
  if (flags & 1) FixUp(&file);
  const revpatch_fuzz::Volume& below =
      GetVolume((flags & 2) ? VolumeId::kLayerStack : VolumeId::kLayerBase);

  const std::string path = ScratchPath("layer");
  WriteFileOrDie(path, file);
  std::unique_ptr<LayerReader> layer;
  const Status opened = LayerReader::Open(path, &layer);
  FUZZ_CHECK(opened.ok() == revpatch::IsSealedLayer(path), "IsSealedLayer disagrees with Open");
  if (!opened.ok()) {
    FUZZ_CHECK(opened.code() == ErrorCode::kCorrupt || opened.code() == ErrorCode::kUnsupported,
               opened.ToString());
    RemoveFile(path);
    return 0;
  }
  CheckReader(*layer);
  layer.reset();

  std::vector<std::string> layers = below.layer_paths;
  layers.push_back(path);
  std::unique_ptr<revpatch::View> view;
  const Status composed = revpatch::View::Open(below.base_path, below.tree_path, layers, &view);
  if (composed.ok()) {
    CheckView(*view, below, flags & 4);
  } else {
    FUZZ_CHECK(composed.code() == ErrorCode::kSourceMismatch, composed.ToString());
  }
  view.reset();
  RemoveFile(path);
  return 0;
}

}  // namespace revpatch_fuzz

REVPATCH_FUZZ_ENTRY(FuzzLayer)
