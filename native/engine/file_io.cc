#include "file_io.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <limits>
#include <cstring>
#include <random>
#include <utility>

#include "fault_injection.h"

#ifdef __linux__
#include <linux/falloc.h>
#include <linux/fs.h>
#endif
#ifdef __APPLE__
#include <sys/attr.h>
#include <sys/clonefile.h>
#include <sys/disk.h>
#include <sys/param.h>
#endif

namespace revpatch {
namespace {

#ifndef O_CLOEXEC
#define O_CLOEXEC 0
#endif

// Largest single read/write request; keeps each call well inside ssize_t and
// the limits some kernels put on one I/O.
constexpr size_t kMaxIoChunk = size_t{1} << 30;

// Not an I/O call of the fault injector: used inside calls that count once.
Status RawOpen(const std::string& path, int flags, int* out) {
  int fd;
  do {
    fd = ::open(path.c_str(), flags | O_CLOEXEC, 0644);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return Status::FromErrno(errno, "open " + path);
  *out = fd;
  return Status::Ok();
}

Status RawOpenFile(const std::string& path, int flags, File* out) {
  int fd = -1;
  REVPATCH_RETURN_IF_ERROR(RawOpen(path, flags, &fd));
  *out = File(fd);
  return Status::Ok();
}

// One counted open.
Status OpenWithFlags(const std::string& path, int flags, File* out) {
  if (!fault_internal::Armed()) return RawOpenFile(path, flags, out);
  int fd = -1;
  REVPATCH_RETURN_IF_ERROR(fault_internal::Open(
      path, flags, [&](int* opened) { return RawOpen(path, flags, opened); }, &fd));
  *out = File(fd);
  return Status::Ok();
}

bool OffsetFits(uint64_t offset, size_t size) {
  const uint64_t max_off = static_cast<uint64_t>(
      std::numeric_limits<off_t>::max());
  return offset <= max_off && size <= max_off - offset;
}

Status SyncFd(int fd, const std::string& what) {
#ifdef __APPLE__
  // F_FULLFSYNC asks the drive to flush its cache; some filesystems (network,
  // FAT) refuse it as unsupported, and then plain fsync is the best there
  // is. Any other failure is the flush failing: falling back to fsync then
  // would retry a failed sync and trust it.
  if (::fcntl(fd, F_FULLFSYNC) == 0) return Status::Ok();
  const int err = errno;
  if (err != ENOTSUP && err != EOPNOTSUPP && err != EINVAL && err != ENOTTY) {
    return Status::FromErrno(err, "F_FULLFSYNC " + what);
  }
#endif
  if (::fsync(fd) != 0) return Status::FromErrno(errno, "fsync " + what);
  return Status::Ok();
}

// fdatasync where POSIX synchronized I/O is there (Linux, the BSDs); the
// full sync elsewhere and always on macOS, where only F_FULLFSYNC reaches the
// medium.
Status DataSyncFd(int fd, const std::string& what) {
#if !defined(__APPLE__) && defined(_POSIX_SYNCHRONIZED_IO) && _POSIX_SYNCHRONIZED_IO > 0
  if (::fdatasync(fd) != 0) return Status::FromErrno(errno, "fdatasync " + what);
  return Status::Ok();
#else
  return SyncFd(fd, what);
#endif
}

Status RawWriteAt(int fd, uint64_t offset, const uint8_t* p, size_t size) {
  size_t done = 0;
  while (done < size) {
    size_t want = size - done;
    if (want > kMaxIoChunk) want = kMaxIoChunk;
    ssize_t n = ::pwrite(fd, p + done, want, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, "pwrite");
    }
    if (n == 0) return Status::FromErrno(ENOSPC, "pwrite wrote nothing");
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Status RawTruncate(int fd, uint64_t size) {
  int rc;
  do {
    rc = ::ftruncate(fd, static_cast<off_t>(size));
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) return Status::FromErrno(errno, "ftruncate");
  return Status::Ok();
}

Status RawSyncDirectory(const std::string& path) {
  int flags = O_RDONLY;
#ifdef O_DIRECTORY
  flags |= O_DIRECTORY;
#endif
  File d;
  REVPATCH_RETURN_IF_ERROR(RawOpenFile(path, flags, &d));
  REVPATCH_RETURN_IF_ERROR(SyncFd(d.fd(), "directory " + path));
  return d.Close();
}

bool IsUnsupportedCloneErrno(int err) {
  return err == EXDEV || err == EOPNOTSUPP || err == EINVAL || err == ENOTTY
#if defined(ENOTSUP) && ENOTSUP != EOPNOTSUPP
         || err == ENOTSUP
#endif
#ifdef ENOSYS
         || err == ENOSYS
#endif
      ;
}

}  // namespace

File::~File() {
  if (fd_ >= 0) ::close(fd_);
}

File::File(File&& other) noexcept : fd_(other.fd_), poisoned_(other.poisoned_) {
  other.fd_ = -1;
  other.poisoned_ = false;
}

File& File::operator=(File&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.fd_;
    poisoned_ = other.poisoned_;
    other.fd_ = -1;
    other.poisoned_ = false;
  }
  return *this;
}

Status File::CheckWritable(const char* what) const {
  if (fd_ < 0) {
    return Status(ErrorCode::kInvalidArgument, std::string(what) + " on closed file");
  }
  if (poisoned_) {
    return Status(ErrorCode::kPoisoned,
                  std::string(what) + " refused: an earlier fsync of this file failed");
  }
  return Status::Ok();
}

Status File::OpenRead(const std::string& path, File* out) {
  return OpenWithFlags(path, O_RDONLY, out);
}
Status File::CreateNew(const std::string& path, File* out) {
  return OpenWithFlags(path, O_RDWR | O_CREAT | O_EXCL, out);
}
Status File::CreateTruncate(const std::string& path, File* out) {
  return OpenWithFlags(path, O_RDWR | O_CREAT | O_TRUNC, out);
}
Status File::OpenReadWrite(const std::string& path, File* out) {
  return OpenWithFlags(path, O_RDWR, out);
}

int File::Release() {
  int fd = fd_;
  fd_ = -1;
  return fd;
}

Status File::Duplicate(File* out) const {
  if (fd_ < 0) return Status(ErrorCode::kInvalidArgument, "duplicate of a closed file");
  const int fd = ::fcntl(fd_, F_DUPFD_CLOEXEC, 0);
  if (fd < 0) return Status::FromErrno(errno, "dup");
  File copy(fd);
  copy.poisoned_ = poisoned_;
  *out = std::move(copy);
  return Status::Ok();
}

Status File::ReadSomeAt(uint64_t offset, void* data, size_t size,
                        size_t* got) const {
  *got = 0;
  if (fd_ < 0) return Status(ErrorCode::kInvalidArgument, "read on closed file");
  if (!OffsetFits(offset, size)) {
    return Status(ErrorCode::kTooLarge, "read offset out of range");
  }
  if (fault_internal::Armed()) REVPATCH_RETURN_IF_ERROR(fault_internal::Read());
  uint8_t* p = static_cast<uint8_t*>(data);
  size_t done = 0;
  while (done < size) {
    size_t want = size - done;
    if (want > kMaxIoChunk) want = kMaxIoChunk;
    ssize_t n = ::pread(fd_, p + done, want, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, "pread");
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  *got = done;
  return Status::Ok();
}

Status File::ReadAt(uint64_t offset, void* data, size_t size) const {
  size_t got = 0;
  REVPATCH_RETURN_IF_ERROR(ReadSomeAt(offset, data, size, &got));
  if (got != size) {
    return Status(ErrorCode::kCorrupt, "unexpected end of file at offset " +
                                           std::to_string(offset + got));
  }
  return Status::Ok();
}

Status File::WriteAt(uint64_t offset, const void* data, size_t size) {
  REVPATCH_RETURN_IF_ERROR(CheckWritable("write"));
  if (!OffsetFits(offset, size)) {
    return Status(ErrorCode::kTooLarge, "write offset out of range");
  }
  const uint8_t* p = static_cast<const uint8_t*>(data);
  if (!fault_internal::Armed()) return RawWriteAt(fd_, offset, p, size);
  const int fd = fd_;
  return fault_internal::Write(fd, offset, size,
                               [=](size_t n) { return RawWriteAt(fd, offset, p, n); });
}

Status File::NextData(uint64_t offset, uint64_t size, uint64_t* data) const {
  *data = offset;
#if defined(SEEK_DATA)
  if (offset >= size) return Status::Ok();
  const off_t found = lseek(fd_, static_cast<off_t>(offset), SEEK_DATA);
  if (found >= 0) {
    *data = std::min<uint64_t>(static_cast<uint64_t>(found), size);
  } else if (errno == ENXIO) {
    *data = size;  // nothing but a hole up to the end
  }
  // Any other error: the filesystem cannot say, so treat it all as data.
#else
  (void)size;
#endif
  return Status::Ok();
}

Status File::Size(uint64_t* size) const {
  struct stat st;
  if (::fstat(fd_, &st) != 0) return Status::FromErrno(errno, "fstat");
  if (S_ISBLK(st.st_mode)) {
    // A base volume may be a block device, whose st_size is 0.
#if defined(__linux__) && defined(BLKGETSIZE64)
    uint64_t bytes = 0;
    if (::ioctl(fd_, BLKGETSIZE64, &bytes) != 0) {
      return Status::FromErrno(errno, "BLKGETSIZE64");
    }
    *size = bytes;
    return Status::Ok();
#elif defined(__APPLE__)
    uint32_t block_size = 0;
    uint64_t block_count = 0;
    if (::ioctl(fd_, DKIOCGETBLOCKSIZE, &block_size) != 0 ||
        ::ioctl(fd_, DKIOCGETBLOCKCOUNT, &block_count) != 0) {
      return Status::FromErrno(errno, "DKIOCGETBLOCKCOUNT");
    }
    *size = block_count * block_size;
    return Status::Ok();
#endif
  }
  *size = static_cast<uint64_t>(st.st_size);
  return Status::Ok();
}

Status File::Truncate(uint64_t size) {
  REVPATCH_RETURN_IF_ERROR(CheckWritable("truncate"));
  if (size > static_cast<uint64_t>(std::numeric_limits<off_t>::max())) {
    return Status(ErrorCode::kTooLarge, "truncate size out of range");
  }
  if (!fault_internal::Armed()) return RawTruncate(fd_, size);
  const int fd = fd_;
  return fault_internal::Truncate(fd, size, [=] { return RawTruncate(fd, size); });
}

Status File::FullSync() {
  REVPATCH_RETURN_IF_ERROR(CheckWritable("sync"));
  const int fd = fd_;
  Status s = fault_internal::Armed()
                 ? fault_internal::Sync(fd, [=] { return SyncFd(fd, "file"); })
                 : SyncFd(fd, "file");
  if (!s.ok()) poisoned_ = true;
  return s;
}

Status File::DataSync() {
  REVPATCH_RETURN_IF_ERROR(CheckWritable("sync"));
  const int fd = fd_;
  Status s = fault_internal::Armed()
                 ? fault_internal::Sync(fd, [=] { return DataSyncFd(fd, "file"); })
                 : DataSyncFd(fd, "file");
  if (!s.ok()) poisoned_ = true;
  return s;
}

Status File::Reserve(uint64_t offset, uint64_t length) {
  REVPATCH_RETURN_IF_ERROR(CheckWritable("reserve"));
  if (length == 0) return Status::Ok();
  if (!OffsetFits(offset, static_cast<size_t>(0)) ||
      length > static_cast<uint64_t>(std::numeric_limits<off_t>::max()) - offset) {
    return Status(ErrorCode::kTooLarge, "reserve range out of range");
  }
#if defined(__linux__) && defined(_GNU_SOURCE) && defined(FALLOC_FL_KEEP_SIZE)
  // fallocate(2) is Linux's own call; posix_fallocate would change the size
  // (and emulates by writing zeros where the filesystem cannot allocate).
  int rc;
  do {
    rc = ::fallocate(fd_, FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                     static_cast<off_t>(length));
  } while (rc != 0 && errno == EINTR);
  if (rc == 0) return Status::Ok();
  const int err = errno;
  if (err == EOPNOTSUPP || err == ENOSYS || err == EINVAL) {
    return Status(ErrorCode::kUnsupported, std::string("fallocate: ") + std::strerror(err));
  }
  if (err == EFBIG) return Status(ErrorCode::kTooLarge, "fallocate: file too large");
  return Status::FromErrno(err, "fallocate");
#elif defined(__APPLE__) && defined(F_PREALLOCATE)
  // F_PREALLOCATE allocates past the physical end of the file and never
  // moves the logical size: ask for what lies beyond the current size,
  // contiguous if the volume can, else in any extents.
  uint64_t size = 0;
  REVPATCH_RETURN_IF_ERROR(Size(&size));
  const uint64_t end = offset + length;
  if (end <= size) return Status::Ok();
  fstore_t store;
  std::memset(&store, 0, sizeof(store));
  store.fst_flags = F_ALLOCATECONTIG | F_ALLOCATEALL;
  store.fst_posmode = F_PEOFPOSMODE;
  store.fst_offset = 0;
  store.fst_length = static_cast<off_t>(end - size);
  if (::fcntl(fd_, F_PREALLOCATE, &store) == 0) return Status::Ok();
  store.fst_flags = F_ALLOCATEALL;
  if (::fcntl(fd_, F_PREALLOCATE, &store) == 0) return Status::Ok();
  const int err = errno;
  if (err == ENOTSUP || err == EOPNOTSUPP || err == EINVAL) {
    return Status(ErrorCode::kUnsupported, std::string("F_PREALLOCATE: ") + std::strerror(err));
  }
  return Status::FromErrno(err, "F_PREALLOCATE");
#else
  (void)offset;
  return Status(ErrorCode::kUnsupported, "space reservation not available");
#endif
}

Status File::ReleaseReserved(uint64_t size, uint64_t reserved_end) {
  REVPATCH_RETURN_IF_ERROR(CheckWritable("release reserved space"));
  if (reserved_end <= size) return Status::Ok();
  if (!OffsetFits(reserved_end, static_cast<size_t>(0))) {
    return Status(ErrorCode::kTooLarge, "reserved range out of range");
  }
#if defined(__linux__) && defined(_GNU_SOURCE) && defined(FALLOC_FL_PUNCH_HOLE)
  // ext4 frees blocks past the end on a truncate to the same size (and
  // ignores a punch there); XFS and btrfs free them on the punch. The
  // truncate must not move the end, so the size is checked first.
  uint64_t current = 0;
  REVPATCH_RETURN_IF_ERROR(Size(&current));
  if (current != size) {
    return Status(ErrorCode::kInvalidArgument, "release reserved space: not the file's size");
  }
  REVPATCH_RETURN_IF_ERROR(RawTruncate(fd_, size));
  int rc;
  do {
    rc = ::fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                     static_cast<off_t>(size), static_cast<off_t>(reserved_end - size));
  } while (rc != 0 && errno == EINTR);
  if (rc == 0) return Status::Ok();
  const int err = errno;
  if (err == EOPNOTSUPP || err == ENOSYS || err == EINVAL) {
    return Status(ErrorCode::kUnsupported, std::string("fallocate: ") + std::strerror(err));
  }
  return Status::FromErrno(err, "fallocate");
#else
  return Status::Ok();
#endif
}

void File::AdviseSequential(uint64_t offset, uint64_t length) const {
  if (fd_ < 0) return;
#if defined(POSIX_FADV_SEQUENTIAL)
  if (OffsetFits(offset, 0) && length <= static_cast<uint64_t>(
                                             std::numeric_limits<off_t>::max())) {
    (void)::posix_fadvise(fd_, static_cast<off_t>(offset),
                          static_cast<off_t>(length), POSIX_FADV_SEQUENTIAL);
  }
#elif defined(__APPLE__) && defined(F_RDAHEAD)
  (void)offset;
  (void)length;
  (void)::fcntl(fd_, F_RDAHEAD, 1);
#else
  (void)offset;
  (void)length;
#endif
}

void File::DropCache(uint64_t offset, uint64_t length) const {
  if (fd_ < 0) return;
#if defined(POSIX_FADV_DONTNEED)
  // Dirty pages are not dropped (the kernel writes them back first or skips
  // them), so this is safe before a sync too; it is just cheaper after one.
  if (OffsetFits(offset, 0) && length <= static_cast<uint64_t>(
                                             std::numeric_limits<off_t>::max())) {
    (void)::posix_fadvise(fd_, static_cast<off_t>(offset),
                          static_cast<off_t>(length), POSIX_FADV_DONTNEED);
  }
#else
  // macOS has no per-range drop (F_NOCACHE would change every later call).
  (void)offset;
  (void)length;
#endif
}

void File::StartWriteback(uint64_t offset, uint64_t length) const {
  if (fd_ < 0 || length == 0) return;
#if defined(__linux__) && defined(SYNC_FILE_RANGE_WRITE)
  if (OffsetFits(offset, 0) && length <= static_cast<uint64_t>(
                                             std::numeric_limits<off_t>::max())) {
    (void)::sync_file_range(fd_, static_cast<off_t>(offset), static_cast<off_t>(length),
                            SYNC_FILE_RANGE_WRITE);
  }
#else
  // Elsewhere the kernel's own writeback, then FullSync, do it all.
  (void)offset;
  (void)length;
#endif
}

Status File::Close() {
  if (fd_ < 0) return Status::Ok();
  int fd = fd_;
  fd_ = -1;
  // close() is not retried on EINTR: the descriptor is gone either way.
  if (::close(fd) != 0 && errno != EINTR) return Status::FromErrno(errno, "close");
  return Status::Ok();
}

Status RenameFile(const std::string& from, const std::string& to) {
  auto raw = [&] {
    if (::rename(from.c_str(), to.c_str()) != 0) {
      return Status::FromErrno(errno, "rename " + from + " -> " + to);
    }
    return Status::Ok();
  };
  return fault_internal::Armed() ? fault_internal::Rename(from, to, raw) : raw();
}

Status UnlinkFile(const std::string& path) {
  auto raw = [&] {
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      return Status::FromErrno(errno, "unlink " + path);
    }
    return Status::Ok();
  };
  return fault_internal::Armed() ? fault_internal::Unlink(path, raw) : raw();
}

Status SyncDirectory(const std::string& dir) {
  const std::string path = dir.empty() ? "." : dir;
  if (!fault_internal::Armed()) return RawSyncDirectory(path);
  return fault_internal::SyncDir(path, [&] { return RawSyncDirectory(path); });
}

std::string DirName(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

bool FileExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

std::string TempPathFor(const std::string& path) {
  static std::atomic<uint64_t> counter{0};
  static thread_local std::mt19937_64 rng = [] {
    std::random_device rd;
    std::seed_seq seq{rd(), rd(), rd(), rd(),
                      static_cast<unsigned>(::getpid())};
    return std::mt19937_64(seq);
  }();
  const uint64_t value = rng() ^ (counter.fetch_add(1) * 0x9e3779b97f4a7c15ULL);
  static const char kHex[] = "0123456789abcdef";
  std::string suffix(16, '0');
  for (int i = 0; i < 16; ++i) suffix[i] = kHex[(value >> (4 * i)) & 15];
  return path + ".tmp-" + suffix;
}

namespace {

Status RawCloneFile(const File& src, File* dst) {
#if defined(__linux__) && defined(FICLONE)
  if (::ioctl(dst->fd(), FICLONE, src.fd()) == 0) return Status::Ok();
  const int err = errno;
  if (IsUnsupportedCloneErrno(err)) {
    return Status(ErrorCode::kUnsupported,
                  std::string("FICLONE: ") + std::strerror(err));
  }
  return Status::FromErrno(err, "FICLONE");
#elif defined(__APPLE__)
  // clonefile needs a destination that does not exist yet: find dst's path,
  // replace the (empty) file by a clone of src, and reopen it.
  char path[MAXPATHLEN];
  if (::fcntl(dst->fd(), F_GETPATH, path) != 0) {
    return Status::FromErrno(errno, "F_GETPATH");
  }
  uint64_t size = 0;
  REVPATCH_RETURN_IF_ERROR(dst->Size(&size));
  if (size != 0) {
    return Status(ErrorCode::kInvalidArgument, "clone destination not empty");
  }
  if (::unlink(path) != 0) return Status::FromErrno(errno, "unlink clone target");
  if (::fclonefileat(src.fd(), AT_FDCWD, path, 0) != 0) {
    const int err = errno;
    File recreated;
    REVPATCH_RETURN_IF_ERROR(RawOpenFile(path, O_RDWR | O_CREAT | O_EXCL, &recreated));
    *dst = std::move(recreated);
    if (IsUnsupportedCloneErrno(err) || err == ENOTSUP) {
      return Status(ErrorCode::kUnsupported,
                    std::string("fclonefileat: ") + std::strerror(err));
    }
    return Status::FromErrno(err, "fclonefileat");
  }
  File reopened;
  REVPATCH_RETURN_IF_ERROR(RawOpenFile(path, O_RDWR, &reopened));
  *dst = std::move(reopened);
  return Status::Ok();
#else
  (void)src;
  (void)dst;
  return Status(ErrorCode::kUnsupported, "file cloning not available");
#endif
}

Status RawCloneRange(const File& src, uint64_t src_offset, File* dst,
                     uint64_t dst_offset, uint64_t length) {
#if defined(__linux__) && defined(FICLONERANGE)
  struct file_clone_range range;
  std::memset(&range, 0, sizeof(range));
  range.src_fd = src.fd();
  range.src_offset = src_offset;
  range.src_length = length;
  range.dest_offset = dst_offset;
  if (::ioctl(dst->fd(), FICLONERANGE, &range) == 0) return Status::Ok();
  const int err = errno;
  if (IsUnsupportedCloneErrno(err)) {
    return Status(ErrorCode::kUnsupported,
                  std::string("FICLONERANGE: ") + std::strerror(err));
  }
  return Status::FromErrno(err, "FICLONERANGE");
#else
  (void)src;
  (void)src_offset;
  (void)dst;
  (void)dst_offset;
  (void)length;
  return Status(ErrorCode::kUnsupported, "range cloning not available");
#endif
}

}  // namespace

Status CloneFile(const File& src, File* dst) {
  REVPATCH_RETURN_IF_ERROR(dst->CheckWritable("clone"));
  if (!fault_internal::Armed()) return RawCloneFile(src, dst);
  return fault_internal::Clone(dst->fd(), 0, ~uint64_t{0},
                               [&] { return RawCloneFile(src, dst); });
}

Status CloneRange(const File& src, uint64_t src_offset, File* dst,
                  uint64_t dst_offset, uint64_t length) {
  REVPATCH_RETURN_IF_ERROR(dst->CheckWritable("clone"));
  if (!fault_internal::Armed()) {
    return RawCloneRange(src, src_offset, dst, dst_offset, length);
  }
  return fault_internal::Clone(dst->fd(), dst_offset, length, [&] {
    return RawCloneRange(src, src_offset, dst, dst_offset, length);
  });
}

Status FreeSpace(const std::string& path, uint64_t* bytes) {
  struct statvfs st;
  if (::statvfs(path.c_str(), &st) != 0) {
    return Status::FromErrno(errno, "statvfs " + path);
  }
  *bytes = static_cast<uint64_t>(st.f_bavail) * static_cast<uint64_t>(st.f_frsize);
  return Status::Ok();
}

}  // namespace revpatch
