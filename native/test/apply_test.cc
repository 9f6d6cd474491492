// Generate then apply, end to end on files: the applied view reads exactly
// the target image and has its digest; every refusal leaves no layer file.
#include "../engine/apply.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "../engine/checkpoint.h"
#include "../engine/file_io.h"
#include "../engine/layer_file.h"
#include "../engine/generator/generator.h"
#include "../engine/merkle.h"
#include "../engine/operation.h"
#include "../engine/payload_reader.h"
#include "../engine/priority.h"
#include "../engine/sha256.h"
#include "../engine/view.h"
#include "testing.h"

using namespace revpatch;

namespace {

using Bytes = std::vector<uint8_t>;
constexpr uint32_t kBlock = 4096;
constexpr uint32_t kChunk = 64 * 1024;

// Block i carries its index in its first word and (tag, i)-seeded noise.
Bytes StampedImage(uint64_t size, uint32_t tag) {
  Bytes image(size);
  for (uint64_t off = 0, i = 0; off < size; off += kBlock, ++i) {
    std::mt19937_64 rng(i * 131 + tag);
    for (uint64_t k = off; k < std::min<uint64_t>(off + kBlock, size); ++k) {
      image[k] = static_cast<uint8_t>(rng() >> 56);
    }
    for (int w = 0; w < 8 && off + w < size; ++w) image[off + w] = static_cast<uint8_t>(i >> (8 * w));
  }
  return image;
}

void WriteFile(const std::string& path, const Bytes& data) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();
  if (!data.empty() && std::fwrite(data.data(), 1, data.size(), f) != data.size()) std::abort();
  std::fclose(f);
}

Bytes ReadFile(const std::string& path) {
  Bytes data;
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) std::abort();
  uint8_t buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) data.insert(data.end(), buf, buf + n);
  std::fclose(f);
  return data;
}

// A base volume and its tree, as a device holds them after init.
struct Device {
  std::string dir, base, tree;
  std::vector<std::string> layers;

  explicit Device(const Bytes& base_image) : dir(revpatch_test::TempDir()) {
    base = dir + "/base.img";
    tree = dir + "/base.tree";
    WriteFile(base, base_image);
    Digest digest;
    uint64_t size;
    if (!HashImage(base, kBlock, tree, &digest, &size).ok()) std::abort();
  }
  Status OpenView(std::unique_ptr<View>* view) const {
    return View::Open(base, tree, layers, view);
  }
};

// A payload as a patch file holds it: behind `prefix` bytes of framing.
struct Patch {
  GenerateResult gen;
  std::string path;
  uint64_t offset = 0;

  ApplyParams Params(int fd, const std::string& layer_path) const {
    ApplyParams p;
    p.patch_fd = fd;
    p.payload_offset = offset;
    p.payload_size = gen.payload_size;
    p.chunk_size = kChunk;
    p.chunk_digests = gen.chunk_digests;
    p.payload_digest = gen.payload_digest;
    p.operation_count = gen.operation_count;
    p.block_size = kBlock;
    p.target_size = gen.target_size;
    p.source_digest = gen.source_digest;
    p.target_digest = gen.target_digest;
    p.layer_path = layer_path;
    return p;
  }
};

Status MakePatch(const std::string& dir, const Bytes& from, const Bytes& to,
                 const std::string& name, Patch* patch,
                 uint64_t region_bytes = kDefaultRegionBytes) {
  WriteFile(dir + "/" + name + ".from", from);
  WriteFile(dir + "/" + name + ".to", to);
  GenerateOptions options;
  options.chunk_size = kChunk;
  options.region_bytes = region_bytes;
  std::string payload = dir + "/" + name + ".payload";
  REVPATCH_RETURN_IF_ERROR(GeneratePayload(dir + "/" + name + ".from", dir + "/" + name + ".to",
                                           payload, options, nullptr, &patch->gen));
  Bytes framed(1234, 0xA5);  // stands in for header, manifest, signature
  Bytes body = ReadFile(payload);
  framed.insert(framed.end(), body.begin(), body.end());
  patch->path = dir + "/" + name + ".patch";
  patch->offset = 1234;
  WriteFile(patch->path, framed);
  return Status::Ok();
}

Status ApplyTo(Device* device, const Patch& patch, const std::string& layer_name,
               ApplyResult* result, ApplyParams* override_params = nullptr) {
  std::unique_ptr<View> view;
  REVPATCH_RETURN_IF_ERROR(device->OpenView(&view));
  int fd = open(patch.path.c_str(), O_RDONLY);
  if (fd < 0) return Status::FromErrno(errno, "open patch");
  ApplyParams params =
      override_params ? *override_params : patch.Params(fd, device->dir + "/" + layer_name);
  params.patch_fd = fd;
  Status s = ApplyPatch(params, *view, nullptr, result);
  close(fd);
  if (s.ok()) device->layers.push_back(params.layer_path);
  return s;
}

// The device's view after the apply reads `target` byte for byte.
void ExpectViewIs(const Device& device, const Bytes& target, const Digest& digest) {
  std::unique_ptr<View> view;
  ASSERT_OK(device.OpenView(&view));
  EXPECT_EQ(view->size_bytes(), target.size());
  Bytes got(target.size());
  ASSERT_OK(view->ReadBytes(0, got.size(), got.data()));
  EXPECT_TRUE(got == target);
  EXPECT_TRUE(view->digest() == digest);
}

void RoundTrip(uint64_t source_size, const std::function<Bytes(const Bytes&)>& edit) {
  Bytes source = StampedImage(source_size, 1);
  Bytes target = edit(source);
  Device device(source);
  Patch patch;
  ASSERT_OK(MakePatch(device.dir, source, target, "p", &patch));
  ApplyResult result;
  ASSERT_OK(ApplyTo(&device, patch, "layer1", &result));
  EXPECT_TRUE(result.view_digest == patch.gen.target_digest);
  EXPECT_EQ(result.operations, patch.gen.operation_count);
  ExpectViewIs(device, target, patch.gen.target_digest);
}

Bytes Mixed(const Bytes& source) {
  Bytes t = source;
  std::memset(t.data() + 5 * kBlock, 0, 3 * kBlock);                    // ZERO
  std::memcpy(t.data() + 20 * kBlock, source.data() + 40 * kBlock, 4 * kBlock);  // COPY
  std::memcpy(t.data() + 40 * kBlock, source.data() + 20 * kBlock, 4 * kBlock);  // swap back
  for (size_t i = 60 * kBlock; i < 70 * kBlock; i += 301) t[i] ^= 0x11;  // DIFF
  Bytes fresh = StampedImage(6 * kBlock, 99);
  std::memcpy(t.data() + 80 * kBlock, fresh.data(), fresh.size());       // REPLACE
  for (size_t i = 90 * kBlock; i < 92 * kBlock; ++i) t[i] = "abcabcabd"[i % 9];  // BROTLI
  return t;
}

}  // namespace

TEST(same_size_patch_applies_to_the_target_bytes) {
  RoundTrip(128 * kBlock, Mixed);
}

TEST(growing_patch_applies_including_zero_and_partial_new_blocks) {
  RoundTrip(128 * kBlock, [](const Bytes& s) {
    Bytes t = Mixed(s);
    Bytes tail = StampedImage(10 * kBlock + 777, 5);
    std::memset(tail.data() + 3 * kBlock, 0, 4 * kBlock);  // zero growth blocks
    std::memcpy(tail.data() + 8 * kBlock, s.data(), kBlock);  // COPY into growth
    t.insert(t.end(), tail.begin(), tail.end());
    return t;
  });
  // Growth from a partial last source block.
  RoundTrip(50 * kBlock + 100, [](const Bytes& s) {
    Bytes t = s;
    t.resize(s.size() + 3 * kBlock, 0);
    t[s.size() + 10] = 1;
    return t;
  });
}

TEST(shrinking_patch_applies_including_a_partial_last_block) {
  RoundTrip(128 * kBlock, [](const Bytes& s) {
    Bytes t = Mixed(s);
    t.resize(100 * kBlock + 1000);
    return t;
  });
  RoundTrip(128 * kBlock, [](const Bytes& s) { return Bytes(s.begin(), s.begin() + 64 * kBlock); });
  RoundTrip(16 * kBlock, [](const Bytes&) { return Bytes(); });
}

TEST(a_second_patch_applies_on_top_of_the_first) {
  Bytes v1 = StampedImage(64 * kBlock, 1);
  Bytes v2 = Mixed(StampedImage(128 * kBlock, 1));
  v2.resize(64 * kBlock);
  Bytes v3 = v2;
  v3.resize(70 * kBlock, 0);
  for (size_t i = 0; i < v3.size(); i += 4999) v3[i] ^= 0x42;
  Device device(v1);
  Patch first, second;
  ASSERT_OK(MakePatch(device.dir, v1, v2, "first", &first));
  ASSERT_OK(MakePatch(device.dir, v2, v3, "second", &second));
  ApplyResult result;
  ASSERT_OK(ApplyTo(&device, first, "layer1", &result));
  ASSERT_OK(ApplyTo(&device, second, "layer2", &result));
  ExpectViewIs(device, v3, second.gen.target_digest);
}

TEST(a_flipped_payload_byte_is_a_hash_mismatch_and_leaves_no_layer) {
  Bytes source = StampedImage(128 * kBlock, 1);
  Bytes target = Mixed(source);
  Device device(source);
  Patch patch;
  ASSERT_OK(MakePatch(device.dir, source, target, "p", &patch));
  Bytes original = ReadFile(patch.path);
  for (uint64_t at : {uint64_t{0}, patch.gen.payload_size / 2, patch.gen.payload_size - 1}) {
    Bytes bad = original;
    bad[patch.offset + at] ^= 0x01;
    WriteFile(patch.path, bad);
    ApplyResult result;
    EXPECT_CODE(ApplyTo(&device, patch, "layer", &result), ErrorCode::kHashMismatch);
    EXPECT_TRUE(!FileExists(device.dir + "/layer"));
  }
  WriteFile(patch.path, original);
  ExpectViewIs(device, source, patch.gen.source_digest);
}

TEST(a_patch_for_another_view_is_a_source_mismatch_and_leaves_no_layer) {
  Bytes v1 = StampedImage(64 * kBlock, 1);
  Bytes v2 = Mixed(StampedImage(128 * kBlock, 1));
  v2.resize(64 * kBlock);
  Bytes v3 = v2;
  v3[60 * kBlock + 7] ^= 1;  // in a block where v1 and v2 differ
  Device device(v1);
  Patch second;
  ASSERT_OK(MakePatch(device.dir, v2, v3, "second", &second));
  ApplyResult result;
  EXPECT_CODE(ApplyTo(&device, second, "layer", &result), ErrorCode::kSourceMismatch);
  EXPECT_TRUE(!FileExists(device.dir + "/layer"));

  // A manifest claiming the right digest over wrong blocks is caught by the
  // operations' source hashes.
  int fd = open(second.path.c_str(), O_RDONLY);
  ApplyParams lying = second.Params(fd, device.dir + "/layer");
  std::unique_ptr<View> view;
  ASSERT_OK(device.OpenView(&view));
  lying.source_digest = view->digest();
  EXPECT_CODE(ApplyPatch(lying, *view, nullptr, &result), ErrorCode::kSourceMismatch);
  EXPECT_TRUE(!FileExists(device.dir + "/layer"));
  close(fd);
}

TEST(operation_count_must_consume_the_payload_exactly) {
  Bytes source = StampedImage(64 * kBlock, 1);
  Bytes target = Mixed(StampedImage(128 * kBlock, 1));
  target.resize(64 * kBlock);
  Device device(source);
  Patch patch;
  ASSERT_OK(MakePatch(device.dir, source, target, "p", &patch));
  ASSERT_TRUE(patch.gen.operation_count > 1);
  for (int64_t delta : {-1, 1}) {
    ApplyParams params = patch.Params(-1, device.dir + "/layer");
    params.operation_count += delta;
    ApplyResult result;
    EXPECT_CODE(ApplyTo(&device, patch, "layer", &result, &params), ErrorCode::kCorrupt);
    EXPECT_TRUE(!FileExists(device.dir + "/layer"));
  }
}

TEST(a_wrong_target_digest_fails_the_seal_and_leaves_no_layer) {
  Bytes source = StampedImage(64 * kBlock, 1);
  Bytes target = source;
  target[100] ^= 1;
  Device device(source);
  Patch patch;
  ASSERT_OK(MakePatch(device.dir, source, target, "p", &patch));
  ApplyParams params = patch.Params(-1, device.dir + "/layer");
  params.target_digest[0] ^= 1;
  ApplyResult result;
  EXPECT_CODE(ApplyTo(&device, patch, "layer", &result, &params), ErrorCode::kHashMismatch);
  EXPECT_TRUE(!FileExists(device.dir + "/layer"));
}

TEST(framing_values_are_checked_before_the_layer_is_created) {
  Bytes source = StampedImage(64 * kBlock, 1);
  Bytes target = source;
  target[100] ^= 1;
  Device device(source);
  Patch patch;
  ASSERT_OK(MakePatch(device.dir, source, target, "p", &patch));
  ApplyResult result;
  ApplyParams params = patch.Params(-1, device.dir + "/layer");
  params.chunk_digests.push_back(Digest{});
  EXPECT_CODE(ApplyTo(&device, patch, "layer", &result, &params), ErrorCode::kCorrupt);
  params = patch.Params(-1, device.dir + "/layer");
  params.chunk_size = 4096;
  EXPECT_CODE(ApplyTo(&device, patch, "layer", &result, &params), ErrorCode::kCorrupt);
  params = patch.Params(-1, device.dir + "/layer");
  params.block_size = 8192;
  EXPECT_CODE(ApplyTo(&device, patch, "layer", &result, &params), ErrorCode::kSourceMismatch);
  EXPECT_TRUE(!FileExists(device.dir + "/layer"));
}

// Payloads assembled by hand, with correct chunk digests, so the engine's
// own checks (not the digests) must refuse them.
struct HandPayload {
  Bytes bytes;
  uint64_t ops = 0;
  void Add(const Operation& op, const Bytes& data = {}) {
    Operation o = op;
    o.data_length = data.size();
    EncodeOperation(o, &bytes);
    bytes.insert(bytes.end(), data.begin(), data.end());
    ++ops;
  }
};

Status ApplyHand(Device* device, const HandPayload& payload, uint64_t target_size,
                 const Digest* target_digest = nullptr) {
  std::string path = device->dir + "/hand.payload";
  WriteFile(path, payload.bytes);
  std::unique_ptr<View> view;
  REVPATCH_RETURN_IF_ERROR(device->OpenView(&view));
  ApplyParams p;
  p.patch_fd = open(path.c_str(), O_RDONLY);
  p.payload_size = payload.bytes.size();
  p.chunk_size = kChunk;
  for (size_t off = 0; off < payload.bytes.size(); off += kChunk) {
    size_t n = std::min<size_t>(kChunk, payload.bytes.size() - off);
    p.chunk_digests.push_back(Sha256::Hash(payload.bytes.data() + off, n));
  }
  p.payload_digest = Sha256::Hash(payload.bytes.data(), payload.bytes.size());
  p.operation_count = payload.ops;
  p.block_size = kBlock;
  p.target_size = target_size;
  p.source_digest = view->digest();
  p.target_digest = target_digest ? *target_digest : view->digest();
  p.layer_path = device->dir + "/layer";
  ApplyResult result;
  Status s = ApplyPatch(p, *view, nullptr, &result);
  close(p.patch_fd);
  if (s.ok()) device->layers.push_back(p.layer_path);
  return s;
}

Digest ViewDigestOf(const Bytes& image) {
  const std::string dir = revpatch_test::TempDir();
  WriteFile(dir + "/image", image);
  Digest digest;
  uint64_t size;
  if (!HashImage(dir + "/image", kBlock, dir + "/tree", &digest, &size).ok()) std::abort();
  return digest;
}

// The executor writes a raw REPLACE's data without hashing it again
// (executor.h): the signed target digest is what decides.
TEST(a_replace_with_a_wrong_dst_hash_lands_only_where_the_view_digest_matches) {
  Bytes source = StampedImage(16 * kBlock, 1);
  Bytes data = StampedImage(kBlock, 2);
  Bytes target = source;
  std::copy(data.begin(), data.end(), target.begin() + 3 * kBlock);
  const Digest target_digest = ViewDigestOf(target);
  Operation replace;
  replace.type = OperationType::kReplace;
  replace.dst_extents = {{3, 1}};
  replace.dst_hash.fill(0xEE);

  Device good(source);
  HandPayload right_data;
  right_data.Add(replace, data);
  ASSERT_OK(ApplyHand(&good, right_data, source.size(), &target_digest));
  ExpectViewIs(good, target, target_digest);

  Device bad(source);
  HandPayload other_data;
  other_data.Add(replace, StampedImage(kBlock, 3));
  EXPECT_CODE(ApplyHand(&bad, other_data, source.size(), &target_digest),
              ErrorCode::kHashMismatch);
  EXPECT_TRUE(!FileExists(bad.dir + "/layer"));
  ExpectViewIs(bad, source, ViewDigestOf(source));
}

TEST(hand_made_payloads_with_bad_operations_leave_no_layer) {
  Bytes source = StampedImage(16 * kBlock, 1);
  Device device(source);
  Bytes zeros(kBlock, 0);
  Digest zero_hash = Sha256::Hash(zeros.data(), zeros.size());
  Operation zero;
  zero.type = OperationType::kZero;
  zero.dst_extents = {{3, 1}};
  zero.dst_hash = zero_hash;

  HandPayload twice;
  twice.Add(zero);
  twice.Add(zero);
  EXPECT_CODE(ApplyHand(&device, twice, source.size()), ErrorCode::kBadExtent);

  HandPayload outside;
  Operation far = zero;
  far.dst_extents = {{16, 1}};
  outside.Add(far);
  EXPECT_CODE(ApplyHand(&device, outside, source.size()), ErrorCode::kBadExtent);

  HandPayload unknown;
  unknown.Add(zero);
  unknown.bytes[0] = 42;
  EXPECT_CODE(ApplyHand(&device, unknown, source.size()), ErrorCode::kUnsupported);

  HandPayload truncated;
  truncated.Add(zero);
  truncated.bytes.resize(truncated.bytes.size() - 1);
  EXPECT_CODE(ApplyHand(&device, truncated, source.size()), ErrorCode::kCorrupt);

  HandPayload huge_data;
  Operation brotli;
  brotli.type = OperationType::kReplaceBrotli;
  brotli.dst_extents = {{0, 1}};
  huge_data.Add(brotli, Bytes(10, 1));
  huge_data.bytes[16 + 4] = 0x01;  // data_length += 2^32
  EXPECT_CODE(ApplyHand(&device, huge_data, source.size()), ErrorCode::kTooLarge);

  EXPECT_TRUE(!FileExists(device.dir + "/layer"));
  std::unique_ptr<View> view;
  ASSERT_OK(device.OpenView(&view));
  ExpectViewIs(device, source, view->digest());
}

TEST(payload_reader_spans_chunks_and_checks_each) {
  std::string dir = revpatch_test::TempDir();
  Bytes payload = StampedImage(3 * kChunk + 500, 3);
  Bytes file(77, 0);
  file.insert(file.end(), payload.begin(), payload.end());
  WriteFile(dir + "/f", file);
  std::vector<Digest> chunks;
  for (size_t off = 0; off < payload.size(); off += kChunk) {
    chunks.push_back(Sha256::Hash(payload.data() + off, std::min<size_t>(kChunk, payload.size() - off)));
  }
  int fd = open((dir + "/f").c_str(), O_RDONLY);
  std::unique_ptr<PayloadReader> reader;
  ASSERT_OK(PayloadReader::Open(fd, 77, payload.size(), kChunk, chunks, &reader));
  Bytes got(kChunk + 10);
  ASSERT_OK(reader->Read(got.data(), 100));
  ASSERT_OK(reader->Read(got.data() + 100, got.size() - 100));  // spans chunks 0 and 1
  EXPECT_TRUE(std::memcmp(got.data(), payload.data(), got.size()) == 0);
  EXPECT_CODE(reader->Finish(), ErrorCode::kCorrupt);  // not all consumed
  ASSERT_OK(reader->Skip(reader->remaining()));
  EXPECT_CODE(reader->Read(got.data(), 1), ErrorCode::kCorrupt);
  EXPECT_OK(reader->Finish());

  // A chunk whose digest is wrong exposes nothing of it.
  std::vector<Digest> bad = chunks;
  bad[1][0] ^= 1;
  ASSERT_OK(PayloadReader::Open(fd, 77, payload.size(), kChunk, bad, &reader));
  ASSERT_OK(reader->Read(got.data(), kChunk));
  EXPECT_CODE(reader->Read(got.data(), 1), ErrorCode::kHashMismatch);
  // A payload reaching past the end of the file.
  std::vector<Digest> more = chunks;
  more.push_back(Digest{});
  ASSERT_OK(PayloadReader::Open(fd, 77, 4 * kChunk + 1, kChunk, more, &reader));
  EXPECT_CODE(reader->Skip(4 * kChunk + 1), ErrorCode::kCorrupt);
  // Framing bounds.
  EXPECT_CODE(PayloadReader::Open(fd, 0, payload.size(), kChunk, {}, &reader),
              ErrorCode::kCorrupt);
  EXPECT_CODE(PayloadReader::Open(fd, 0, 0, kMinChunkSize - 1, {}, &reader),
              ErrorCode::kCorrupt);
  EXPECT_CODE(PayloadReader::Open(fd, 0, 0, kMaxChunkSize + 1, {}, &reader),
              ErrorCode::kCorrupt);
  EXPECT_CODE(PayloadReader::Open(fd, ~uint64_t{0}, 2, kChunk, {Digest{}}, &reader),
              ErrorCode::kCorrupt);
  EXPECT_CODE(PayloadReader::Open(-1, 0, 0, kChunk, {}, &reader),
              ErrorCode::kInvalidArgument);
  ASSERT_OK(PayloadReader::Open(fd, 0, 0, kChunk, {}, &reader));
  EXPECT_OK(reader->Finish());
  close(fd);
}

// Chunks are loaded and checked two at a time; what the reader hands out,
// and where a bad chunk fails, is as if they were loaded one by one.
TEST(payload_reader_in_chunk_pairs_fails_exactly_at_the_bad_chunk) {
  std::string dir = revpatch_test::TempDir();
  Bytes payload = StampedImage(4 * kChunk + 300, 9);  // five chunks, the last short
  WriteFile(dir + "/f", payload);
  std::vector<Digest> chunks;
  for (size_t off = 0; off < payload.size(); off += kChunk) {
    chunks.push_back(Sha256::Hash(payload.data() + off, std::min<size_t>(kChunk, payload.size() - off)));
  }
  int fd = open((dir + "/f").c_str(), O_RDONLY);
  for (size_t bad_chunk = 0; bad_chunk < chunks.size(); ++bad_chunk) {
    std::vector<Digest> bad = chunks;
    bad[bad_chunk][31] ^= 0x80;
    std::unique_ptr<PayloadReader> reader;
    ASSERT_OK(PayloadReader::Open(fd, 0, payload.size(), kChunk, bad, &reader));
    Bytes got(bad_chunk * kChunk);
    ASSERT_OK(reader->Read(got.data(), got.size()));
    EXPECT_TRUE(std::equal(got.begin(), got.end(), payload.begin()));
    uint8_t byte = 0;
    EXPECT_CODE(reader->Read(&byte, 1), ErrorCode::kHashMismatch);
  }
  // A restore into the second chunk of a pair, and into the short last one.
  for (uint64_t at : {uint64_t{kChunk + 5}, uint64_t{4 * kChunk + 299}}) {
    std::unique_ptr<PayloadReader> reader;
    ASSERT_OK(PayloadReader::Open(fd, 0, payload.size(), kChunk, chunks, &reader));
    revpatch::PayloadPosition saved;
    saved.position = at;
    ASSERT_OK(reader->RestorePosition(saved));
    Bytes rest(payload.size() - at);
    ASSERT_OK(reader->Read(rest.data(), rest.size()));
    EXPECT_TRUE(std::equal(rest.begin(), rest.end(), payload.begin() + at));
    EXPECT_OK(reader->Finish());
  }
  close(fd);
}

// Reads of whole chunks from a chunk boundary go straight into the
// caller's buffer; every mix of piece sizes hands out the same bytes, and a
// bad chunk inside such a read fails that read.
TEST(payload_reader_hands_out_the_same_bytes_in_any_pieces) {
  std::string dir = revpatch_test::TempDir();
  Bytes payload = StampedImage(7 * kChunk + 123, 4);  // eight chunks, the last short
  WriteFile(dir + "/f", payload);
  std::vector<Digest> chunks;
  for (size_t off = 0; off < payload.size(); off += kChunk) {
    chunks.push_back(Sha256::Hash(payload.data() + off, std::min<size_t>(kChunk, payload.size() - off)));
  }
  int fd = open((dir + "/f").c_str(), O_RDONLY);
  const std::vector<std::vector<size_t>> plans = {
      {kChunk, 2 * kChunk, 3 * kChunk, kChunk + 123},       // boundaries only
      {1, kChunk - 1, 2 * kChunk + 7, kChunk - 7, 3 * kChunk + 123},
      {100, 3 * kChunk, 5, 4 * kChunk + 18},                // whole chunks from mid-chunk
      {7 * kChunk, 123},                                    // the short last chunk alone
      {7 * kChunk + 123}};                                  // all at once
  for (const std::vector<size_t>& plan : plans) {
    std::unique_ptr<PayloadReader> reader;
    ASSERT_OK(PayloadReader::Open(fd, 0, payload.size(), kChunk, chunks, &reader));
    Bytes got(payload.size(), 0xee);
    size_t at = 0;
    for (size_t piece : plan) {
      ASSERT_OK(reader->Read(got.data() + at, piece));
      at += piece;
    }
    EXPECT_EQ(at, payload.size());
    EXPECT_TRUE(got == payload);
    EXPECT_OK(reader->Finish());
  }
  for (size_t bad_chunk : {size_t{1}, size_t{2}, size_t{7}}) {
    std::vector<Digest> bad = chunks;
    bad[bad_chunk][0] ^= 1;
    std::unique_ptr<PayloadReader> reader;
    ASSERT_OK(PayloadReader::Open(fd, 0, payload.size(), kChunk, bad, &reader));
    Bytes got(payload.size());
    ASSERT_OK(reader->Read(got.data(), kChunk));
    EXPECT_CODE(reader->Read(got.data() + kChunk, payload.size() - kChunk),
                ErrorCode::kHashMismatch);
    EXPECT_TRUE(reader->position() <= bad_chunk * kChunk);
  }
  close(fd);
}

TEST(progress_is_reported_up_to_the_payload_size) {
  Bytes source = StampedImage(64 * kBlock, 1);
  Bytes target = Mixed(StampedImage(128 * kBlock, 1));
  target.resize(64 * kBlock);
  Device device(source);
  Patch patch;
  ASSERT_OK(MakePatch(device.dir, source, target, "p", &patch));
  std::unique_ptr<View> view;
  ASSERT_OK(device.OpenView(&view));
  int fd = open(patch.path.c_str(), O_RDONLY);
  uint64_t last = 0, calls = 0;
  ApplyResult result;
  ASSERT_OK(ApplyPatch(patch.Params(fd, device.dir + "/layer"), *view,
                       [&](uint64_t done, uint64_t total) {
                         EXPECT_TRUE(done >= last && done <= total);
                         EXPECT_EQ(total, patch.gen.payload_size);
                         last = done;
                         ++calls;
                       },
                       &result));
  close(fd);
  EXPECT_EQ(last, patch.gen.payload_size);
  EXPECT_EQ(calls, patch.gen.operation_count + 1);
  EXPECT_TRUE(result.blocks_written > 0);
  EXPECT_TRUE(result.layer_bytes > kBlock);
  EXPECT_TRUE(FileExists(device.dir + "/layer"));
}

// What ReadCurrentThreadPriority says on the thread that reports progress
// (the applying thread) through a whole apply with `background` set or not.
struct SeenPriority {
  bool same_every_call = true;
  ThreadPriority first;
  uint64_t calls = 0;
};

void ApplyWatchingPriority(bool background, SeenPriority* seen, ApplyResult* result) {
  Bytes source = StampedImage(128 * kBlock, 1);
  Bytes target = Mixed(source);
  Device device(source);
  Patch patch;
  ASSERT_OK(MakePatch(device.dir, source, target, "p", &patch));
  std::unique_ptr<View> view;
  ASSERT_OK(device.OpenView(&view));
  int fd = open(patch.path.c_str(), O_RDONLY);
  ApplyParams params = patch.Params(fd, device.dir + "/layer");
  params.background = background;
  ASSERT_OK(ApplyPatch(params, *view,
                       [&](uint64_t, uint64_t) {
                         ThreadPriority now;
                         ASSERT_OK(ReadCurrentThreadPriority(&now));
                         if (seen->calls++ == 0) {
                           seen->first = now;
                         } else if (now.nice != seen->first.nice ||
                                    now.io_class != seen->first.io_class) {
                           seen->same_every_call = false;
                         }
                       },
                       result));
  close(fd);
  device.layers.push_back(params.layer_path);
  ExpectViewIs(device, target, patch.gen.target_digest);
}

#if defined(__linux__)
TEST(a_background_apply_runs_at_nice_19_in_the_idle_io_class_and_leaves_the_caller_as_it_was) {
  ThreadPriority before;
  ASSERT_OK(ReadCurrentThreadPriority(&before));
  ASSERT_TRUE(before.nice < 19 && before.io_class != 3);
  SeenPriority seen;
  ApplyResult result;
  ApplyWatchingPriority(true, &seen, &result);
  EXPECT_TRUE(result.lowered);
  EXPECT_TRUE(seen.calls > 1);
  EXPECT_TRUE(seen.same_every_call);
  EXPECT_EQ(seen.first.nice, 19);
  EXPECT_EQ(seen.first.io_class, 3);
  ThreadPriority after;
  ASSERT_OK(ReadCurrentThreadPriority(&after));
  EXPECT_EQ(after.nice, before.nice);
  EXPECT_EQ(after.io_class, before.io_class);
}

TEST(a_foreground_apply_keeps_the_callers_priority) {
  ThreadPriority before;
  ASSERT_OK(ReadCurrentThreadPriority(&before));
  SeenPriority seen;
  ApplyResult result;
  ApplyWatchingPriority(false, &seen, &result);
  EXPECT_TRUE(!result.lowered);
  EXPECT_TRUE(seen.calls > 1);
  EXPECT_EQ(seen.first.nice, before.nice);
  EXPECT_EQ(seen.first.io_class, before.io_class);
}

TEST(threads_started_by_a_lowered_thread_lower_themselves) {
  ThreadPriority inside;
  bool lowered = false;
  ASSERT_OK(RunLowered(
      [&] {
        InheritedPriority inherited;
        std::thread child([&] {
          inherited.Apply();
          (void)ReadCurrentThreadPriority(&inside);
        });
        child.join();
        return Status::Ok();
      },
      &lowered));
  EXPECT_TRUE(lowered);
  EXPECT_EQ(inside.nice, 19);
  EXPECT_EQ(inside.io_class, 3);
}
#endif

TEST(applying_onto_an_existing_layer_path_is_exists_and_keeps_the_file) {
  Bytes source = StampedImage(16 * kBlock, 1);
  Bytes target = source;
  target[100] ^= 1;
  Device device(source);
  Patch patch;
  ASSERT_OK(MakePatch(device.dir, source, target, "p", &patch));
  WriteFile(device.dir + "/layer", Bytes(10, 7));
  ApplyResult result;
  EXPECT_CODE(ApplyTo(&device, patch, "layer", &result), ErrorCode::kExists);
  EXPECT_TRUE(ReadFile(device.dir + "/layer") == Bytes(10, 7));
}

// ---------------------------------------------------------------- resume

namespace {

// Many small operations over several payload chunks: scattered REPLACE
// runs, plus the mixed types and growth.
Bytes Scattered(const Bytes& source) {
  Bytes t = Mixed(source);
  for (uint64_t b = 100; b + 4 <= 256; b += 8) {
    Bytes fresh = StampedImage(4 * kBlock, static_cast<uint32_t>(1000 + b));
    std::memcpy(t.data() + b * kBlock, fresh.data(), fresh.size());
  }
  Bytes tail = StampedImage(5 * kBlock + 321, 77);
  t.insert(t.end(), tail.begin(), tail.end());
  return t;
}

// Blocks written by operations [0, k), for every k, from the payload itself;
// with `ends`, also where each operation's record ends in the payload.
std::vector<uint64_t> BlocksBefore(const std::string& payload_path,
                                   std::vector<uint64_t>* ends = nullptr) {
  Bytes payload = ReadFile(payload_path);
  std::vector<uint64_t> before{0};
  size_t at = 0;
  while (at < payload.size()) {
    Operation op;
    size_t consumed = 0;
    if (!DecodeOperation(payload.data() + at, payload.size() - at, &op, &consumed).ok()) {
      std::abort();
    }
    uint64_t blocks = 0;
    TotalBlocks(op.dst_extents, &blocks);
    before.push_back(before.back() + blocks);
    at += consumed + op.data_length;
    if (ends != nullptr) ends->push_back(at);
  }
  return before;
}

struct ResumeFixture {
  Bytes source = StampedImage(256 * kBlock, 1);
  Bytes target = Scattered(source);
  Device device{source};
  Patch patch;
  std::string layer, checkpoint;

  ResumeFixture() {
    // Small ops, so that there are many places to stop and resume.
    if (!MakePatch(device.dir, source, target, "p", &patch, 4 * kBlock).ok()) std::abort();
    layer = device.dir + "/p.layer";
    checkpoint = device.dir + "/p.checkpoint";
  }
  ApplyParams Params(uint64_t interval = 0, uint64_t stop = kNoTestStop) const {
    ApplyParams p = patch.Params(-1, layer);
    p.checkpoint_path = checkpoint;
    p.checkpoint_interval_bytes = interval;
    p.test_stop_after_operations = stop;
    return p;
  }
  Status Run(const ApplyParams& params, ApplyResult* result) {
    ApplyParams p = params;
    return ApplyTo(&device, patch, "p.layer", result, &p);
  }
  // Runs until `stop` operations are in, as a crash there would.
  void Interrupt(uint64_t stop, uint64_t interval = 0) {
    ApplyResult result;
    EXPECT_CODE(Run(Params(interval, stop), &result), ErrorCode::kIo);
    EXPECT_TRUE(FileExists(layer));
  }
  void ExpectDone(const ApplyResult& result) {
    EXPECT_TRUE(result.view_digest == patch.gen.target_digest);
    EXPECT_EQ(result.operations, patch.gen.operation_count);
    EXPECT_TRUE(IsSealedLayer(layer));
    EXPECT_TRUE(!FileExists(checkpoint));
    EXPECT_TRUE(!FileExists(checkpoint + ".tmp"));
    ExpectViewIs(device, target, patch.gen.target_digest);
    device.layers.clear();
  }
};

}  // namespace

// Checkpoints are saved on a thread of their own; still, once progress is
// reported past an operation, the checkpoint of the boundary before it is
// on disk, so a caller that kills the apply there finds it.
TEST(progress_past_an_operation_means_the_checkpoint_before_it_is_on_disk) {
  ResumeFixture f;
  std::unique_ptr<View> view;
  ASSERT_OK(f.device.OpenView(&view));
  int fd = open(f.patch.path.c_str(), O_RDONLY);
  ApplyParams params = f.Params();  // a checkpoint after every operation
  params.patch_fd = fd;
  std::vector<uint64_t> op_ends;
  BlocksBefore(f.device.dir + "/p.payload", &op_ends);
  uint64_t checked = 0;
  ApplyResult result;
  ASSERT_OK(ApplyPatch(params, *view,
                       [&](uint64_t done, uint64_t) {
                         // Operations [0, ops) are in; the save of boundary ops - 1 is complete.
                         const uint64_t ops = static_cast<uint64_t>(
                             std::upper_bound(op_ends.begin(), op_ends.end(), done) - op_ends.begin());
                         if (ops < 2 || ops == f.patch.gen.operation_count) return;
                         revpatch::Checkpoint cp;
                         EXPECT_OK(revpatch::ReadCheckpoint(f.checkpoint, ~uint64_t{0}, &cp));
                         EXPECT_TRUE(cp.next_operation + 1 >= ops);
                         ++checked;
                       },
                       &result));
  close(fd);
  EXPECT_TRUE(checked > 0);
  f.device.layers.push_back(f.layer);
  f.ExpectDone(result);
}

TEST(an_apply_interrupted_at_any_operation_resumes_with_only_the_rest) {
  ResumeFixture f;
  const uint64_t ops = f.patch.gen.operation_count;
  ASSERT_TRUE(ops > 20);
  ASSERT_TRUE(f.patch.gen.payload_size > 4 * kChunk);
  const std::vector<uint64_t> before = BlocksBefore(f.device.dir + "/p.payload");
  ASSERT_EQ(before.size(), ops + 1);
  ApplyResult clean;
  ASSERT_OK(f.Run(f.Params(), &clean));
  EXPECT_TRUE(!clean.resumed);
  EXPECT_EQ(clean.blocks_written, before[ops]);
  EXPECT_EQ(clean.blocks_written_this_run, before[ops]);
  EXPECT_EQ(clean.payload_bytes_read_this_run, f.patch.gen.payload_size);
  f.ExpectDone(clean);
  const Bytes clean_layer = ReadFile(f.layer);
  UnlinkFile(f.layer);

  for (uint64_t k = 0; k < ops; ++k) {
    f.Interrupt(k);
    EXPECT_EQ(FileExists(f.checkpoint), k > 0);
    ApplyResult result;
    uint64_t first_progress = ~uint64_t{0};
    std::unique_ptr<View> view;
    ASSERT_OK(f.device.OpenView(&view));
    int fd = open(f.patch.path.c_str(), O_RDONLY);
    ApplyParams params = f.Params();
    params.patch_fd = fd;
    ASSERT_OK(ApplyPatch(params, *view, [&](uint64_t done, uint64_t) {
      if (first_progress == ~uint64_t{0}) first_progress = done;
    }, &result));
    close(fd);
    f.device.layers.push_back(f.layer);
    EXPECT_EQ(result.resumed, k > 0);
    EXPECT_EQ(result.resumed_from_operation, k);
    EXPECT_EQ(result.blocks_written, before[ops]);
    EXPECT_EQ(result.blocks_written_this_run, before[ops] - before[k]);
    EXPECT_EQ(first_progress + result.payload_bytes_read_this_run, f.patch.gen.payload_size);
    EXPECT_EQ(k == 0, result.payload_bytes_read_this_run == f.patch.gen.payload_size);
    f.ExpectDone(result);
    // The resumed layer is the layer a clean run makes, byte for byte.
    EXPECT_TRUE(ReadFile(f.layer) == clean_layer);
    UnlinkFile(f.layer);
  }
}

TEST(a_resume_from_an_older_checkpoint_redoes_the_operations_after_it) {
  ResumeFixture f;
  const uint64_t ops = f.patch.gen.operation_count;
  const std::vector<uint64_t> before = BlocksBefore(f.device.dir + "/p.payload");
  // Saves every ~100 KiB of payload; stops in between, with unsaved data
  // (some of it flushed) past the checkpoint in the layer file.
  for (uint64_t k : {ops / 3, ops / 2, ops - 1}) {
    f.Interrupt(k, 100 << 10);
    ApplyResult result;
    ASSERT_OK(f.Run(f.Params(100 << 10), &result));
    EXPECT_TRUE(result.resumed_from_operation <= k);
    EXPECT_EQ(result.blocks_written_this_run, before[ops] - before[result.resumed_from_operation]);
    f.ExpectDone(result);
    UnlinkFile(f.layer);
  }
  // Resuming twice in a row: stop, resume and stop again, then finish.
  f.Interrupt(ops / 4);
  f.Interrupt(ops / 2);
  ApplyResult result;
  ASSERT_OK(f.Run(f.Params(), &result));
  EXPECT_EQ(result.resumed_from_operation, ops / 2);
  f.ExpectDone(result);
}

// The saves after the first append progress records (checkpoint.h): a crash
// in the middle of one leaves it torn, and the apply resumes from the
// record before it, redoing one operation more.
TEST(a_torn_progress_record_resumes_from_the_one_before) {
  ResumeFixture f;
  const uint64_t ops = f.patch.gen.operation_count;
  const uint64_t k = ops / 2;
  const std::vector<uint64_t> before = BlocksBefore(f.device.dir + "/p.payload");
  f.Interrupt(k);  // a save after every operation
  Bytes saved = ReadFile(f.checkpoint);
  saved.resize(saved.size() - 1);
  WriteFile(f.checkpoint, saved);
  ApplyResult result;
  ASSERT_OK(f.Run(f.Params(), &result));
  EXPECT_TRUE(result.resumed);
  EXPECT_EQ(result.resumed_from_operation, k - 1);
  EXPECT_EQ(result.blocks_written_this_run, before[ops] - before[k - 1]);
  f.ExpectDone(result);
}

TEST(a_checkpoint_that_cannot_be_used_is_discarded_and_the_apply_starts_over) {
  ResumeFixture f;
  const uint64_t ops = f.patch.gen.operation_count;
  const uint64_t k = ops / 2;
  auto expect_fresh = [&](const char* what) {
    ApplyResult result;
    Status s = f.Run(f.Params(), &result);
    if (!s.ok()) revpatch_test::Fail(__FILE__, __LINE__, std::string(what) + ": " + s.ToString());
    if (result.resumed) revpatch_test::Fail(__FILE__, __LINE__, std::string(what) + ": resumed");
    EXPECT_EQ(result.payload_bytes_read_this_run, f.patch.gen.payload_size);
    f.ExpectDone(result);
    UnlinkFile(f.layer);
  };

  f.Interrupt(k);
  // The saves appended progress records to a base; rewritten as one base
  // record with the same state, so that every cut and change below hits
  // the base (torn and changed progress records: checkpoint_test).
  {
    Checkpoint saved;
    ASSERT_OK(ReadCheckpoint(f.checkpoint, ~uint64_t{0}, &saved));
    ASSERT_OK(WriteCheckpoint(f.checkpoint, saved, nullptr));
  }
  Bytes good = ReadFile(f.checkpoint);
  const Bytes layer_at_k = ReadFile(f.layer);
  ASSERT_TRUE(good.size() > 400);
  auto restore = [&](const Bytes& checkpoint) {
    WriteFile(f.checkpoint, checkpoint);
    WriteFile(f.layer, layer_at_k);
  };

  // Torn: every prefix length class, and garbage of the same size.
  for (size_t cut : {size_t{0}, size_t{7}, size_t{175}, size_t{176}, good.size() / 2,
                     good.size() - 33, good.size() - 1}) {
    restore(Bytes(good.begin(), good.begin() + cut));
    expect_fresh("torn checkpoint");
  }
  restore(StampedImage(good.size(), 5));
  expect_fresh("garbage checkpoint");
  for (size_t at : {size_t{100}, size_t{150}, size_t{300}, good.size() - 1}) {
    Bytes flipped = good;
    flipped[at] ^= 0x40;
    restore(flipped);
    expect_fresh("flipped checkpoint byte");
  }
  // Absurd counts, with the checksum recomputed so only the bounds refuse.
  auto with_field = [&](size_t offset, uint64_t value, int width) {
    Bytes b = good;
    for (int i = 0; i < width; ++i) b[offset + i] = static_cast<uint8_t>(value >> (8 * i));
    Digest sum = Sha256::Hash(b.data(), b.size() - 32);
    std::memcpy(b.data() + b.size() - 32, sum.data(), 32);
    return b;
  };
  for (uint64_t count : {uint64_t{1} << 62, ~uint64_t{0}, uint64_t{1000000}}) {
    restore(with_field(168, count, 8));   // entry count
    expect_fresh("absurd entry count");
  }
  restore(with_field(20, 0xFFFFFFFFu, 4));  // layer name length
  expect_fresh("absurd name length");
  restore(with_field(160, ~uint64_t{0}, 8));  // data blocks
  expect_fresh("absurd data block count");
  restore(with_field(144, ops + 5, 8));  // next operation
  expect_fresh("next operation past the end");
  restore(with_field(152, f.patch.gen.payload_size + 1, 8));  // payload position
  expect_fresh("payload position past the end");
  restore(with_field(152, 1000, 8));  // a valid position, but not operation k's
  expect_fresh("position inside another record");

  // Another apply's checkpoint: another target digest, another layer name.
  restore(with_field(112, 0x1234, 8));
  expect_fresh("identity mismatch");
  {
    ApplyParams params = f.Params();
    f.Interrupt(k);
    params.layer_path = f.device.dir + "/other.layer";
    RenameFile(f.layer, params.layer_path);
    ApplyResult result;
    ASSERT_OK(f.Run(params, &result));
    EXPECT_TRUE(!result.resumed);
    EXPECT_TRUE(!FileExists(f.checkpoint));
    UnlinkFile(params.layer_path);
    f.device.layers.clear();
  }

  // The layer file shorter than the checkpoint says, missing, or changed.
  restore(good);
  {
    File layer;
    ASSERT_OK(File::OpenReadWrite(f.layer, &layer));
    ASSERT_OK(layer.Truncate(layer_at_k.size() > 2 * kBlock ? 2 * kBlock : kBlock));
  }
  expect_fresh("short layer");
  restore(good);
  UnlinkFile(f.layer);
  expect_fresh("missing layer");
  restore(good);
  {
    Bytes changed = layer_at_k;
    changed[kBlock + 10] ^= 1;  // the first data block
    WriteFile(f.layer, changed);
  }
  expect_fresh("layer data changed");
  restore(good);
  {
    Bytes changed = layer_at_k;
    changed[3] ^= 1;  // the header
    WriteFile(f.layer, changed);
  }
  expect_fresh("layer header changed");

  // No checkpoint at all, an unsealed leftover at the layer path.
  restore(good);
  UnlinkFile(f.checkpoint);
  expect_fresh("leftover layer without checkpoint");

  // And the good one still resumes.
  restore(good);
  ApplyResult result;
  ASSERT_OK(f.Run(f.Params(), &result));
  EXPECT_TRUE(result.resumed);
  EXPECT_EQ(result.resumed_from_operation, k);
  f.ExpectDone(result);
}

TEST(a_failing_resumed_apply_leaves_neither_layer_nor_checkpoint) {
  ResumeFixture f;
  const uint64_t ops = f.patch.gen.operation_count;
  f.Interrupt(ops / 3);
  // The patch file changed after the interruption: the payload past the
  // checkpoint no longer matches its digests.
  const Bytes original = ReadFile(f.patch.path);
  Bytes bad = original;
  bad[f.patch.offset + f.patch.gen.payload_size - 10] ^= 1;
  WriteFile(f.patch.path, bad);
  ApplyResult result;
  EXPECT_CODE(f.Run(f.Params(), &result), ErrorCode::kHashMismatch);
  EXPECT_TRUE(!FileExists(f.layer));
  EXPECT_TRUE(!FileExists(f.checkpoint));
  // A wrong target digest fails the seal of a resumed apply the same way
  // (the identity differs, so this one starts over and fails at the end).
  WriteFile(f.patch.path, original);
  f.Interrupt(ops / 3);
  ApplyParams params = f.Params();
  params.target_digest[0] ^= 1;
  EXPECT_CODE(f.Run(params, &result), ErrorCode::kHashMismatch);
  EXPECT_TRUE(!FileExists(f.layer));
  EXPECT_TRUE(!FileExists(f.checkpoint));
}

TEST(a_layer_sealed_before_a_crash_is_returned_as_is) {
  ResumeFixture f;
  const uint64_t ops = f.patch.gen.operation_count;
  f.Interrupt(ops / 2);
  const Bytes checkpoint = ReadFile(f.checkpoint);
  ApplyResult first;
  ASSERT_OK(f.Run(f.Params(), &first));
  f.ExpectDone(first);
  const Bytes sealed = ReadFile(f.layer);
  // The crash came between the seal and the checkpoint's removal.
  WriteFile(f.checkpoint, checkpoint);
  ApplyResult again;
  ASSERT_OK(f.Run(f.Params(), &again));
  EXPECT_TRUE(again.resumed);
  EXPECT_EQ(again.blocks_written_this_run, 0u);
  EXPECT_EQ(again.payload_bytes_read_this_run, 0u);
  EXPECT_EQ(again.layer_bytes, sealed.size());
  f.ExpectDone(again);
  EXPECT_TRUE(ReadFile(f.layer) == sealed);
  // Another patch's sealed layer at that path is never touched.
  Patch other;
  Bytes other_target = f.source;
  other_target[5] ^= 1;
  ASSERT_OK(MakePatch(f.device.dir, f.source, other_target, "q", &other));
  ApplyParams params = other.Params(-1, f.layer);
  params.checkpoint_path = f.checkpoint;
  ApplyResult result;
  EXPECT_CODE(ApplyTo(&f.device, other, "p.layer", &result, &params), ErrorCode::kExists);
  EXPECT_TRUE(ReadFile(f.layer) == sealed);
}
