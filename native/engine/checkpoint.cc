#include "checkpoint.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "buffered_writer.h"
#include "file_io.h"
#include "little_endian.h"

namespace revpatch {
namespace {

constexpr char kMagic[8] = {'R', 'V', 'P', 'C', 'K', 'P', 'T', '1'};
constexpr uint32_t kVersion = 3;
constexpr size_t kFixedSize = 176;
constexpr size_t kProgressHeaderSize = 32;
constexpr size_t kEntrySize = 48;
constexpr size_t kEntriesPerBatch = 1024;  // 48 KiB encoded at a time
constexpr size_t kChecksumSize = 32;
constexpr size_t kWriteBufferBytes = size_t{1} << 20;
constexpr size_t kReadEntries = (size_t{1} << 20) / kEntrySize;

void EncodeFixed(const Checkpoint& c, uint8_t* out) {
  const CheckpointIdentity& id = c.identity;
  std::memcpy(out, kMagic, 8);
  PutU32(out + 8, kVersion);
  PutU32(out + 12, id.block_size);
  PutU32(out + 16, id.chunk_size);
  PutU32(out + 20, static_cast<uint32_t>(id.layer_name.size()));
  PutU64(out + 24, id.payload_size);
  PutU64(out + 32, id.operation_count);
  PutU64(out + 40, id.target_size);
  std::memcpy(out + 48, id.payload_digest.data(), 32);
  std::memcpy(out + 80, id.source_digest.data(), 32);
  std::memcpy(out + 112, id.target_digest.data(), 32);
  PutU64(out + 144, c.next_operation);
  PutU64(out + 152, c.payload.position);
  PutU64(out + 160, c.layer.data_blocks);
  PutU64(out + 168, c.layer.entries.size());
}

void DecodeFixed(const uint8_t* in, Checkpoint* c) {
  CheckpointIdentity& id = c->identity;
  id.block_size = GetU32(in + 12);
  id.chunk_size = GetU32(in + 16);
  id.payload_size = GetU64(in + 24);
  id.operation_count = GetU64(in + 32);
  id.target_size = GetU64(in + 40);
  std::memcpy(id.payload_digest.data(), in + 48, 32);
  std::memcpy(id.source_digest.data(), in + 80, 32);
  std::memcpy(id.target_digest.data(), in + 112, 32);
  c->next_operation = GetU64(in + 144);
  c->payload.position = GetU64(in + 152);
  c->layer.data_blocks = GetU64(in + 160);
}

Status Corrupt(const std::string& path, const std::string& what) {
  return Status(ErrorCode::kCorrupt, "checkpoint " + path + ": " + what);
}

// Appends entries to `out` a batch at a time, each batch hashed into
// `checksum` too: a checkpoint of a large layer holds millions of entries,
// and one Update and Append per 48-byte record cost more than the hashing.
Status AppendEntries(const std::vector<LayerIndexEntry>& entries, Sha256* checksum,
                     BufferedWriter* out) {
  std::vector<uint8_t> batch(kEntrySize * kEntriesPerBatch);
  for (size_t first = 0; first < entries.size(); first += kEntriesPerBatch) {
    const size_t n = std::min(kEntriesPerBatch, entries.size() - first);
    for (size_t i = 0; i < n; ++i) {
      const LayerIndexEntry& e = entries[first + i];
      uint8_t* rec = &batch[i * kEntrySize];
      PutU64(rec, e.block);
      PutU64(rec + 8, e.offset);
      std::memcpy(rec + 16, e.leaf.data(), 32);
    }
    checksum->Update(batch.data(), n * kEntrySize);
    REVPATCH_RETURN_IF_ERROR(out->Append(batch.data(), n * kEntrySize));
  }
  return Status::Ok();
}

// Reads `count` entries at `offset` onto `entries`, hashing their bytes.
Status ReadEntries(const File& file, uint64_t offset, uint64_t count, Sha256* checksum,
                   std::vector<LayerIndexEntry>* entries) {
  std::vector<uint8_t> chunk;
  for (uint64_t first = 0; first < count; first += kReadEntries) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(kReadEntries, count - first));
    chunk.resize(n * kEntrySize);
    REVPATCH_RETURN_IF_ERROR(file.ReadAt(offset, chunk.data(), chunk.size()));
    checksum->Update(chunk.data(), chunk.size());
    offset += chunk.size();
    for (size_t i = 0; i < n; ++i) {
      const uint8_t* r = &chunk[i * kEntrySize];
      LayerIndexEntry e;
      e.block = GetU64(r);
      e.offset = GetU64(r + 8);
      std::memcpy(e.leaf.data(), r + 16, 32);
      entries->push_back(e);
    }
  }
  return Status::Ok();
}

Status WriteTemp(const std::string& tmp, const Checkpoint& c, CheckpointLog* log) {
  File file;
  REVPATCH_RETURN_IF_ERROR(File::CreateTruncate(tmp, &file));
  Sha256 checksum;
  BufferedWriter out(&file, 0, kWriteBufferBytes);
  uint8_t fixed[kFixedSize];
  EncodeFixed(c, fixed);
  checksum.Update(fixed, sizeof(fixed));
  REVPATCH_RETURN_IF_ERROR(out.Append(fixed, sizeof(fixed)));
  checksum.Update(c.identity.layer_name.data(), c.identity.layer_name.size());
  REVPATCH_RETURN_IF_ERROR(out.Append(c.identity.layer_name.data(), c.identity.layer_name.size()));
  REVPATCH_RETURN_IF_ERROR(AppendEntries(c.layer.entries, &checksum, &out));
  log->last_checksum = checksum.Final();
  REVPATCH_RETURN_IF_ERROR(out.Append(log->last_checksum.data(), log->last_checksum.size()));
  REVPATCH_RETURN_IF_ERROR(out.Flush());
  log->end = out.position();
  REVPATCH_RETURN_IF_ERROR(file.FullSync());
  return file.Close();
}

}  // namespace

bool CheckpointIdentity::operator==(const CheckpointIdentity& o) const {
  return payload_digest == o.payload_digest && source_digest == o.source_digest &&
         target_digest == o.target_digest && payload_size == o.payload_size &&
         operation_count == o.operation_count && target_size == o.target_size &&
         chunk_size == o.chunk_size && block_size == o.block_size &&
         layer_name == o.layer_name;
}

Status WriteCheckpoint(const std::string& path, const Checkpoint& checkpoint,
                       CheckpointLog* log) {
  if (checkpoint.identity.layer_name.size() > kMaxCheckpointLayerName) {
    return Status(ErrorCode::kInvalidArgument, "checkpoint: layer name too long");
  }
  // A fixed temporary name: a crash mid-write leaves one file that the next
  // checkpoint truncates and RemoveCheckpoint deletes.
  const std::string tmp = path + ".tmp";
  CheckpointLog written;
  Status s = WriteTemp(tmp, checkpoint, &written);
  if (s.ok()) s = RenameFile(tmp, path);
  if (!s.ok()) {
    UnlinkFile(tmp);
    return s;
  }
  REVPATCH_RETURN_IF_ERROR(SyncDirectory(DirName(path)));
  if (log != nullptr) *log = written;
  return Status::Ok();
}

Status AppendCheckpoint(const std::string& path, const CheckpointProgress& progress,
                        CheckpointLog* log) {
  File file;
  REVPATCH_RETURN_IF_ERROR(File::OpenReadWrite(path, &file));
  // The chain: this record's checksum covers the last one's.
  Sha256 checksum;
  checksum.Update(log->last_checksum.data(), log->last_checksum.size());
  BufferedWriter out(&file, log->end, kWriteBufferBytes);
  uint8_t header[kProgressHeaderSize];
  PutU64(header, progress.next_operation);
  PutU64(header + 8, progress.payload.position);
  PutU64(header + 16, progress.data_blocks);
  PutU64(header + 24, progress.new_entries.size());
  checksum.Update(header, sizeof(header));
  REVPATCH_RETURN_IF_ERROR(out.Append(header, sizeof(header)));
  REVPATCH_RETURN_IF_ERROR(AppendEntries(progress.new_entries, &checksum, &out));
  const Digest sum = checksum.Final();
  REVPATCH_RETURN_IF_ERROR(out.Append(sum.data(), sum.size()));
  REVPATCH_RETURN_IF_ERROR(out.Flush());
  REVPATCH_RETURN_IF_ERROR(file.FullSync());
  REVPATCH_RETURN_IF_ERROR(file.Close());
  log->end = out.position();
  log->last_checksum = sum;
  return Status::Ok();
}

Status ReadCheckpoint(const std::string& path, uint64_t max_entries, Checkpoint* out) {
  *out = Checkpoint();
  File file;
  REVPATCH_RETURN_IF_ERROR(File::OpenRead(path, &file));
  uint64_t size = 0;
  REVPATCH_RETURN_IF_ERROR(file.Size(&size));
  if (size < kFixedSize + kChecksumSize) return Corrupt(path, "too short");
  uint8_t fixed[kFixedSize];
  REVPATCH_RETURN_IF_ERROR(file.ReadAt(0, fixed, sizeof(fixed)));
  if (std::memcmp(fixed, kMagic, 8) != 0) return Corrupt(path, "bad magic");
  if (GetU32(fixed + 8) != kVersion) return Corrupt(path, "unknown version");
  const uint32_t name_length = GetU32(fixed + 20);
  const uint64_t entry_count = GetU64(fixed + 168);
  // Every count must fit the file size before anything is allocated.
  const uint64_t rest = size - kFixedSize - kChecksumSize;
  if (name_length > kMaxCheckpointLayerName || name_length > rest ||
      entry_count > (rest - name_length) / kEntrySize) {
    return Corrupt(path, "counts do not fit the file size");
  }
  if (entry_count > max_entries) return Corrupt(path, "more entries than the target has blocks");
  Sha256 checksum;
  checksum.Update(fixed, sizeof(fixed));
  Checkpoint c;
  DecodeFixed(fixed, &c);
  c.identity.layer_name.resize(name_length);
  REVPATCH_RETURN_IF_ERROR(file.ReadAt(kFixedSize, &c.identity.layer_name[0], name_length));
  checksum.Update(c.identity.layer_name.data(), name_length);
  c.layer.entries.reserve(static_cast<size_t>(entry_count));
  uint64_t offset = kFixedSize + name_length;
  REVPATCH_RETURN_IF_ERROR(ReadEntries(file, offset, entry_count, &checksum, &c.layer.entries));
  offset += entry_count * kEntrySize;
  Digest last;
  REVPATCH_RETURN_IF_ERROR(file.ReadAt(offset, last.data(), last.size()));
  if (checksum.Final() != last) return Corrupt(path, "checksum mismatch");
  offset += kChecksumSize;

  // Progress records, while whole and chained to the one before.
  while (size - offset >= kProgressHeaderSize + kChecksumSize) {
    uint8_t header[kProgressHeaderSize];
    REVPATCH_RETURN_IF_ERROR(file.ReadAt(offset, header, sizeof(header)));
    const uint64_t added = GetU64(header + 24);
    if (added > (size - offset - kProgressHeaderSize - kChecksumSize) / kEntrySize) break;
    if (added > max_entries - c.layer.entries.size()) {
      return Corrupt(path, "more entries than the target has blocks");
    }
    Sha256 chained;
    chained.Update(last.data(), last.size());
    chained.Update(header, sizeof(header));
    const size_t before = c.layer.entries.size();
    REVPATCH_RETURN_IF_ERROR(ReadEntries(file, offset + kProgressHeaderSize, added, &chained,
                                         &c.layer.entries));
    const uint64_t sum_at = offset + kProgressHeaderSize + added * kEntrySize;
    Digest stored;
    REVPATCH_RETURN_IF_ERROR(file.ReadAt(sum_at, stored.data(), stored.size()));
    if (chained.Final() != stored) {
      c.layer.entries.resize(before);  // torn or altered: the state before it stands
      break;
    }
    c.next_operation = GetU64(header);
    c.payload.position = GetU64(header + 8);
    c.layer.data_blocks = GetU64(header + 16);
    last = stored;
    offset = sum_at + kChecksumSize;
  }
  *out = std::move(c);
  return Status::Ok();
}

void RemoveCheckpoint(const std::string& path) {
  UnlinkFile(path);
  UnlinkFile(path + ".tmp");
}

}  // namespace revpatch
