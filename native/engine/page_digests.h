// Page digests: hashes an executable holds of its own pages, rebuilt on the
// device instead of carried by the delta.
//
// A Mach-O on Apple silicon is always signed, at least ad hoc by the linker:
// its code signature holds a SHA-256 of every 4 KiB page of the file before
// the signature. When code moves, nearly every page changes, and so does
// nearly every hash: 32 random bytes per page that no delta compresses
// (esbuild darwin-arm64 0.24.0 -> 0.24.1: 74 KB of a 219 KB patch; biome's
// 87 MB executable: 678 KB). The device can compute them itself once it has
// the new pages.
//
// A run of page digests (all in the new view's coordinates): `count` hash
// slots of `hash_size` bytes from `slots`, slot i the first hash_size bytes
// of SHA-256 of new view [pages + i * 2^page_shift, min(+2^page_shift,
// limit)). The delta does not carry the hashes themselves: after a delta is
// decoded (adds and copies done), each slot whose page and slot lie wholly
// in the op's new buffer gets the page's hash added to its bytes (byte by
// byte, mod 256); the publisher encoded the target with the same hash
// subtracted, so where the prediction is right the delta holds zeros.
// A slot whose page or slot is not in the buffer is left as decoded. A wrong
// run costs diff bytes, never correctness: the op's target hash is checked
// after, as for every delta.
//
// Order: runs are sorted by `slots`, their slot ranges disjoint, and every
// run's hashed bytes end where its slots start at the latest (limit <=
// slots), so a run's pages may hold earlier runs' slots but never its own
// or a later run's: the device applies runs in order, the publisher
// subtracts them in reverse, and both hash the same bytes.
//
// Encoding (LEB128 varints): run_count, then per run: slots - previous
// run's slot end (0 for the first), slots - limit, limit - pages,
// page_shift, hash_size; count is ceil((limit - pages) / 2^page_shift). At
// most kMaxPageDigestRuns runs; page_shift in [9, 16]; hash_size in [1, 32];
// limit > pages; every offset and slot end below 2^62. Anything else is
// kCorrupt.
#ifndef REVPATCH_ENGINE_PAGE_DIGESTS_H_
#define REVPATCH_ENGINE_PAGE_DIGESTS_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "operation.h"
#include "status.h"

namespace revpatch {

// Each run costs the device one pass of SHA-256 over at most the op's new
// buffer, so their number is capped (a universal binary has one per slice).
constexpr size_t kMaxPageDigestRuns = 16;
constexpr uint64_t kMaxDigestOffset = uint64_t{1} << 62;  // references.h's kMaxViewOffset

struct PageDigests {
  uint64_t slots = 0;    // new view offset of the first hash
  uint64_t count = 0;    // hashes: ceil((limit - pages) / 2^page_shift)
  uint64_t pages = 0;    // new view offset of page 0
  uint64_t limit = 0;    // end of the hashed bytes (the last page may be short)
  uint8_t page_shift = 12;
  uint8_t hash_size = 32;  // SHA-256, truncated to this many bytes
};

// Appends the encoding of `runs` (which must satisfy the rules above:
// ValidPageDigests) to `out`.
void EncodePageDigests(const std::vector<PageDigests>& runs, std::vector<uint8_t>* out);
// Decodes exactly `size` bytes; leaves `runs` untouched on failure.
Status DecodePageDigests(const uint8_t* data, size_t size, std::vector<PageDigests>* runs);
bool ValidPageDigests(const std::vector<PageDigests>& runs);

// Adds (device, after decoding) or subtracts (publisher, before encoding)
// each run's page hashes at its slots in `buf`, the op's new buffer laid out
// in the new view by `extents` of `block_size` bytes blocks (null: the
// buffer is the view from 0), as references.h's DeltaLayout::target.
// kCorrupt when the extents do not cover the buffer.
enum class DigestDirection { kAdd, kSubtract };
Status ApplyPageDigests(const std::vector<PageDigests>& runs, uint32_t block_size,
                        const std::vector<Extent>* extents, DigestDirection direction,
                        uint8_t* buf, size_t size);

}  // namespace revpatch

#endif  // REVPATCH_ENGINE_PAGE_DIGESTS_H_
