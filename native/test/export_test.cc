#include "../engine/export.h"

#include <cstdio>
#include <map>
#include <memory>
#include <string>

#include "../engine/layer_file.h"
#include "../engine/view.h"
#include "storage_test_util.h"
#include "testing.h"

using revpatch::Digest;
using revpatch::ErrorCode;
using revpatch::ExportMode;
using revpatch::ExportResult;
using revpatch::ExportView;
using revpatch::LayerWriter;
using revpatch::Status;
using revpatch::View;
using revpatch_test::Bytes;

namespace {

constexpr uint32_t kBs = 4096;

// A base and two layers (one changes blocks, one grows into a partial block)
// and the image they compose.
struct Setup {
  std::string dir;
  Bytes model;
  std::unique_ptr<View> view;

  Setup() : dir(revpatch_test::TempDir()) {
    Status s = Build();
    if (!s.ok()) revpatch_test::Fail(__FILE__, __LINE__, s.ToString());
  }
  ~Setup() {
    view.reset();
    revpatch_test::RemoveDir(dir);
  }

  Status Build() {
    model = revpatch_test::StampedImage(300 * kBs + 123, 0, kBs);
    revpatch_test::WriteBytes(dir + "/base", model);
    Digest d{};
    REVPATCH_RETURN_IF_ERROR(
        revpatch::HashImage(dir + "/base", kBs, dir + "/base.tree", &d, nullptr));
    std::vector<std::string> layers;
    REVPATCH_RETURN_IF_ERROR(View::Open(dir + "/base", dir + "/base.tree", layers, &view));
    const std::map<uint64_t, uint32_t> changes[2] = {
        {{0, 1}, {1, 1}, {2, 1}, {100, 1}, {299, 1}, {300, 1}},
        {{2, 2}, {150, 2}, {151, 2}, {320, 2}}};
    const uint64_t sizes[2] = {300 * kBs + 123, 330 * kBs + 5};
    for (int i = 0; i < 2; ++i) {
      const std::string path = dir + "/layer" + std::to_string(i);
      std::unique_ptr<LayerWriter> w;
      REVPATCH_RETURN_IF_ERROR(LayerWriter::Create(path, sizes[i], view.get(), &w));
      model.resize(sizes[i], 0);
      uint8_t block[kBs];
      for (const auto& c : changes[i]) {
        revpatch_test::Stamp(c.first, c.second, kBs, block);
        REVPATCH_RETURN_IF_ERROR(w->WriteBlock(c.first, block));
        const uint64_t off = c.first * kBs;
        std::copy(block, block + std::min<uint64_t>(kBs, model.size() - off),
                  model.begin() + off);
      }
      REVPATCH_RETURN_IF_ERROR(w->Seal(nullptr, &d));
      layers.push_back(path);
      REVPATCH_RETURN_IF_ERROR(View::Open(dir + "/base", dir + "/base.tree", layers, &view));
    }
    return Status::Ok();
  }
};

}  // namespace

TEST(copy_export_equals_the_composed_image_byte_for_byte) {
  Setup s;
  ASSERT_TRUE(s.view != nullptr);
  const std::string out = s.dir + "/out.img";
  ASSERT_TRUE(revpatch_test::WriteBytes(out, Bytes(10, 0x11)));  // replaced
  uint64_t last_done = 0, last_total = 0, calls = 0;
  ExportResult result;
  ASSERT_OK(ExportView(*s.view, out, ExportMode::kCopy,
                       [&](uint64_t done, uint64_t total) {
                         EXPECT_TRUE(done >= last_done && done <= total);
                         last_done = done;
                         last_total = total;
                         ++calls;
                       },
                       &result));
  EXPECT_TRUE(!result.reflinked);
  EXPECT_EQ(result.size_bytes, s.model.size());
  EXPECT_EQ(result.bytes_written, s.model.size());
  EXPECT_TRUE(calls >= 2 && last_done == last_total && last_total == s.model.size());
  EXPECT_TRUE(revpatch_test::ReadBytes(out) == s.model);
  Digest d{};
  ASSERT_OK(revpatch::HashImage(out, kBs, "", &d, nullptr));
  EXPECT_TRUE(d == s.view->digest());
}

TEST(reflink_export_or_a_clear_skip_and_auto_still_works) {
  Setup s;
  ASSERT_TRUE(s.view != nullptr);
  const std::string out = s.dir + "/reflink.img";
  ExportResult result;
  Status st = ExportView(*s.view, out, ExportMode::kReflink, nullptr, &result);
  if (st.code() == ErrorCode::kUnsupported) {
    std::printf("  skipped: no reflink on this filesystem (%s)\n", st.message().c_str());
    EXPECT_TRUE(!revpatch::FileExists(out));
  } else {
    ASSERT_OK(st);
    EXPECT_TRUE(result.reflinked);
    EXPECT_TRUE(result.bytes_written < s.model.size() / 4);
    EXPECT_TRUE(revpatch_test::ReadBytes(out) == s.model);
  }
  const std::string auto_out = s.dir + "/auto.img";
  ASSERT_OK(ExportView(*s.view, auto_out, ExportMode::kAuto, nullptr, &result));
  EXPECT_TRUE(revpatch_test::ReadBytes(auto_out) == s.model);
  std::printf("  auto export: %s, %llu bytes written\n",
              result.reflinked ? "reflinked" : "copied",
              static_cast<unsigned long long>(result.bytes_written));
}

TEST(failed_export_leaves_no_temporary_and_keeps_the_old_file) {
  Setup s;
  ASSERT_TRUE(s.view != nullptr);
  ExportResult result;
  EXPECT_CODE(ExportView(*s.view, s.dir + "/no/such/dir/out.img", ExportMode::kCopy,
                         nullptr, &result),
              ErrorCode::kNotFound);
  // A target that is a directory: the rename fails after the copy.
  const std::string target = s.dir + "/target";
  ASSERT_TRUE(::mkdir(target.c_str(), 0755) == 0);
  ASSERT_TRUE(revpatch_test::WriteBytes(target + "/keep", Bytes(3, 1)));
  const size_t before = revpatch_test::CountEntries(s.dir);
  Status st = ExportView(*s.view, target, ExportMode::kCopy, nullptr, &result);
  EXPECT_TRUE(!st.ok());
  EXPECT_EQ(revpatch_test::CountEntries(s.dir), before);
  EXPECT_EQ(revpatch_test::CountEntries(target), 1u);
  revpatch_test::RemoveDir(target);
}

TEST(export_of_a_shrunk_view_and_of_an_empty_view) {
  Setup s;
  ASSERT_TRUE(s.view != nullptr);
  std::unique_ptr<LayerWriter> w;
  const std::string path = s.dir + "/shrink";
  ASSERT_OK(LayerWriter::Create(path, 10 * kBs + 1, s.view.get(), &w));
  Digest d{};
  ASSERT_OK(w->Seal(nullptr, &d));
  std::unique_ptr<View> v;
  ASSERT_OK(View::Open(s.dir + "/base", s.dir + "/base.tree",
                       {s.dir + "/layer0", s.dir + "/layer1", path}, &v));
  s.model.resize(10 * kBs + 1);
  ExportResult result;
  for (ExportMode mode : {ExportMode::kCopy, ExportMode::kAuto}) {
    ASSERT_OK(ExportView(*v, s.dir + "/small.img", mode, nullptr, &result));
    EXPECT_TRUE(revpatch_test::ReadBytes(s.dir + "/small.img") == s.model);
  }
  const std::string empty = s.dir + "/empty";
  ASSERT_OK(LayerWriter::Create(empty, 0, v.get(), &w));
  ASSERT_OK(w->Seal(nullptr, &d));
  ASSERT_OK(View::Open(s.dir + "/base", s.dir + "/base.tree",
                       {s.dir + "/layer0", s.dir + "/layer1", path, empty}, &v));
  ASSERT_OK(ExportView(*v, s.dir + "/empty.img", ExportMode::kAuto, nullptr, &result));
  EXPECT_EQ(revpatch_test::FileSizeOf(s.dir + "/empty.img"), 0u);
}
