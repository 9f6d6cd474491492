// Explicit little-endian encoding for every on-disk integer of the engine.
// Formats are defined byte by byte (docs/on-disk-format.md); structs are
// never copied to or from disk, so host endianness and padding do not matter.
#ifndef REVPATCH_ENGINE_LITTLE_ENDIAN_H_
#define REVPATCH_ENGINE_LITTLE_ENDIAN_H_

#include <cstdint>
#include <cstring>

namespace revpatch {

// On a little-endian host (every one revpatch is built for) these compile
// to one load or store; the byte loops are the definition and the fallback.
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define REVPATCH_LITTLE_ENDIAN_HOST 1
#endif

inline void PutU32(uint8_t* p, uint32_t v) {
#ifdef REVPATCH_LITTLE_ENDIAN_HOST
  std::memcpy(p, &v, 4);
#else
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
#endif
}
inline void PutU64(uint8_t* p, uint64_t v) {
#ifdef REVPATCH_LITTLE_ENDIAN_HOST
  std::memcpy(p, &v, 8);
#else
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
#endif
}
inline uint32_t GetU32(const uint8_t* p) {
  uint32_t v = 0;
#ifdef REVPATCH_LITTLE_ENDIAN_HOST
  std::memcpy(&v, p, 4);
#else
  for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
#endif
  return v;
}
inline uint64_t GetU64(const uint8_t* p) {
  uint64_t v = 0;
#ifdef REVPATCH_LITTLE_ENDIAN_HOST
  std::memcpy(&v, p, 8);
#else
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
#endif
  return v;
}

}  // namespace revpatch

#endif  // REVPATCH_ENGINE_LITTLE_ENDIAN_H_
