// The audit trail's one native writer: `<state>/audit.ndjson` (the agent's
// trail, lib/device/audit.ts), appended by engine-side readers that have no
// TypeScript beside them (the nbdkit plugin reporting a corrupt read).
//
// Contract, the same as the TypeScript writer's: one line per event, one
// write(2) of the whole line through an O_APPEND descriptor, then fsync, so
// concurrent writers never interleave within a line and a returned append
// survives a power cut. A file this call creates has its directory fsynced
// too. A corrupt-read line is
//   {"time":ISO,"event":"corrupt-read","source":"read"|"export"|"verify"|"nbd",
//    "block":N,"layer":NAME|null,"detail":TEXT}
#ifndef REVPATCH_ENGINE_AUDIT_H_
#define REVPATCH_ENGINE_AUDIT_H_

#include <string>

#include "status.h"

namespace revpatch {

// Appends `json_line` (one JSON object, no newline inside it; a final
// newline is added if missing) to `path`. kInvalidArgument for an empty
// line or one with a newline inside.
Status AppendAuditLine(const std::string& path, const std::string& json_line);

// `text` as a JSON string literal, quotes included (for building lines).
std::string JsonString(const std::string& text);

}  // namespace revpatch

#endif  // REVPATCH_ENGINE_AUDIT_H_
