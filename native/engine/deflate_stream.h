// Exact deflate: a raw deflate stream (RFC 1951) taken apart into its
// decompressed bytes and a description of how they were coded, and put back
// together bit for bit from the two, whatever compressor (zlib of any
// version and level, Node's zlib, gzip, 7-Zip, ...) made it.
//
// Why: a patch between two compressed payloads is as large as the
// compressed bytes themselves, since a small change in the input changes
// everything the compressor writes after it. Diffing the expansions instead
// and rebuilding the new stream on the device needs the rebuild to be exact,
// and recompressing with "the same zlib" is not: levels, strategies, window
// sizes, memLevel and zlib versions all change the bits. So the expansion
// records every choice the compressor made, and the rebuild replays them.
//
// The expansion of a stream is three parts, one after the other:
//
//   data       the decompressed bytes, first, so an executable inside
//              starts at offset 0 of the expansion;
//   structure  how the stream codes them (below);
//   trailer    u64 LE: the structure's length in bytes.
//
// The structure is a byte string, meant to be diffed: nothing in it depends
// on where in the data a block or a token is, only on the tokens themselves
// (literal runs as counts, matches as length and rank), so a region of
// data coded the same way in two streams gives the same structure bytes.
// Varints are LEB128, least significant group first, and always minimal.
//
//   u8 kDeflateStructureVersion (1)
//   blocks, each:
//     u8 tag: bit 0 BFINAL, bits 1-2 BTYPE (0 stored, 1 fixed, 2 dynamic),
//             bit 3 "odd 258 list follows" (Huffman blocks only); the rest 0
//     stored:  u8 pad (the bits skipped to the byte boundary, as read),
//              varint LEN (NLEN is its complement; the bytes are the data's)
//     dynamic: varint header_bits, then ceil(header_bits / 8) bytes: the
//              block header after BTYPE (HLIT, HDIST, HCLEN, the code length
//              code and the code lengths with their run choices) exactly as
//              coded, LSB first, unused high bits of the last byte 0
//     Huffman (fixed and dynamic):
//              varint matches;
//              with tag bit 3: varint count (> 0), then that many varints:
//                the index (among the block's matches) of the first match
//                whose length 258 is coded as symbol 284 + extra 31 rather
//                than 285, then each next such index minus the previous
//                minus 1;
//              then `matches` times
//                { varint literal_run, u8 length - 3, varint rank + 1 }
//                or { varint literal_run, u8 length - 3, u8 0,
//                     varint distance - 1 },
//              then varint literal_run (the literals before end of block)
//   after the BFINAL block: u8 pad, the bits after it to the byte boundary
//
// Literals and matches are coded with the block's codes (fixed or from its
// header); a literal is the next data byte, a match copies `length` bytes
// from `distance` back. Every other bit of the stream follows from these.
//
// A match's distance is coded by its rank: the earlier positions whose
// next `length` bytes equal the match's, taken most recent first along a
// chain of positions with the same hash of their first 3 bytes (the
// multiplicative hash of the 3 bytes little-endian by 2654435761, top 15
// bits), within 32 KiB, at most 256 links walked. A compressor that takes
// the nearest longest match (zlib, and most others) gives rank 0 almost
// always, so the structure repeats and compresses where raw distances would
// not. A distance the walk does not reach is written out after a 0, and
// only then (one spelling per stream).
//
// Both calls validate everything: input they cannot account for exactly is
// kCorrupt, never a crash. Memory: expand holds the data (at most `limit`
// bytes, grown by doubling) and 8 bytes per match (at most limit / 3 of
// them) until it writes the structure; rebuild writes only into `out` and
// holds 256 KiB of hash chains. The rebuild also checks that every match
// is one (the data repeats there), so whatever it writes inflates to the
// data.
#ifndef REVPATCH_ENGINE_DEFLATE_STREAM_H_
#define REVPATCH_ENGINE_DEFLATE_STREAM_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "status.h"

namespace revpatch {

constexpr uint8_t kDeflateStructureVersion = 1;
constexpr size_t kDeflateTrailerSize = 8;

// Appends the expansion (data, structure, trailer) of the raw deflate
// stream in[0, in_size) to *out. kCorrupt when the bytes are not exactly one
// whole deflate stream (invalid codes, a distance before the start, bytes
// after the final block) or when the expansion would pass `limit` bytes;
// *out then holds what it held before.
Status DeflateExpand(const uint8_t* in, size_t in_size, uint64_t limit,
                     std::vector<uint8_t>* out);

// The same for a stream that starts at `in` and ends somewhere before
// in + in_size (a gzip member followed by its trailer, a zip entry): the
// stream's length in bytes goes to *consumed.
Status DeflateExpandPrefix(const uint8_t* in, size_t in_size, uint64_t limit,
                           std::vector<uint8_t>* out, size_t* consumed);

// Writes exactly out_size bytes of deflate stream rebuilt from an expansion
// made by DeflateExpand. kCorrupt when the expansion is malformed (bad
// trailer, structure, codes, a match the data does not repeat, data left
// over or missing) or does not code exactly out_size bytes; kUnsupported
// when the structure's version is not kDeflateStructureVersion (a newer
// publisher's). `out` may hold anything on a failure.
Status DeflateRebuild(const uint8_t* expanded, size_t expanded_size, uint8_t* out,
                      size_t out_size);

// The length of the data part of an expansion (where its structure
// starts); kCorrupt when the trailer does not fit.
Status DeflateExpansionDataSize(const uint8_t* expanded, size_t expanded_size,
                                uint64_t* data_size);

}  // namespace revpatch

#endif  // REVPATCH_ENGINE_DEFLATE_STREAM_H_
