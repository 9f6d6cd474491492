#include "status.h"

#include <cerrno>
#include <cstring>

namespace revpatch {

const char* ErrorCodeName(ErrorCode code) {
  switch (code) {
    case ErrorCode::kOk: return "OK";
    case ErrorCode::kIo: return "E_IO";
    case ErrorCode::kNoSpace: return "E_NO_SPACE";
    case ErrorCode::kNotFound: return "E_NOT_FOUND";
    case ErrorCode::kCorrupt: return "E_CORRUPT";
    case ErrorCode::kHashMismatch: return "E_HASH_MISMATCH";
    case ErrorCode::kSourceMismatch: return "E_BASE_MISMATCH";
    case ErrorCode::kBadExtent: return "E_BAD_EXTENT";
    case ErrorCode::kInvalidArgument: return "E_INVALID_ARGUMENT";
    case ErrorCode::kUnsupported: return "E_UNSUPPORTED";
    case ErrorCode::kTooLarge: return "E_TOO_LARGE";
    case ErrorCode::kPoisoned: return "E_POISONED";
    case ErrorCode::kExists: return "E_EXISTS";
  }
  return "E_UNKNOWN";
}

Status Status::FromErrno(int err, const std::string& what) {
  ErrorCode code = ErrorCode::kIo;
  switch (err) {
    case ENOSPC:
#ifdef EDQUOT
    case EDQUOT:
#endif
      code = ErrorCode::kNoSpace;
      break;
    case ENOENT:
      code = ErrorCode::kNotFound;
      break;
    case EEXIST:
      code = ErrorCode::kExists;
      break;
    default:
      break;
  }
  return Status(code, what + ": " + std::strerror(err));
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  std::string out = ErrorCodeName(code_);
  if (!message_.empty()) {
    out += ": ";
    out += message_;
  }
  return out;
}

bool IsContentError(ErrorCode code) {
  switch (code) {
    case ErrorCode::kCorrupt:
    case ErrorCode::kHashMismatch:
    case ErrorCode::kSourceMismatch:
    case ErrorCode::kBadExtent:
    case ErrorCode::kUnsupported:
    case ErrorCode::kTooLarge:
      return true;
    default:
      return false;
  }
}

}  // namespace revpatch
