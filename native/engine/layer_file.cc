#include "layer_file.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <unordered_set>
#include <utility>

#include "buffered_writer.h"
#include "little_endian.h"
#include "view.h"

namespace revpatch {
namespace {

constexpr char kHeaderMagic[8] = {'R', 'V', 'P', 'L', 'A', 'Y', 'R', '1'};
constexpr char kFooterMagic[8] = {'R', 'V', 'P', 'L', 'E', 'N', 'D', '1'};
constexpr uint32_t kLayerVersion = 1;
// Header fields occupy [0, 64) of the first block; the rest is zero, so the
// data blocks that follow are block-aligned in the file.
constexpr size_t kHeaderFieldsSize = 64;
constexpr size_t kEntrySize = 48;
constexpr size_t kNodeSize = 48;
constexpr size_t kFooterSize = 168;
constexpr size_t kFooterChecksumOffset = 136;
constexpr uint64_t kZeroMarker = kLayerZeroOffset;
constexpr size_t kWriteBufferBytes = size_t{1} << 20;
// Data written is handed to the disk in pieces of this size as it goes
// (File::StartWriteback), so that Sync and Seal wait only for the tail.
constexpr uint64_t kWritebackBytes = uint64_t{4} << 20;
constexpr size_t kReadChunkBytes = size_t{1} << 20;
// Disk space is reserved ahead of the data in steps of what was written so
// far, within these bounds (Impl::ReserveAhead).
constexpr uint64_t kMinReserveBytes = uint64_t{4} << 20;
constexpr uint64_t kMaxReserveBytes = uint64_t{64} << 20;
constexpr size_t kRecordsPerBatch = 1024;  // Seal's index and node records

using IndexEntry = LayerIndexEntry;

struct StoredNode {
  uint32_t level;
  uint64_t index;
  Digest hash;
};

bool NodeLess(uint32_t la, uint64_t ia, uint32_t lb, uint64_t ib) {
  return la < lb || (la == lb && ia < ib);
}

void EncodeHeaderFields(uint32_t block_size, uint64_t target_size,
                        uint64_t below_size, const Digest& below_digest,
                        uint8_t* out) {
  std::memcpy(out, kHeaderMagic, 8);
  PutU32(out + 8, kLayerVersion);
  PutU32(out + 12, block_size);
  PutU64(out + 16, target_size);
  PutU64(out + 24, below_size);
  std::memcpy(out + 32, below_digest.data(), 32);
}

void EncodeEntry(const IndexEntry& e, uint8_t* out) {
  PutU64(out, e.block);
  PutU64(out + 8, e.offset);
  std::memcpy(out + 16, e.leaf.data(), 32);
}

void EncodeNode(const MerkleNode& n, uint8_t* out) {
  PutU32(out, n.level);
  PutU32(out + 4, 0);
  PutU64(out + 8, n.index);
  std::memcpy(out + 16, n.hash.data(), 32);
}

Digest ZeroLeaf(uint32_t block_size) {
  std::vector<uint8_t> zeros(block_size, 0);
  return LeafHash(zeros.data(), block_size);
}

Status Corrupt(const std::string& path, const std::string& what) {
  return Status(ErrorCode::kCorrupt, "layer " + path + ": " + what);
}

}  // namespace

// ---------------------------------------------------------------- writer

struct LayerWriter::Impl {
  std::string path;
  File file;
  View* below = nullptr;
  uint32_t block_size = 0;
  uint64_t target_size = 0;
  uint64_t target_blocks = 0;
  uint64_t below_size = 0;
  uint64_t below_blocks = 0;
  Digest below_digest{};
  std::unique_ptr<BufferedWriter> data;
  uint64_t data_blocks = 0;
  uint64_t bytes_written = 0;
  std::vector<IndexEntry> entries;  // write order until Seal sorts them
  // Duplicate detection in O(changed): blocks that were a new maximum when
  // written are ascending; the rest go to a hash set.
  std::vector<uint64_t> ascending;
  std::unordered_set<uint64_t> others;
  bool have_zero_leaf = false;
  Digest zero_leaf{};
  std::vector<uint8_t> scratch;
  std::vector<Digest> leaves;  // AppendRun's, kept to avoid reallocating
  uint64_t writeback_from = 0;  // data before this offset was handed to the disk
  uint64_t reserved_end = 0;    // space before this offset was asked for (ReserveAhead)
  bool directory_synced = false;
  // SyncFlushed's own descriptor (made by the first Flush), and whether it
  // failed: set on the syncing thread, read by CheckOpen on the writing one.
  File sync_handle;
  std::atomic<bool> sync_failed{false};
  enum class State { kOpen, kFailed, kPoisoned, kSealed, kAborted };
  State state = State::kOpen;

  void Init(uint64_t size, View* view) {
    below = view;
    block_size = view->block_size();
    target_size = size;
    target_blocks = BlockCount(size, block_size);
    below_size = view->size_bytes();
    below_blocks = view->block_count();
    below_digest = view->digest();
  }

  Status CheckOpen() const {
    if (sync_failed.load(std::memory_order_acquire)) {
      return Status(ErrorCode::kPoisoned, "layer writer poisoned by a failed fsync");
    }
    switch (state) {
      case State::kOpen: return Status::Ok();
      case State::kPoisoned:
        return Status(ErrorCode::kPoisoned, "layer writer poisoned by an I/O error");
      case State::kSealed:
        return Status(ErrorCode::kInvalidArgument, "layer already sealed");
      default:
        return Status(ErrorCode::kInvalidArgument, "layer writer no longer usable");
    }
  }

  bool Written(uint64_t block) const {
    return std::binary_search(ascending.begin(), ascending.end(), block) ||
           others.count(block) != 0;
  }

  Status Claim(uint64_t block) {
    if (block >= target_blocks) {
      return Status(ErrorCode::kBadExtent,
                    "block " + std::to_string(block) + " past the target");
    }
    if (ascending.empty() || block > ascending.back()) {
      ascending.push_back(block);
      return Status::Ok();
    }
    if (Written(block)) {
      return Status(ErrorCode::kBadExtent,
                    "block " + std::to_string(block) + " written twice");
    }
    others.insert(block);
    return Status::Ok();
  }

  const Digest& ZeroLeafHash() {
    if (!have_zero_leaf) {
      zero_leaf = ZeroLeaf(block_size);
      have_zero_leaf = true;
    }
    return zero_leaf;
  }

  // Poisons the writer on an I/O failure: what reached the file is unknown.
  Status Fail(Status s) {
    if (!s.ok()) state = State::kPoisoned;
    return s;
  }

  Status AppendData(uint64_t block, const uint8_t* bytes) {
    // The view's last block reads as zeros past the target size, so that is
    // what is stored and hashed.
    const uint64_t tail = target_size % block_size;
    if (block + 1 == target_blocks && tail != 0) {
      scratch.assign(bytes, bytes + tail);
      scratch.resize(block_size, 0);
      bytes = scratch.data();
    }
    const Digest leaf = LeafHash(bytes, block_size);
    ReserveAhead(data->position() + block_size);
    REVPATCH_RETURN_IF_ERROR(Fail(data->Append(bytes, block_size)));
    entries.push_back({block, block_size * (1 + data_blocks), leaf});
    ++data_blocks;
    bytes_written += block_size;
    StartWriteback();
    return Status::Ok();
  }

  // Before appending up to file offset `end`: reserves the space ahead
  // (File::Reserve) in steps that grow with the data. Blocks the writes
  // then land in are already allocated, which spares the filesystem its
  // per-page delayed-allocation work; on ext4 that was about a sixth of
  // the writing thread's time on a large REPLACE. A hint: a reservation
  // that fails (no space, not supported) is left to the writes, which
  // report a real shortage themselves. Seal gives back what was not used.
  void ReserveAhead(uint64_t end) {
    if (end <= reserved_end) return;
    const uint64_t step =
        std::min(kMaxReserveBytes, std::max(kMinReserveBytes, bytes_written));
    const uint64_t from = std::max(reserved_end, data->position());
    reserved_end = std::max(end, from) + step;
    (void)file.Reserve(from, reserved_end - from);
  }

  void StartWriteback() {
    const uint64_t end = data->written_end();
    if (end >= writeback_from + kWritebackBytes) {
      file.StartWriteback(writeback_from, end - writeback_from);
      writeback_from = end;
    }
  }

  // AppendData for the `count` blocks from `first` on, a slice at a time:
  // the slice's leaves are hashed two at a time and its bytes, still in the
  // cache, appended with one call (a whole slice bypasses the buffer).
  // `given`, if not null, holds the leaf hash of each of the `count`
  // blocks, computed from these bytes by the caller.
  Status AppendRun(uint64_t first, uint64_t count, const uint8_t* bytes, const Digest* given) {
    // The target's partial last block is stored zero-padded (AppendData),
    // and hashed so: a leaf given for it was not.
    const bool partial_last =
        target_size % block_size != 0 && count > 0 && first + count == target_blocks;
    const uint64_t whole = partial_last ? count - 1 : count;
    const uint64_t slice_blocks = std::max<uint64_t>(1, kWriteBufferBytes / block_size);
    for (uint64_t done = 0; done < whole;) {
      const size_t n = static_cast<size_t>(std::min(slice_blocks, whole - done));
      const uint8_t* slice = bytes + done * block_size;
      const Digest* slice_leaves = given != nullptr ? given + done : nullptr;
      if (slice_leaves == nullptr) {
        leaves.resize(n);
        LeafHashes(slice, n, block_size, leaves.data());
        slice_leaves = leaves.data();
      }
      ReserveAhead(data->position() + n * uint64_t{block_size});
      REVPATCH_RETURN_IF_ERROR(Fail(data->Append(slice, n * size_t{block_size})));
      for (size_t i = 0; i < n; ++i) {
        entries.push_back({first + done + i, block_size * (1 + data_blocks + i), slice_leaves[i]});
      }
      data_blocks += n;
      bytes_written += n * uint64_t{block_size};
      done += n;
      StartWriteback();
    }
    if (partial_last) return AppendData(first + whole, bytes + whole * block_size);
    return Status::Ok();
  }

  // WriteBlocks and WriteHashedBlocks (`given`: null, or a leaf per block).
  Status WriteRun(uint64_t first, uint64_t count, uint32_t run_block_size, const uint8_t* bytes,
                  const Digest* given) {
    REVPATCH_RETURN_IF_ERROR(CheckOpen());
    if (run_block_size != block_size) {
      return Status(ErrorCode::kInvalidArgument, "block size differs from the layer's");
    }
    // Claimed first, so that a bad block stops the run where WriteBlock in
    // a loop would: the blocks before it are still written.
    uint64_t claimed = 0;
    Status claim = Status::Ok();
    while (claimed < count && (claim = Claim(first + claimed)).ok()) ++claimed;
    REVPATCH_RETURN_IF_ERROR(AppendRun(first, claimed, bytes, given));
    return claim;
  }
};

LayerWriter::LayerWriter() : impl_(new Impl) {}

LayerWriter::~LayerWriter() { Abort(); }

Status LayerWriter::Create(const std::string& path, uint64_t target_size,
                           View* below, std::unique_ptr<LayerWriter>* out) {
  if (below == nullptr) {
    return Status(ErrorCode::kInvalidArgument, "layer needs the view below");
  }
  const uint32_t block_size = below->block_size();
  if (!ValidBlockSize(block_size)) {
    return Status(ErrorCode::kInvalidArgument, "invalid block size");
  }
  std::unique_ptr<LayerWriter> writer(new LayerWriter);
  Impl& im = *writer->impl_;
  im.Init(target_size, below);
  // The path is recorded only once the file is ours, so that a failed
  // create (kExists) never unlinks someone else's file.
  REVPATCH_RETURN_IF_ERROR(File::CreateNew(path, &im.file));
  im.path = path;
  im.state = Impl::State::kOpen;
  std::vector<uint8_t> header(block_size, 0);
  EncodeHeaderFields(block_size, target_size, im.below_size, im.below_digest,
                     header.data());
  Status s = im.file.WriteAt(0, header.data(), header.size());
  if (!s.ok()) {
    writer->Abort();
    return s;
  }
  im.data.reset(new BufferedWriter(&im.file, block_size, kWriteBufferBytes));
  *out = std::move(writer);
  return Status::Ok();
}

Status LayerWriter::Resume(const std::string& path, uint64_t target_size,
                           View* below, const LayerWriterState& state,
                           std::unique_ptr<LayerWriter>* out) {
  if (below == nullptr || !ValidBlockSize(below->block_size())) {
    return Status(ErrorCode::kInvalidArgument, "layer needs a valid view below");
  }
  std::unique_ptr<LayerWriter> writer(new LayerWriter);
  Impl& im = *writer->impl_;
  im.Init(target_size, below);
  im.state = Impl::State::kFailed;  // the destructor must not unlink: not ours yet
  const uint32_t bs = im.block_size;
  const uint64_t data_blocks = state.data_blocks;
  if (state.entries.size() > im.target_blocks || data_blocks > state.entries.size()) {
    return Corrupt(path, "saved state has more entries than the target has blocks");
  }
  // Entries replay through Claim, which rebuilds the duplicate sets exactly.
  uint64_t rank = 0;
  for (const IndexEntry& e : state.entries) {
    if (!im.Claim(e.block).ok()) return Corrupt(path, "saved entry out of range or twice");
    if (e.offset == kZeroMarker) {
      if (e.leaf != im.ZeroLeafHash()) return Corrupt(path, "saved zero entry with a data leaf");
    } else if (e.offset != uint64_t{bs} * (1 + rank++)) {
      return Corrupt(path, "saved data entry out of write order");
    }
  }
  if (rank != data_blocks) return Corrupt(path, "saved data block count differs from its entries");

  REVPATCH_RETURN_IF_ERROR(File::OpenReadWrite(path, &im.file));
  const uint64_t keep = uint64_t{bs} * (1 + data_blocks);
  uint64_t size = 0;
  REVPATCH_RETURN_IF_ERROR(im.file.Size(&size));
  if (size < keep) return Corrupt(path, "shorter than its saved state");
  uint8_t header[kHeaderFieldsSize];
  uint8_t expect[kHeaderFieldsSize];
  REVPATCH_RETURN_IF_ERROR(im.file.ReadAt(0, header, sizeof(header)));
  EncodeHeaderFields(bs, target_size, im.below_size, im.below_digest, expect);
  if (std::memcmp(header, expect, sizeof(header)) != 0) {
    return Corrupt(path, "header is not the one for this view and target");
  }
  // The data was fsynced before the state was saved; check it anyway, since
  // Seal builds the tree from the leaves and never reads the data back.
  std::vector<const IndexEntry*> data_entries;
  data_entries.reserve(static_cast<size_t>(data_blocks));
  for (const IndexEntry& e : state.entries) {
    if (e.offset != kZeroMarker) data_entries.push_back(&e);
  }
  const size_t per_read = std::max<size_t>(1, kReadChunkBytes / bs);
  std::vector<uint8_t> buf;
  for (size_t first = 0; first < data_entries.size(); first += per_read) {
    const size_t n = std::min(per_read, data_entries.size() - first);
    buf.resize(n * size_t{bs});
    REVPATCH_RETURN_IF_ERROR(im.file.ReadAt(data_entries[first]->offset, buf.data(), buf.size()));
    for (size_t k = 0; k < n; ++k) {
      if (LeafHash(&buf[k * size_t{bs}], bs) != data_entries[first + k]->leaf) {
        return Corrupt(path, "data block " + std::to_string(first + k) +
                                 " does not match its saved leaf hash");
      }
    }
  }
  REVPATCH_RETURN_IF_ERROR(im.file.Truncate(keep));
  im.entries = state.entries;
  im.data_blocks = data_blocks;
  im.bytes_written = data_blocks * bs;
  im.data.reset(new BufferedWriter(&im.file, keep, kWriteBufferBytes));
  im.writeback_from = keep;
  im.path = path;
  im.state = Impl::State::kOpen;
  *out = std::move(writer);
  return Status::Ok();
}

Status LayerWriter::WriteBlock(uint64_t block, const uint8_t* data) {
  Impl& im = *impl_;
  REVPATCH_RETURN_IF_ERROR(im.CheckOpen());
  REVPATCH_RETURN_IF_ERROR(im.Claim(block));
  return im.AppendData(block, data);
}

Status LayerWriter::WriteBlocks(uint64_t first, uint64_t count, uint32_t block_size,
                                const uint8_t* data) {
  return impl_->WriteRun(first, count, block_size, data, nullptr);
}

Status LayerWriter::WriteHashedBlocks(uint64_t first, uint64_t count, uint32_t block_size,
                                      const uint8_t* data, const Digest* leaves) {
  if (leaves == nullptr) return Status(ErrorCode::kInvalidArgument, "no leaf hashes given");
  return impl_->WriteRun(first, count, block_size, data, leaves);
}

Status LayerWriter::WriteZeroBlock(uint64_t block) {
  Impl& im = *impl_;
  REVPATCH_RETURN_IF_ERROR(im.CheckOpen());
  REVPATCH_RETURN_IF_ERROR(im.Claim(block));
  im.entries.push_back({block, kZeroMarker, im.ZeroLeafHash()});
  return Status::Ok();
}

Status LayerWriter::Seal(const Digest* expected, Digest* view_digest) {
  Impl& im = *impl_;
  REVPATCH_RETURN_IF_ERROR(im.CheckOpen());
  const uint32_t bs = im.block_size;

  // Shrinking into the middle of a block: the new last block reads as zeros
  // past the target size. If the view below has other bytes there, the
  // block changes and is stored.
  const uint64_t last = im.target_blocks - 1;
  if (im.target_size % bs != 0 && im.target_size < im.below_size &&
      last < im.below_blocks && !im.Written(last)) {
    std::vector<uint8_t> block(bs);
    REVPATCH_RETURN_IF_ERROR(im.below->ReadBlocks(last, 1, block.data()));
    const size_t keep = static_cast<size_t>(im.target_size % bs);
    bool tail_zero = std::all_of(block.begin() + keep, block.end(),
                                 [](uint8_t b) { return b == 0; });
    if (!tail_zero) {
      REVPATCH_RETURN_IF_ERROR(im.Claim(last));
      REVPATCH_RETURN_IF_ERROR(im.AppendData(last, block.data()));
    }
  }
  REVPATCH_RETURN_IF_ERROR(im.Fail(im.data->Flush()));
  im.state = Impl::State::kFailed;  // until sealed: no more writes

  std::sort(im.entries.begin(), im.entries.end(),
            [](const IndexEntry& a, const IndexEntry& b) { return a.block < b.block; });
  // Every block the view below does not have is part of the layer.
  if (im.target_blocks > im.below_blocks) {
    std::vector<IndexEntry> fill;
    auto it = std::lower_bound(
        im.entries.begin(), im.entries.end(), im.below_blocks,
        [](const IndexEntry& e, uint64_t b) { return e.block < b; });
    for (uint64_t b = im.below_blocks; b < im.target_blocks; ++b) {
      if (it != im.entries.end() && it->block == b) {
        ++it;
      } else {
        fill.push_back({b, kZeroMarker, im.ZeroLeafHash()});
      }
    }
    if (!fill.empty()) {
      const size_t mid = im.entries.size();
      im.entries.insert(im.entries.end(), fill.begin(), fill.end());
      std::inplace_merge(
          im.entries.begin(), im.entries.begin() + mid, im.entries.end(),
          [](const IndexEntry& a, const IndexEntry& b) { return a.block < b.block; });
    }
  }

  // Level 0 lives in the index entries; only inner nodes are stored.
  class EntryLeaves : public MerkleLeafList {
   public:
    explicit EntryLeaves(const std::vector<IndexEntry>& entries) : entries_(entries) {}
    size_t count() const override { return entries_.size(); }
    void Get(size_t i, uint64_t* index, Digest* hash) const override {
      *index = entries_[i].block;
      *hash = entries_[i].leaf;
    }

   private:
    const std::vector<IndexEntry>& entries_;
  };
  std::vector<MerkleNode> changed;
  Digest root;
  REVPATCH_RETURN_IF_ERROR(MerkleInnerDelta(im.below->tree(), EntryLeaves(im.entries),
                                            im.target_blocks, &changed, &root));
  const Digest digest = ViewDigest(im.target_size, bs, root);
  if (expected != nullptr && *expected != digest) {
    return Status(ErrorCode::kHashMismatch,
                  "layer view digest " + DigestToHex(digest) + ", expected " +
                      DigestToHex(*expected));
  }

  const uint64_t index_offset = uint64_t{bs} * (1 + im.data_blocks);
  const uint64_t nodes_offset = index_offset + kEntrySize * im.entries.size();
  Sha256 checksum;
  uint8_t header[kHeaderFieldsSize];
  EncodeHeaderFields(bs, im.target_size, im.below_size, im.below_digest, header);
  checksum.Update(header, sizeof(header));
  BufferedWriter out(&im.file, index_offset, kWriteBufferBytes);
  // Records are encoded a batch at a time, then hashed and appended per
  // batch: one Update and Append per 48-byte record cost a large layer's
  // seal more than the hashing.
  std::vector<uint8_t> batch(kEntrySize * kRecordsPerBatch);
  size_t batched = 0;
  auto flush_batch = [&]() -> Status {
    checksum.Update(batch.data(), batched * kEntrySize);
    Status s = im.Fail(out.Append(batch.data(), batched * kEntrySize));
    batched = 0;
    return s;
  };
  for (const IndexEntry& e : im.entries) {
    EncodeEntry(e, &batch[batched * kEntrySize]);
    if (++batched == kRecordsPerBatch) REVPATCH_RETURN_IF_ERROR(flush_batch());
  }
  for (const MerkleNode& n : changed) {
    EncodeNode(n, &batch[batched * kEntrySize]);
    if (++batched == kRecordsPerBatch) REVPATCH_RETURN_IF_ERROR(flush_batch());
  }
  REVPATCH_RETURN_IF_ERROR(flush_batch());
  uint8_t footer[kFooterSize];
  std::memcpy(footer, kFooterMagic, 8);
  PutU32(footer + 8, kLayerVersion);
  PutU32(footer + 12, bs);
  PutU64(footer + 16, im.target_size);
  PutU64(footer + 24, im.below_size);
  std::memcpy(footer + 32, im.below_digest.data(), 32);
  std::memcpy(footer + 64, digest.data(), 32);
  PutU64(footer + 96, im.data_blocks);
  PutU64(footer + 104, index_offset);
  PutU64(footer + 112, im.entries.size());
  PutU64(footer + 120, nodes_offset);
  PutU64(footer + 128, changed.size());
  checksum.Update(footer, kFooterChecksumOffset);
  const Digest sum = checksum.Final();
  std::memcpy(footer + kFooterChecksumOffset, sum.data(), 32);
  // Data, index and nodes are durable before the footer exists: a footer is
  // what makes a layer sealed, so no power cut may keep it and lose what it
  // vouches for (a torn cut could otherwise keep the footer's sectors alone).
  REVPATCH_RETURN_IF_ERROR(im.Fail(out.Flush()));
  REVPATCH_RETURN_IF_ERROR(im.Fail(im.file.FullSync()));
  REVPATCH_RETURN_IF_ERROR(im.Fail(out.Append(footer, sizeof(footer))));
  REVPATCH_RETURN_IF_ERROR(im.Fail(out.Flush()));
  (void)im.file.ReleaseReserved(out.position(), im.reserved_end);  // a hint
  REVPATCH_RETURN_IF_ERROR(im.Fail(im.file.FullSync()));
  im.sync_handle.Close();
  REVPATCH_RETURN_IF_ERROR(im.Fail(im.file.Close()));
  REVPATCH_RETURN_IF_ERROR(im.Fail(SyncDirectory(DirName(im.path))));
  im.state = Impl::State::kSealed;
  if (view_digest != nullptr) *view_digest = digest;
  // The index is no longer needed once it is on disk.
  std::vector<IndexEntry>().swap(im.entries);
  std::vector<uint64_t>().swap(im.ascending);
  std::unordered_set<uint64_t>().swap(im.others);
  return Status::Ok();
}

void LayerWriter::Abort() {
  Impl& im = *impl_;
  if (im.state == Impl::State::kSealed || im.state == Impl::State::kAborted) return;
  im.data.reset();
  im.sync_handle.Close();
  im.file.Close();
  if (!im.path.empty()) UnlinkFile(im.path);
  im.state = Impl::State::kAborted;
}

Status LayerWriter::Sync() {
  Impl& im = *impl_;
  REVPATCH_RETURN_IF_ERROR(im.CheckOpen());
  REVPATCH_RETURN_IF_ERROR(im.Fail(im.data->Flush()));
  REVPATCH_RETURN_IF_ERROR(im.Fail(im.file.FullSync()));
  if (!im.directory_synced) {
    REVPATCH_RETURN_IF_ERROR(im.Fail(SyncDirectory(DirName(im.path))));
    im.directory_synced = true;
  }
  return Status::Ok();
}

Status LayerWriter::Flush() {
  Impl& im = *impl_;
  REVPATCH_RETURN_IF_ERROR(im.CheckOpen());
  if (!im.sync_handle.valid()) REVPATCH_RETURN_IF_ERROR(im.file.Duplicate(&im.sync_handle));
  return im.Fail(im.data->Flush());
}

Status LayerWriter::SyncFlushed() {
  Impl& im = *impl_;
  if (!im.sync_handle.valid()) {
    return Status(ErrorCode::kInvalidArgument, "layer SyncFlushed without a Flush");
  }
  Status s = im.sync_handle.FullSync();
  if (s.ok() && !im.directory_synced) {
    s = SyncDirectory(DirName(im.path));
    if (s.ok()) im.directory_synced = true;
  }
  if (!s.ok()) im.sync_failed.store(true, std::memory_order_release);
  return s;
}

void LayerWriter::SaveState(LayerWriterState* out) const { SaveStateSince(0, out); }

void LayerWriter::SaveStateSince(size_t first_entry, LayerWriterState* out) const {
  const std::vector<IndexEntry>& entries = impl_->entries;
  out->data_blocks = impl_->data_blocks;
  out->entries.assign(entries.begin() + std::min(first_entry, entries.size()), entries.end());
}

size_t LayerWriter::entry_count() const { return impl_->entries.size(); }

void LayerWriter::Detach() {
  Impl& im = *impl_;
  if (im.state == Impl::State::kSealed || im.state == Impl::State::kAborted) return;
  im.data.reset();
  im.sync_handle.Close();
  im.file.Close();
  im.path.clear();
  im.state = Impl::State::kAborted;
}

uint64_t LayerWriter::blocks_written() const {
  return impl_->ascending.size() + impl_->others.size();
}
uint64_t LayerWriter::bytes_written() const { return impl_->bytes_written; }

// ---------------------------------------------------------------- reader

struct LayerReader::Impl {
  std::string path;
  File file;
  uint32_t block_size = 0;
  uint64_t target_size = 0;
  uint64_t below_size = 0;
  Digest below_digest{};
  Digest view_digest{};
  uint64_t index_offset = 0;
  std::vector<IndexEntry> entries;
  std::vector<StoredNode> nodes;
};

LayerReader::LayerReader() : impl_(new Impl) {}
LayerReader::~LayerReader() = default;

Status LayerReader::Open(const std::string& path,
                         std::unique_ptr<LayerReader>* out) {
  std::unique_ptr<LayerReader> reader(new LayerReader);
  Impl& im = *reader->impl_;
  im.path = path;
  REVPATCH_RETURN_IF_ERROR(File::OpenRead(path, &im.file));
  uint64_t file_size = 0;
  REVPATCH_RETURN_IF_ERROR(im.file.Size(&file_size));
  if (file_size < kHeaderFieldsSize + kFooterSize) {
    return Corrupt(path, "too short to be sealed");
  }
  uint8_t footer[kFooterSize];
  REVPATCH_RETURN_IF_ERROR(im.file.ReadAt(file_size - kFooterSize, footer, kFooterSize));
  if (std::memcmp(footer, kFooterMagic, 8) != 0) return Corrupt(path, "no footer (unsealed)");
  if (GetU32(footer + 8) != kLayerVersion) {
    return Status(ErrorCode::kUnsupported, "layer " + path + ": unknown version");
  }
  im.block_size = GetU32(footer + 12);
  im.target_size = GetU64(footer + 16);
  im.below_size = GetU64(footer + 24);
  std::memcpy(im.below_digest.data(), footer + 32, 32);
  std::memcpy(im.view_digest.data(), footer + 64, 32);
  const uint64_t data_blocks = GetU64(footer + 96);
  const uint64_t index_offset = GetU64(footer + 104);
  const uint64_t index_count = GetU64(footer + 112);
  const uint64_t nodes_offset = GetU64(footer + 120);
  const uint64_t node_count = GetU64(footer + 128);
  const uint32_t bs = im.block_size;
  const uint64_t footer_offset = file_size - kFooterSize;
  // Every count is bounded by the file size before anything is allocated,
  // and every sum is checked without overflow.
  if (!ValidBlockSize(bs) || file_size < bs + kFooterSize ||
      data_blocks > (file_size - bs) / bs ||
      index_offset != uint64_t{bs} * (1 + data_blocks) ||
      index_offset > footer_offset ||
      index_count > (footer_offset - index_offset) / kEntrySize ||
      nodes_offset != index_offset + index_count * kEntrySize ||
      node_count > (footer_offset - nodes_offset) / kNodeSize ||
      nodes_offset + node_count * kNodeSize != footer_offset) {
    return Corrupt(path, "inconsistent footer");
  }
  im.index_offset = index_offset;

  Sha256 checksum;
  uint8_t header[kHeaderFieldsSize];
  REVPATCH_RETURN_IF_ERROR(im.file.ReadAt(0, header, sizeof(header)));
  uint8_t expect_header[kHeaderFieldsSize];
  EncodeHeaderFields(bs, im.target_size, im.below_size, im.below_digest,
                     expect_header);
  if (std::memcmp(header, expect_header, sizeof(header)) != 0) {
    return Corrupt(path, "header does not match footer");
  }
  checksum.Update(header, sizeof(header));

  const uint64_t target_blocks = BlockCount(im.target_size, bs);
  const uint64_t below_blocks = BlockCount(im.below_size, bs);
  const uint32_t height = MerkleHeight(target_blocks);
  im.entries.reserve(index_count);
  im.nodes.reserve(node_count);
  std::vector<uint8_t> chunk;
  const uint64_t records = index_count + node_count;
  const size_t per_chunk = kReadChunkBytes / kEntrySize;
  uint64_t growth_entries = 0;
  for (uint64_t first = 0; first < records; first += per_chunk) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(per_chunk, records - first));
    chunk.resize(n * kEntrySize);
    REVPATCH_RETURN_IF_ERROR(
        im.file.ReadAt(index_offset + first * kEntrySize, chunk.data(), chunk.size()));
    checksum.Update(chunk.data(), chunk.size());
    for (size_t i = 0; i < n; ++i) {
      const uint8_t* r = &chunk[i * kEntrySize];
      if (first + i < index_count) {
        IndexEntry e;
        e.block = GetU64(r);
        e.offset = GetU64(r + 8);
        std::memcpy(e.leaf.data(), r + 16, 32);
        if (e.block >= target_blocks ||
            (!im.entries.empty() && e.block <= im.entries.back().block)) {
          return Corrupt(path, "index not sorted or out of range");
        }
        if (e.offset != kZeroMarker &&
            (e.offset < bs || e.offset >= index_offset || e.offset % bs != 0)) {
          return Corrupt(path, "index entry points outside the data");
        }
        if (e.block >= below_blocks) ++growth_entries;
        im.entries.push_back(e);
      } else {
        StoredNode node;
        node.level = GetU32(r);
        node.index = GetU64(r + 8);
        std::memcpy(node.hash.data(), r + 16, 32);
        if (GetU32(r + 4) != 0 || node.level == 0 || node.level >= height ||
            node.index >= MerkleLevelWidth(target_blocks, node.level) ||
            (!im.nodes.empty() && !NodeLess(im.nodes.back().level,
                                            im.nodes.back().index, node.level,
                                            node.index))) {
          return Corrupt(path, "node list not sorted or out of range");
        }
        im.nodes.push_back(node);
      }
    }
  }
  checksum.Update(footer, kFooterChecksumOffset);
  const Digest sum = checksum.Final();
  if (std::memcmp(sum.data(), footer + kFooterChecksumOffset, 32) != 0) {
    return Corrupt(path, "checksum mismatch");
  }
  if (target_blocks > below_blocks && growth_entries != target_blocks - below_blocks) {
    return Corrupt(path, "grown blocks missing from the index");
  }
  *out = std::move(reader);
  return Status::Ok();
}

uint32_t LayerReader::block_size() const { return impl_->block_size; }
uint64_t LayerReader::target_size() const { return impl_->target_size; }
const Digest& LayerReader::view_digest() const { return impl_->view_digest; }
uint64_t LayerReader::block_entries() const { return impl_->entries.size(); }
uint64_t LayerReader::below_size() const { return impl_->below_size; }
const Digest& LayerReader::below_digest() const { return impl_->below_digest; }

size_t LayerReader::LowerBound(uint64_t block) const {
  const auto& e = impl_->entries;
  return static_cast<size_t>(
      std::lower_bound(e.begin(), e.end(), block,
                       [](const IndexEntry& x, uint64_t b) { return x.block < b; }) -
      e.begin());
}

uint64_t LayerReader::EntryBlock(size_t pos) const {
  return impl_->entries[pos].block;
}

const Digest& LayerReader::EntryLeaf(size_t pos) const { return impl_->entries[pos].leaf; }
const std::string& LayerReader::path() const { return impl_->path; }

bool LayerReader::EntryIsZero(size_t pos) const {
  return impl_->entries[pos].offset == kZeroMarker;
}

bool LayerReader::HasBlock(uint64_t block) const {
  const size_t pos = LowerBound(block);
  return pos < impl_->entries.size() && impl_->entries[pos].block == block;
}

Status LayerReader::ReadBlock(uint64_t block, uint8_t* out, bool* found) {
  const size_t pos = LowerBound(block);
  *found = pos < impl_->entries.size() && impl_->entries[pos].block == block;
  if (!*found) return Status::Ok();
  return ReadEntries(pos, 1, out);
}

Status LayerReader::ReadEntries(size_t pos, size_t count, uint8_t* out) {
  const auto& e = impl_->entries;
  const uint32_t bs = impl_->block_size;
  if (pos > e.size() || count > e.size() - pos) {
    return Status(ErrorCode::kBadExtent, "layer entry range out of bounds");
  }
  size_t i = 0;
  while (i < count) {
    const IndexEntry& first = e[pos + i];
    if (first.offset == kZeroMarker) {
      std::memset(out + i * size_t{bs}, 0, bs);
      ++i;
      continue;
    }
    size_t run = 1;
    while (i + run < count && e[pos + i + run].offset == first.offset + run * uint64_t{bs}) {
      ++run;
    }
    REVPATCH_RETURN_IF_ERROR(
        impl_->file.ReadAt(first.offset, out + i * size_t{bs}, run * size_t{bs}));
    i += run;
  }
  return Status::Ok();
}

bool LayerReader::FindNode(uint32_t level, uint64_t index, Digest* out) const {
  if (level == 0) {
    const size_t pos = LowerBound(index);
    if (pos < impl_->entries.size() && impl_->entries[pos].block == index) {
      *out = impl_->entries[pos].leaf;
      return true;
    }
    return false;
  }
  const auto& n = impl_->nodes;
  auto it = std::lower_bound(n.begin(), n.end(), std::make_pair(level, index),
                             [](const StoredNode& x, const std::pair<uint32_t, uint64_t>& k) {
                               return NodeLess(x.level, x.index, k.first, k.second);
                             });
  if (it != n.end() && it->level == level && it->index == index) {
    *out = it->hash;
    return true;
  }
  return false;
}

std::vector<uint64_t> LayerReader::Blocks() const {
  std::vector<uint64_t> blocks;
  blocks.reserve(impl_->entries.size());
  for (const IndexEntry& e : impl_->entries) blocks.push_back(e.block);
  return blocks;
}

Status LayerReader::Verify() {
  Impl& im = *impl_;
  const uint32_t bs = im.block_size;
  const Digest zero_leaf = ZeroLeaf(bs);
  // Read the data area in file order, in large runs.
  std::vector<std::pair<uint64_t, size_t>> by_offset;
  for (size_t i = 0; i < im.entries.size(); ++i) {
    const IndexEntry& e = im.entries[i];
    if (e.offset == kZeroMarker) {
      if (e.leaf != zero_leaf) {
        return Status(ErrorCode::kHashMismatch,
                      "layer " + im.path + ": zero block with a non-zero leaf");
      }
    } else {
      by_offset.push_back({e.offset, i});
    }
  }
  std::sort(by_offset.begin(), by_offset.end());
  const size_t max_run = std::max<size_t>(1, kReadChunkBytes * 4 / bs);
  std::vector<uint8_t> buf;
  for (size_t i = 0; i < by_offset.size();) {
    size_t run = 1;
    while (i + run < by_offset.size() && run < max_run &&
           by_offset[i + run].first == by_offset[i].first + run * uint64_t{bs}) {
      ++run;
    }
    buf.resize(run * size_t{bs});
    REVPATCH_RETURN_IF_ERROR(im.file.ReadAt(by_offset[i].first, buf.data(), buf.size()));
    for (size_t k = 0; k < run; ++k) {
      const IndexEntry& e = im.entries[by_offset[i + k].second];
      if (LeafHash(&buf[k * size_t{bs}], bs) != e.leaf) {
        return Status(ErrorCode::kHashMismatch,
                      "layer " + im.path + ": block " + std::to_string(e.block) +
                          " does not match its hash");
      }
    }
    i += run;
  }
  return Status::Ok();
}

bool IsSealedLayer(const std::string& path) {
  std::unique_ptr<LayerReader> reader;
  return LayerReader::Open(path, &reader).ok();
}

}  // namespace revpatch
