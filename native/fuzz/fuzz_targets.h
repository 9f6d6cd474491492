// The fuzz targets' entry points. Each *_fuzzer.cc defines one of these and,
// unless REVPATCH_FUZZ_REPLAY is defined, the LLVMFuzzerTestOneInput that
// calls it; the regression test (native/test/fuzz_regression_test.cc) links
// all of them with REVPATCH_FUZZ_REPLAY and feeds every saved input to the
// same function libFuzzer ran. Each returns 0 and aborts on a failed check.
#ifndef REVPATCH_FUZZ_FUZZ_TARGETS_H_
#define REVPATCH_FUZZ_FUZZ_TARGETS_H_

#include <cstddef>
#include <cstdint>

namespace revpatch_fuzz {

using FuzzEntry = int (*)(const uint8_t* data, size_t size);

int FuzzOperation(const uint8_t* data, size_t size);
int FuzzDiff(const uint8_t* data, size_t size);
int FuzzPayload(const uint8_t* data, size_t size);
int FuzzLayer(const uint8_t* data, size_t size);
int FuzzCommitRecord(const uint8_t* data, size_t size);
int FuzzStreamCodec(const uint8_t* data, size_t size);
int FuzzElf(const uint8_t* data, size_t size);
int FuzzMachOPe(const uint8_t* data, size_t size);
int FuzzDeflate(const uint8_t* data, size_t size);

}  // namespace revpatch_fuzz

#ifdef REVPATCH_FUZZ_REPLAY
#define REVPATCH_FUZZ_ENTRY(function)
#else
#define REVPATCH_FUZZ_ENTRY(function)                                           \
  extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {     \
    return ::revpatch_fuzz::function(data, size);                               \
  }
#endif

#endif  // REVPATCH_FUZZ_FUZZ_TARGETS_H_
