#include "source_index.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <new>

namespace revpatch {
namespace {

constexpr uint64_t kM1 = 0x9E3779B97F4A7C15ull;
constexpr uint64_t kM2 = 0xC2B2AE3D27D4EB4Full;
constexpr uint64_t kM3 = 0x165667B19E3779F9ull;

inline uint64_t Rotl(uint64_t v, int r) { return (v << r) | (v >> (64 - r)); }
inline uint64_t Load64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
inline uint64_t Mix(uint64_t v) {
  v ^= v >> 33;
  v *= kM2;
  v ^= v >> 29;
  v *= kM3;
  v ^= v >> 32;
  return v;
}

// The gear table: 256 fixed pseudo-random words (splitmix64 from a fixed
// seed), the same in every build.
const std::array<uint64_t, 256>& Gear() {
  static const std::array<uint64_t, 256> table = [] {
    std::array<uint64_t, 256> t{};
    uint64_t state = 0x7265767061746368ull;  // fixed seed
    for (uint64_t& v : t) {
      state += kM1;
      v = Mix(state);
    }
    return t;
  }();
  return table;
}

}  // namespace

uint64_t BlockHash(const uint8_t* data, size_t size) {
  uint64_t a = kM1 ^ size, b = kM2, c = kM3, d = ~kM1;
  size_t i = 0;
  for (; i + 32 <= size; i += 32) {
    a = Rotl(a ^ (Load64(data + i) * kM2), 31) * kM1;
    b = Rotl(b ^ (Load64(data + i + 8) * kM2), 31) * kM1;
    c = Rotl(c ^ (Load64(data + i + 16) * kM2), 31) * kM1;
    d = Rotl(d ^ (Load64(data + i + 24) * kM2), 31) * kM1;
  }
  uint64_t h = Rotl(a, 1) + Rotl(b, 7) + Rotl(c, 12) + Rotl(d, 18);
  for (; i + 8 <= size; i += 8) h = Rotl(h ^ (Load64(data + i) * kM2), 27) * kM1;
  for (; i < size; ++i) h = Rotl(h ^ (data[i] * kM3), 11) * kM1;
  return Mix(h);
}

void FindAnchors(const uint8_t* data, size_t size, int spacing_bits,
                 const std::function<void(uint32_t, size_t)>& found) {
  const std::array<uint64_t, 256>& gear = Gear();
  const size_t min_gap = (size_t{1} << spacing_bits) / 4;
  const int shift = 64 - spacing_bits - 32;
  uint64_t h = 0;
  size_t last = 0;
  bool any = false;
  for (size_t i = 0; i < size; ++i) {
    h = (h << 1) + gear[data[i]];
    if (i < 63 || (h >> (64 - spacing_bits)) != 0) continue;
    if (any && i - last < min_gap) continue;
    found(static_cast<uint32_t>(h >> shift), i);
    last = i;
    any = true;
  }
}

Status SourceIndex::Build(const ImageFile& source, int spacing_bits, bool anchors,
                          size_t batch_bytes) {
  const uint32_t block_size = source.block_size();
  blocks_ = source.blocks();
  spacing_bits_ = spacing_bits;
  const size_t batch = std::max<size_t>(1, batch_bytes / block_size);
  const uint64_t data_estimate =
      std::min<uint64_t>(blocks_, source.AllocatedBytes() / block_size + 1);
  // More anchors than the allocated bytes predict (runs of one byte value
  // anchor every quarter spacing) are not kept: the index stays bounded.
  const uint64_t max_anchors = (data_estimate * block_size >> spacing_bits) * 2 + 64;
  const bool anchors_fit = anchors && blocks_ <= UINT32_MAX;
  std::vector<uint8_t> buffer;
  try {
    data_.assign((blocks_ + 63) / 64, 0);
    hashes_.reserve(data_estimate);
    if (anchors_fit) anchors_.reserve(max_anchors);
    buffer.resize(batch * block_size);
  } catch (const std::bad_alloc&) {
    return Status(ErrorCode::kTooLarge, "generator: out of memory for the source index");
  }
  for (uint64_t b = 0; b < blocks_;) {
    REVPATCH_RETURN_IF_ERROR(source.NextDataBlock(b, &b));
    if (b >= blocks_) break;
    const uint64_t n = std::min<uint64_t>(batch, blocks_ - b);
    REVPATCH_RETURN_IF_ERROR(source.ReadBlocks(b, n, buffer.data()));
    for (uint64_t i = 0; i < n; ++i) {
      const uint8_t* p = buffer.data() + i * block_size;
      if (p[0] == 0 && std::memcmp(p, p + 1, block_size - 1) == 0) continue;
      data_[(b + i) >> 6] |= uint64_t{1} << ((b + i) & 63);
      hashes_.push_back({BlockHash(p, block_size), b + i});
    }
    if (anchors_fit) {
      const uint64_t first = b;
      FindAnchors(buffer.data(), static_cast<size_t>(n * block_size), spacing_bits,
                  [&](uint32_t key, size_t offset) {
                    const uint64_t block = first + offset / block_size;
                    if (anchors_.size() < max_anchors && HasData(block)) {
                      anchors_.push_back({key, static_cast<uint32_t>(block)});
                    }
                  });
    }
    b += n;
  }
  std::sort(hashes_.begin(), hashes_.end());
  std::sort(anchors_.begin(), anchors_.end());
  hashes_.shrink_to_fit();
  anchors_.shrink_to_fit();
  return Status::Ok();
}

bool SourceIndex::FindBlock(uint64_t hash, uint64_t* block) const {
  auto it = std::lower_bound(hashes_.begin(), hashes_.end(), Entry{hash, 0});
  if (it == hashes_.end() || it->hash != hash) return false;
  *block = it->block;
  return true;
}

void SourceIndex::FindAnchor(uint32_t key, size_t max_hits, std::vector<uint64_t>* blocks) const {
  auto range = std::equal_range(anchors_.begin(), anchors_.end(), Anchor{key, 0},
                                [](const Anchor& a, const Anchor& b) { return a.key < b.key; });
  if (static_cast<size_t>(range.second - range.first) > max_hits) return;
  for (auto it = range.first; it != range.second; ++it) blocks->push_back(it->block);
}

uint64_t SourceIndex::MemoryBytes() const {
  return data_.capacity() * 8 + hashes_.capacity() * sizeof(Entry) +
         anchors_.capacity() * sizeof(Anchor);
}

uint64_t SourceIndex::EstimateBytes(uint64_t blocks, uint64_t data_blocks, uint32_t block_size,
                                    int spacing_bits) {
  const uint64_t anchors = (data_blocks * block_size >> spacing_bits) * 2 + 64;
  return (blocks + 63) / 64 * 8 + data_blocks * sizeof(Entry) + anchors * sizeof(Anchor);
}

}  // namespace revpatch
