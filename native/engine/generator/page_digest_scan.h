// Publisher side of page digests (page_digests.h): finds the code
// signatures of the Mach-O executables inside an image, each a run of page
// hashes the device can compute itself. The parser is in macho_spans.cc,
// beside the rest of the Mach-O reading.
#ifndef REVPATCH_GENERATOR_PAGE_DIGEST_SCAN_H_
#define REVPATCH_GENERATOR_PAGE_DIGEST_SCAN_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "page_digests.h"

namespace revpatch {

// Reads image bytes [offset, offset + length) into `out`; false when they
// are not all in the image.
using ImageReadFn = std::function<bool(uint64_t offset, uint64_t length, std::vector<uint8_t>* out)>;

// The SHA-256 CodeDirectories (hash type 2, or 3: truncated to 20 bytes) of
// every 64-bit Mach-O (x86-64, arm64) that starts at a block boundary of an
// image of `size` bytes, so also each slice of a universal binary: one run
// per CodeDirectory, sorted, at most kMaxPageDigestRuns, valid
// (ValidPageDigests). Reads the first 4 bytes of each block, and of a
// Mach-O its load commands and its signature.
void FindPageDigests(const ImageReadFn& read, uint64_t size, uint32_t block_size,
                     std::vector<PageDigests>* runs);

// The same for an image in memory, and for an image file (the target,
// which the generator never holds whole).
void FindPageDigests(const uint8_t* image, size_t size, uint32_t block_size,
                     std::vector<PageDigests>* runs);
class ImageFile;
void FindPageDigests(const ImageFile& image, std::vector<PageDigests>* runs);

namespace executable_spans {
// The runs of the one Mach-O at image offset `off` (`avail` bytes of the
// image from there); appends nothing when it is not one or holds none.
void MachOPageDigests(const ImageReadFn& read, uint64_t off, uint64_t avail,
                      std::vector<PageDigests>* runs);
}  // namespace executable_spans

}  // namespace revpatch

#endif  // REVPATCH_GENERATOR_PAGE_DIGEST_SCAN_H_
