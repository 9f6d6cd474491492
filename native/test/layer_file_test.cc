#include "../engine/layer_file.h"

#include <sys/stat.h>

#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "../engine/fault_injection.h"
#include "../engine/view.h"
#include "storage_test_util.h"
#include "testing.h"

using revpatch::Digest;
using revpatch::ErrorCode;
using revpatch::LayerReader;
using revpatch::LayerWriter;
using revpatch::View;
using revpatch_test::Bytes;

namespace {

constexpr uint32_t kBs = 512;

struct Fixture {
  std::string dir;
  Bytes base;
  std::unique_ptr<View> view;

  explicit Fixture(uint64_t size) : dir(revpatch_test::TempDir()) {
    base = revpatch_test::StampedImage(size, 0, kBs);
    revpatch_test::WriteBytes(dir + "/base", base);
    Digest d{};
    revpatch::Status s = revpatch::HashImage(dir + "/base", kBs, dir + "/base.tree", &d, nullptr);
    if (s.ok()) s = View::Open(dir + "/base", dir + "/base.tree", {}, &view);
    if (!s.ok()) revpatch_test::Fail(__FILE__, __LINE__, s.ToString());
  }
  ~Fixture() { revpatch_test::RemoveDir(dir); }
};

// Writes blocks `changed` stamped with tag 1 into a new layer at `path`
// and seals it; `model` gets the same change.
revpatch::Status MakeLayer(Fixture& f, const std::string& path,
                           const std::vector<uint64_t>& changed, Bytes* model,
                           Digest* digest) {
  std::unique_ptr<LayerWriter> w;
  REVPATCH_RETURN_IF_ERROR(LayerWriter::Create(path, f.base.size(), f.view.get(), &w));
  uint8_t block[kBs];
  for (uint64_t b : changed) {
    revpatch_test::Stamp(b, 1, kBs, block);
    REVPATCH_RETURN_IF_ERROR(w->WriteBlock(b, block));
    std::copy(block, block + kBs, model->begin() + b * kBs);
  }
  const Digest want = revpatch_test::DigestOf(f.dir, *model, kBs);
  return w->Seal(&want, digest);
}

// Opens the sealed layer at `path` and checks every stored block.
revpatch::Status OpenAndVerify(const std::string& path) {
  std::unique_ptr<LayerReader> r;
  REVPATCH_RETURN_IF_ERROR(LayerReader::Open(path, &r));
  return r->Verify();
}

}  // namespace

TEST(write_seal_read_and_verify) {
  Fixture f(64 * kBs);
  Bytes model = f.base;
  Digest digest{};
  const std::string path = f.dir + "/layer";
  ASSERT_OK(MakeLayer(f, path, {9, 3, 40, 41, 42, 63}, &model, &digest));
  EXPECT_TRUE(revpatch::IsSealedLayer(path));
  std::unique_ptr<LayerReader> r;
  ASSERT_OK(LayerReader::Open(path, &r));
  EXPECT_EQ(r->block_size(), kBs);
  EXPECT_EQ(r->target_size(), f.base.size());
  EXPECT_TRUE(r->view_digest() == digest);
  EXPECT_TRUE(r->below_digest() == f.view->digest());
  EXPECT_EQ(r->block_entries(), 6u);
  EXPECT_TRUE(r->Blocks() == (std::vector<uint64_t>{3, 9, 40, 41, 42, 63}));
  ASSERT_OK(r->Verify());
  uint8_t block[kBs];
  bool found = false;
  ASSERT_OK(r->ReadBlock(41, block, &found));
  EXPECT_TRUE(found);
  EXPECT_TRUE(std::equal(block, block + kBs, model.begin() + 41 * kBs));
  ASSERT_OK(r->ReadBlock(4, block, &found));
  EXPECT_TRUE(!found);
  EXPECT_TRUE(r->HasBlock(63) && !r->HasBlock(62));
  Digest node{};
  EXPECT_TRUE(r->FindNode(0, 9, &node));
  EXPECT_TRUE(r->FindNode(6, 0, &node));  // the root of 64 leaves
  EXPECT_TRUE(!r->FindNode(1, 0, &node));
}

TEST(zero_blocks_are_stored_without_data) {
  Fixture f(16 * kBs);
  std::unique_ptr<LayerWriter> w;
  const std::string path = f.dir + "/layer";
  ASSERT_OK(LayerWriter::Create(path, f.base.size(), f.view.get(), &w));
  ASSERT_OK(w->WriteZeroBlock(5));
  ASSERT_OK(w->WriteZeroBlock(2));
  EXPECT_EQ(w->bytes_written(), 0u);
  EXPECT_EQ(w->blocks_written(), 2u);
  Bytes model = f.base;
  std::fill(model.begin() + 2 * kBs, model.begin() + 3 * kBs, 0);
  std::fill(model.begin() + 5 * kBs, model.begin() + 6 * kBs, 0);
  const Digest want = revpatch_test::DigestOf(f.dir, model, kBs);
  Digest got{};
  ASSERT_OK(w->Seal(&want, &got));
  std::unique_ptr<LayerReader> r;
  ASSERT_OK(LayerReader::Open(path, &r));
  ASSERT_OK(r->Verify());
  uint8_t block[kBs];
  bool found = false;
  ASSERT_OK(r->ReadBlock(5, block, &found));
  EXPECT_TRUE(found && std::all_of(block, block + kBs, [](uint8_t b) { return b == 0; }));
  EXPECT_TRUE(revpatch_test::FileSizeOf(path) < 3 * kBs);  // header block + index, nodes, footer; no data
}

TEST(unsealed_or_torn_file_is_refused) {
  Fixture f(32 * kBs);
  Bytes model = f.base;
  Digest digest{};
  const std::string path = f.dir + "/layer";
  ASSERT_OK(MakeLayer(f, path, {1, 2, 30}, &model, &digest));
  const Bytes good = revpatch_test::ReadBytes(path);
  std::unique_ptr<LayerReader> r;
  for (size_t cut : {size_t{1}, size_t{100}, size_t{168}, good.size() - kBs,
                     good.size() - 1}) {
    Bytes torn(good.begin(), good.end() - cut);
    ASSERT_TRUE(revpatch_test::WriteBytes(f.dir + "/torn", torn));
    EXPECT_CODE(LayerReader::Open(f.dir + "/torn", &r), ErrorCode::kCorrupt);
    EXPECT_TRUE(!revpatch::IsSealedLayer(f.dir + "/torn"));
  }
  // A layer whose Seal was refused stays unsealed, and Abort removes it.
  std::unique_ptr<LayerWriter> w;
  const std::string second = f.dir + "/second";
  ASSERT_OK(LayerWriter::Create(second, f.base.size(), f.view.get(), &w));
  uint8_t block[kBs] = {1};
  ASSERT_OK(w->WriteBlock(7, block));
  const Digest wrong{};
  EXPECT_CODE(w->Seal(&wrong, &digest), ErrorCode::kHashMismatch);
  EXPECT_TRUE(revpatch::FileExists(second));
  EXPECT_CODE(LayerReader::Open(second, &r), ErrorCode::kCorrupt);
  EXPECT_CODE(w->WriteBlock(8, block), ErrorCode::kInvalidArgument);
  w->Abort();
  w->Abort();
  EXPECT_TRUE(!revpatch::FileExists(second));
  // Destroying an unsealed writer removes its file too.
  ASSERT_OK(LayerWriter::Create(second, f.base.size(), f.view.get(), &w));
  w.reset();
  EXPECT_TRUE(!revpatch::FileExists(second));
}

TEST(any_flipped_byte_outside_the_data_is_refused) {
  Fixture f(32 * kBs);
  Bytes model = f.base;
  Digest digest{};
  const std::string path = f.dir + "/layer";
  ASSERT_OK(MakeLayer(f, path, {0, 4, 31}, &model, &digest));
  const Bytes good = revpatch_test::ReadBytes(path);
  const size_t data_end = kBs * 4;  // header block + three data blocks
  std::unique_ptr<LayerReader> r;
  size_t refused = 0, tried = 0;
  // Header fields, then every byte of index, nodes and footer.
  std::vector<size_t> offsets;
  for (size_t i = 0; i < 64; ++i) offsets.push_back(i);
  for (size_t i = data_end; i < good.size(); ++i) offsets.push_back(i);
  for (size_t offset : offsets) {
    Bytes bad = good;
    bad[offset] ^= 0x01;
    ASSERT_TRUE(revpatch_test::WriteBytes(f.dir + "/bad", bad));
    revpatch::Status s = LayerReader::Open(f.dir + "/bad", &r);
    ++tried;
    if (s.code() == ErrorCode::kCorrupt || s.code() == ErrorCode::kUnsupported) ++refused;
  }
  EXPECT_EQ(refused, tried);
  // A flipped data byte passes Open but not Verify.
  Bytes bad = good;
  bad[kBs * 2 + 17] ^= 0x80;
  ASSERT_TRUE(revpatch_test::WriteBytes(f.dir + "/bad", bad));
  ASSERT_OK(LayerReader::Open(f.dir + "/bad", &r));
  EXPECT_CODE(r->Verify(), ErrorCode::kHashMismatch);
}

TEST(garbage_with_a_valid_footer_magic_never_crashes) {
  Fixture f(8 * kBs);
  Bytes model = f.base;
  Digest digest{};
  const std::string path = f.dir + "/layer";
  ASSERT_OK(MakeLayer(f, path, {1}, &model, &digest));
  const Bytes good = revpatch_test::ReadBytes(path);
  revpatch_test::Rng rng(5);
  std::unique_ptr<LayerReader> r;
  for (int round = 0; round < 300; ++round) {
    Bytes bad = good;
    // Random values in the footer's integer fields (offsets 8..135).
    const size_t footer = bad.size() - 168;
    for (int k = 0; k < 4; ++k) {
      const size_t at = footer + 8 + rng.Below(128);
      bad[at] = static_cast<uint8_t>(rng.Next());
      if (rng.Below(4) == 0) bad[at] = 0xff;
    }
    ASSERT_TRUE(revpatch_test::WriteBytes(f.dir + "/bad", bad));
    revpatch::Status s = LayerReader::Open(f.dir + "/bad", &r);
    EXPECT_TRUE(!s.ok() || bad == good);
  }
  Bytes noise(5000);
  for (auto& b : noise) b = static_cast<uint8_t>(rng.Next());
  ASSERT_TRUE(revpatch_test::WriteBytes(f.dir + "/noise", noise));
  EXPECT_CODE(LayerReader::Open(f.dir + "/noise", &r), ErrorCode::kCorrupt);
  ASSERT_TRUE(revpatch_test::WriteBytes(f.dir + "/empty", {}));
  EXPECT_CODE(LayerReader::Open(f.dir + "/empty", &r), ErrorCode::kCorrupt);
  EXPECT_CODE(LayerReader::Open(f.dir + "/missing", &r), ErrorCode::kNotFound);
}

TEST(duplicate_and_out_of_range_blocks_are_refused) {
  Fixture f(16 * kBs);
  std::unique_ptr<LayerWriter> w;
  ASSERT_OK(LayerWriter::Create(f.dir + "/layer", f.base.size(), f.view.get(), &w));
  uint8_t block[kBs] = {};
  ASSERT_OK(w->WriteBlock(3, block));
  ASSERT_OK(w->WriteBlock(10, block));
  ASSERT_OK(w->WriteBlock(5, block));  // out of order is fine
  EXPECT_CODE(w->WriteBlock(3, block), ErrorCode::kBadExtent);
  EXPECT_CODE(w->WriteBlock(10, block), ErrorCode::kBadExtent);
  EXPECT_CODE(w->WriteBlock(5, block), ErrorCode::kBadExtent);
  EXPECT_CODE(w->WriteZeroBlock(5), ErrorCode::kBadExtent);
  EXPECT_CODE(w->WriteBlock(16, block), ErrorCode::kBadExtent);
  EXPECT_CODE(w->WriteZeroBlock(~uint64_t{0}), ErrorCode::kBadExtent);
  EXPECT_EQ(w->blocks_written(), 3u);
  Digest d{};
  ASSERT_OK(w->Seal(nullptr, &d));
  EXPECT_CODE(w->WriteBlock(6, block), ErrorCode::kInvalidArgument);
  // A second layer at the same path is refused: layers are created new.
  std::unique_ptr<LayerWriter> again;
  EXPECT_CODE(LayerWriter::Create(f.dir + "/layer", f.base.size(), f.view.get(), &again),
              ErrorCode::kExists);
  EXPECT_CODE(LayerWriter::Create(f.dir + "/x", 0, nullptr, &again),
              ErrorCode::kInvalidArgument);
}

TEST(many_blocks_in_random_order_batch_into_large_writes) {
  Fixture f(3000 * kBs + 100);
  revpatch_test::Rng rng(11);
  std::vector<uint64_t> order;
  for (uint64_t b = 0; b < 3001; b += 1 + rng.Below(3)) order.push_back(b);
  for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng.Below(i)]);
  Bytes model = f.base;
  model.resize(3001 * kBs);
  Digest digest{};
  const std::string path = f.dir + "/layer";
  std::unique_ptr<LayerWriter> w;
  ASSERT_OK(LayerWriter::Create(path, f.base.size(), f.view.get(), &w));
  uint8_t block[kBs];
  for (uint64_t b : order) {
    revpatch_test::Stamp(b, 7, kBs, block);
    ASSERT_OK(w->WriteBlock(b, block));
    std::copy(block, block + kBs, model.begin() + b * kBs);
  }
  model.resize(f.base.size());
  const Digest want = revpatch_test::DigestOf(f.dir, model, kBs);
  ASSERT_OK(w->Seal(&want, &digest));
  std::unique_ptr<LayerReader> r;
  ASSERT_OK(LayerReader::Open(path, &r));
  EXPECT_EQ(r->block_entries(), order.size());
  ASSERT_OK(r->Verify());
}

// The same blocks through WriteBlocks runs and through WriteBlock one by
// one give byte-identical layer files: the same data offsets, leaves and
// index. Runs of odd and even length (leaves are hashed in pairs), longer
// than one write slice, and one ending at the partial last block.
TEST(write_blocks_runs_give_the_same_layer_as_block_by_block) {
  const uint64_t blocks = 5000;
  Fixture f(blocks * kBs - 100);
  Bytes image(blocks * kBs);
  for (uint64_t b = 0; b < blocks; ++b) revpatch_test::Stamp(b, 5, kBs, &image[b * kBs]);
  std::fill(image.end() - 100, image.end(), 0);  // past the target size: zeros
  const std::vector<std::pair<uint64_t, uint64_t>> runs = {
      {7, 1}, {100, 2}, {200, 3}, {1000, 2500}, {3600, 1}, {4000, 1000}};
  Digest by_run{}, by_block{};
  {
    std::unique_ptr<LayerWriter> w;
    ASSERT_OK(LayerWriter::Create(f.dir + "/runs", f.base.size(), f.view.get(), &w));
    for (const auto& r : runs) ASSERT_OK(w->WriteBlocks(r.first, r.second, kBs, &image[r.first * kBs]));
    ASSERT_OK(w->Seal(nullptr, &by_run));
  }
  {
    std::unique_ptr<LayerWriter> w;
    ASSERT_OK(LayerWriter::Create(f.dir + "/blocks", f.base.size(), f.view.get(), &w));
    for (const auto& r : runs) {
      for (uint64_t b = r.first; b < r.first + r.second; ++b) ASSERT_OK(w->WriteBlock(b, &image[b * kBs]));
    }
    ASSERT_OK(w->Seal(nullptr, &by_block));
  }
  EXPECT_TRUE(by_run == by_block);
  EXPECT_TRUE(revpatch_test::ReadBytes(f.dir + "/runs") == revpatch_test::ReadBytes(f.dir + "/blocks"));
  ASSERT_OK(OpenAndVerify(f.dir + "/runs"));
}

// Leaves given with the blocks (the read-ahead thread's) are taken as they
// are: with the true leaves the layer is byte-identical to hashing them
// here, the partial last block's leaf is made here whatever was given, and
// with a wrong leaf the view digest differs (Seal's check catches it).
TEST(write_hashed_blocks_with_the_true_leaves_gives_the_same_layer) {
  const uint64_t blocks = 700;
  Fixture f(blocks * kBs - 100);
  Bytes image(blocks * kBs);
  for (uint64_t b = 0; b < blocks; ++b) revpatch_test::Stamp(b, 9, kBs, &image[b * kBs]);
  std::fill(image.end() - 100, image.end(), 0);
  std::vector<Digest> leaves(blocks);
  revpatch::LeafHashes(image.data(), blocks, kBs, leaves.data());
  leaves.back() = Digest{};  // the partial last block's is recomputed
  Digest hashed{}, given{}, wrong{};
  auto write = [&](const std::string& name, bool give, Digest* digest) {
    std::unique_ptr<LayerWriter> w;
    ASSERT_OK(LayerWriter::Create(f.dir + "/" + name, f.base.size(), f.view.get(), &w));
    if (give) {
      ASSERT_OK(w->WriteHashedBlocks(0, 300, kBs, &image[0], &leaves[0]));
      ASSERT_OK(w->WriteHashedBlocks(300, blocks - 300, kBs, &image[300 * kBs], &leaves[300]));
    } else {
      ASSERT_OK(w->WriteBlocks(0, blocks, kBs, image.data()));
    }
    EXPECT_CODE(w->WriteHashedBlocks(0, 1, kBs, image.data(), nullptr),
                ErrorCode::kInvalidArgument);
    ASSERT_OK(w->Seal(nullptr, digest));
  };
  write("hashed", false, &hashed);
  write("given", true, &given);
  EXPECT_TRUE(hashed == given);
  EXPECT_TRUE(revpatch_test::ReadBytes(f.dir + "/hashed") == revpatch_test::ReadBytes(f.dir + "/given"));
  leaves[5][0] ^= 1;
  write("wrong", true, &wrong);
  EXPECT_TRUE(wrong != hashed);
}

// The writer reserves disk space ahead of its data; a sealed layer keeps
// none of it past its end.
TEST(a_sealed_layer_keeps_no_space_reserved_past_its_end) {
  const uint64_t blocks = 3000;  // 12 MB: past the first reservation step
  Fixture f(blocks * kBs);
  Bytes image(blocks * kBs);
  for (uint64_t b = 0; b < blocks; ++b) revpatch_test::Stamp(b, 11, kBs, &image[b * kBs]);
  std::unique_ptr<LayerWriter> w;
  const std::string path = f.dir + "/layer";
  ASSERT_OK(LayerWriter::Create(path, f.base.size(), f.view.get(), &w));
  ASSERT_OK(w->WriteBlocks(0, blocks, kBs, image.data()));
  Digest d{};
  ASSERT_OK(w->Seal(nullptr, &d));
  struct stat st;
  ASSERT_TRUE(::stat(path.c_str(), &st) == 0);
  const uint64_t allocated = static_cast<uint64_t>(st.st_blocks) * 512;
  EXPECT_TRUE(allocated < static_cast<uint64_t>(st.st_size) + (1u << 20));
  ASSERT_OK(OpenAndVerify(path));
}

TEST(write_blocks_stops_at_a_refused_block_after_writing_the_ones_before) {
  Fixture f(16 * kBs);
  std::unique_ptr<LayerWriter> w;
  ASSERT_OK(LayerWriter::Create(f.dir + "/layer", f.base.size(), f.view.get(), &w));
  Bytes data(8 * kBs, 0x5a);
  ASSERT_OK(w->WriteBlock(6, data.data()));
  // 3, 4, 5 are written, 6 is a duplicate: the run stops there.
  EXPECT_CODE(w->WriteBlocks(3, 5, kBs, data.data()), ErrorCode::kBadExtent);
  EXPECT_EQ(w->blocks_written(), 4u);
  EXPECT_CODE(w->WriteBlocks(14, 3, kBs, data.data()), ErrorCode::kBadExtent);  // 16 is past
  EXPECT_EQ(w->blocks_written(), 6u);
  EXPECT_CODE(w->WriteBlocks(0, 1, kBs * 2, data.data()), ErrorCode::kInvalidArgument);
  Digest d{};
  ASSERT_OK(w->Seal(nullptr, &d));
  std::unique_ptr<LayerReader> r;
  ASSERT_OK(LayerReader::Open(f.dir + "/layer", &r));
  EXPECT_TRUE(r->Blocks() == (std::vector<uint64_t>{3, 4, 5, 6, 14, 15}));
  ASSERT_OK(r->Verify());
}

// The checkpoint's way: flush, then fsync on another thread while this one
// goes on writing; the state saved at the flush resumes to the same layer.
TEST(sync_flushed_on_another_thread_while_writing_goes_on) {
  Fixture f(64 * kBs);
  Bytes model = f.base;
  std::unique_ptr<LayerWriter> w;
  ASSERT_OK(LayerWriter::Create(f.dir + "/layer", f.base.size(), f.view.get(), &w));
  EXPECT_CODE(w->SyncFlushed(), ErrorCode::kInvalidArgument);  // no Flush yet
  uint8_t block[kBs];
  for (uint64_t b = 0; b < 64; ++b) {
    revpatch_test::Stamp(b, 3, kBs, block);
    std::copy(block, block + kBs, model.begin() + b * kBs);
  }
  ASSERT_OK(w->WriteBlocks(0, 20, kBs, &model[0]));
  ASSERT_OK(w->Flush());
  revpatch::LayerWriterState state;
  w->SaveState(&state);
  revpatch::Status synced;
  std::thread syncer([&] { synced = w->SyncFlushed(); });
  for (uint64_t b = 20; b < 64; ++b) ASSERT_OK(w->WriteBlock(b, &model[b * kBs]));
  syncer.join();
  ASSERT_OK(synced);
  EXPECT_EQ(state.data_blocks, 20u);
  const Digest want = revpatch_test::DigestOf(f.dir, model, kBs);
  Digest digest{};
  ASSERT_OK(w->Seal(&want, &digest));
  ASSERT_OK(OpenAndVerify(f.dir + "/layer"));
}

TEST(a_failed_sync_flushed_poisons_the_writer) {
  Fixture f(16 * kBs);
  std::unique_ptr<LayerWriter> w;
  ASSERT_OK(LayerWriter::Create(f.dir + "/layer", f.base.size(), f.view.get(), &w));
  uint8_t block[kBs] = {1};
  ASSERT_OK(w->WriteBlock(1, block));
  ASSERT_OK(w->Flush());
  revpatch::FaultPlan plan;
  plan.mode = revpatch::FaultMode::kEio;
  plan.fail_at = 1;  // the fsync
  ASSERT_OK(revpatch::SetFaultPlan(plan));
  EXPECT_CODE(w->SyncFlushed(), ErrorCode::kIo);
  revpatch::ClearFaultPlan();
  EXPECT_CODE(w->WriteBlock(2, block), ErrorCode::kPoisoned);
  EXPECT_CODE(w->Flush(), ErrorCode::kPoisoned);
  Digest d{};
  EXPECT_CODE(w->Seal(nullptr, &d), ErrorCode::kPoisoned);
  w->Abort();
  EXPECT_TRUE(!revpatch::FileExists(f.dir + "/layer"));
}
