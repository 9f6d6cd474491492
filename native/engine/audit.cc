#include "audit.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include "file_io.h"

namespace revpatch {

Status AppendAuditLine(const std::string& path, const std::string& json_line) {
  std::string line = json_line;
  if (!line.empty() && line.back() == '\n') line.pop_back();
  if (line.empty() || line.find('\n') != std::string::npos) {
    return Status(ErrorCode::kInvalidArgument, "an audit line is one non-empty line");
  }
  line.push_back('\n');
  bool created = false;
  int fd;
  do {
    fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0 && errno == ENOENT) {
    do {
      fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    } while (fd < 0 && errno == EINTR);
    created = fd >= 0;
  }
  if (fd < 0) return Status::FromErrno(errno, "open " + path);
  File file(fd);
  // One write: O_APPEND places the whole line at the end atomically with
  // respect to other appenders. A short write (a full disk) is an error.
  ssize_t wrote;
  do {
    wrote = ::write(fd, line.data(), line.size());
  } while (wrote < 0 && errno == EINTR);
  if (wrote < 0) return Status::FromErrno(errno, "write " + path);
  if (static_cast<size_t>(wrote) != line.size()) {
    return Status(ErrorCode::kNoSpace, "short write to " + path);
  }
  REVPATCH_RETURN_IF_ERROR(file.FullSync());
  REVPATCH_RETURN_IF_ERROR(file.Close());
  if (created) REVPATCH_RETURN_IF_ERROR(SyncDirectory(DirName(path)));
  return Status::Ok();
}

std::string JsonString(const std::string& text) {
  std::string out = "\"";
  for (unsigned char c : text) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out += buf;
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
  }
  out.push_back('"');
  return out;
}

}  // namespace revpatch
