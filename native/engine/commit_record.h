// The commit record: the single commit point of every device transition.
//
// Two fixed-size slots in one file, as LMDB's two meta pages. Each slot
// holds a header (magic, format version, generation, body length, SHA-256 of
// header fields and body) and an opaque body (the lifecycle's JSON). Write()
// puts generation g+1 in slot (g+1) % 2, i.e. the older slot, and fsyncs;
// the newer slot is never touched, so a torn write leaves it in force.
// Read() returns the valid slot with the highest generation.
#ifndef REVPATCH_ENGINE_COMMIT_RECORD_H_
#define REVPATCH_ENGINE_COMMIT_RECORD_H_

#include <cstdint>
#include <string>

#include "status.h"

namespace revpatch {

constexpr uint32_t kCommitSlotSize = 256 * 1024;
constexpr uint32_t kCommitSlotHeaderSize = 64;
constexpr uint32_t kCommitMaxBody = kCommitSlotSize - kCommitSlotHeaderSize;

struct CommitRecordState {
  uint64_t generation = 0;  // 0 and empty body: no valid slot.
  std::string body;
};

// kNotFound if the file does not exist; kCorrupt if neither slot is valid.
Status ReadCommitRecord(const std::string& path, CommitRecordState* out);

// Writes `body` as generation `expected_generation + 1`. Fails with
// kInvalidArgument (no write) if the file's current generation is not
// `expected_generation` (a lost update), kTooLarge if the body does not fit.
// Creates the file (and fsyncs its directory) when expected_generation is 0.
// A failed write or fsync leaves the previous slot in force and is reported
// as is; the caller must not retry the same handle.
Status WriteCommitRecord(const std::string& path, uint64_t expected_generation,
                         const std::string& body, uint64_t* new_generation);

// Validates one slot's bytes (for tests and the fuzzer).
bool ParseCommitSlot(const uint8_t* data, size_t size, CommitRecordState* out);

}  // namespace revpatch

#endif  // REVPATCH_ENGINE_COMMIT_RECORD_H_
