#include "fault_injection.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <utility>
#include <vector>

#include "file_io.h"

namespace revpatch {
namespace fault_internal {
std::atomic<bool> g_armed{false};
}  // namespace fault_internal

namespace {

#ifndef O_CLOEXEC
#define O_CLOEXEC 0
#endif

constexpr uint64_t kSectorBytes = 512;

enum class IoCall { kOpen, kRead, kWrite, kSync, kTruncate, kRename, kUnlink, kClone, kSyncDir };

const char* CallName(IoCall call) {
  switch (call) {
    case IoCall::kOpen: return "open";
    case IoCall::kRead: return "read";
    case IoCall::kWrite: return "write";
    case IoCall::kSync: return "fsync";
    case IoCall::kTruncate: return "truncate";
    case IoCall::kRename: return "rename";
    case IoCall::kUnlink: return "unlink";
    case IoCall::kClone: return "clone";
    case IoCall::kSyncDir: return "directory sync";
  }
  return "?";
}

using FileKey = std::pair<uint64_t, uint64_t>;  // st_dev, st_ino

bool KeyOf(int fd, FileKey* key, uint64_t* size) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return false;
  *key = {static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino)};
  if (size != nullptr) *size = static_cast<uint64_t>(st.st_size);
  return true;
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

std::string Canonical(const std::string& dir) {
  char resolved[PATH_MAX];
  const std::string path = dir.empty() ? "." : dir;
  if (::realpath(path.c_str(), resolved) == nullptr) return path;
  return resolved;
}

std::string DirOf(const std::string& path) { return Canonical(DirName(path)); }

bool PreadAll(int fd, uint64_t offset, uint8_t* data, size_t size) {
  size_t done = 0;
  while (done < size) {
    ssize_t n = ::pread(fd, data + done, size - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

bool PwriteAll(int fd, uint64_t offset, const uint8_t* data, size_t size) {
  size_t done = 0;
  while (done < size) {
    ssize_t n = ::pwrite(fd, data + done, size - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

bool CopyPath(const std::string& from, const std::string& to) {
  const int in = ::open(from.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) return false;
  const int out = ::open(to.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (out < 0) {
    ::close(in);
    return false;
  }
  std::vector<uint8_t> buf(size_t{1} << 20);
  bool ok = true;
  for (uint64_t offset = 0;;) {
    ssize_t n = ::pread(in, buf.data(), buf.size(), static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) ok = false;
    if (n <= 0) break;
    if (!PwriteAll(out, offset, buf.data(), static_cast<size_t>(n))) {
      ok = false;
      break;
    }
    offset += static_cast<uint64_t>(n);
  }
  ::close(in);
  if (::close(out) != 0) ok = false;
  return ok;
}

Status Broken(const std::string& what) {
  return Status::FromErrno(errno, "power-loss simulator: " + what);
}

// A file an unlink or a rename removed from the namespace, kept in the
// simulator's directory until the power cut decides its fate.
struct Backup {
  std::string path;     // empty: nothing saved
  bool copied = false;  // a copy (another inode), not a hard link
  FileKey key{};        // the inode saved
};

struct Undo {
  enum class Kind { kData, kCreate, kRename, kUnlink };
  Kind kind = Kind::kData;
  bool durable = false;
  // kData: [offset, end) changed; old_bytes holds [offset, min(end, old_size)).
  FileKey key{};
  uint64_t offset = 0;
  uint64_t end = 0;
  uint64_t old_size = 0;
  std::vector<uint8_t> old_bytes;
  bool tearable = false;
  // Namespace changes: a create of `path`, a rename `path` -> `to`, an
  // unlink of `path`; durable once every directory in `dirs` is synced.
  std::string path;
  std::string to;
  Backup backup;
  std::set<std::string> dirs;
};

class Simulator {
 public:
  std::mutex mu;

  bool armed() const { return armed_; }
  const FaultPlan& plan() const { return plan_; }
  uint64_t calls() const { return calls_; }
  bool triggered() const { return triggered_; }

  Status Arm(const FaultPlan& plan) {
    Discard();
    plan_ = plan;
    calls_ = 0;
    triggered_ = false;
    short_pending_ = false;
    rng_.seed(plan.seed);
    if (PowerMode()) {
      const char* base = std::getenv("TMPDIR");
      std::string templ = std::string(base != nullptr && *base != 0 ? base : "/tmp") +
                          "/revpatch-power-loss-XXXXXX";
      if (::mkdtemp(&templ[0]) == nullptr) {
        const int err = errno;
        plan_ = FaultPlan();
        return Status::FromErrno(err, "power-loss simulator: mkdtemp " + templ);
      }
      backup_dir_ = templ;
    }
    armed_ = true;
    fault_internal::g_armed.store(true, std::memory_order_relaxed);
    return Status::Ok();
  }

  void Disarm() {
    Discard();
    armed_ = false;
    plan_ = FaultPlan();
    calls_ = 0;
    triggered_ = false;
    fault_internal::g_armed.store(false, std::memory_order_relaxed);
  }

  bool PowerMode() const {
    return plan_.mode == FaultMode::kPowerLoss || plan_.mode == FaultMode::kPowerLossTorn;
  }
  // Whether calls that reach the disk must be logged for undo.
  bool Tracking() const { return armed_ && PowerMode() && !triggered_; }

  // Counts the call and decides its fate; non-OK: fail it untouched.
  Status Decide(IoCall call) {
    ++calls_;
    const std::string where =
        " at I/O call " + std::to_string(calls_) + " (" + CallName(call) + ")";
    switch (plan_.mode) {
      case FaultMode::kNone:
        break;
      case FaultMode::kEio:
      case FaultMode::kEnospc:
        if (calls_ == plan_.fail_at) {
          triggered_ = true;
          return Status::FromErrno(plan_.mode == FaultMode::kEio ? EIO : ENOSPC,
                                   "injected fault" + where);
        }
        break;
      case FaultMode::kShortWrite:
        if (!triggered_ && calls_ >= plan_.fail_at && call == IoCall::kWrite) {
          triggered_ = true;
          short_pending_ = true;
        }
        break;
      case FaultMode::kPowerLoss:
      case FaultMode::kPowerLossTorn:
        if (triggered_ || calls_ >= plan_.fail_at) {
          triggered_ = true;
          return Status(ErrorCode::kIo, "simulated power loss" + where);
        }
        break;
    }
    return Status::Ok();
  }

  // Bytes of a `size`-byte write to let through: all of them, or a short
  // prefix if this write is the planned short write.
  size_t WriteLimit(size_t size, bool* short_write) {
    *short_write = short_pending_;
    short_pending_ = false;
    if (!*short_write) return size;
    return size > 1 ? static_cast<size_t>(1 + rng_() % (size - 1)) : 0;
  }

  // Logs the old bytes of [offset, end) of the file behind `fd` (and its
  // size) before they change.
  Status SaveData(int fd, uint64_t offset, uint64_t end, bool tearable, Undo** entry) {
    const int mode = ::fcntl(fd, F_GETFL);
    if (mode >= 0 && (mode & O_ACCMODE) == O_RDONLY) {
      *entry = nullptr;  // the write will fail with EBADF; nothing changes
      return Status::Ok();
    }
    Undo e;
    e.kind = Undo::Kind::kData;
    uint64_t size = 0;
    if (!KeyOf(fd, &e.key, &size)) return Broken("fstat");
    if (files_.count(e.key) == 0) {
      const int dup = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
      if (dup < 0) return Broken("dup");
      files_[e.key] = dup;
    }
    e.offset = offset;
    e.end = end;
    e.old_size = size;
    e.tearable = tearable;
    if (offset < size) {
      e.old_bytes.resize(static_cast<size_t>(std::min(end, size) - offset));
      if (!PreadAll(fd, offset, e.old_bytes.data(), e.old_bytes.size())) {
        return Broken("save old bytes");
      }
    }
    log_.push_back(std::move(e));
    *entry = &log_.back();
    return Status::Ok();
  }

  // O_TRUNC on an existing file: the whole old content is at stake.
  Status SaveBeforeTruncatingOpen(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) return Status::Ok();  // the real open fails the same way
    uint64_t size = 0;
    FileKey key;
    Undo* entry = nullptr;
    Status s = KeyOf(fd, &key, &size) ? SaveData(fd, 0, size, false, &entry)
                                      : Broken("fstat");
    ::close(fd);
    return s;
  }

  void LogNamespace(Undo::Kind kind, const std::string& path, const std::string& to,
                    Backup backup) {
    Undo e;
    e.kind = kind;
    e.path = path;
    e.to = to;
    e.backup = std::move(backup);
    e.dirs.insert(DirOf(path));
    if (!to.empty()) e.dirs.insert(DirOf(to));
    log_.push_back(std::move(e));
  }

  Status MakeBackup(const std::string& path, Backup* out) {
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0) return Status::Ok();  // nothing to save
    Backup b;
    b.key = {static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino)};
    b.path = backup_dir_ + "/" + std::to_string(++backup_counter_);
    if (::link(path.c_str(), b.path.c_str()) != 0) {
      if (!CopyPath(path, b.path)) {
        ::unlink(b.path.c_str());
        return Broken("back up " + path);
      }
      b.copied = true;
    }
    *out = std::move(b);
    return Status::Ok();
  }

  static void DropBackup(Backup* b) {
    if (!b->path.empty()) ::unlink(b->path.c_str());
    b->path.clear();
  }

  void MarkFileSynced(int fd) {
    FileKey key;
    if (!KeyOf(fd, &key, nullptr)) return;
    for (Undo& e : log_) {
      if (e.kind == Undo::Kind::kData && e.key == key && !e.durable) {
        e.durable = true;
        std::vector<uint8_t>().swap(e.old_bytes);
      }
    }
  }

  void MarkDirectorySynced(const std::string& dir) {
    const std::string canonical = Canonical(dir);
    for (Undo& e : log_) {
      if (e.kind == Undo::Kind::kData || e.durable) continue;
      e.dirs.erase(canonical);
      if (e.dirs.empty()) {
        e.durable = true;
        DropBackup(&e.backup);
      }
    }
  }

  Status Recover() {
    if (!armed_ || !PowerMode()) {
      return Status(ErrorCode::kInvalidArgument, "no power-loss plan is armed");
    }
    triggered_ = true;
    Status result;
    for (size_t i = log_.size(); i-- > 0;) {
      Undo& e = log_[i];
      if (e.durable) continue;
      Status s = UndoOne(&e);
      if (!s.ok() && result.ok()) result = s;
    }
    Disarm();
    return result;
  }

 private:
  Status UndoOne(Undo* e) {
    switch (e->kind) {
      case Undo::Kind::kData:
        return UndoData(*e);
      case Undo::Kind::kCreate:
        if (Exists(e->path) && ::unlink(e->path.c_str()) != 0) {
          return Broken("remove " + e->path);
        }
        return Status::Ok();
      case Undo::Kind::kRename:
        if (Exists(e->to) && ::rename(e->to.c_str(), e->path.c_str()) != 0) {
          return Broken("rename back " + e->to);
        }
        return RestoreBackup(&e->backup, e->to);
      case Undo::Kind::kUnlink:
        return RestoreBackup(&e->backup, e->path);
    }
    return Status::Ok();
  }

  Status RestoreBackup(Backup* b, const std::string& dest) {
    if (b->path.empty()) return Status::Ok();
    if (Exists(dest)) {  // a later change that survived owns the name
      DropBackup(b);
      return Status::Ok();
    }
    if (!b->copied) {
      if (::rename(b->path.c_str(), dest.c_str()) != 0) return Broken("restore " + dest);
      b->path.clear();
      return Status::Ok();
    }
    // A copy is another inode: older undo records of the file must now
    // reach the restored copy.
    if (!CopyPath(b->path, dest)) return Broken("restore " + dest);
    DropBackup(b);
    auto it = files_.find(b->key);
    if (it != files_.end()) {
      const int fd = ::open(dest.c_str(), O_RDWR | O_CLOEXEC);
      if (fd < 0) return Broken("reopen " + dest);
      ::close(it->second);
      it->second = fd;
    }
    return Status::Ok();
  }

  Status UndoData(const Undo& e) {
    auto it = files_.find(e.key);
    if (it == files_.end()) return Status::Ok();
    const int fd = it->second;
    FileKey key;
    uint64_t current = 0;
    if (!KeyOf(fd, &key, &current)) return Broken("fstat");
    // Which parts of [offset, end) lose their new bytes.
    std::vector<std::pair<uint64_t, uint64_t>> undone;
    uint64_t kept_end = 0;
    if (plan_.mode == FaultMode::kPowerLossTorn && e.tearable) {
      for (uint64_t sector = e.offset - e.offset % kSectorBytes; sector < e.end;
           sector += kSectorBytes) {
        const uint64_t lo = std::max(sector, e.offset);
        const uint64_t hi = std::min(sector + kSectorBytes, e.end);
        if (rng_() & 1) {
          kept_end = hi;
        } else {
          undone.push_back({lo, hi});
        }
      }
    } else {
      undone.push_back({e.offset, e.end});
    }
    // Bytes past `end` belong to later changes that survived (or were there
    // before); otherwise the file ends where the old file or a kept sector
    // ended.
    const uint64_t size = current > e.end ? current : std::max(e.old_size, kept_end);
    if (size != current && ::ftruncate(fd, static_cast<off_t>(size)) != 0) {
      return Broken("restore size");
    }
    std::vector<uint8_t> bytes;
    for (const auto& range : undone) {
      const uint64_t lo = range.first;
      const uint64_t hi = std::min(range.second, size);
      if (lo >= hi) continue;
      bytes.assign(static_cast<size_t>(hi - lo), 0);
      if (lo < e.old_size) {
        const uint64_t from_old = std::min(hi, e.old_size) - lo;
        std::memcpy(bytes.data(), e.old_bytes.data() + (lo - e.offset),
                    static_cast<size_t>(from_old));
      }
      if (!PwriteAll(fd, lo, bytes.data(), bytes.size())) return Broken("restore bytes");
    }
    return Status::Ok();
  }

  void Discard() {
    for (auto& f : files_) ::close(f.second);
    files_.clear();
    for (Undo& e : log_) DropBackup(&e.backup);
    log_.clear();
    if (!backup_dir_.empty()) {
      if (DIR* d = ::opendir(backup_dir_.c_str())) {
        while (dirent* entry = ::readdir(d)) {
          if (std::strcmp(entry->d_name, ".") == 0 || std::strcmp(entry->d_name, "..") == 0) {
            continue;
          }
          ::unlink((backup_dir_ + "/" + entry->d_name).c_str());
        }
        ::closedir(d);
      }
      ::rmdir(backup_dir_.c_str());
      backup_dir_.clear();
    }
  }

  bool armed_ = false;
  FaultPlan plan_;
  uint64_t calls_ = 0;
  bool triggered_ = false;
  bool short_pending_ = false;
  std::mt19937_64 rng_;
  std::string backup_dir_;
  uint64_t backup_counter_ = 0;
  std::map<FileKey, int> files_;  // a writable descriptor per tracked inode
  // In call order. SaveData's pointer to the entry it appended is valid
  // until the next append.
  std::vector<Undo> log_;
};

// Never destroyed: the addon's exit handler may still need it.
Simulator& Sim() {
  static Simulator* sim = new Simulator;
  return *sim;
}

bool ParseU64(const std::string& text, uint64_t* out) {
  if (text.empty() || text.size() > 20) return false;
  uint64_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    const uint64_t digit = static_cast<uint64_t>(c - '0');
    if (value > (~uint64_t{0} - digit) / 10) return false;
    value = value * 10 + digit;
  }
  *out = value;
  return true;
}

}  // namespace

Status SetFaultPlan(const FaultPlan& plan) {
  if (plan.mode != FaultMode::kNone && plan.fail_at == 0) {
    return Status(ErrorCode::kInvalidArgument, "fault plan needs fail_at >= 1");
  }
  Simulator& sim = Sim();
  std::lock_guard<std::mutex> lock(sim.mu);
  return sim.Arm(plan);
}

void ClearFaultPlan() {
  Simulator& sim = Sim();
  std::lock_guard<std::mutex> lock(sim.mu);
  sim.Disarm();
}

FaultPlan CurrentFaultPlan() {
  Simulator& sim = Sim();
  std::lock_guard<std::mutex> lock(sim.mu);
  return sim.plan();
}

uint64_t FaultCallCount() {
  Simulator& sim = Sim();
  std::lock_guard<std::mutex> lock(sim.mu);
  return sim.calls();
}

bool FaultTriggered() {
  Simulator& sim = Sim();
  std::lock_guard<std::mutex> lock(sim.mu);
  return sim.triggered();
}

Status RecoverFromPowerLoss() {
  Simulator& sim = Sim();
  std::lock_guard<std::mutex> lock(sim.mu);
  return sim.Recover();
}

const char* FaultModeName(FaultMode mode) {
  switch (mode) {
    case FaultMode::kNone: return "none";
    case FaultMode::kEio: return "eio";
    case FaultMode::kEnospc: return "enospc";
    case FaultMode::kShortWrite: return "short-write";
    case FaultMode::kPowerLoss: return "power-loss";
    case FaultMode::kPowerLossTorn: return "power-loss-torn";
  }
  return "none";
}

bool ParseFaultMode(const std::string& name, FaultMode* out) {
  const FaultMode modes[] = {FaultMode::kNone,       FaultMode::kEio,
                             FaultMode::kEnospc,     FaultMode::kShortWrite,
                             FaultMode::kPowerLoss,  FaultMode::kPowerLossTorn};
  for (FaultMode mode : modes) {
    if (name == FaultModeName(mode)) {
      *out = mode;
      return true;
    }
  }
  return false;
}

Status ParseFaultPlan(const std::string& spec, FaultPlan* out) {
  std::vector<std::string> parts;
  size_t start = 0;
  for (;;) {
    const size_t colon = spec.find(':', start);
    parts.push_back(spec.substr(start, colon == std::string::npos ? colon : colon - start));
    if (colon == std::string::npos) break;
    start = colon + 1;
  }
  FaultPlan plan;
  const Status bad(ErrorCode::kInvalidArgument,
                   "fault plan \"" + spec + "\" is not mode:N[:seed]");
  if (parts.size() > 3 || !ParseFaultMode(parts[0], &plan.mode)) return bad;
  if (parts.size() >= 2 && !ParseU64(parts[1], &plan.fail_at)) return bad;
  if (parts.size() == 3 && !ParseU64(parts[2], &plan.seed)) return bad;
  if (plan.mode != FaultMode::kNone && plan.fail_at == 0) return bad;
  *out = plan;
  return Status::Ok();
}

// ------------------------------------------------------------------ hooks

namespace fault_internal {

Status Read() {
  Simulator& sim = Sim();
  std::lock_guard<std::mutex> lock(sim.mu);
  if (!sim.armed()) return Status::Ok();
  return sim.Decide(IoCall::kRead);
}

Status Open(const std::string& path, int flags, const std::function<Status(int*)>& raw,
            int* fd) {
  Simulator& sim = Sim();
  std::lock_guard<std::mutex> lock(sim.mu);
  if (!sim.armed()) return raw(fd);
  REVPATCH_RETURN_IF_ERROR(sim.Decide(IoCall::kOpen));
  if (!sim.Tracking() || (flags & O_CREAT) == 0) return raw(fd);
  const bool existed = Exists(path);
  if (existed && (flags & O_TRUNC) != 0 && (flags & O_EXCL) == 0) {
    REVPATCH_RETURN_IF_ERROR(sim.SaveBeforeTruncatingOpen(path));
  }
  REVPATCH_RETURN_IF_ERROR(raw(fd));
  if (!existed) sim.LogNamespace(Undo::Kind::kCreate, path, "", Backup());
  return Status::Ok();
}

Status Write(int fd, uint64_t offset, size_t size, const std::function<Status(size_t)>& raw) {
  Simulator& sim = Sim();
  std::lock_guard<std::mutex> lock(sim.mu);
  if (!sim.armed()) return raw(size);
  REVPATCH_RETURN_IF_ERROR(sim.Decide(IoCall::kWrite));
  bool short_write = false;
  const size_t limit = sim.WriteLimit(size, &short_write);
  if (sim.Tracking()) {
    Undo* entry = nullptr;
    REVPATCH_RETURN_IF_ERROR(sim.SaveData(fd, offset, offset + size, true, &entry));
  }
  if (limit > 0) REVPATCH_RETURN_IF_ERROR(raw(limit));
  if (short_write) {
    return Status::FromErrno(ENOSPC, "pwrite after a short write of " +
                                         std::to_string(limit) + " of " +
                                         std::to_string(size) + " bytes");
  }
  return Status::Ok();
}

Status Truncate(int fd, uint64_t size, const std::function<Status()>& raw) {
  Simulator& sim = Sim();
  std::lock_guard<std::mutex> lock(sim.mu);
  if (!sim.armed()) return raw();
  REVPATCH_RETURN_IF_ERROR(sim.Decide(IoCall::kTruncate));
  if (sim.Tracking()) {
    FileKey key;
    uint64_t old_size = 0;
    if (!KeyOf(fd, &key, &old_size)) return raw();
    Undo* entry = nullptr;
    REVPATCH_RETURN_IF_ERROR(sim.SaveData(fd, std::min(size, old_size),
                                          std::max(size, old_size), false, &entry));
  }
  return raw();
}

Status Clone(int dst_fd, uint64_t offset, uint64_t length, const std::function<Status()>& raw) {
  Simulator& sim = Sim();
  std::lock_guard<std::mutex> lock(sim.mu);
  if (!sim.armed()) return raw();
  REVPATCH_RETURN_IF_ERROR(sim.Decide(IoCall::kClone));
  Undo* entry = nullptr;
  const bool whole = length == ~uint64_t{0};
  if (sim.Tracking()) {
    FileKey key;
    uint64_t old_size = 0;
    if (KeyOf(dst_fd, &key, &old_size)) {
      const uint64_t end = whole ? old_size
                                 : (length > ~uint64_t{0} - offset ? ~uint64_t{0}
                                                                   : offset + length);
      REVPATCH_RETURN_IF_ERROR(sim.SaveData(dst_fd, whole ? 0 : offset, end, false, &entry));
    }
  }
  Status s = raw();
  if (entry != nullptr && whole) {
    FileKey key;
    uint64_t new_size = 0;
    if (KeyOf(dst_fd, &key, &new_size) && key == entry->key) {
      entry->end = std::max(entry->end, new_size);
    }
  }
  return s;
}

Status Sync(int fd, const std::function<Status()>& raw) {
  Simulator& sim = Sim();
  std::lock_guard<std::mutex> lock(sim.mu);
  if (!sim.armed()) return raw();
  REVPATCH_RETURN_IF_ERROR(sim.Decide(IoCall::kSync));
  Status s = raw();
  if (s.ok() && sim.Tracking()) sim.MarkFileSynced(fd);
  return s;
}

Status Rename(const std::string& from, const std::string& to,
              const std::function<Status()>& raw) {
  Simulator& sim = Sim();
  std::lock_guard<std::mutex> lock(sim.mu);
  if (!sim.armed()) return raw();
  REVPATCH_RETURN_IF_ERROR(sim.Decide(IoCall::kRename));
  if (!sim.Tracking()) return raw();
  Backup replaced;
  REVPATCH_RETURN_IF_ERROR(sim.MakeBackup(to, &replaced));
  Status s = raw();
  if (!s.ok()) {
    Simulator::DropBackup(&replaced);
    return s;
  }
  sim.LogNamespace(Undo::Kind::kRename, from, to, std::move(replaced));
  return Status::Ok();
}

Status Unlink(const std::string& path, const std::function<Status()>& raw) {
  Simulator& sim = Sim();
  std::lock_guard<std::mutex> lock(sim.mu);
  if (!sim.armed()) return raw();
  REVPATCH_RETURN_IF_ERROR(sim.Decide(IoCall::kUnlink));
  if (!sim.Tracking()) return raw();
  Backup removed;
  REVPATCH_RETURN_IF_ERROR(sim.MakeBackup(path, &removed));
  Status s = raw();
  if (!s.ok() || removed.path.empty()) {
    Simulator::DropBackup(&removed);
    return s;
  }
  sim.LogNamespace(Undo::Kind::kUnlink, path, "", std::move(removed));
  return Status::Ok();
}

Status SyncDir(const std::string& dir, const std::function<Status()>& raw) {
  Simulator& sim = Sim();
  std::lock_guard<std::mutex> lock(sim.mu);
  if (!sim.armed()) return raw();
  REVPATCH_RETURN_IF_ERROR(sim.Decide(IoCall::kSyncDir));
  Status s = raw();
  if (s.ok() && sim.Tracking()) sim.MarkDirectorySynced(dir);
  return s;
}

}  // namespace fault_internal
}  // namespace revpatch
