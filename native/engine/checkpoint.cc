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
constexpr uint32_t kVersion = 2;
constexpr size_t kFixedSize = 176;
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

Status WriteTemp(const std::string& tmp, const Checkpoint& c, uint64_t* size) {
  File file;
  REVPATCH_RETURN_IF_ERROR(File::CreateTruncate(tmp, &file));
  Sha256 checksum;
  BufferedWriter out(&file, 0, kWriteBufferBytes);
  auto append = [&](const void* data, size_t n) {
    checksum.Update(data, n);
    return out.Append(data, n);
  };
  uint8_t fixed[kFixedSize];
  EncodeFixed(c, fixed);
  REVPATCH_RETURN_IF_ERROR(append(fixed, sizeof(fixed)));
  REVPATCH_RETURN_IF_ERROR(append(c.identity.layer_name.data(), c.identity.layer_name.size()));
  // Entries are encoded a batch at a time and hashed and appended per
  // batch: a checkpoint of a large layer holds millions of them, and one
  // Update and Append per 48-byte record cost more than the hashing.
  std::vector<uint8_t> batch(kEntrySize * kEntriesPerBatch);
  const std::vector<LayerIndexEntry>& entries = c.layer.entries;
  for (size_t first = 0; first < entries.size(); first += kEntriesPerBatch) {
    const size_t n = std::min(kEntriesPerBatch, entries.size() - first);
    for (size_t i = 0; i < n; ++i) {
      const LayerIndexEntry& e = entries[first + i];
      uint8_t* rec = &batch[i * kEntrySize];
      PutU64(rec, e.block);
      PutU64(rec + 8, e.offset);
      std::memcpy(rec + 16, e.leaf.data(), 32);
    }
    REVPATCH_RETURN_IF_ERROR(append(batch.data(), n * kEntrySize));
  }
  const Digest sum = checksum.Final();
  REVPATCH_RETURN_IF_ERROR(out.Append(sum.data(), sum.size()));
  REVPATCH_RETURN_IF_ERROR(out.Flush());
  *size = out.position();
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
                       uint64_t* file_bytes) {
  if (checkpoint.identity.layer_name.size() > kMaxCheckpointLayerName) {
    return Status(ErrorCode::kInvalidArgument, "checkpoint: layer name too long");
  }
  // A fixed temporary name: a crash mid-write leaves one file that the next
  // checkpoint truncates and RemoveCheckpoint deletes.
  const std::string tmp = path + ".tmp";
  uint64_t size = 0;
  Status s = WriteTemp(tmp, checkpoint, &size);
  if (s.ok()) s = RenameFile(tmp, path);
  if (!s.ok()) {
    UnlinkFile(tmp);
    return s;
  }
  REVPATCH_RETURN_IF_ERROR(SyncDirectory(DirName(path)));
  if (file_bytes != nullptr) *file_bytes = size;
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
  // Every count must add up to the file size before anything is allocated.
  const uint64_t rest = size - kFixedSize - kChecksumSize;
  if (name_length > kMaxCheckpointLayerName || name_length > rest ||
      entry_count > max_entries || entry_count != (rest - name_length) / kEntrySize ||
      (rest - name_length) % kEntrySize != 0) {
    return Corrupt(path, "counts do not match the file size");
  }
  Sha256 checksum;
  checksum.Update(fixed, sizeof(fixed));
  Checkpoint c;
  DecodeFixed(fixed, &c);
  c.identity.layer_name.resize(name_length);
  REVPATCH_RETURN_IF_ERROR(file.ReadAt(kFixedSize, &c.identity.layer_name[0], name_length));
  checksum.Update(c.identity.layer_name.data(), name_length);
  c.layer.entries.reserve(static_cast<size_t>(entry_count));
  std::vector<uint8_t> chunk;
  uint64_t offset = kFixedSize + name_length;
  for (uint64_t first = 0; first < entry_count; first += kReadEntries) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(kReadEntries, entry_count - first));
    chunk.resize(n * kEntrySize);
    REVPATCH_RETURN_IF_ERROR(file.ReadAt(offset, chunk.data(), chunk.size()));
    checksum.Update(chunk.data(), chunk.size());
    offset += chunk.size();
    for (size_t i = 0; i < n; ++i) {
      const uint8_t* r = &chunk[i * kEntrySize];
      LayerIndexEntry e;
      e.block = GetU64(r);
      e.offset = GetU64(r + 8);
      std::memcpy(e.leaf.data(), r + 16, 32);
      c.layer.entries.push_back(e);
    }
  }
  Digest stored;
  REVPATCH_RETURN_IF_ERROR(file.ReadAt(offset, stored.data(), stored.size()));
  if (checksum.Final() != stored) return Corrupt(path, "checksum mismatch");
  *out = std::move(c);
  return Status::Ok();
}

void RemoveCheckpoint(const std::string& path) {
  UnlinkFile(path);
  UnlinkFile(path + ".tmp");
}

}  // namespace revpatch
