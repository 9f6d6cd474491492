#include "export.h"

#include <algorithm>
#include <vector>

#include "file_io.h"

namespace revpatch {
namespace {

constexpr size_t kChunkBytes = size_t{4} << 20;

class Exporter {
 public:
  Exporter(View& view, File* out,
           const std::function<void(uint64_t, uint64_t)>& progress)
      : view_(view),
        out_(out),
        progress_(progress),
        bs_(view.block_size()),
        size_(view.size_bytes()),
        chunk_blocks_(std::max<size_t>(1, kChunkBytes / view.block_size())),
        buffer_(chunk_blocks_ * bs_) {}

  // Writes blocks [first, first + count) of the view at their place in the
  // image, clipped to the view's size.
  Status WriteRun(uint64_t first, uint64_t count) {
    REVPATCH_RETURN_IF_ERROR(view_.ReadBlocks(first, count, buffer_.data()));
    const uint64_t offset = first * bs_;
    const uint64_t bytes = std::min<uint64_t>(count * bs_, size_ - offset);
    REVPATCH_RETURN_IF_ERROR(out_->WriteAt(offset, buffer_.data(), bytes));
    written_ += bytes;
    return Status::Ok();
  }

  // The whole view, sequentially.
  Status Copy() {
    const uint64_t blocks = view_.block_count();
    Report(0, size_);
    for (uint64_t b = 0; b < blocks; b += chunk_blocks_) {
      REVPATCH_RETURN_IF_ERROR(WriteRun(b, std::min<uint64_t>(chunk_blocks_, blocks - b)));
      Report(written_, size_);
    }
    return out_->Truncate(size_);
  }

  // Over a clone of the base: the size, then every block a layer holds, in
  // runs of consecutive blocks.
  Status Overlay() {
    REVPATCH_RETURN_IF_ERROR(out_->Truncate(size_));
    const std::vector<uint64_t> changed = view_.ChangedBlocks();
    const uint64_t total = changed.size() * uint64_t{bs_};
    Report(0, total);
    for (size_t i = 0; i < changed.size();) {
      size_t run = 1;
      while (i + run < changed.size() && run < chunk_blocks_ &&
             changed[i + run] == changed[i] + run) {
        ++run;
      }
      REVPATCH_RETURN_IF_ERROR(WriteRun(changed[i], run));
      i += run;
      Report(i * uint64_t{bs_}, total);
    }
    return Status::Ok();
  }

  uint64_t written() const { return written_; }

 private:
  void Report(uint64_t done, uint64_t total) {
    if (progress_) progress_(std::min(done, total), total);
  }

  View& view_;
  File* out_;
  const std::function<void(uint64_t, uint64_t)>& progress_;
  const uint32_t bs_;
  const uint64_t size_;
  const size_t chunk_blocks_;
  std::vector<uint8_t> buffer_;
  uint64_t written_ = 0;
};

Status ExportInto(View& view, File* out, ExportMode mode,
                  const std::function<void(uint64_t, uint64_t)>& progress,
                  ExportResult* result) {
  Exporter exporter(view, out, progress);
  bool reflinked = false;
  if (mode != ExportMode::kCopy) {
    Status s = CloneFile(view.base_file(), out);
    if (s.ok()) {
      reflinked = true;
    } else if (s.code() != ErrorCode::kUnsupported || mode == ExportMode::kReflink) {
      return s;
    }
  }
  REVPATCH_RETURN_IF_ERROR(reflinked ? exporter.Overlay() : exporter.Copy());
  REVPATCH_RETURN_IF_ERROR(out->FullSync());
  result->reflinked = reflinked;
  result->base_verified = !reflinked && view.verify_reads();
  result->bytes_written = exporter.written();
  result->size_bytes = view.size_bytes();
  return Status::Ok();
}

}  // namespace

Status ExportView(View& view, const std::string& out_path, ExportMode mode,
                  const std::function<void(uint64_t, uint64_t)>& progress,
                  ExportResult* result) {
  const std::string temp = TempPathFor(out_path);
  File out;
  REVPATCH_RETURN_IF_ERROR(File::CreateNew(temp, &out));
  ExportResult res;
  Status s = ExportInto(view, &out, mode, progress, &res);
  if (s.ok()) s = out.Close();
  if (s.ok()) s = RenameFile(temp, out_path);
  if (!s.ok()) {
    out.Close();
    UnlinkFile(temp);
    return s;
  }
  REVPATCH_RETURN_IF_ERROR(SyncDirectory(DirName(out_path)));
  if (result != nullptr) *result = res;
  return Status::Ok();
}

}  // namespace revpatch
