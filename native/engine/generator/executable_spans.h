// Publisher side of reference prediction (references.h): finds the
// executables inside a view and describes them as reference spans. Each
// format has its own file (elf_spans.cc, macho_spans.cc); the device never
// parses an executable.
#ifndef REVPATCH_GENERATOR_EXECUTABLE_SPANS_H_
#define REVPATCH_GENERATOR_EXECUTABLE_SPANS_H_

#include <cstdint>
#include <vector>

#include "references.h"

namespace revpatch {

// The spans of the executables that start at a block boundary of `view`
// and lie wholly inside it: 64-bit little-endian ELF (x86-64, AArch64; its
// PT_LOAD segments, executable ones as code) and 64-bit Mach-O (x86-64,
// arm64; the sections of its segments but __LINKEDIT, sections of
// instructions as code, so also each slice of a universal binary), whose
// loaded bytes are all at one address-minus-offset bias, as the Go, GNU and
// Apple linkers lay them out. Appends to `spans`, sorted.
void FindExecutableSpans(const uint8_t* view, size_t size, uint32_t block_size,
                         std::vector<ReferenceSpan>* spans);

namespace executable_spans {

struct Segment {
  bool exec;
  uint64_t offset, size;  // file bytes
};

// The spans of one executable at view offset `off`, all of whose loadable
// bytes (`pieces`) lie within the view, at one bias (address minus file
// offset). [low, high) is its memory image, as addresses.
void AddSpans(std::vector<Segment> pieces, bool arm64, uint64_t off, uint64_t bias, uint64_t low,
              uint64_t high, std::vector<ReferenceSpan>* spans);

// One parser per format: the spans of the executable at view offset `off`
// (`avail` bytes of the view from there). Each returns the file bytes the
// executable spans, 0 when it is not one of its format.
uint64_t ElfSpans(const uint8_t* e, uint64_t avail, uint64_t off, std::vector<ReferenceSpan>* spans);
uint64_t MachOSpans(const uint8_t* m, uint64_t avail, uint64_t off,
                    std::vector<ReferenceSpan>* spans);

}  // namespace executable_spans
}  // namespace revpatch

#endif  // REVPATCH_GENERATOR_EXECUTABLE_SPANS_H_
