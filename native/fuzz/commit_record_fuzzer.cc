// commit_record_fuzzer: ParseCommitSlot and ReadCommitRecord on fuzzed
// two-slot files, and the write that follows a read.
//
// The commit record is the device's single commit point, read at every
// start: whatever a crash, a torn write or bit rot leaves in it must give
// either the newest valid slot or kCorrupt, never a crash or the wrong
// slot. The fix-up flag recomputes each slot's checksum, as a writer would,
// so the generation and position rules behind it are reached.
//
// Input: u8 flags, u16 length of slot 0's bytes, slot 0's bytes, then slot
// 1's bytes (written at kCommitSlotSize).
//   flags bit 0: fix up the checksums
//         bit 1: the file is exactly 2 * kCommitSlotSize bytes (else it
//                ends where slot 1's bytes end, or slot 0's if none)
//         bit 2: after a successful read, write the next generation
//
// Checks:
//  - ParseCommitSlot never reads past `size` (the sanitizers) and accepts
//    a body only inside the slot;
//  - ReadCommitRecord returns the slot a reference picks: valid, in its own
//    position (generation % 2), highest generation; else kCorrupt;
//  - a write with the wrong expected generation fails and changes nothing;
//    a write with the right one gives generation + 1 with the new body,
//    never touches the slot that was in force, and reads back.
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "commit_record.h"
#include "fuzz_input.h"
#include "fuzz_support.h"
#include "fuzz_targets.h"
#include "little_endian.h"

namespace revpatch_fuzz {
namespace {

using revpatch::CommitRecordState;
using revpatch::ErrorCode;
using revpatch::Status;

constexpr size_t kSlot = revpatch::kCommitSlotSize;
constexpr size_t kHeader = revpatch::kCommitSlotHeaderSize;
constexpr size_t kChecksumOffset = 32;

void FixUp(Bytes* slot) {
  if (slot->size() < kHeader) return;
  const size_t body = std::min<size_t>(revpatch::GetU32(slot->data() + 12), slot->size() - kHeader);
  revpatch::Sha256 h;
  h.Update(slot->data(), kChecksumOffset);
  h.Update(slot->data() + kHeader, body);
  const revpatch::Digest sum = h.Final();
  std::memcpy(slot->data() + kChecksumOffset, sum.data(), 32);
}

// The slot at `index` as the file holds it (shorter at the end of the file).
Bytes SlotOf(const Bytes& file, size_t index) {
  const size_t start = std::min(file.size(), index * kSlot);
  const size_t end = std::min(file.size(), start + kSlot);
  return Bytes(file.begin() + start, file.begin() + end);
}

bool ReferenceRead(const Bytes& file, CommitRecordState* out) {
  CommitRecordState best;
  for (size_t i = 0; i < 2; ++i) {
    const Bytes slot = SlotOf(file, i);
    CommitRecordState state;
    if (revpatch::ParseCommitSlot(slot.data(), slot.size(), &state) && state.generation % 2 == i &&
        state.generation > best.generation) {
      best = state;
    }
  }
  *out = best;
  return best.generation != 0;
}

void CheckParse(const Bytes& bytes) {
  CommitRecordState state;
  if (!revpatch::ParseCommitSlot(bytes.data(), bytes.size(), &state)) return;
  FUZZ_CHECK(state.generation != 0, "generation 0 accepted");
  FUZZ_CHECK(bytes.size() >= kHeader && state.body.size() <= bytes.size() - kHeader &&
                 state.body.size() <= revpatch::kCommitMaxBody,
             "body outside the slot");
  FUZZ_CHECK(std::memcmp(state.body.data(), bytes.data() + kHeader, state.body.size()) == 0,
             "body is not the slot's bytes");
}

}  // namespace

int FuzzCommitRecord(const uint8_t* data, size_t size) {
  FuzzInput in(data, size);
  const uint8_t flags = in.Take<uint8_t>();
  Bytes slot0 = in.TakeBytes(in.Take<uint16_t>());
  Bytes slot1 = in.TakeRest();
  CheckParse(Bytes(data, data + size));
  if (flags & 1) {
    FixUp(&slot0);
    FixUp(&slot1);
  }
  CheckParse(slot0);
  CheckParse(slot1);

  Bytes file = slot0;
  if (!slot1.empty() || (flags & 2)) {
    file.resize(kSlot, 0);
    file.insert(file.end(), slot1.begin(), slot1.end());
  }
  if (flags & 2) file.resize(2 * kSlot, 0);
  const std::string path = ScratchPath("commit");
  WriteFileOrDie(path, file);

  CommitRecordState expected;
  const bool expect_ok = ReferenceRead(file, &expected);
  CommitRecordState got;
  const Status read = revpatch::ReadCommitRecord(path, &got);
  if (!expect_ok) {
    FUZZ_CHECK(read.code() == ErrorCode::kCorrupt, "ReadCommitRecord: " + read.ToString());
    RemoveFile(path);
    return 0;
  }
  FUZZ_CHECK(read.ok(), "ReadCommitRecord refused a valid slot: " + read.ToString());
  FUZZ_CHECK(got.generation == expected.generation && got.body == expected.body,
             "ReadCommitRecord picked the wrong slot");

  if (flags & 4) {
    const uint64_t g = got.generation;
    uint64_t generation = 0;
    const Status stale = revpatch::WriteCommitRecord(path, g - 1, "stale", &generation);
    FUZZ_CHECK(!stale.ok(), "a write with a stale generation succeeded");
    FUZZ_CHECK(ReadFileOrDie(path) == file, "a refused write changed the file");

    const std::string body = "next after " + std::to_string(g);
    const Status wrote = revpatch::WriteCommitRecord(path, g, body, &generation);
    if (g == ~uint64_t{0}) {
      FUZZ_CHECK(wrote.code() == ErrorCode::kInvalidArgument, wrote.ToString());
    } else {
      FUZZ_CHECK(wrote.ok() && generation == g + 1, "WriteCommitRecord: " + wrote.ToString());
      // The file may have grown (to hold the other slot), with zeros.
      const Bytes before = SlotOf(file, g % 2);
      Bytes now = SlotOf(ReadFileOrDie(path), g % 2);
      FUZZ_CHECK(now.size() >= before.size() &&
                     std::equal(before.begin(), before.end(), now.begin()) &&
                     std::all_of(now.begin() + before.size(), now.end(),
                                 [](uint8_t b) { return b == 0; }),
                 "the slot in force was touched");
      CommitRecordState next;
      const Status reread = revpatch::ReadCommitRecord(path, &next);
      FUZZ_CHECK(reread.ok() && next.generation == g + 1 && next.body == body,
                 "the new record does not read back: " + reread.ToString());
    }
  }
  RemoveFile(path);
  return 0;
}

}  // namespace revpatch_fuzz

REVPATCH_FUZZ_ENTRY(FuzzCommitRecord)
