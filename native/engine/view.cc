#include "view.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <limits>
#include <system_error>
#include <thread>
#include <utility>

#include "verified_tree.h"

namespace revpatch {
namespace {

constexpr uint64_t kNoBlock = std::numeric_limits<uint64_t>::max();
constexpr size_t kReadBytesChunk = size_t{1} << 20;
// A run at least this large is hashed on two threads: the calling one and
// a helper that takes the first half. Hashing (about 2 GB/s a core with
// SHA-NI) is what a verified read waits for; a page-cache read is several
// times faster.
constexpr size_t kParallelHashBytes = size_t{2} << 20;

// LeafHashes of `count` blocks, split over two threads when the run is
// large and a second thread can be had.
void HashRun(const uint8_t* data, size_t count, uint32_t block_size, Digest* out) {
  if (count * size_t{block_size} >= kParallelHashBytes && count >= 4) {
    const size_t half = (count / 2) & ~size_t{1};  // even: pairs stay whole
    try {
      std::thread helper([=] { LeafHashes(data, half, block_size, out); });
      LeafHashes(data + half * size_t{block_size}, count - half, block_size, out + half);
      helper.join();
      return;
    } catch (const std::system_error&) {
      // No thread to be had: hash it all here.
    }
  }
  LeafHashes(data, count, block_size, out);
}

}  // namespace

struct View::Impl {
  std::string base_path;
  File base;
  uint64_t base_size = 0;
  uint64_t base_blocks = 0;
  std::unique_ptr<MerkleTreeFile> base_tree;
  std::vector<std::unique_ptr<LayerReader>> layers;  // bottom to top
  uint32_t block_size = 0;
  uint64_t size = 0;
  uint64_t blocks = 0;
  Digest digest{};
  std::unique_ptr<VerifiedBaseTree> verified_base;
  std::atomic<bool> verify{true};
  std::function<void(const CorruptRead&)> on_corrupt;

  // The view's tree: the topmost layer that stored a node has its current
  // value; a node no layer stored is unchanged since the base.
  class Tree : public MerkleNodeSource {
   public:
    explicit Tree(Impl* impl) : impl_(impl) {}
    uint64_t leaf_count() const override { return impl_->blocks; }
    Status GetNode(uint32_t level, uint64_t index, Digest* out) override {
      if (level >= MerkleHeight(impl_->blocks) ||
          index >= MerkleLevelWidth(impl_->blocks, level)) {
        return Status(ErrorCode::kBadExtent, "tree node out of range");
      }
      for (size_t i = impl_->layers.size(); i-- > 0;) {
        if (impl_->layers[i]->FindNode(level, index, out)) return Status::Ok();
      }
      Status s = impl_->base_tree->GetNode(level, index, out);
      if (s.code() == ErrorCode::kBadExtent) {
        return Status(ErrorCode::kCorrupt, "tree node missing from the layer chain");
      }
      return s;
    }

   private:
    Impl* impl_;
  };
  Tree tree{this};

  Status ReadBase(uint64_t first, uint64_t end, uint8_t* out) {
    if (end > base_blocks) {
      return Status(ErrorCode::kCorrupt,
                    "block " + std::to_string(base_blocks) +
                        " is past the base and in no layer");
    }
    const uint64_t offset = first * block_size;
    const uint64_t want = (end - first) * block_size;
    const uint64_t avail = std::min(want, base_size - offset);
    REVPATCH_RETURN_IF_ERROR(base.ReadAt(offset, out, static_cast<size_t>(avail)));
    if (avail < want) std::memset(out + avail, 0, static_cast<size_t>(want - avail));
    return Status::Ok();
  }

  std::string SourceName(int layer) const {
    return layer < 0 ? "the base " + base_path : "layer " + layers[layer]->path();
  }

  // Scratch of one ReadBlocks call: the hashes of a run and its leaves.
  struct Scratch {
    std::vector<Digest> computed;
    std::vector<Digest> expected;
  };

  // Checks blocks [b, b + n), just read into `data` from `layer` (-1: the
  // base; else its entries from `pos` on), against their leaves. A bad
  // block is reported to the handler; then, with `bad`, listed and zeroed,
  // without it the read stops with kCorrupt.
  Status CheckRun(int layer, size_t pos, uint64_t b, uint64_t n, uint8_t* data,
                  Scratch* scratch, std::vector<CorruptRead>* bad) {
    const size_t count = static_cast<size_t>(n);
    scratch->computed.resize(count);
    scratch->expected.resize(count);
    if (layer < 0) {
      Status s = verified_base->Leaves(b, n, scratch->expected.data());
      if (!s.ok()) {
        if (s.code() != ErrorCode::kCorrupt) return s;
        // The leaves cannot be trusted: no block of the run can be checked.
        for (uint64_t i = 0; i < n; ++i) {
          CorruptRead r{b + i, -1, "block " + std::to_string(b + i) + " of " +
                                       SourceName(-1) + " cannot be checked: " + s.message()};
          if (on_corrupt) on_corrupt(r);
          if (bad == nullptr) return Status(ErrorCode::kCorrupt, r.detail);
          bad->push_back(std::move(r));
        }
        std::memset(data, 0, count * block_size);
        return Status::Ok();
      }
    } else {
      LayerReader& l = *layers[layer];
      for (size_t i = 0; i < count; ++i) scratch->expected[i] = l.EntryLeaf(pos + i);
    }
    HashRun(data, count, block_size, scratch->computed.data());
    for (size_t i = 0; i < count; ++i) {
      if (scratch->computed[i] == scratch->expected[i]) continue;
      CorruptRead r{b + i, layer,
                    "block " + std::to_string(b + i) + " of " + SourceName(layer) +
                        " does not match its leaf in " +
                        (layer < 0 ? "the base tree" : "the layer's index")};
      if (on_corrupt) on_corrupt(r);
      if (bad == nullptr) return Status(ErrorCode::kCorrupt, r.detail);
      std::memset(data + i * block_size, 0, block_size);
      bad->push_back(std::move(r));
    }
    return Status::Ok();
  }

  // `owner` is the View this is the Impl of (SourceRuns walks it).
  Status Read(View& owner, uint64_t first, uint64_t count, uint8_t* out,
              std::vector<CorruptRead>* bad);
};

View::View() : impl_(new Impl) {}
View::~View() = default;

Status View::Open(const std::string& base_path, const std::string& base_tree_path,
                  const std::vector<std::string>& layer_paths,
                  std::unique_ptr<View>* out) {
  std::unique_ptr<View> view(new View);
  Impl& im = *view->impl_;
  im.base_path = base_path;
  REVPATCH_RETURN_IF_ERROR(File::OpenRead(base_path, &im.base));
  REVPATCH_RETURN_IF_ERROR(im.base.Size(&im.base_size));
  REVPATCH_RETURN_IF_ERROR(MerkleTreeFile::Open(base_tree_path, &im.base_tree));
  if (im.base_tree->size_bytes() != im.base_size) {
    return Status(ErrorCode::kSourceMismatch,
                  "tree file " + base_tree_path + " is for a different base size");
  }
  im.block_size = im.base_tree->block_size();
  im.base_blocks = BlockCount(im.base_size, im.block_size);
  im.size = im.base_size;
  im.digest = im.base_tree->view_digest();
  im.verified_base.reset(new VerifiedBaseTree(im.base_tree.get()));
  for (const std::string& path : layer_paths) {
    std::unique_ptr<LayerReader> layer;
    REVPATCH_RETURN_IF_ERROR(LayerReader::Open(path, &layer));
    if (layer->block_size() != im.block_size) {
      return Status(ErrorCode::kSourceMismatch,
                    "layer " + path + " has a different block size");
    }
    if (layer->below_size() != im.size || layer->below_digest() != im.digest) {
      return Status(ErrorCode::kSourceMismatch,
                    "layer " + path + " was not made over the layers beneath it");
    }
    im.size = layer->target_size();
    im.digest = layer->view_digest();
    im.layers.push_back(std::move(layer));
  }
  im.blocks = BlockCount(im.size, im.block_size);
  *out = std::move(view);
  return Status::Ok();
}

uint32_t View::block_size() const { return impl_->block_size; }
uint64_t View::size_bytes() const { return impl_->size; }
const Digest& View::digest() const { return impl_->digest; }
MerkleNodeSource& View::tree() { return impl_->tree; }
const File& View::base_file() const { return impl_->base; }
size_t View::layer_count() const { return impl_->layers.size(); }
LayerReader& View::layer(size_t i) { return *impl_->layers[i]; }

void View::SetVerifyReads(bool verify) { impl_->verify.store(verify); }
bool View::verify_reads() const { return impl_->verify.load(); }
void View::SetCorruptionHandler(std::function<void(const CorruptRead&)> handler) {
  impl_->on_corrupt = std::move(handler);
}
std::string View::SourceName(int layer) const { return impl_->SourceName(layer); }

Status View::ReadBlocks(uint64_t first, uint64_t count, uint8_t* out) {
  return impl_->Read(*this, first, count, out, nullptr);
}

Status View::CheckBlocks(uint64_t first, uint64_t count, uint8_t* out,
                         std::vector<CorruptRead>* bad) {
  return impl_->Read(*this, first, count, out, bad);
}

Status View::Impl::Read(View& owner, uint64_t first, uint64_t count, uint8_t* out,
                        std::vector<CorruptRead>* bad) {
  Impl& im = *this;
  const bool checked = verify.load(std::memory_order_relaxed);
  Scratch scratch;
  if (count == 0 || first >= im.blocks || count > im.blocks - first) {
    return Status(ErrorCode::kBadExtent, "block range outside the view");
  }
  const uint64_t end = first + count;
  const size_t bs = im.block_size;

  // A run of blocks from one source is read, and checked, with one call.
  SourceRuns runs(owner, first, end);
  SourceRuns::Run run;
  while (runs.Next(&run)) {
    uint8_t* dst = out + (run.first - first) * bs;
    const uint64_t n = run.end - run.first;
    if (run.layer < 0) {
      REVPATCH_RETURN_IF_ERROR(im.ReadBase(run.first, run.end, dst));
    } else {
      REVPATCH_RETURN_IF_ERROR(
          im.layers[static_cast<size_t>(run.layer)]->ReadEntries(run.entry, n, dst));
    }
    if (checked) {
      REVPATCH_RETURN_IF_ERROR(CheckRun(run.layer, run.entry, run.first, n, dst, &scratch, bad));
    }
  }
  const uint64_t tail = im.size % bs;
  if (end == im.blocks && tail != 0) {
    std::memset(out + (count - 1) * bs + tail, 0, bs - tail);
  }
  return Status::Ok();
}

Status View::ReadBytes(uint64_t offset, uint64_t size, uint8_t* out) {
  Impl& im = *impl_;
  const uint64_t bs = im.block_size;
  const uint64_t avail = offset < im.size ? std::min(size, im.size - offset) : 0;
  if (avail < size) std::memset(out + avail, 0, static_cast<size_t>(size - avail));
  if (avail == 0) return Status::Ok();
  const uint64_t chunk_blocks = std::max<uint64_t>(1, kReadBytesChunk / bs);
  std::vector<uint8_t> buf;
  uint64_t done = 0;
  while (done < avail) {
    const uint64_t pos = offset + done;
    const uint64_t first = pos / bs;
    const uint64_t skip = pos % bs;
    const uint64_t want = avail - done;
    if (skip == 0 && want >= bs) {
      // Whole blocks go straight to the caller's buffer, a chunk at a time.
      const uint64_t blocks = std::min<uint64_t>(chunk_blocks, want / bs);
      REVPATCH_RETURN_IF_ERROR(ReadBlocks(first, blocks, out + done));
      done += blocks * bs;
      continue;
    }
    const uint64_t blocks =
        std::min<uint64_t>(chunk_blocks, BlockCount(skip + want, im.block_size));
    buf.resize(static_cast<size_t>(blocks * bs));
    REVPATCH_RETURN_IF_ERROR(ReadBlocks(first, blocks, buf.data()));
    const uint64_t got = std::min(want, blocks * bs - skip);
    std::memcpy(out + done, buf.data() + skip, static_cast<size_t>(got));
    done += got;
  }
  return Status::Ok();
}

std::vector<uint64_t> View::ChangedBlocks() const {
  std::vector<uint64_t> all;
  for (const auto& layer : impl_->layers) {
    const std::vector<uint64_t> blocks = layer->Blocks();
    // Blocks past this view's end (held below a shrink) are not part of it.
    const auto stop = std::lower_bound(blocks.begin(), blocks.end(), impl_->blocks);
    const size_t mid = all.size();
    all.insert(all.end(), blocks.begin(), stop);
    std::inplace_merge(all.begin(), all.begin() + mid, all.end());
  }
  all.erase(std::unique(all.begin(), all.end()), all.end());
  return all;
}

SourceRuns::SourceRuns(View& view, uint64_t first, uint64_t end)
    : view_(view), end_(end), block_(first), cursor_(small_) {
  const size_t k = view.layer_count();
  if (k > 8) {
    large_.resize(k);
    cursor_ = large_.data();
  }
  for (size_t i = 0; i < k; ++i) cursor_[i] = view.layer(i).LowerBound(first);
}

bool SourceRuns::Next(Run* run) {
  if (block_ >= end_) return false;
  const uint64_t b = block_;
  int top = -1;
  uint64_t limit = end_;     // first block >= b held by a layer above `top`
  uint64_t next_any = end_;  // first block >= b held by any layer
  for (size_t i = view_.layer_count(); i-- > 0;) {
    LayerReader& layer = view_.layer(i);
    const size_t n = layer.block_entries();
    size_t& pos = cursor_[i];
    while (pos < n && layer.EntryBlock(pos) < b) ++pos;
    const uint64_t blk = pos < n ? layer.EntryBlock(pos) : kNoBlock;
    if (blk == b && top < 0) {
      top = static_cast<int>(i);
      limit = std::min(next_any, end_);
    }
    next_any = std::min(next_any, blk);
  }
  run->first = b;
  run->layer = top;
  if (top < 0) {
    run->entry = 0;
    run->end = std::min(next_any, end_);
  } else {
    LayerReader& layer = view_.layer(static_cast<size_t>(top));
    const size_t pos = cursor_[top];
    const size_t n = layer.block_entries();
    size_t len = 1;
    while (b + len < limit && pos + len < n && layer.EntryBlock(pos + len) == b + len) ++len;
    run->entry = pos;
    run->end = b + len;
    cursor_[top] += len;
  }
  block_ = run->end;
  return true;
}

}  // namespace revpatch
