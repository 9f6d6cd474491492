// Export: the view written out as one complete image file.
//
// Where the filesystem can share extents the base is cloned in O(1)
// (FICLONE on Linux, clonefile on macOS) and only the blocks the layers hold
// are written over it; elsewhere every byte is copied. Either way the image
// is written to "<out>.tmp-<random>", fsynced, renamed over `out`, and the
// directory fsynced; on failure the temporary file is removed and `out` is
// untouched.
#ifndef REVPATCH_ENGINE_EXPORT_H_
#define REVPATCH_ENGINE_EXPORT_H_

#include <cstdint>
#include <functional>
#include <string>

#include "status.h"
#include "view.h"

namespace revpatch {

// Every block export reads comes through the view's verified reads, so a
// bad block fails the export (kCorrupt, temp file removed, `out` untouched).
// A reflink export clones the base without reading it: the base blocks no
// layer covers are then not checked, which base_verified says (false), so
// the caller can tell the user to scrub (`revpatch verify`).
struct ExportResult {
  bool reflinked = false;      // the base was cloned, not copied
  bool base_verified = false;  // every base block written was read and checked
  uint64_t bytes_written = 0;  // bytes actually written (not cloned)
  uint64_t size_bytes = 0;
};

enum class ExportMode { kAuto, kCopy, kReflink };  // kReflink: fail if not possible

// progress(done, total) is called from the calling thread now and then.
Status ExportView(View& view, const std::string& out_path, ExportMode mode,
                  const std::function<void(uint64_t, uint64_t)>& progress,
                  ExportResult* result);

}  // namespace revpatch

#endif  // REVPATCH_ENGINE_EXPORT_H_
