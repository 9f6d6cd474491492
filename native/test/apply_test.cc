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
#include <vector>

#include "../engine/file_io.h"
#include "../engine/generator.h"
#include "../engine/merkle.h"
#include "../engine/operation.h"
#include "../engine/payload_reader.h"
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
                 const std::string& name, Patch* patch) {
  WriteFile(dir + "/" + name + ".from", from);
  WriteFile(dir + "/" + name + ".to", to);
  GenerateOptions options;
  options.chunk_size = kChunk;
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
  v3[7] ^= 1;
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

Status ApplyHand(Device* device, const HandPayload& payload, uint64_t target_size) {
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
  p.target_digest = view->digest();
  p.layer_path = device->dir + "/layer";
  ApplyResult result;
  Status s = ApplyPatch(p, *view, nullptr, &result);
  close(p.patch_fd);
  return s;
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
  Digest whole = Sha256::Hash(payload.data(), payload.size());
  int fd = open((dir + "/f").c_str(), O_RDONLY);
  std::unique_ptr<PayloadReader> reader;
  ASSERT_OK(PayloadReader::Open(fd, 77, payload.size(), kChunk, chunks, whole, &reader));
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
  ASSERT_OK(PayloadReader::Open(fd, 77, payload.size(), kChunk, bad, whole, &reader));
  ASSERT_OK(reader->Read(got.data(), kChunk));
  EXPECT_CODE(reader->Read(got.data(), 1), ErrorCode::kHashMismatch);
  // A wrong whole digest fails only at the end.
  Digest wrong = whole;
  wrong[5] ^= 1;
  ASSERT_OK(PayloadReader::Open(fd, 77, payload.size(), kChunk, chunks, wrong, &reader));
  ASSERT_OK(reader->Skip(payload.size()));
  EXPECT_CODE(reader->Finish(), ErrorCode::kHashMismatch);
  // A payload reaching past the end of the file.
  std::vector<Digest> more = chunks;
  more.push_back(Digest{});
  ASSERT_OK(PayloadReader::Open(fd, 77, 4 * kChunk + 1, kChunk, more, whole, &reader));
  EXPECT_CODE(reader->Skip(4 * kChunk + 1), ErrorCode::kCorrupt);
  // Framing bounds.
  EXPECT_CODE(PayloadReader::Open(fd, 0, payload.size(), kChunk, {}, whole, &reader),
              ErrorCode::kCorrupt);
  EXPECT_CODE(PayloadReader::Open(fd, 0, 0, kMinChunkSize - 1, {}, whole, &reader),
              ErrorCode::kCorrupt);
  EXPECT_CODE(PayloadReader::Open(fd, 0, 0, kMaxChunkSize + 1, {}, whole, &reader),
              ErrorCode::kCorrupt);
  EXPECT_CODE(PayloadReader::Open(fd, ~uint64_t{0}, 2, kChunk, {Digest{}}, whole, &reader),
              ErrorCode::kCorrupt);
  EXPECT_CODE(PayloadReader::Open(-1, 0, 0, kChunk, {}, whole, &reader),
              ErrorCode::kInvalidArgument);
  ASSERT_OK(PayloadReader::Open(fd, 0, 0, kChunk, {}, Sha256::Hash("", 0), &reader));
  EXPECT_OK(reader->Finish());
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
