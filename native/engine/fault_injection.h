// Fault injection and a power-loss simulator for the engine's I/O layer.
//
// Crash safety is proven by tests that fail the Nth I/O call for every N (as
// SQLite's I/O-error and crash tests do). Every I/O call of the engine goes
// through file_io.h, and file_io.cc asks this module about each one while a
// plan is armed. With no plan the cost is one relaxed atomic load per call.
//
// Counted I/O calls (one each, whatever the call does internally):
//   open      File::OpenRead, CreateNew, CreateTruncate, OpenReadWrite
//   read      File::ReadAt, File::ReadSomeAt
//   write     File::WriteAt
//   fsync     File::FullSync
//   truncate  File::Truncate
//   rename    RenameFile
//   unlink    UnlinkFile
//   clone     CloneFile, CloneRange
//   dir sync  SyncDirectory
// Not counted: Close, Size, NextData, FileExists, FreeSpace, and calls
// refused before reaching the disk (closed or poisoned handle, bad offset).
// Node's own fs calls in lib/ never pass through here.
//
// Modes (the plan's fail_at is the 1-based number of the call to fail):
//   none             counts calls only.
//   eio, enospc      call fail_at fails with EIO (kIo) or ENOSPC (kNoSpace)
//                    without touching the disk; later calls run normally.
//   short-write      the first write at or after call fail_at writes a
//                    seeded random non-empty prefix shorter than asked (none
//                    if it asked for one byte) and its continuation fails
//                    with ENOSPC: the caller sees kNoSpace with the region
//                    partly written, as on a filesystem that fills up
//                    mid-write. Later calls run normally.
//   power-loss       from call fail_at on, every call fails with kIo
//                    "simulated power loss" and nothing more reaches the
//                    disk. RecoverFromPowerLoss() then rolls the files back
//                    to what a power cut at that moment may leave:
//                    - a write, truncate or clone to a file is undone
//                      (old bytes and old size) unless a FullSync of that
//                      file completed after it;
//                    - a create, rename or unlink is undone unless a
//                      SyncDirectory of its directory (both directories
//                      for a rename) completed after it. A file created by
//                      the undone call is removed; a rename moves the file
//                      back and restores the file it replaced; an unlinked
//                      file comes back.
//   power-loss-torn  as power-loss, but each 512-byte sector (file offsets
//                    aligned to 512) of an undone write is, by a seeded
//                    random choice, kept with its new bytes or restored;
//                    the file keeps its old size unless a kept sector lies
//                    beyond it. Truncates, clones and namespace changes
//                    are undone whole, as in power-loss.
//
// Under the power-loss modes the simulator keeps an undo log: before each
// write it saves the bytes it overwrites and the file's size; before an
// unlink, or a rename over an existing file, it hard-links the victim into
// a private directory under $TMPDIR (copies it where linking fails, e.g.
// across filesystems). The log and the backups exist only while such a plan
// is armed. docs/durability.md lists what the model covers and what it
// does not.
//
// All functions are thread-safe: engine calls run on worker threads.
#ifndef REVPATCH_ENGINE_FAULT_INJECTION_H_
#define REVPATCH_ENGINE_FAULT_INJECTION_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

#include "status.h"

namespace revpatch {

enum class FaultMode {
  kNone,
  kEio,
  kEnospc,
  kShortWrite,
  kPowerLoss,
  kPowerLossTorn,
};

struct FaultPlan {
  FaultMode mode = FaultMode::kNone;
  uint64_t fail_at = 0;  // 1-based call number; ignored for kNone
  uint64_t seed = 0;     // short-write prefixes and torn sectors
};

// Arms `plan` and restarts the call count. Replaces any earlier plan and
// discards its undo log (the files stay as they are). kInvalidArgument if
// fail_at is 0 for a mode other than none; kIo if the simulator's backup
// directory cannot be made.
Status SetFaultPlan(const FaultPlan& plan);
// Disarms: calls run normally and are no longer counted. Any undo log is
// discarded without being applied.
void ClearFaultPlan();
// The armed plan (mode none if disarmed).
FaultPlan CurrentFaultPlan();
// Counted calls since the plan was set (0 when disarmed).
uint64_t FaultCallCount();
// Whether the plan's fault has happened.
bool FaultTriggered();

// Applies the power cut: undoes whatever a real power loss at this moment
// may undo (see power-loss above; if the plan never triggered, the cut
// happens now), then disarms. kInvalidArgument unless a power-loss plan is
// armed; kIo if a file could not be restored (the rest still is).
Status RecoverFromPowerLoss();

// "none", "eio", "enospc", "short-write", "power-loss", "power-loss-torn".
const char* FaultModeName(FaultMode mode);
bool ParseFaultMode(const std::string& name, FaultMode* out);
// "mode:N[:seed]", e.g. "power-loss-torn:17:3" (the format of the addon's
// REVPATCH_FAULT variable). kInvalidArgument on anything else.
Status ParseFaultPlan(const std::string& spec, FaultPlan* out);

// ------------------------------------------------------------------------
// The hook file_io.cc calls. Each function counts one call, decides its
// fate under the plan, keeps the undo log, and runs `raw` (the real system
// call) only if the call is to reach the disk.
namespace fault_internal {

extern std::atomic<bool> g_armed;
inline bool Armed() { return g_armed.load(std::memory_order_relaxed); }

// Calls that need no undo record (reads): counts and decides.
Status Read();
// `flags` as for open(2); `raw` opens and stores the descriptor.
Status Open(const std::string& path, int flags,
            const std::function<Status(int*)>& raw, int* fd);
// `raw(n)` writes the first n of `size` bytes at `offset`.
Status Write(int fd, uint64_t offset, size_t size,
             const std::function<Status(size_t)>& raw);
Status Truncate(int fd, uint64_t size, const std::function<Status()>& raw);
// `length` ~0: the whole destination is replaced (CloneFile).
Status Clone(int dst_fd, uint64_t offset, uint64_t length,
             const std::function<Status()>& raw);
Status Sync(int fd, const std::function<Status()>& raw);
Status Rename(const std::string& from, const std::string& to,
              const std::function<Status()>& raw);
Status Unlink(const std::string& path, const std::function<Status()>& raw);
Status SyncDir(const std::string& dir, const std::function<Status()>& raw);

}  // namespace fault_internal
}  // namespace revpatch

#endif  // REVPATCH_ENGINE_FAULT_INJECTION_H_
