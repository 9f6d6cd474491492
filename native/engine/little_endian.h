// Explicit little-endian encoding for every on-disk integer of the engine.
// Formats are defined byte by byte (docs/on-disk-format.md); structs are
// never copied to or from disk, so host endianness and padding do not matter.
#ifndef REVPATCH_ENGINE_LITTLE_ENDIAN_H_
#define REVPATCH_ENGINE_LITTLE_ENDIAN_H_

#include <cstdint>

namespace revpatch {

inline void PutU32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
inline void PutU64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
inline uint32_t GetU32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
inline uint64_t GetU64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

}  // namespace revpatch

#endif  // REVPATCH_ENGINE_LITTLE_ENDIAN_H_
