// Publisher side of reference prediction (references.h): finds the
// executables inside a view and describes them as reference spans. Each
// format has its own file (elf_spans.cc, macho_spans.cc, pe_spans.cc); the
// device never parses an executable.
//
// Version 4 (address maps): each format's parser fills an Executable (its
// address map and its parts: code, pointer-holding data, parts without
// file bytes); FindExecutables finds them in a view, and
// BuildAddressReferences pairs the source's with the target's and writes
// the version 4 reference info (references.h). Version 3
// (FindExecutableSpans) is kept for executables at one bias.
#ifndef REVPATCH_GENERATOR_EXECUTABLE_SPANS_H_
#define REVPATCH_GENERATOR_EXECUTABLE_SPANS_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "references.h"

namespace revpatch {

// Random access to a view's bytes (a buffer, or an image file read block
// by block), so a target that is not in memory can be parsed too.
class ByteSource {
 public:
  virtual ~ByteSource() = default;
  virtual uint64_t size() const = 0;
  // False when [offset, offset + length) is not wholly inside, or unreadable.
  virtual bool Read(uint64_t offset, size_t length, uint8_t* out) const = 0;
};

class MemoryByteSource : public ByteSource {
 public:
  MemoryByteSource(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  uint64_t size() const override { return size_; }
  bool Read(uint64_t offset, size_t length, uint8_t* out) const override;

 private:
  const uint8_t* data_;
  size_t size_;
};

// What a part of an executable holds, for prediction.
enum class PartKind : uint8_t {
  kCode = 1,      // instructions: kRel32 (x86-64) or kArm64 spans
  kPointers = 2,  // data holding absolute pointers (or relocations naming
                  // them): kAbs64 spans
  kOther = 3,     // neither (strings, tables of offsets): no span
};

struct ExecutablePart {
  std::string name;       // section name; matches parts across versions
  uint64_t address = 0;
  uint64_t size = 0;      // bytes of address space
  PartKind kind = PartKind::kOther;
  bool file_bytes = true; // false: .bss, .tbss, .relro_padding, zero fill
};

// One executable of a view, in view coordinates.
struct Executable {
  bool arm64 = false;         // else x86-64
  uint64_t view_offset = 0;   // its first byte
  uint64_t file_size = 0;     // view bytes it spans from there
  uint64_t low = 0, high = 0; // its memory image, as addresses
  // Address -> view offset for every byte the file holds (segments' file
  // bytes, never NOBITS), sorted by address, disjoint in addresses and in
  // offsets.
  std::vector<AddressMapping> map;
  // Sections (or their equivalent), in file order. Spans come from the
  // parts with file bytes that are kCode or kPointers; address
  // equivalences from parts without file bytes, matched by name.
  std::vector<ExecutablePart> parts;
};

// The executables that start at a block boundary of `view`, lie wholly
// inside it and parse cleanly, in view order (nothing inside one is taken
// for another).
void FindExecutables(const ByteSource& view, uint32_t block_size, std::vector<Executable>* out);

// Version 4 reference info for a delta from `old_view` to `new_view`: the
// i-th executable of the old is paired with the i-th of the new when both
// are of the same architecture; every pair becomes an image (maps, address
// equivalences of parts without file bytes by name) and its old parts'
// spans. Sets info->version = 4; leaves info->equivalences to the caller.
void BuildAddressReferences(const std::vector<Executable>& old_execs,
                            const std::vector<Executable>& new_execs, ReferenceInfo* info);

// Version 3: the spans of the executables that start at a block boundary
// of `view` and lie wholly inside it whose loaded bytes are all at one
// address-minus-offset bias (a PE32+: only references into and within its
// code section). Appends to `spans`, sorted.
void FindExecutableSpans(const uint8_t* view, size_t size, uint32_t block_size,
                         std::vector<ReferenceSpan>* spans);

namespace executable_spans {

// Sorts `map` by address; false when two entries overlap in addresses or in
// file offsets (a file no loader takes, or one whose bytes serve twice).
bool SortDisjointMap(std::vector<AddressMapping>* map);

// One parser per format: the executable at view offset `off` of `view`.
// Each returns false (leaving *out in any state) when it is not one of its
// format or does not parse; never reads outside the view.
// (FindExecutables tries each in turn.)
bool ParseElf(const ByteSource& view, uint64_t off, Executable* out);
// 64-bit Mach-O, x86-64 or arm64 (macho_spans.cc): one map entry per
// segment with file bytes (__LINKEDIT too), one part per section
// ("__SEG,__sect"; zero fill without file bytes).
bool ParseMachO(const ByteSource& view, uint64_t off, Executable* out);
// PE32+, x86-64 or arm64 (pe_spans.cc): one map entry per section with
// file bytes (ImageBase + RVA -> its raw data), one part per section, and
// one without file bytes ("<name>.bss") where it is longer in memory.
bool ParsePe(const ByteSource& view, uint64_t off, Executable* out);

// Version 3, kept for executables at one bias.
struct Segment {
  bool exec;
  uint64_t offset, size;  // file bytes
};
void AddSpans(std::vector<Segment> pieces, bool arm64, uint64_t off, uint64_t bias, uint64_t low,
              uint64_t high, std::vector<ReferenceSpan>* spans);
uint64_t ElfSpans(const uint8_t* e, uint64_t avail, uint64_t off, std::vector<ReferenceSpan>* spans);
uint64_t MachOSpans(const uint8_t* m, uint64_t avail, uint64_t off,
                    std::vector<ReferenceSpan>* spans);
// PE32+ at one bias per span: its code section, and pointers to it.
uint64_t PeSpans(const uint8_t* p, uint64_t avail, uint64_t off, std::vector<ReferenceSpan>* spans);

}  // namespace executable_spans
}  // namespace revpatch

#endif  // REVPATCH_GENERATOR_EXECUTABLE_SPANS_H_
