#include "merkle.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include <unistd.h>

#include "buffered_writer.h"
#include "file_io.h"
#include "little_endian.h"

namespace revpatch {
namespace {

constexpr char kTreeMagic[8] = {'R', 'V', 'P', 'T', 'R', 'E', 'E', '1'};
constexpr uint32_t kTreeVersion = 1;
// Header fields occupy bytes [0, 136); the rest of the header area is zero.
constexpr size_t kTreeHeaderSize = 256;
constexpr size_t kTreeHeaderUsed = 136;
constexpr size_t kTreeChecksumOffset = 104;
// Nodes per sequential read while building the upper levels (2 MiB); even,
// so a pair never straddles two reads.
constexpr size_t kLevelChunkNodes = size_t{1} << 16;
constexpr size_t kImageChunkBytes = size_t{4} << 20;
constexpr size_t kWriteBufferBytes = size_t{1} << 20;

// Number of nodes of all levels of a tree with `leaves` leaves.
uint64_t TotalNodes(uint64_t leaves) {
  uint64_t total = 0;
  const uint32_t height = MerkleHeight(leaves);
  for (uint32_t l = 0; l < height; ++l) total += MerkleLevelWidth(leaves, l);
  return total;
}

// The O(log n) fold of a stream of leaves: pending_[l] holds a level-l node
// still waiting for its right sibling.
class StreamingRoot {
 public:
  void AddLeaf(const Digest& leaf) { AddNode(leaf, 0); }

  // `count` leaves equal to `zero_leaf` (a hole). A run that covers a
  // whole aligned subtree adds that subtree's node at once, its hash known
  // per level; so a hole of n leaves costs O(log n) hashes, not n.
  void AddZeroRun(const Digest& zero_leaf, uint64_t count) {
    if (zero_nodes_.empty()) zero_nodes_.push_back(zero_leaf);
    while (count > 0) {
      // The highest level whose subtree starts here and fits in the run.
      size_t level = 0;
      while (level < 63 && (leaves_ & ((uint64_t{2} << level) - 1)) == 0 &&
             (uint64_t{2} << level) <= count) {
        ++level;
      }
      while (zero_nodes_.size() <= level) {
        zero_nodes_.push_back(InnerHash(zero_nodes_.back(), zero_nodes_.back()));
      }
      AddNode(zero_nodes_[level], level);
      count -= uint64_t{1} << level;
    }
  }

  Digest Root() const {
    if (leaves_ == 0) return Sha256::Hash(nullptr, 0);
    // Fold from the bottom: a lone pending node with nothing to its right is
    // promoted unchanged; a carried node is the right child of a pending one.
    bool have_carry = false;
    Digest carry{};
    for (size_t level = 0; level < pending_.size(); ++level) {
      if (!has_[level]) continue;
      if (have_carry) {
        carry = InnerHash(pending_[level], carry);
      } else {
        carry = pending_[level];
        have_carry = true;
      }
    }
    return carry;
  }

 private:
  // Adds the node of a whole subtree of 2^subtree_level leaves; the leaves
  // so far are a multiple of that, so nothing below it is pending.
  void AddNode(const Digest& subtree, size_t subtree_level) {
    Digest node = subtree;
    size_t level = subtree_level;
    while (level < pending_.size() && has_[level]) {
      node = InnerHash(pending_[level], node);
      has_[level] = false;
      ++level;
    }
    while (pending_.size() <= level) {
      pending_.emplace_back();
      has_.push_back(false);
    }
    pending_[level] = node;
    has_[level] = true;
    leaves_ += uint64_t{1} << subtree_level;
  }

  std::vector<Digest> pending_;
  std::vector<bool> has_;
  uint64_t leaves_ = 0;
  std::vector<Digest> zero_nodes_;  // [l]: the node of 2^l zero leaves
};

void EncodeTreeHeader(uint32_t block_size, uint64_t size_bytes,
                      uint64_t leaves, const Digest& root,
                      const Digest& view_digest, uint8_t* out) {
  std::memset(out, 0, kTreeHeaderSize);
  std::memcpy(out, kTreeMagic, 8);
  PutU32(out + 8, kTreeVersion);
  PutU32(out + 12, block_size);
  PutU64(out + 16, size_bytes);
  PutU64(out + 24, leaves);
  PutU32(out + 32, MerkleHeight(leaves));
  PutU32(out + 36, 0);
  std::memcpy(out + 40, root.data(), 32);
  std::memcpy(out + 72, view_digest.data(), 32);
  const Digest checksum = Sha256::Hash(out, kTreeChecksumOffset);
  std::memcpy(out + kTreeChecksumOffset, checksum.data(), 32);
}

// Writes levels 1..h-1 after level 0, reading each level back from the file
// in large sequential chunks; memory is two chunk buffers.
Status BuildUpperLevels(File* file, uint64_t leaves, Digest* top) {
  const uint32_t height = MerkleHeight(leaves);
  uint64_t level_offset = kTreeHeaderSize;
  std::vector<uint8_t> in(kLevelChunkNodes * 32);
  for (uint32_t level = 0; level + 1 < height; ++level) {
    const uint64_t width = MerkleLevelWidth(leaves, level);
    const uint64_t next_offset = level_offset + width * 32;
    BufferedWriter out(file, next_offset, kWriteBufferBytes);
    for (uint64_t first = 0; first < width; first += kLevelChunkNodes) {
      const uint64_t count = std::min<uint64_t>(kLevelChunkNodes, width - first);
      REVPATCH_RETURN_IF_ERROR(
          file->ReadAt(level_offset + first * 32, in.data(), count * 32));
      for (uint64_t i = 0; i < count; i += 2) {
        Digest left, parent;
        std::memcpy(left.data(), &in[i * 32], 32);
        if (i + 1 < count) {
          Digest right;
          std::memcpy(right.data(), &in[(i + 1) * 32], 32);
          parent = InnerHash(left, right);
        } else {
          parent = left;  // the level's last node, without a right sibling
        }
        REVPATCH_RETURN_IF_ERROR(out.Append(parent.data(), 32));
      }
    }
    REVPATCH_RETURN_IF_ERROR(out.Flush());
    level_offset = next_offset;
  }
  if (leaves == 0) {
    *top = Sha256::Hash(nullptr, 0);
    return Status::Ok();
  }
  return file->ReadAt(level_offset, top->data(), 32);
}

// The first hole at or after `offset` (< size), or `size`: where the data
// found by File::NextData ends. Without SEEK_HOLE, or when the filesystem
// cannot say, everything is data.
uint64_t NextHole(const File& image, uint64_t offset, uint64_t size) {
#if defined(SEEK_HOLE)
  const off_t found = lseek(image.fd(), static_cast<off_t>(offset), SEEK_HOLE);
  if (found >= 0 && static_cast<uint64_t>(found) > offset) {
    return std::min<uint64_t>(static_cast<uint64_t>(found), size);
  }
#else
  (void)image;
  (void)offset;
#endif
  return size;
}

Status HashImageInto(const File& image, uint64_t size, uint32_t block_size,
                     File* tree, Digest* root) {
  const uint64_t leaves = BlockCount(size, block_size);
  const size_t chunk_blocks =
      std::max<size_t>(1, kImageChunkBytes / block_size);
  std::vector<uint8_t> buffer(chunk_blocks * block_size);
  std::vector<Digest> hashes(chunk_blocks);
  StreamingRoot stream;
  std::unique_ptr<BufferedWriter> level0;
  if (tree != nullptr) {
    level0.reset(new BufferedWriter(tree, kTreeHeaderSize, kWriteBufferBytes));
  }
  // Sparse images are common (disk images, fresh volumes): a block that
  // lies wholly in a hole is all zeros, so its leaf is one precomputed hash,
  // nothing is read for it, and a run of them folds into the root by whole
  // subtrees (StreamingRoot::AddZeroRun). The data between holes is read
  // in large chunks and hashed two blocks at a time (LeafHashes).
  std::vector<uint8_t> zeros(block_size, 0);
  const Digest zero_leaf = LeafHash(zeros.data(), block_size);
  auto add_zeros = [&](uint64_t count) -> Status {
    stream.AddZeroRun(zero_leaf, count);
    if (level0) {
      for (uint64_t i = 0; i < count; ++i) {
        REVPATCH_RETURN_IF_ERROR(level0->Append(zero_leaf.data(), 32));
      }
    }
    return Status::Ok();
  };
  uint64_t block = 0;
  while (block < leaves) {
    // Blocks that end before the next data are holes.
    uint64_t data = 0;
    REVPATCH_RETURN_IF_ERROR(image.NextData(block * block_size, size, &data));
    const uint64_t first_data = std::min<uint64_t>(leaves, data / block_size);
    if (first_data > block) REVPATCH_RETURN_IF_ERROR(add_zeros(first_data - block));
    block = first_data;
    if (block >= leaves) break;
    // The blocks that touch data up to the next hole, chunk by chunk.
    const uint64_t hole = NextHole(image, std::max<uint64_t>(data, block * block_size), size);
    const uint64_t data_end = std::max<uint64_t>(block + 1, BlockCount(hole, block_size));
    while (block < data_end) {
      const uint64_t count = std::min<uint64_t>(chunk_blocks, data_end - block);
      const uint64_t offset = block * block_size;
      const uint64_t want = std::min<uint64_t>(count * block_size, size - offset);
      REVPATCH_RETURN_IF_ERROR(image.ReadAt(offset, buffer.data(), static_cast<size_t>(want)));
      if (want < count * block_size) {
        std::memset(buffer.data() + want, 0, static_cast<size_t>(count * block_size - want));
      }
      LeafHashes(buffer.data(), static_cast<size_t>(count), block_size, hashes.data());
      for (uint64_t i = 0; i < count; ++i) {
        stream.AddLeaf(hashes[i]);
        if (level0) REVPATCH_RETURN_IF_ERROR(level0->Append(hashes[i].data(), 32));
      }
      block += count;
    }
  }
  *root = stream.Root();
  if (!level0) return Status::Ok();
  REVPATCH_RETURN_IF_ERROR(level0->Flush());
  Digest top;
  REVPATCH_RETURN_IF_ERROR(BuildUpperLevels(tree, leaves, &top));
  if (top != *root) {
    return Status(ErrorCode::kIo, "tree file read back differs from the stream");
  }
  return Status::Ok();
}

}  // namespace

uint64_t MerkleLevelWidth(uint64_t leaves, uint32_t level) {
  if (level >= 64) return leaves == 0 ? 0 : 1;
  const uint64_t mask = (uint64_t{1} << level) - 1;
  return (leaves >> level) + ((leaves & mask) != 0 ? 1 : 0);
}

uint32_t MerkleHeight(uint64_t leaves) {
  uint32_t height = 1;
  while (leaves > 1) {
    leaves = leaves / 2 + (leaves & 1);
    ++height;
  }
  return height;
}

Digest LeafHash(const uint8_t* block, uint32_t block_size) {
  static const uint8_t kPrefix = 0x00;
  Sha256 h;
  h.Update(&kPrefix, 1);
  h.Update(block, block_size);
  return h.Final();
}

void LeafHashes(const uint8_t* blocks, size_t count, uint32_t block_size, Digest* out) {
  static const uint8_t kPrefix = 0x00;
  size_t i = 0;
  for (; i + 2 <= count; i += 2) {
    Sha256 a, b;
    a.Update(&kPrefix, 1);
    b.Update(&kPrefix, 1);
    const uint8_t* block = blocks + i * size_t{block_size};
    Sha256::UpdatePair(a, block, b, block + block_size, block_size);
    Sha256::FinalPair(a, b, &out[i], &out[i + 1]);
  }
  if (i < count) out[i] = LeafHash(blocks + i * size_t{block_size}, block_size);
}

void InnerHashPair(const Digest& left_a, const Digest& right_a, const Digest& left_b,
                   const Digest& right_b, Digest* a, Digest* b) {
  uint8_t buf_a[65], buf_b[65];
  buf_a[0] = buf_b[0] = 0x01;
  std::memcpy(buf_a + 1, left_a.data(), 32);
  std::memcpy(buf_a + 33, right_a.data(), 32);
  std::memcpy(buf_b + 1, left_b.data(), 32);
  std::memcpy(buf_b + 33, right_b.data(), 32);
  Sha256 hash_a, hash_b;
  Sha256::UpdatePair(hash_a, buf_a, hash_b, buf_b, sizeof(buf_a));
  Sha256::FinalPair(hash_a, hash_b, a, b);
}

Digest InnerHash(const Digest& left, const Digest& right) {
  uint8_t buf[65];
  buf[0] = 0x01;
  std::memcpy(buf + 1, left.data(), 32);
  std::memcpy(buf + 33, right.data(), 32);
  return Sha256::Hash(buf, sizeof(buf));
}

Digest ViewDigest(uint64_t size_bytes, uint32_t block_size,
                  const Digest& root) {
  static const char kDomain[] = "revpatch-view-v1";
  uint8_t buf[16 + 8 + 4 + 32];
  std::memcpy(buf, kDomain, 16);
  PutU64(buf + 16, size_bytes);
  PutU32(buf + 24, block_size);
  std::memcpy(buf + 28, root.data(), 32);
  return Sha256::Hash(buf, sizeof(buf));
}

namespace {

// One level of a delta: the changed nodes of `level` (their indices
// ascending, got through get(i, &index, &hash)) give the changed nodes of
// level + 1, appended to *out in index order. A parent takes its children
// from the list where it has them and from the tree below otherwise; one
// without a right child is its left child (MerkleBuilder). Parents are
// hashed two at a time as they come (InnerHashPair), so nothing is stored
// but the output.
template <typename Get>
Status HashLevel(MerkleNodeSource& below, uint32_t level, uint64_t width, size_t count,
                 const Get& get, std::vector<MerkleNode>* out) {
  struct Waiting {
    size_t slot;
    Digest left, right;
  };
  Waiting waiting{};
  bool is_waiting = false;
  for (size_t i = 0; i < count;) {
    uint64_t index;
    Digest hash;
    get(i, &index, &hash);
    const uint64_t parent = index / 2;
    const uint64_t left_index = parent * 2;
    const uint64_t right_index = left_index + 1;
    Digest left, right;
    if (index == left_index) {
      left = hash;
      uint64_t next_index = 0;
      Digest next_hash;
      if (i + 1 < count) get(i + 1, &next_index, &next_hash);
      if (i + 1 < count && next_index == right_index) {
        right = next_hash;
        i += 2;
      } else {
        if (right_index < width) {
          REVPATCH_RETURN_IF_ERROR(below.GetNode(level, right_index, &right));
        }
        i += 1;
      }
    } else {
      REVPATCH_RETURN_IF_ERROR(below.GetNode(level, left_index, &left));
      right = hash;
      i += 1;
    }
    const size_t slot = out->size();
    out->push_back({level + 1, parent, left});
    if (right_index >= width) continue;  // promoted: the left child's hash
    if (!is_waiting) {
      waiting = {slot, left, right};
      is_waiting = true;
    } else {
      InnerHashPair(waiting.left, waiting.right, left, right, &(*out)[waiting.slot].hash,
                    &(*out)[slot].hash);
      is_waiting = false;
    }
  }
  if (is_waiting) (*out)[waiting.slot].hash = InnerHash(waiting.left, waiting.right);
  return Status::Ok();
}

}  // namespace

Status MerkleInnerDelta(MerkleNodeSource& below, const MerkleLeafList& leaves,
                        uint64_t new_leaves, std::vector<MerkleNode>* changed,
                        Digest* root) {
  const uint64_t old_leaves = below.leaf_count();
  const size_t given = leaves.count();
  // Check the caller's promise: sorted, unique, in range, growth covered.
  uint64_t growth_covered = 0;
  uint64_t previous = 0;
  for (size_t i = 0; i < given; ++i) {
    uint64_t index;
    Digest hash;
    leaves.Get(i, &index, &hash);
    if (index >= new_leaves || (i > 0 && index <= previous)) {
      return Status(ErrorCode::kInvalidArgument,
                    "leaf list not sorted, unique and in range");
    }
    if (index >= old_leaves) ++growth_covered;
    previous = index;
  }
  if (new_leaves > old_leaves && growth_covered != new_leaves - old_leaves) {
    return Status(ErrorCode::kInvalidArgument,
                  "leaf list does not cover every new block");
  }

  changed->clear();
  if (new_leaves == 0) {
    *root = Sha256::Hash(nullptr, 0);
    return Status::Ok();
  }
  // Shrinking changes the nodes on the path of the new last leaf even when
  // no leaf changed: their ranges lose the leaves past the new end.
  bool extra = false;
  Digest last_hash{};
  if (new_leaves < old_leaves && (given == 0 || previous != new_leaves - 1)) {
    REVPATCH_RETURN_IF_ERROR(below.GetNode(0, new_leaves - 1, &last_hash));
    extra = true;
  }
  const size_t level0 = given + (extra ? 1 : 0);
  auto get_leaf = [&](size_t i, uint64_t* index, Digest* hash) {
    if (i < given) {
      leaves.Get(i, index, hash);
    } else {
      *index = new_leaves - 1;
      *hash = last_hash;
    }
  };

  const uint32_t height = MerkleHeight(new_leaves);
  if (level0 == 0) {
    // Same size, nothing changed: the root is below's.
    return below.GetNode(height - 1, 0, root);
  }
  if (height == 1) {
    uint64_t index;
    get_leaf(0, &index, root);
    return Status::Ok();
  }
  // Room for a dense change (about as many inner nodes as leaves); a
  // sparse one has more and grows the vector.
  changed->reserve(level0 + 2 * height);
  REVPATCH_RETURN_IF_ERROR(HashLevel(below, 0, MerkleLevelWidth(new_leaves, 0), level0,
                                     get_leaf, changed));
  // Each level above reads the one before it from *changed itself.
  size_t begin = 0;
  for (uint32_t level = 1; level + 1 < height; ++level) {
    const size_t end = changed->size();
    auto get_node = [changed, begin](size_t i, uint64_t* index, Digest* hash) {
      const MerkleNode& n = (*changed)[begin + i];
      *index = n.index;
      *hash = n.hash;
    };
    REVPATCH_RETURN_IF_ERROR(HashLevel(below, level, MerkleLevelWidth(new_leaves, level),
                                       end - begin, get_node, changed));
    begin = end;
  }
  *root = changed->back().hash;
  return Status::Ok();
}

Status MerkleDelta(MerkleNodeSource& below,
                   const std::vector<MerkleNode>& new_leaves_level0,
                   uint64_t new_leaves, std::vector<MerkleNode>* changed,
                   Digest* root) {
  class NodeLeaves : public MerkleLeafList {
   public:
    explicit NodeLeaves(const std::vector<MerkleNode>& nodes) : nodes_(nodes) {}
    size_t count() const override { return nodes_.size(); }
    void Get(size_t i, uint64_t* index, Digest* hash) const override {
      *index = nodes_[i].index;
      *hash = nodes_[i].hash;
    }

   private:
    const std::vector<MerkleNode>& nodes_;
  };
  for (const MerkleNode& n : new_leaves_level0) {
    if (n.level != 0) {
      return Status(ErrorCode::kInvalidArgument, "leaf list not sorted, unique and in range");
    }
  }
  std::vector<MerkleNode> inner;
  REVPATCH_RETURN_IF_ERROR(
      MerkleInnerDelta(below, NodeLeaves(new_leaves_level0), new_leaves, &inner, root));
  changed->clear();
  changed->reserve(new_leaves_level0.size() + inner.size());
  changed->insert(changed->end(), new_leaves_level0.begin(), new_leaves_level0.end());
  changed->insert(changed->end(), inner.begin(), inner.end());
  return Status::Ok();
}

Status HashImage(const std::string& image_path, uint32_t block_size,
                 const std::string& tree_path, Digest* view_digest,
                 uint64_t* size_bytes) {
  if (!ValidBlockSize(block_size)) {
    return Status(ErrorCode::kInvalidArgument, "invalid block size");
  }
  File image;
  REVPATCH_RETURN_IF_ERROR(File::OpenRead(image_path, &image));
  uint64_t size = 0;
  REVPATCH_RETURN_IF_ERROR(image.Size(&size));
  const uint64_t leaves = BlockCount(size, block_size);

  Digest root;
  if (tree_path.empty()) {
    REVPATCH_RETURN_IF_ERROR(HashImageInto(image, size, block_size, nullptr, &root));
  } else {
    const std::string temp = TempPathFor(tree_path);
    File tree;
    REVPATCH_RETURN_IF_ERROR(File::CreateNew(temp, &tree));
    Status s = HashImageInto(image, size, block_size, &tree, &root);
    if (s.ok()) {
      uint8_t header[kTreeHeaderSize];
      EncodeTreeHeader(block_size, size, leaves, root,
                       ViewDigest(size, block_size, root), header);
      s = tree.WriteAt(0, header, sizeof(header));
    }
    if (s.ok()) s = tree.FullSync();
    if (s.ok()) s = tree.Close();
    if (s.ok()) s = RenameFile(temp, tree_path);
    if (!s.ok()) {
      UnlinkFile(temp);
      return s;
    }
    REVPATCH_RETURN_IF_ERROR(SyncDirectory(DirName(tree_path)));
  }
  *view_digest = ViewDigest(size, block_size, root);
  if (size_bytes != nullptr) *size_bytes = size;
  return Status::Ok();
}

struct MerkleTreeFile::Impl {
  std::string path;
  File file;
  uint32_t block_size = 0;
  uint64_t size_bytes = 0;
  uint64_t leaves = 0;
  uint32_t height = 0;
  Digest view_digest{};
  Digest root{};
  std::vector<uint64_t> level_offsets;
};

MerkleTreeFile::MerkleTreeFile() : impl_(new Impl) {}
MerkleTreeFile::~MerkleTreeFile() = default;

Status MerkleTreeFile::Open(const std::string& path,
                            std::unique_ptr<MerkleTreeFile>* out) {
  std::unique_ptr<MerkleTreeFile> tree(new MerkleTreeFile);
  Impl& im = *tree->impl_;
  im.path = path;
  REVPATCH_RETURN_IF_ERROR(File::OpenRead(path, &im.file));
  uint64_t file_size = 0;
  REVPATCH_RETURN_IF_ERROR(im.file.Size(&file_size));
  if (file_size < kTreeHeaderSize) {
    return Status(ErrorCode::kCorrupt, "tree file too short: " + path);
  }
  uint8_t header[kTreeHeaderSize];
  REVPATCH_RETURN_IF_ERROR(im.file.ReadAt(0, header, sizeof(header)));
  if (std::memcmp(header, kTreeMagic, 8) != 0) {
    return Status(ErrorCode::kCorrupt, "not a tree file: " + path);
  }
  const Digest checksum = Sha256::Hash(header, kTreeChecksumOffset);
  if (std::memcmp(checksum.data(), header + kTreeChecksumOffset, 32) != 0) {
    return Status(ErrorCode::kCorrupt, "tree header checksum mismatch: " + path);
  }
  if (GetU32(header + 8) != kTreeVersion) {
    return Status(ErrorCode::kUnsupported, "unknown tree file version: " + path);
  }
  for (size_t i = kTreeHeaderUsed; i < kTreeHeaderSize; ++i) {
    if (header[i] != 0) return Status(ErrorCode::kCorrupt, "tree header padding");
  }
  im.block_size = GetU32(header + 12);
  im.size_bytes = GetU64(header + 16);
  im.leaves = GetU64(header + 24);
  im.height = GetU32(header + 32);
  Digest root;
  std::memcpy(root.data(), header + 40, 32);
  std::memcpy(im.view_digest.data(), header + 72, 32);
  if (!ValidBlockSize(im.block_size) ||
      im.leaves != BlockCount(im.size_bytes, im.block_size) ||
      im.leaves > (file_size - kTreeHeaderSize) / 32 ||
      im.height != MerkleHeight(im.leaves) ||
      file_size != kTreeHeaderSize + 32 * TotalNodes(im.leaves) ||
      im.view_digest != ViewDigest(im.size_bytes, im.block_size, root)) {
    return Status(ErrorCode::kCorrupt, "inconsistent tree file: " + path);
  }
  uint64_t offset = kTreeHeaderSize;
  for (uint32_t l = 0; l < im.height; ++l) {
    im.level_offsets.push_back(offset);
    offset += 32 * MerkleLevelWidth(im.leaves, l);
  }
  if (im.leaves > 0) {
    Digest top;
    REVPATCH_RETURN_IF_ERROR(tree->GetNode(im.height - 1, 0, &top));
    if (top != root) return Status(ErrorCode::kCorrupt, "tree root mismatch: " + path);
  } else if (root != Sha256::Hash(nullptr, 0)) {
    return Status(ErrorCode::kCorrupt, "tree root mismatch: " + path);
  }
  im.root = root;
  *out = std::move(tree);
  return Status::Ok();
}

uint64_t MerkleTreeFile::leaf_count() const { return impl_->leaves; }
uint64_t MerkleTreeFile::size_bytes() const { return impl_->size_bytes; }
uint32_t MerkleTreeFile::block_size() const { return impl_->block_size; }
const Digest& MerkleTreeFile::view_digest() const { return impl_->view_digest; }
const Digest& MerkleTreeFile::root() const { return impl_->root; }
const std::string& MerkleTreeFile::path() const { return impl_->path; }

Status MerkleTreeFile::ReadNodes(uint32_t level, uint64_t first, uint64_t count,
                                 Digest* out) const {
  static_assert(sizeof(Digest) == 32, "nodes are read straight into Digests");
  if (level >= impl_->height || first > MerkleLevelWidth(impl_->leaves, level) ||
      count > MerkleLevelWidth(impl_->leaves, level) - first) {
    return Status(ErrorCode::kBadExtent, "tree nodes out of range");
  }
  if (count == 0) return Status::Ok();
  return impl_->file.ReadAt(impl_->level_offsets[level] + first * 32, out->data(),
                            static_cast<size_t>(count * 32));
}

Status MerkleTreeFile::GetNode(uint32_t level, uint64_t index, Digest* out) {
  if (level >= impl_->height || index >= MerkleLevelWidth(impl_->leaves, level)) {
    return Status(ErrorCode::kBadExtent, "tree node out of range");
  }
  return impl_->file.ReadAt(impl_->level_offsets[level] + index * 32,
                            out->data(), 32);
}

}  // namespace revpatch
