#include "priority.h"

#include <cerrno>
#include <system_error>
#include <thread>

#if defined(__linux__)
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#elif defined(__APPLE__)
#include <pthread.h>
#include <pthread/qos.h>
#include <sys/resource.h>
#endif

namespace revpatch {
namespace {

thread_local bool lowered = false;

#if defined(__linux__)
// From linux/ioprio.h, which not every libc ships.
constexpr int kIoprioWhoProcess = 1;
constexpr int kIoprioClassShift = 13;
constexpr int kIoprioClassIdle = 3;

pid_t ThreadId() { return static_cast<pid_t>(::syscall(SYS_gettid)); }
#endif

}  // namespace

Status LowerCurrentThread() {
#if defined(__linux__)
  const pid_t tid = ThreadId();
  // The I/O class first, so a thread seen at nice 19 is in the idle class.
  if (::syscall(SYS_ioprio_set, kIoprioWhoProcess, tid, kIoprioClassIdle << kIoprioClassShift) != 0) {
    return Status::FromErrno(errno, "ioprio_set");
  }
  // setpriority with PRIO_PROCESS and a thread id acts on that thread only.
  if (::setpriority(PRIO_PROCESS, static_cast<id_t>(tid), 19) != 0) {
    return Status::FromErrno(errno, "setpriority");
  }
  lowered = true;
  return Status::Ok();
#elif defined(__APPLE__)
  if (::setiopolicy_np(IOPOL_TYPE_DISK, IOPOL_SCOPE_THREAD, IOPOL_THROTTLE) != 0) {
    return Status::FromErrno(errno, "setiopolicy_np");
  }
  int rc = ::pthread_set_qos_class_self_np(QOS_CLASS_BACKGROUND, 0);
  if (rc != 0) return Status::FromErrno(rc, "pthread_set_qos_class_self_np");
  lowered = true;
  return Status::Ok();
#else
  return Status(ErrorCode::kUnsupported, "thread priorities are not supported here");
#endif
}

bool CurrentThreadLowered() { return lowered; }

Status RunLowered(const std::function<Status()>& work, bool* lowered_out) {
  Status result;
  bool ok = false;
  try {
    std::thread thread([&] {
      ok = LowerCurrentThread().ok();
      result = work();
    });
    thread.join();
  } catch (const std::system_error&) {
    // No thread to be had: the work runs on the caller's, unlowered.
    ok = false;
    result = work();
  }
  if (lowered_out) *lowered_out = ok;
  return result;
}

Status ReadCurrentThreadPriority(ThreadPriority* out) {
  *out = ThreadPriority();
#if defined(__linux__)
  const pid_t tid = ThreadId();
  errno = 0;
  int nice = ::getpriority(PRIO_PROCESS, static_cast<id_t>(tid));
  if (nice == -1 && errno != 0) return Status::FromErrno(errno, "getpriority");
  out->nice = nice;
  long io = ::syscall(SYS_ioprio_get, kIoprioWhoProcess, tid);
  if (io < 0) return Status::FromErrno(errno, "ioprio_get");
  out->io_class = static_cast<int>(io >> kIoprioClassShift);
  return Status::Ok();
#elif defined(__APPLE__)
  errno = 0;
  int nice = ::getpriority(PRIO_PROCESS, 0);
  if (nice == -1 && errno != 0) return Status::FromErrno(errno, "getpriority");
  out->nice = nice;
  return Status::Ok();
#else
  return Status(ErrorCode::kUnsupported, "thread priorities are not supported here");
#endif
}

}  // namespace revpatch
