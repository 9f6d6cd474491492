// FindDeflateStreams: every position where a gzip member (1f 8b 08), a zip
// local entry with method 8 or a zlib header (CM 8, FCHECK, no preset
// dictionary) starts is tried: the raw deflate stream after the header is
// expanded, its container's check is compared (gzip's CRC-32 and ISIZE,
// zlib's Adler-32, zip's sizes and CRC-32 when the header has them), and the
// stream is rebuilt from its expansion and compared byte for byte. Only
// streams that pass all of it are reported, as the raw deflate bytes
// (headers and trailers stay in the buffer, diffed as bytes). Streams do
// not overlap: the scan resumes after each one found. Streams shorter than
// kMinStreamBytes or expanding past kMaxExpandedBytes (the device's bound)
// are left out.
#include "deflate_scan.h"

#include <algorithm>
#include <cstring>

#include "deflate_stream.h"
#include "little_endian.h"
#include "stream_delta.h"

namespace revpatch {
namespace {

uint32_t Crc32(const uint8_t* p, size_t n) {
  static const struct Table {
    uint32_t t[256];
    Table() {
      for (uint32_t i = 0; i < 256; ++i) {
        uint32_t c = i;
        for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        t[i] = c;
      }
    }
  } table;
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) c = table.t[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

uint32_t Adler32(const uint8_t* p, size_t n) {
  uint32_t a = 1, b = 0;
  while (n > 0) {
    const size_t chunk = std::min<size_t>(n, 5552);
    for (size_t i = 0; i < chunk; ++i) {
      a += p[i];
      b += a;
    }
    a %= 65521;
    b %= 65521;
    p += chunk;
    n -= chunk;
  }
  return (b << 16) | a;
}

uint16_t GetU16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t GetU32BE(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}

enum class Container { kGzip, kZlib, kZip };

// The raw deflate start of a gzip member at buf[i], or 0 when the header
// is not one (or runs past the buffer).
size_t GzipDataStart(const uint8_t* buf, size_t size, size_t i) {
  if (size - i < 18) return 0;
  const uint8_t flags = buf[i + 3];
  if (flags & 0xE0) return 0;
  size_t at = i + 10;
  if (flags & 4) {  // FEXTRA
    if (size - at < 2) return 0;
    const size_t xlen = GetU16(buf + at);
    if (size - at - 2 < xlen) return 0;
    at += 2 + xlen;
  }
  for (int bit : {8, 16}) {  // FNAME, FCOMMENT: zero-terminated
    if (!(flags & bit)) continue;
    const void* nul = std::memchr(buf + at, 0, size - at);
    if (nul == nullptr) return 0;
    at = static_cast<size_t>(static_cast<const uint8_t*>(nul) - buf) + 1;
  }
  if (flags & 2) at += 2;  // FHCRC
  return at < size ? at : 0;
}

// Expands and rebuilds the stream at buf[start]; true (with its length)
// when it comes back exactly and its container's checks pass.
bool TryStream(const uint8_t* buf, size_t size, size_t start, Container kind, size_t header_at,
               std::vector<uint8_t>* expanded, std::vector<uint8_t>* rebuilt, size_t* length,
               size_t* end) {
  expanded->clear();
  size_t consumed = 0;
  if (!DeflateExpandPrefix(buf + start, size - start, kMaxExpandedBytes, expanded,
                           &consumed)
           .ok()) {
    return false;
  }
  if (consumed < kMinStreamBytes) return false;
  uint64_t data_size = 0;
  if (!DeflateExpansionDataSize(expanded->data(), expanded->size(), &data_size).ok()) return false;
  const uint8_t* data = expanded->data();
  const size_t after = start + consumed;
  size_t stream_end = after;
  switch (kind) {
    case Container::kGzip:
      if (size - after < 8) return false;
      if (GetU32(buf + after) != Crc32(data, data_size) ||
          GetU32(buf + after + 4) != static_cast<uint32_t>(data_size)) {
        return false;
      }
      stream_end = after + 8;
      break;
    case Container::kZlib:
      if (size - after < 4 || GetU32BE(buf + after) != Adler32(data, data_size)) return false;
      stream_end = after + 4;
      break;
    case Container::kZip: {
      const uint8_t* h = buf + header_at;
      if (!(GetU16(h + 6) & 8)) {  // sizes and CRC in the header
        if (GetU32(h + 18) != consumed || GetU32(h + 22) != static_cast<uint32_t>(data_size) ||
            GetU32(h + 14) != Crc32(data, data_size)) {
          return false;
        }
      }
      break;
    }
  }
  rebuilt->resize(consumed);
  if (!DeflateRebuild(expanded->data(), expanded->size(), rebuilt->data(), consumed).ok()) {
    return false;
  }
  if (std::memcmp(rebuilt->data(), buf + start, consumed) != 0) return false;
  *length = consumed;
  *end = stream_end;
  return true;
}

}  // namespace

void FindDeflateStreams(const uint8_t* buf, size_t size, std::vector<FoundStream>* out) {
  std::vector<uint8_t> expanded, rebuilt;
  size_t i = 0;
  while (i + 2 < size) {
    size_t start = 0;
    Container kind = Container::kZlib;
    const uint8_t b0 = buf[i], b1 = buf[i + 1];
    if (b0 == 0x1F && b1 == 0x8B && buf[i + 2] == 8) {
      kind = Container::kGzip;
      start = GzipDataStart(buf, size, i);
    } else if (b0 == 'P' && b1 == 'K' && size - i >= 30 && buf[i + 2] == 3 && buf[i + 3] == 4 &&
               GetU16(buf + i + 8) == 8 && !(GetU16(buf + i + 6) & 1)) {
      kind = Container::kZip;
      const size_t at = i + 30 + GetU16(buf + i + 26) + GetU16(buf + i + 28);
      start = at < size ? at : 0;
    } else if ((b0 & 0x0F) == 8 && (b0 >> 4) <= 7 && ((b0 << 8) | b1) % 31 == 0 && !(b1 & 0x20)) {
      kind = Container::kZlib;
      start = i + 2;
    }
    size_t length = 0, end = 0;
    if (start != 0 &&
        TryStream(buf, size, start, kind, i, &expanded, &rebuilt, &length, &end)) {
      FoundStream found;
      found.offset = start;
      found.length = length;
      found.expanded_length = expanded.size();
      found.codec = StreamCodec::kDeflate;
      out->push_back(std::move(found));
      i = end;
      continue;
    }
    ++i;
  }
}

}  // namespace revpatch
