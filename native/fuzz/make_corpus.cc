// make_corpus: writes the seed inputs of every fuzz target, made with the
// engine's own writers, into <out>/<target>/<seed>:
//   operation_fuzzer      hand-made records of every type, the records of a
//                         real generated payload, overlapping and edge extents
//   diff_fuzzer           real deltas (EncodeDiff) to decode, version 1 deltas
//                         (still decoded), pairs to encode
//   payload_fuzzer        real payloads (GeneratePayload) over the harness's
//                         volumes, growing and shrinking, applied at once and
//                         interrupted halfway, and one op of each type whose
//                         hashes the harness fixes up
//   layer_fuzzer          sealed layers (LayerWriter) over both volumes
//   commit_record_fuzzer  records of generations 1 to 3 (WriteCommitRecord)
//   elf_fuzzer            LLD-like ELF pairs (x86-64, arm64), relinked, and
//                         the version 4 reference part made from them
//   macho_pe_fuzzer       the harness's own signed Mach-O (both hash types)
//                         and PE32+ (x86-64, arm64) to patch, and page
//                         digest runs (EncodePageDigests) over a buffer
//   deflate_fuzzer        deflate streams (gzip -1 and -9, an npm tarball,
//                         hand-made stored and fixed blocks) to expand,
//                         their expansions to rebuild, containers to scan
// Seeds are deterministic; native/fuzz/make_corpus.sh regenerates the
// checked-in corpus with it.
#include <sys/stat.h>

#include <array>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "commit_record.h"
#include "deflate_scan.h"
#include "deflate_stream.h"
#include "diff.h"
#include "diff_encoder.h"
#include "executable_spans.h"
#include "fuzz_input.h"
#include "fuzz_support.h"
#include "generator.h"
#include "layer_file.h"
#include "little_endian.h"
#include "operation.h"
#include "page_digests.h"
#include "payload_reader.h"
#include "references.h"
#include "view.h"

namespace revpatch_fuzz {
namespace {

using revpatch::Digest;
using revpatch::Extent;
using revpatch::Operation;
using revpatch::OperationType;
using revpatch::Status;

std::string out_dir;
std::string work_dir;

void Check(const Status& s, const std::string& what) {
  if (!s.ok()) CheckFailed(__FILE__, __LINE__, what + ": " + s.ToString());
}

void Seed(const std::string& target, const std::string& name, const Bytes& bytes) {
  const std::string dir = out_dir + "/" + target;
  std::filesystem::create_directories(dir);
  WriteFileOrDie(dir + "/" + name, bytes);
}

Bytes Slice(const Bytes& b, size_t from, size_t n) {
  return Bytes(b.begin() + from, b.begin() + from + n);
}

// ------------------------------------------------------------ operations

Operation MakeOp(OperationType type, std::vector<Extent> src, std::vector<Extent> dst,
                 uint64_t data_length) {
  Operation op;
  op.type = type;
  op.src_extents = std::move(src);
  op.dst_extents = std::move(dst);
  op.data_length = data_length;
  return op;
}

void AppendOp(const Operation& op, const Bytes& data, Bytes* out) {
  revpatch::EncodeOperation(op, out);
  out->insert(out->end(), data.begin(), data.end());
}

// One op of each type over `image` (whole blocks of `bs`), data included;
// the hashes are left zero for the harness to fix up (payload_fuzzer) or
// not to matter (operation_fuzzer).
Bytes EveryTypeRecords(const Bytes& image, uint32_t bs, uint64_t* count) {
  Bytes records;
  AppendOp(MakeOp(OperationType::kZero, {}, {{0, 1}}, 0), {}, &records);
  AppendOp(MakeOp(OperationType::kCopy, {{10, 2}}, {{1, 1}, {5, 1}}, 0), {}, &records);
  const Bytes replace = StampedBlocks(1, bs, 7);
  AppendOp(MakeOp(OperationType::kReplace, {}, {{2, 1}}, replace.size()), replace, &records);
  Bytes brotli;
  const Bytes plain = StampedBlocks(2, bs, 8);
  Check(revpatch::BrotliCompress(plain.data(), plain.size(), 5, &brotli), "brotli");
  AppendOp(MakeOp(OperationType::kReplaceBrotli, {}, {{3, 2}}, brotli.size()), brotli, &records);
  Bytes source = Slice(image, 6 * bs, 2 * bs), target = source, delta;
  target[17] ^= 0xFF;
  target.insert(target.begin() + bs, {'f', 'i', 'x'});
  target.resize(2 * bs);
  Check(revpatch::EncodeDiff(source, target, &delta), "delta");
  AppendOp(MakeOp(OperationType::kDiff, {{6, 2}}, {{6, 2}}, delta.size()), delta, &records);
  *count = 5;
  return records;
}

// A real payload: `to` made from `from` by the generator.
Bytes GeneratedPayload(const Bytes& from, const Bytes& to, uint32_t bs, const std::string& name,
                       revpatch::GenerateResult* gen) {
  const std::string a = work_dir + "/" + name + ".from", b = work_dir + "/" + name + ".to";
  const std::string payload = work_dir + "/" + name + ".payload";
  WriteFileOrDie(a, from);
  WriteFileOrDie(b, to);
  revpatch::GenerateOptions options;
  options.block_size = bs;
  options.chunk_size = revpatch::kMinChunkSize;
  Check(revpatch::GeneratePayload(a, b, payload, options, nullptr, gen), "generate " + name);
  return ReadFileOrDie(payload);
}

// The kinds of change a security patch makes: rewritten blocks, a small
// edit, an insertion that shifts bytes, moved blocks, zeroed blocks; each
// only where it fits in `new_size`.
Bytes Patched(const Bytes& base, uint32_t bs, uint64_t new_size) {
  Bytes image = base;
  image.resize(new_size, 0);
  auto fits = [&](uint64_t block, uint64_t count) { return (block + count) * bs <= new_size; };
  if (fits(4, 2)) {
    const Bytes fresh = StampedBlocks(2, bs, 3);
    std::copy(fresh.begin(), fresh.end(), image.begin() + 4 * bs);
  }
  if (fits(9, 1)) {
    image[9 * bs + 100] ^= 0x5A;
    image[9 * bs + 101] ^= 0x5A;
  }
  if (fits(11, 1)) {
    const char kEdit[] = "bounds check added";
    image.insert(image.begin() + 11 * bs + 7, kEdit, kEdit + sizeof(kEdit));
    image.resize(new_size);
  }
  if (fits(13, 1)) std::copy(base.begin() + 1 * bs, base.begin() + 2 * bs, image.begin() + 13 * bs);
  if (fits(14, 1)) std::fill(image.begin() + 14 * bs, image.begin() + 15 * bs, 0);
  for (size_t i = base.size(); i < image.size(); ++i) image[i] = static_cast<uint8_t>(i * 7);
  return image;
}

void OperationSeeds() {
  const Volume& v = GetVolume(VolumeId::kPayload512);
  uint64_t count = 0;
  const Bytes every = EveryTypeRecords(v.image, v.block_size, &count);
  FuzzInputWriter w;
  w.Put<uint8_t>(0).Put<uint64_t>(64).Put<uint64_t>(64).PutBytes(every);
  Seed("operation_fuzzer", "every_type", w.bytes());

  revpatch::GenerateResult gen;
  const Bytes payload = GeneratedPayload(v.image, Patched(v.image, 512, 67 * 512 + 200), 512,
                                         "operation", &gen);
  FuzzInputWriter g;
  g.Put<uint8_t>(0).Put<uint64_t>(64).Put<uint64_t>(68).PutBytes(payload);
  Seed("operation_fuzzer", "generated_payload", g.bytes());

  Bytes overlap;
  AppendOp(MakeOp(OperationType::kZero, {}, {{4, 4}}, 0), {}, &overlap);
  AppendOp(MakeOp(OperationType::kZero, {}, {{0, 2}, {8, 1}}, 0), {}, &overlap);
  AppendOp(MakeOp(OperationType::kZero, {}, {{7, 2}}, 0), {}, &overlap);
  AppendOp(MakeOp(OperationType::kCopy, {{0, 2}}, {{20, 1}, {20, 1}}, 0), {}, &overlap);
  FuzzInputWriter o;
  o.Put<uint8_t>(0).Put<uint64_t>(32).Put<uint64_t>(32).PutBytes(overlap);
  Seed("operation_fuzzer", "overlapping_targets", o.bytes());

  Bytes edges;
  const uint64_t top = ~uint64_t{0};
  AppendOp(MakeOp(OperationType::kZero, {}, {{top - 1, 1}}, 0), {}, &edges);
  AppendOp(MakeOp(OperationType::kCopy, {{top - 16, 16}}, {{0, 16}}, 0), {}, &edges);
  AppendOp(MakeOp(OperationType::kZero, {}, {{top, 1}}, 0), {}, &edges);
  AppendOp(MakeOp(OperationType::kReplace, {}, {{5, 1 << 20}}, 1), {0}, &edges);
  FuzzInputWriter e;
  e.Put<uint8_t>(11).Put<uint64_t>(top).Put<uint64_t>(top).PutBytes(edges);
  Seed("operation_fuzzer", "extent_edges", e.bytes());
}

// ------------------------------------------------------------ deltas

// A version 1 delta (fixed 24-byte control records), which decoders still
// accept: `records` are (seek, add, copy) and must fit old and new.
Bytes DeltaV1(const Bytes& old_data, const Bytes& new_data,
              const std::vector<std::array<int64_t, 3>>& records) {
  Bytes control, diff, extra;
  uint64_t old_pos = 0, new_pos = 0;
  for (const auto& [seek, add, copy] : records) {
    uint8_t rec[24];
    revpatch::PutU64(rec, static_cast<uint64_t>(seek));
    revpatch::PutU64(rec + 8, static_cast<uint64_t>(add));
    revpatch::PutU64(rec + 16, static_cast<uint64_t>(copy));
    control.insert(control.end(), rec, rec + 24);
    old_pos += static_cast<uint64_t>(seek);
    for (int64_t k = 0; k < add; ++k) {
      diff.push_back(static_cast<uint8_t>(new_data[new_pos + k] - old_data[old_pos + k]));
    }
    old_pos += static_cast<uint64_t>(add);
    new_pos += static_cast<uint64_t>(add);
    extra.insert(extra.end(), new_data.begin() + new_pos, new_data.begin() + new_pos + copy);
    new_pos += static_cast<uint64_t>(copy);
  }
  Bytes out(revpatch::kDiffHeaderSize, 0);
  const char kMagic[4] = {'R', 'P', 'D', 'F'};
  std::copy(kMagic, kMagic + 4, out.begin());
  revpatch::PutU32(out.data() + 4, 1);
  revpatch::PutU64(out.data() + 8, new_data.size());
  int s = 0;
  for (const Bytes* stream : {&control, &diff, &extra}) {
    Bytes packed;
    Check(revpatch::BrotliCompress(stream->data(), stream->size(), 5, &packed), "brotli");
    revpatch::PutU64(out.data() + 16 + 8 * s++, packed.size());
    out.insert(out.end(), packed.begin(), packed.end());
  }
  return out;
}

void DiffSeeds() {
  const Bytes old_data = StampedBlocks(16, 512, 4);
  Bytes new_data = Patched(old_data, 512, old_data.size());
  new_data.erase(new_data.begin() + 700, new_data.begin() + 720);
  new_data.resize(old_data.size() + 33, 0x11);
  struct Pair {
    const char* name;
    Bytes old_data, new_data;
  };
  const Pair pairs[] = {
      {"patched", old_data, new_data},
      {"unrelated", Slice(old_data, 0, 1024), StampedBlocks(2, 512, 9)},
      {"from_empty", Bytes(), Slice(new_data, 0, 300)},
      {"to_empty", Slice(old_data, 0, 300), Bytes()},
  };
  for (const Pair& p : pairs) {
    Bytes delta;
    Check(revpatch::EncodeDiff(p.old_data, p.new_data, &delta), "delta");
    FuzzInputWriter d;
    d.Put<uint8_t>(2 | 4).Put<uint16_t>(static_cast<uint16_t>(p.old_data.size()));
    d.PutBytes(p.old_data).Put<uint32_t>(static_cast<uint32_t>(p.new_data.size())).PutBytes(delta);
    Seed("diff_fuzzer", std::string("decode_") + p.name, d.bytes());
  }
  // Version 3: code-like bytes (calls into themselves) that move, with
  // references predicted, decoded as the views themselves and under a
  // layout of 512-byte blocks.
  {
    Bytes code = StampedBlocks(8, 512, 5);
    for (size_t at = 16; at + 5 <= code.size(); at += 37) {
      code[at] = 0xE8;
      revpatch::PutU32(code.data() + at + 1, static_cast<uint32_t>((at * 7919) % code.size()) -
                                                 static_cast<uint32_t>(at + 5));
    }
    Bytes moved = code;
    moved.insert(moved.begin() + 1000, 24, 0x90);
    moved.resize(9 * 512, 0);
    revpatch::DeltaMatcher matcher;
    Check(matcher.Init(code.data(), code.size()), "matcher");
    std::vector<revpatch::DeltaRecord> records;
    matcher.Match(moved.data(), moved.size(), &records);
    revpatch::ReferenceInfo info;
    info.spans.push_back({revpatch::ReferenceKind::kRel32, 0, code.size(), 0, code.size(), 0});
    revpatch::ReferenceInfo arm64;  // the same bytes read as arm64 code
    arm64.spans.push_back({revpatch::ReferenceKind::kArm64, 0, code.size(), 0, code.size(), 0x10000});
    const std::vector<revpatch::Extent> source = {{0, 8}}, target = {{0, 9}};
    const revpatch::DeltaLayout layout{512, &source, &target};
    for (int variant = 0; variant < 3; ++variant) {
      const bool laid_out = variant == 1;
      Bytes delta;
      Check(revpatch::WriteDelta(code.data(), code.size(), moved.data(), moved.size(), records,
                                 &delta, variant == 2 ? &arm64 : &info, laid_out ? &layout : nullptr),
            "predicted delta");
      FuzzInputWriter d;
      d.Put<uint8_t>(laid_out ? 2 | 4 | 8 : 2 | 4).Put<uint16_t>(static_cast<uint16_t>(code.size()));
      d.PutBytes(code);
      if (laid_out) {
        d.Put<uint8_t>(9).Put<uint8_t>(1).Put<uint8_t>(0).Put<uint8_t>(8);
        d.Put<uint8_t>(1).Put<uint8_t>(0).Put<uint8_t>(9);
      }
      d.Put<uint32_t>(static_cast<uint32_t>(moved.size())).PutBytes(delta);
      const char* names[] = {"decode_predicted", "decode_predicted_laid_out", "decode_predicted_arm64"};
      Seed("diff_fuzzer", names[variant], d.bytes());
    }
  }
  // Version 1: one add over everything then a copy; and a backward seek.
  const Bytes v1_old = Slice(old_data, 0, 2048), v1_new = Slice(new_data, 0, 2100);
  const std::vector<std::array<int64_t, 3>> v1_records[] = {
      {{0, 2048, 52}},
      {{0, 100, 0}, {-50, 50, 10}, {200, 1000, 890}},
  };
  int v1 = 0;
  for (const auto& records : v1_records) {
    FuzzInputWriter d;
    d.Put<uint8_t>(2).Put<uint16_t>(static_cast<uint16_t>(v1_old.size())).PutBytes(v1_old);
    d.Put<uint32_t>(static_cast<uint32_t>(v1_new.size())).PutBytes(DeltaV1(v1_old, v1_new, records));
    Seed("diff_fuzzer", "decode_version1_" + std::to_string(v1++), d.bytes());
  }
  FuzzInputWriter e;
  e.Put<uint8_t>(1).Put<uint16_t>(1024).PutBytes(Slice(old_data, 0, 1024));
  e.PutBytes(Slice(new_data, 0, 1024));
  Seed("diff_fuzzer", "encode_patched", e.bytes());
}

// ------------------------------------------------------------ payloads

void PayloadSeed(const std::string& name, uint8_t flags, uint64_t count, uint64_t target_size,
                 const Bytes& payload, uint8_t stop = 0) {
  FuzzInputWriter w;
  w.Put<uint8_t>(flags).Put<uint16_t>(static_cast<uint16_t>(count));
  w.Put<uint32_t>(static_cast<uint32_t>(target_size)).Put<uint8_t>(stop).PutBytes(payload);
  Seed("payload_fuzzer", name, w.bytes());
}

void PayloadSeeds() {
  for (VolumeId id : {VolumeId::kPayload512, VolumeId::kPayload4096}) {
    const Volume& v = GetVolume(id);
    const uint32_t bs = v.block_size;
    const uint8_t volume_flag = id == VolumeId::kPayload4096 ? 2 : 0;
    const std::string suffix = std::to_string(bs);
    struct Shape {
      const char* name;
      uint64_t size;
    };
    const Shape shapes[] = {
        {"same_size", v.size},
        {"grown", v.size + 3 * bs + 200},
        {"shrunk", v.size - 2 * bs - 100},
    };
    for (const Shape& shape : shapes) {
      revpatch::GenerateResult gen;
      const std::string name = std::string(shape.name) + "_" + suffix;
      const Bytes payload =
          GeneratedPayload(v.image, Patched(v.image, bs, shape.size), bs, name, &gen);
      PayloadSeed(name, volume_flag, gen.operation_count, gen.target_size, payload);
      PayloadSeed(name + "_interrupted", volume_flag | 32, gen.operation_count, gen.target_size,
                  payload, static_cast<uint8_t>(gen.operation_count / 2));
    }
    uint64_t count = 0;
    const Bytes every = EveryTypeRecords(v.image, bs, &count);
    PayloadSeed("every_type_fixed_up_" + suffix, volume_flag | 1, count, v.size, every);
    PayloadSeed("every_type_framed_" + suffix, volume_flag | 1 | 4, count, v.size + bs, every);
  }
}

// ------------------------------------------------------------ layers

Bytes SealedLayer(const Volume& below, uint64_t target_size,
                  const std::vector<std::pair<uint64_t, uint32_t>>& writes,
                  const std::vector<uint64_t>& zeros, const std::string& name) {
  std::unique_ptr<revpatch::View> view;
  Check(revpatch::View::Open(below.base_path, below.tree_path, below.layer_paths, &view), "view");
  const std::string path = work_dir + "/" + name + ".layer";
  RemoveFile(path);
  std::unique_ptr<revpatch::LayerWriter> writer;
  Check(revpatch::LayerWriter::Create(path, target_size, view.get(), &writer), "layer " + name);
  const uint32_t bs = below.block_size;
  for (const auto& [block, tag] : writes) {
    const Bytes data = StampedBlocks(1, bs, tag);
    Check(writer->WriteBlock(block, data.data()), "write");
  }
  for (uint64_t block : zeros) Check(writer->WriteZeroBlock(block), "zero");
  Check(writer->Seal(nullptr, nullptr), "seal " + name);
  return ReadFileOrDie(path);
}

void LayerSeeds() {
  const Volume& base = GetVolume(VolumeId::kLayerBase);
  const Volume& stack = GetVolume(VolumeId::kLayerStack);
  const uint32_t bs = base.block_size;
  struct LayerSeed {
    const char* name;
    uint8_t flags;
    const Volume* below;
    uint64_t target_size;
    std::vector<std::pair<uint64_t, uint32_t>> writes;
    std::vector<uint64_t> zeros;
  };
  const LayerSeed seeds[] = {
      {"base_changed", 4, &base, base.size, {{2, 11}, {3, 12}, {7, 13}}, {5}},
      {"base_grown", 0, &base, base.size + 2 * bs + 10, {{16, 14}, {0, 15}}, {}},
      {"base_shrunk", 4, &base, base.size - 3 * bs - 300, {{1, 16}}, {2}},
      {"stack_changed", 2 | 4, &stack, stack.size, {{3, 17}, {9, 18}, {10, 19}}, {4}},
      {"stack_grown", 2, &stack, stack.size + 4 * bs, {{21, 20}}, {19}},
      {"stack_shrunk", 2, &stack, 12 * bs, {{11, 21}}, {}},
  };
  for (const LayerSeed& s : seeds) {
    FuzzInputWriter w;
    w.Put<uint8_t>(s.flags).PutBytes(SealedLayer(*s.below, s.target_size, s.writes, s.zeros, s.name));
    Seed("layer_fuzzer", s.name, w.bytes());
  }
}

// ------------------------------------------------------------ commit records

Bytes TrimmedSlot(const Bytes& file, size_t index) {
  const size_t start = index * revpatch::kCommitSlotSize;
  if (file.size() <= start || file[start] == 0) return {};  // never written
  const uint32_t body = revpatch::GetU32(file.data() + start + 12);
  return Slice(file, start, revpatch::kCommitSlotHeaderSize + body);
}

void CommitSeeds() {
  const std::string path = work_dir + "/commit.rec";
  RemoveFile(path);
  uint64_t generation = 0;
  const char* bodies[] = {"{\"patches\":[]}", "{\"patches\":[{\"id\":\"fix-1\",\"state\":\"staged\"}]}",
                          "{\"patches\":[{\"id\":\"fix-1\",\"state\":\"trial\",\"boots\":1}]}"};
  for (int g = 0; g < 3; ++g) {
    Check(revpatch::WriteCommitRecord(path, generation, bodies[g], &generation), "commit");
    const Bytes file = ReadFileOrDie(path);
    const Bytes slot0 = TrimmedSlot(file, 0), slot1 = TrimmedSlot(file, 1);
    for (uint8_t flags : {uint8_t{0}, uint8_t{2 | 4}}) {
      FuzzInputWriter w;
      w.Put<uint8_t>(flags).Put<uint16_t>(static_cast<uint16_t>(slot0.size()));
      w.PutBytes(slot0).PutBytes(slot1);
      Seed("commit_record_fuzzer",
           "generation" + std::to_string(generation) + (flags ? "_then_write" : ""), w.bytes());
    }
  }
}

// An ELF64 laid out as LLD does: R, RX and two RW PT_LOADs at four biases,
// RELRO ending in .relro_padding (NOBITS, sharing .data's file offset),
// .bss; a RELATIVE entry, calls and a pointer to predict. `shift` moves
// the writable segments (a relinked version); `machine` 62 or 183.
Bytes LldElf(uint64_t shift, uint16_t machine) {
  Bytes e(0x2200 + 9 * 64, 0);
  const uint8_t ident[] = {0x7F, 'E', 'L', 'F', 2, 1, 1};
  std::memcpy(e.data(), ident, sizeof(ident));
  e[16] = 3;
  e[18] = static_cast<uint8_t>(machine);
  e[19] = static_cast<uint8_t>(machine >> 8);
  revpatch::PutU64(&e[32], 64);
  revpatch::PutU64(&e[40], 0x2200);
  e[54] = 56;
  e[56] = 4;
  e[58] = 64;
  e[60] = 9;
  e[62] = 8;
  const uint64_t loads[4][5] = {{4, 0, 0, 0x1000, 0x1000},
                                {5, 0x1000, 0x2000, 0x1000, 0x1000},
                                {6, 0x2000, 0x4000 + shift, 0x100, 0x1000},
                                {6, 0x2100, 0x5100 + shift, 0x80, 0x200}};
  for (size_t i = 0; i < 4; ++i) {
    uint8_t* p = &e[64 + 56 * i];
    revpatch::PutU32(p, 1);
    revpatch::PutU32(p + 4, static_cast<uint32_t>(loads[i][0]));
    revpatch::PutU64(p + 8, loads[i][1]);
    revpatch::PutU64(p + 16, loads[i][2]);
    revpatch::PutU64(p + 32, loads[i][3]);
    revpatch::PutU64(p + 40, loads[i][4]);
  }
  const char names[] =
      "\0.rela.dyn\0.rodata\0.text\0.data.rel.ro\0.relro_padding\0.data\0.bss\0.shstrtab";
  std::memcpy(&e[0x2180], names, sizeof(names));
  const uint64_t sh[9][6] = {{0, 0, 0, 0, 0, 0},
                             {1, 4, 2, 0x400, 0x400, 0x30},
                             {11, 1, 2, 0x800, 0x800, 0x100},
                             {19, 1, 6, 0x2000, 0x1000, 0x1000},
                             {25, 1, 3, 0x4000 + shift, 0x2000, 0x100},
                             {38, 8, 3, 0x4100 + shift, 0x2100, 0xF00},
                             {53, 1, 3, 0x5100 + shift, 0x2100, 0x80},
                             {59, 8, 3, 0x5180 + shift, 0x2180, 0x180},
                             {64, 3, 0, 0, 0x2180, sizeof(names)}};
  for (size_t i = 0; i < 9; ++i) {
    uint8_t* p = &e[0x2200 + 64 * i];
    revpatch::PutU32(p, static_cast<uint32_t>(sh[i][0]));
    revpatch::PutU32(p + 4, static_cast<uint32_t>(sh[i][1]));
    revpatch::PutU64(p + 8, sh[i][2]);
    revpatch::PutU64(p + 16, sh[i][3]);
    revpatch::PutU64(p + 24, sh[i][4]);
    revpatch::PutU64(p + 32, sh[i][5]);
  }
  revpatch::PutU64(&e[0x400], 0x4010 + shift);  // RELATIVE: r_offset, r_info, r_addend
  revpatch::PutU64(&e[0x408], machine == 183 ? 1027 : 8);
  revpatch::PutU64(&e[0x410], 0x5108 + shift);
  for (uint64_t at = 0x1000; at + 5 <= 0x2000; at += 40) {
    if (machine == 183) {
      revpatch::PutU32(&e[at], 0x94000000u | static_cast<uint32_t>((0x2000 - at) / 4 + 4));  // BL
    } else {
      e[at] = 0xE8;
      revpatch::PutU32(&e[at + 1], static_cast<uint32_t>(0x5100 + shift - (0x2000 + at - 0x1000 + 5)));
    }
  }
  revpatch::PutU64(&e[0x2008], 0x5190 + shift);
  return e;
}

void ElfSeeds() {
  for (uint16_t machine : {uint16_t{62}, uint16_t{183}}) {
    // An executable at block 1 of each view; the new one relinked.
    Bytes old_view(4096, 0), new_view(4096, 0);
    const Bytes old_elf = LldElf(0, machine), new_elf = LldElf(0x3000, machine);
    old_view.insert(old_view.end(), old_elf.begin(), old_elf.end());
    new_view.insert(new_view.end(), new_elf.begin(), new_elf.end());
    const std::string arch = machine == 62 ? "x86_64" : "arm64";
    FuzzInputWriter w;
    w.Put<uint8_t>(0).Put<uint8_t>(6).Put<uint32_t>(static_cast<uint32_t>(old_view.size()));
    w.PutBytes(old_view).PutBytes(new_view);
    Seed("elf_fuzzer", "lld_relinked_" + arch, w.bytes());
    // The generated info's encoding, decoded as a fuzzed part.
    std::vector<revpatch::Executable> o, n;
    revpatch::FindExecutables(revpatch::MemoryByteSource(old_view.data(), old_view.size()), 4096, &o);
    revpatch::FindExecutables(revpatch::MemoryByteSource(new_view.data(), new_view.size()), 4096, &n);
    revpatch::ReferenceInfo info;
    revpatch::BuildAddressReferences(o, n, &info);
    Bytes part;
    revpatch::EncodeReferenceInfo(info, &part);
    FuzzInputWriter r;
    r.Put<uint8_t>(1).Put<uint8_t>(6).Put<uint32_t>(static_cast<uint32_t>(old_view.size()));
    r.PutBytes(old_view).PutBytes(part);
    Seed("elf_fuzzer", "reference_part_" + arch, r.bytes());
  }
}

void MachOPeSeeds() {
  // Modes 1 and 2 (block size 4096): the harness builds the image, no patches.
  for (uint8_t hash_type : {uint8_t{0}, uint8_t{1}}) {
    FuzzInputWriter w;
    w.Put<uint8_t>(1 | 3 << 2).Put<uint8_t>(3).Put<uint8_t>(hash_type);
    Seed("macho_pe_fuzzer", hash_type ? "macho_sha256_truncated" : "macho_sha256", w.bytes());
  }
  for (uint8_t arm64 : {uint8_t{0}, uint8_t{1}}) {
    FuzzInputWriter w;
    w.Put<uint8_t>(2 | 3 << 2).Put<uint8_t>(3).Put<uint8_t>(arm64);
    Seed("macho_pe_fuzzer", arm64 ? "pe_arm64" : "pe_x86_64", w.bytes());
  }
  // Mode 3: one run of 512-byte pages over a 4 KiB buffer laid out by two
  // extents of 512-byte blocks.
  revpatch::PageDigests run;
  run.pages = 0;
  run.limit = 1500;
  run.slots = 2048;
  run.page_shift = 9;
  run.hash_size = 32;
  run.count = 3;
  Bytes runs;
  revpatch::EncodePageDigests({run}, &runs);
  FuzzInputWriter w;
  w.Put<uint8_t>(3).Put<uint16_t>(static_cast<uint16_t>(runs.size())).PutBytes(runs);
  w.Put<uint8_t>(9).Put<uint8_t>(2).Put<uint8_t>(0).Put<uint8_t>(3).Put<uint8_t>(4).Put<uint8_t>(5);
  Bytes buffer(4096);
  for (size_t i = 0; i < buffer.size(); ++i) buffer[i] = static_cast<uint8_t>(i * 7);
  w.PutBytes(buffer);
  Seed("macho_pe_fuzzer", "page_digest_runs", w.bytes());
}

// ------------------------------------------------------------ deflate

Bytes ReadFixture(const std::string& name) {
  return ReadFileOrDie(std::string(REVPATCH_TEST_DATA_DIR) + "/" + name);
}

void DeflateSeed(const std::string& name, const Bytes& stream) {
  FuzzInputWriter e;
  e.Put<uint8_t>(0).Put<uint32_t>(1u << 22).PutBytes(stream);
  Seed("deflate_fuzzer", "expand_" + name, e.bytes());
  Bytes expanded;
  Check(revpatch::DeflateExpand(stream.data(), stream.size(), 1u << 22, &expanded), "expand " + name);
  FuzzInputWriter r;
  r.Put<uint8_t>(1).Put<uint32_t>(static_cast<uint32_t>(stream.size())).PutBytes(expanded);
  Seed("deflate_fuzzer", "rebuild_" + name, r.bytes());
}

void DeflateSeeds() {
  for (const char* name : {"apache2-gzip1.gz", "ms-2.1.3.tgz"}) {
    const Bytes file = ReadFixture(name);
    FuzzInputWriter s;
    s.Put<uint8_t>(2).PutBytes(file);
    Seed("deflate_fuzzer", std::string("scan_") + name, s.bytes());
    std::vector<revpatch::FoundStream> found;
    revpatch::FindDeflateStreams(file.data(), file.size(), &found);
    if (found.size() != 1) CheckFailed(__FILE__, __LINE__, std::string("no stream in ") + name);
    DeflateSeed(name, Slice(file, found[0].offset, found[0].length));
  }
  // A stored block then a fixed block: 'a', 258 as 284 + 31 at distance 1,
  // end of block, padding bits set.
  const Bytes stored_then_fixed = {0x00, 0x03, 0x00, 0xFC, 0xFF, 'x',  'y',
                                   'z',  0x4B, 0x1C, 0xF9, 0x00, 0xF0};
  DeflateSeed("stored_then_fixed", stored_then_fixed);
}

}  // namespace
}  // namespace revpatch_fuzz

int main(int argc, char** argv) {
  using namespace revpatch_fuzz;
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_corpus OUT_DIR\n");
    return 2;
  }
  out_dir = argv[1];
  work_dir = ScratchDir();
  OperationSeeds();
  DiffSeeds();
  PayloadSeeds();
  LayerSeeds();
  CommitSeeds();
  ElfSeeds();
  MachOPeSeeds();
  DeflateSeeds();
  std::printf("seeds written to %s\n", out_dir.c_str());
  return 0;
}
