// Stable error codes of the engine and the Status type that carries them.
//
// Every fallible engine call returns a Status. The numeric values are part of
// the addon's contract (they cross into JavaScript as `err.code` strings via
// ErrorCodeName) and must never be renumbered: add new codes at the end.
#ifndef REVPATCH_ENGINE_STATUS_H_
#define REVPATCH_ENGINE_STATUS_H_

#include <cstdint>
#include <string>
#include <utility>

namespace revpatch {

enum class ErrorCode : int32_t {
  kOk = 0,
  kIo = 1,              // E_IO: an I/O call failed (not ENOSPC).
  kNoSpace = 2,         // E_NO_SPACE: ENOSPC/EDQUOT while writing.
  kNotFound = 3,        // E_NOT_FOUND: a file the call needs is missing.
  kCorrupt = 4,         // E_CORRUPT: framing, layer or record bytes are invalid.
  kHashMismatch = 5,    // E_HASH_MISMATCH: data does not match its digest.
  kSourceMismatch = 6,  // E_BASE_MISMATCH: the source blocks are not the ones
                        // the patch was made for.
  kBadExtent = 7,       // E_BAD_EXTENT: extent out of range, overlapping,
                        // empty, or too many.
  kInvalidArgument = 8, // E_INVALID_ARGUMENT: a caller passed a bad value.
  kUnsupported = 9,     // E_UNSUPPORTED: unknown version or operation type.
  kTooLarge = 10,       // E_TOO_LARGE: a length beyond the engine's bounds.
  kPoisoned = 11,       // E_POISONED: a handle whose fsync failed; unusable.
  kExists = 12,         // E_EXISTS: a file that must be new already exists.
};

// "E_IO", "E_NO_SPACE", ... ; "E_UNKNOWN" for values outside the enum.
const char* ErrorCodeName(ErrorCode code);

// The codes that say bytes (a payload, a view, a record) are not what they
// should be, as opposed to a failed call: kCorrupt, kHashMismatch,
// kSourceMismatch, kBadExtent, kUnsupported, kTooLarge.
bool IsContentError(ErrorCode code);

class Status {
 public:
  Status() = default;
  Status(ErrorCode code, std::string message)
      : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }
  // Maps errno to kNoSpace (ENOSPC, EDQUOT), kNotFound (ENOENT), kExists
  // (EEXIST) or kIo, with "<what>: <strerror>" as the message.
  static Status FromErrno(int err, const std::string& what);

  bool ok() const { return code_ == ErrorCode::kOk; }
  ErrorCode code() const { return code_; }
  const std::string& message() const { return message_; }
  std::string ToString() const;

 private:
  ErrorCode code_ = ErrorCode::kOk;
  std::string message_;
};

#define REVPATCH_RETURN_IF_ERROR(expr)       \
  do {                                       \
    ::revpatch::Status status_ = (expr);     \
    if (!status_.ok()) return status_;       \
  } while (0)

}  // namespace revpatch

#endif  // REVPATCH_ENGINE_STATUS_H_
