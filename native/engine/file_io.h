// Thin POSIX file layer. Every open, read, write, fsync, truncate, rename,
// unlink, clone and directory sync of the engine goes through these
// functions, and each of them is one "I/O call" of the fault injector
// (fault_injection.h), which the tests use to fail the Nth call or cut the
// power there.
//
// Durability rules (docs/durability.md): FullSync() is fsync(2) on Linux and
// fcntl(F_FULLFSYNC) on macOS (falling back to fsync only where the
// filesystem refuses F_FULLFSYNC as unsupported; an I/O error from it is an
// I/O error). An fsync error is never retried: a File whose FullSync failed
// is poisoned and refuses every later write, truncate, clone and sync with
// kPoisoned, since the kernel may already have dropped the dirty pages it
// could not write and a later "successful" fsync would prove nothing.
#ifndef REVPATCH_ENGINE_FILE_IO_H_
#define REVPATCH_ENGINE_FILE_IO_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "status.h"

namespace revpatch {

// Owns a file descriptor; closes it on destruction.
class File {
 public:
  File() = default;
  explicit File(int fd) : fd_(fd) {}
  ~File();
  File(File&& other) noexcept;  // the poison moves with the descriptor
  File& operator=(File&& other) noexcept;
  File(const File&) = delete;
  File& operator=(const File&) = delete;

  static Status OpenRead(const std::string& path, File* out);
  // O_RDWR | O_CREAT | O_EXCL, mode 0644.
  static Status CreateNew(const std::string& path, File* out);
  // O_RDWR | O_CREAT | O_TRUNC, mode 0644.
  static Status CreateTruncate(const std::string& path, File* out);
  // O_RDWR on an existing file.
  static Status OpenReadWrite(const std::string& path, File* out);

  bool valid() const { return fd_ >= 0; }
  int fd() const { return fd_; }
  // Gives up ownership without closing.
  int Release();
  // A second descriptor for the same open file (dup(2), close-on-exec): the
  // same file offset and the same record of write-back errors, so a
  // FullSync through it reports every error this one would. For syncing on
  // one thread while another writes. Not an I/O call of the fault injector
  // (nothing on disk changes). A poisoned File's copy is poisoned too.
  Status Duplicate(File* out) const;

  // Reads exactly `size` bytes at `offset`; EOF before that is kCorrupt.
  Status ReadAt(uint64_t offset, void* data, size_t size) const;
  // Reads up to `size` bytes; *got < size only at EOF.
  Status ReadSomeAt(uint64_t offset, void* data, size_t size, size_t* got) const;
  // Writes exactly `size` bytes at `offset` (loops over short writes).
  Status WriteAt(uint64_t offset, const void* data, size_t size);
  Status Size(uint64_t* size) const;
  // The first offset >= `offset` that may hold data: bytes in between are a
  // hole and read as zeros. Where the filesystem cannot tell (no
  // SEEK_DATA, or it refuses), returns `offset` itself; past the last data,
  // returns `size`.
  Status NextData(uint64_t offset, uint64_t size, uint64_t* data) const;
  Status Truncate(uint64_t size);
  // On failure the File is poisoned (see above); Close() still works.
  Status FullSync();
  // The data and only the metadata needed to read it back (fdatasync(2);
  // on macOS F_FULLFSYNC, since its fdatasync leaves the drive cache alone).
  // For overwrites inside the file's current size, such as a commit record
  // slot: when the size or the allocation changed since the last FullSync,
  // use FullSync. Counts as a sync for the fault injector; poisons like it.
  Status DataSync();
  // Reserves disk space for [offset, offset + length) without changing the
  // file size (Linux fallocate FALLOC_FL_KEEP_SIZE, macOS F_PREALLOCATE), so
  // a long write fails with kNoSpace before it starts rather than halfway,
  // and the file is laid out in few extents. kUnsupported where the system
  // or the filesystem cannot; nothing the file reads changes either way.
  // Not an I/O call of the fault injector (no content changes).
  Status Reserve(uint64_t offset, uint64_t length);
  // Gives back what Reserve() allocated past the file's end: `size` must
  // be the file's size (kInvalidArgument otherwise), `reserved_end` where
  // the reservations ended. For a writer that reserved ahead and wrote
  // less. Linux truncates to the same size (ext4 frees blocks past the end
  // so) and punches the range (XFS, btrfs); elsewhere there is nothing to
  // do (macOS frees unused F_PREALLOCATE space when the file is closed).
  // Like Reserve, not an I/O call of the fault injector: the contents and
  // the size never change, and a failure is for the caller to ignore.
  Status ReleaseReserved(uint64_t size, uint64_t reserved_end);
  // Access hints for one pass over a big range (hashing, export): read ahead
  // aggressively; and drop pages already read or written and synced from
  // the page cache, so a pass over a whole image does not evict everything
  // else. posix_fadvise where it exists, F_RDAHEAD/F_NOCACHE on macOS;
  // hints only: they never fail and never change what is read.
  void AdviseSequential(uint64_t offset, uint64_t length) const;
  void DropCache(uint64_t offset, uint64_t length) const;
  // Starts writing [offset, offset + length) back to the disk and returns
  // without waiting for it (Linux sync_file_range SYNC_FILE_RANGE_WRITE;
  // nothing elsewhere). A hint too: it makes nothing durable, only FullSync
  // does, and it never fails. A writer that will FullSync a large file
  // calls it as it goes, so the disk writes while the CPU works and the
  // FullSync has little left to wait for, instead of all of it at the end.
  void StartWriteback(uint64_t offset, uint64_t length) const;
  Status Close();
  bool poisoned() const { return poisoned_; }
  // kInvalidArgument on a closed File, kPoisoned on a poisoned one: the
  // check every write, truncate, clone into and sync makes first.
  Status CheckWritable(const char* what) const;

 private:
  int fd_ = -1;
  bool poisoned_ = false;
};

Status RenameFile(const std::string& from, const std::string& to);
Status UnlinkFile(const std::string& path);  // ENOENT is not an error.
// Opens the directory and fsyncs it (F_FULLFSYNC on macOS): makes the
// creates, renames and unlinks in it durable. One I/O call.
Status SyncDirectory(const std::string& dir);
std::string DirName(const std::string& path);
bool FileExists(const std::string& path);
// "<path>.tmp-<random hex>": a sibling name for write-then-rename; the
// caller creates it with CreateNew (O_EXCL), so a collision is kExists.
std::string TempPathFor(const std::string& path);

// Makes `dst` share `src`'s extents: FICLONE on Linux, fclonefileat /
// clonefile on macOS. kUnsupported where the filesystem cannot (EXDEV,
// EOPNOTSUPP, EINVAL, ENOTTY) so the caller falls back to copying.
Status CloneFile(const File& src, File* dst);
// FICLONERANGE on Linux; kUnsupported elsewhere or where refused.
Status CloneRange(const File& src, uint64_t src_offset, File* dst,
                  uint64_t dst_offset, uint64_t length);

// Free bytes for an unprivileged writer on the filesystem holding `path`.
Status FreeSpace(const std::string& path, uint64_t* bytes);

}  // namespace revpatch

#endif  // REVPATCH_ENGINE_FILE_IO_H_
