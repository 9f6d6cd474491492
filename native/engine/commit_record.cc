#include "commit_record.h"

#include <cstring>
#include <vector>

#include "file_io.h"
#include "little_endian.h"
#include "sha256.h"

namespace revpatch {
namespace {

constexpr char kSlotMagic[8] = {'R', 'V', 'P', 'C', 'O', 'M', 'M', '1'};
constexpr uint32_t kCommitVersion = 1;
// Header: magic[8] version u32 body_length u32 generation u64 reserved[8]
// checksum[32]; the checksum is SHA-256 over header bytes [0, 32) and body.
constexpr size_t kChecksumOffset = 32;
constexpr uint64_t kFileSize = 2 * uint64_t{kCommitSlotSize};

Digest SlotChecksum(const uint8_t* header, const uint8_t* body, size_t body_len) {
  Sha256 h;
  h.Update(header, kChecksumOffset);
  h.Update(body, body_len);
  return h.Final();
}

// Reads both slots; the valid one with the highest generation wins. A slot
// is only valid in its own position (generation % 2), so a stray record can
// never make Write() overwrite the record in force.
Status ReadSlots(const File& file, CommitRecordState* out) {
  std::vector<uint8_t> slot(kCommitSlotSize);
  CommitRecordState best;
  for (uint32_t i = 0; i < 2; ++i) {
    size_t got = 0;
    REVPATCH_RETURN_IF_ERROR(
        file.ReadSomeAt(uint64_t{i} * kCommitSlotSize, slot.data(), slot.size(), &got));
    CommitRecordState state;
    if (ParseCommitSlot(slot.data(), got, &state) && state.generation % 2 == i &&
        state.generation > best.generation) {
      best = std::move(state);
    }
  }
  if (best.generation == 0) {
    return Status(ErrorCode::kCorrupt, "commit record has no valid slot");
  }
  *out = std::move(best);
  return Status::Ok();
}

std::vector<uint8_t> EncodeSlot(uint64_t generation, const std::string& body) {
  std::vector<uint8_t> slot(kCommitSlotHeaderSize + body.size(), 0);
  uint8_t* h = slot.data();
  std::memcpy(h, kSlotMagic, 8);
  PutU32(h + 8, kCommitVersion);
  PutU32(h + 12, static_cast<uint32_t>(body.size()));
  PutU64(h + 16, generation);
  if (!body.empty()) std::memcpy(h + kCommitSlotHeaderSize, body.data(), body.size());
  const Digest sum = SlotChecksum(h, h + kCommitSlotHeaderSize, body.size());
  std::memcpy(h + kChecksumOffset, sum.data(), 32);
  return slot;
}

Status CreateRecord(const std::string& path, const std::string& body,
                    uint64_t* new_generation) {
  // Written under a temporary name and renamed: the record either does not
  // exist or holds generation 1, never a half-written first slot.
  const std::string temp = TempPathFor(path);
  File file;
  REVPATCH_RETURN_IF_ERROR(File::CreateNew(temp, &file));
  const std::vector<uint8_t> slot = EncodeSlot(1, body);
  Status s = file.Truncate(kFileSize);
  if (s.ok()) s = file.WriteAt(kCommitSlotSize, slot.data(), slot.size());
  if (s.ok()) s = file.FullSync();
  if (s.ok()) s = file.Close();
  if (s.ok()) {
    if (FileExists(path)) {
      s = Status(ErrorCode::kInvalidArgument,
                 "commit record " + path + " already exists (generation is not 0)");
    } else {
      s = RenameFile(temp, path);
    }
  }
  if (!s.ok()) {
    UnlinkFile(temp);
    return s;
  }
  REVPATCH_RETURN_IF_ERROR(SyncDirectory(DirName(path)));
  *new_generation = 1;
  return Status::Ok();
}

}  // namespace

bool ParseCommitSlot(const uint8_t* data, size_t size, CommitRecordState* out) {
  if (data == nullptr || size < kCommitSlotHeaderSize) return false;
  if (std::memcmp(data, kSlotMagic, 8) != 0) return false;
  if (GetU32(data + 8) != kCommitVersion) return false;
  const uint32_t body_len = GetU32(data + 12);
  const uint64_t generation = GetU64(data + 16);
  if (body_len > kCommitMaxBody || body_len > size - kCommitSlotHeaderSize) return false;
  if (generation == 0) return false;
  for (size_t i = 24; i < kChecksumOffset; ++i) {
    if (data[i] != 0) return false;
  }
  const Digest sum = SlotChecksum(data, data + kCommitSlotHeaderSize, body_len);
  if (std::memcmp(sum.data(), data + kChecksumOffset, 32) != 0) return false;
  out->generation = generation;
  out->body.assign(reinterpret_cast<const char*>(data + kCommitSlotHeaderSize), body_len);
  return true;
}

Status ReadCommitRecord(const std::string& path, CommitRecordState* out) {
  File file;
  REVPATCH_RETURN_IF_ERROR(File::OpenRead(path, &file));
  return ReadSlots(file, out);
}

Status WriteCommitRecord(const std::string& path, uint64_t expected_generation,
                         const std::string& body, uint64_t* new_generation) {
  if (body.size() > kCommitMaxBody) {
    return Status(ErrorCode::kTooLarge, "commit record body of " +
                                            std::to_string(body.size()) + " bytes");
  }
  if (expected_generation == 0) return CreateRecord(path, body, new_generation);
  if (expected_generation == ~uint64_t{0}) {
    return Status(ErrorCode::kInvalidArgument, "generation exhausted");
  }

  File file;
  REVPATCH_RETURN_IF_ERROR(File::OpenReadWrite(path, &file));
  CommitRecordState current;
  REVPATCH_RETURN_IF_ERROR(ReadSlots(file, &current));
  if (current.generation != expected_generation) {
    return Status(ErrorCode::kInvalidArgument,
                  "commit record is at generation " +
                      std::to_string(current.generation) + ", expected " +
                      std::to_string(expected_generation));
  }
  const uint64_t generation = expected_generation + 1;
  const std::vector<uint8_t> slot = EncodeSlot(generation, body);
  // The older slot, never the one in force.
  REVPATCH_RETURN_IF_ERROR(
      file.WriteAt((generation % 2) * kCommitSlotSize, slot.data(), slot.size()));
  REVPATCH_RETURN_IF_ERROR(file.FullSync());
  REVPATCH_RETURN_IF_ERROR(file.Close());
  *new_generation = generation;
  return Status::Ok();
}

}  // namespace revpatch
