// A patch payload read as a stream, never exposing a byte before its chunk's
// digest has been checked (DESIGN.md invariant 4).
//
// The payload is cut into chunks of `chunk_size` bytes (the last one may be
// shorter); the trusted manifest lists each chunk's SHA-256. The reader
// preads two chunks at a time from the borrowed descriptor into its buffer
// (one where the file is still growing, below), checks both (kHashMismatch),
// and only then hands out their bytes; Finish() requires the payload to be
// fully consumed. A Read() that wants whole chunks from a chunk boundary
// (the bulk of a large operation's data) gets them read and checked in its
// own buffer instead, with no copy; on a mismatch it fails, as ever. Two, because their digests are computed together on one
// core (Sha256::UpdatePair), at nearly twice the speed of one after the
// other. The signed list of chunk digests with the signed size pins every
// byte, so a digest of the whole payload would check nothing more: the
// reader hashes each byte once. Memory is two chunks (<= 2 * kMaxChunkSize)
// regardless of the payload size.
//
// Growing files (streaming install): with a WaitForBytes set, the reader
// loads one chunk at a time (so it never waits for a chunk beyond the one
// it needs) and calls it with the end offset (in the file) of each chunk
// before reading that chunk; it returns once that many leading bytes of the
// file are written, or with the error that ended the download. The chunk
// is then read and checked as always, so a byte is still never handed out
// unchecked.
#ifndef REVPATCH_ENGINE_PAYLOAD_READER_H_
#define REVPATCH_ENGINE_PAYLOAD_READER_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "file_io.h"
#include "sha256.h"
#include "status.h"

namespace revpatch {

constexpr uint32_t kMinChunkSize = 64u << 10;
constexpr uint32_t kMaxChunkSize = 16u << 20;

// Where a reader stands, for a checkpoint: the payload bytes handed out. The
// chunk holding the next byte is not part of the state: a resumed reader
// loads it again and checks its digest before handing out any byte of it,
// so a checkpoint never lets an unchecked payload byte through.
struct PayloadPosition {
  uint64_t position = 0;
};

// Blocks until the first `end` bytes of the patch file are available.
using WaitForBytes = std::function<Status(uint64_t end)>;

class PayloadReader {
 public:
  // Checks the framing values only (no I/O): fd >= 0 (kInvalidArgument),
  // chunk_size in [kMinChunkSize, kMaxChunkSize], offset + size without
  // overflow, and chunk_digests.size() == ceil(size / chunk_size) (kCorrupt).
  // `fd` is borrowed and must outlive the reader.
  static Status Open(int fd, uint64_t offset, uint64_t size, uint32_t chunk_size,
                     const std::vector<Digest>& chunk_digests,
                     std::unique_ptr<PayloadReader>* out);
  ~PayloadReader();

  // Copies the next `n` bytes, loading and checking chunks as needed; may
  // span chunks. Reading past the end of the payload is kCorrupt.
  Status Read(uint8_t* out, size_t n);
  // Like Read, but drops the bytes (their chunks are still checked).
  Status Skip(uint64_t n);
  // kCorrupt unless every byte was consumed.
  Status Finish() const;

  // Waits through `wait` before each chunk read (none: the file is complete).
  void SetWaitForBytes(WaitForBytes wait) { wait_for_bytes_ = std::move(wait); }

  PayloadPosition SavePosition() const;
  // Moves a reader that has not read anything yet to `saved` (from a reader
  // over the same payload): re-reads and checks the chunk `saved.position`
  // lies in (with the one after it, as every load), and skips to it. kCorrupt if `saved` is not a position of this
  // payload, kHashMismatch if that chunk does not match.
  Status RestorePosition(const PayloadPosition& saved);

  uint64_t position() const { return position_; }
  uint64_t size() const { return size_; }
  uint64_t remaining() const { return size_ - position_; }

 private:
  PayloadReader() = default;
  // Reads chunk next_chunk_ into `dest` and, where the file is complete and
  // `room` holds it too, the one after; checks them and moves next_chunk_
  // past the good ones. *loaded: the bytes checked (a bad second chunk is
  // left for the next read to fail on). On failure `dest` holds unchecked
  // bytes and nothing was handed out.
  Status ReadChunksInto(uint8_t* dest, size_t room, size_t* loaded);
  // ReadChunksInto the reader's own buffer.
  Status LoadNextChunks();

  File file_;  // borrowed descriptor: released, not closed, on destruction
  uint64_t offset_ = 0;
  uint64_t size_ = 0;
  uint32_t chunk_size_ = 0;
  std::vector<Digest> chunk_digests_;
  std::vector<uint8_t> chunk_;  // one or two checked chunks
  size_t chunk_pos_ = 0;       // next unread byte in chunk_
  uint64_t next_chunk_ = 0;    // index of the chunk LoadNextChunks reads first
  uint64_t position_ = 0;      // payload bytes handed out
  WaitForBytes wait_for_bytes_;
};

}  // namespace revpatch

#endif  // REVPATCH_ENGINE_PAYLOAD_READER_H_
