// The fuzzers' view of one input, after LLVM's FuzzedDataProvider but read
// strictly front to back: fixed-width little-endian integers, then bytes.
// Reading in one direction keeps inputs easy to write by hand and by
// make_corpus (FuzzInputWriter below is the mirror image), and a mutation
// of the parameters at the front does not shift the payload behind them.
// Reading past the end yields zeros and empty byte strings, never an error,
// so every input is a valid input.
//
// Our own header rather than <fuzzer/FuzzedDataProvider.h>: the harnesses
// are also compiled by g++ into the regression test, where clang's header
// is not on the include path.
#ifndef REVPATCH_FUZZ_FUZZ_INPUT_H_
#define REVPATCH_FUZZ_FUZZ_INPUT_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <vector>

namespace revpatch_fuzz {

class FuzzInput {
 public:
  FuzzInput(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  // The next sizeof(T) bytes as a little-endian unsigned integer; missing
  // bytes read as zero.
  template <typename T>
  T Take() {
    static_assert(std::is_unsigned<T>::value, "unsigned integers only");
    T value = 0;
    for (size_t i = 0; i < sizeof(T); ++i) {
      if (pos_ < size_) value |= static_cast<T>(static_cast<T>(data_[pos_++]) << (8 * i));
    }
    return value;
  }

  // Up to `n` bytes (fewer at the end of the input).
  std::vector<uint8_t> TakeBytes(size_t n) {
    n = std::min(n, remaining());
    std::vector<uint8_t> out(data_ + pos_, data_ + pos_ + n);
    pos_ += n;
    return out;
  }
  std::vector<uint8_t> TakeRest() { return TakeBytes(remaining()); }

  size_t remaining() const { return size_ - pos_; }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// Writes what FuzzInput reads, for seed corpora.
class FuzzInputWriter {
 public:
  template <typename T>
  FuzzInputWriter& Put(T value) {
    static_assert(std::is_unsigned<T>::value, "unsigned integers only");
    for (size_t i = 0; i < sizeof(T); ++i) bytes_.push_back(static_cast<uint8_t>(value >> (8 * i)));
    return *this;
  }
  FuzzInputWriter& PutBytes(const std::vector<uint8_t>& bytes) {
    bytes_.insert(bytes_.end(), bytes.begin(), bytes.end());
    return *this;
  }
  const std::vector<uint8_t>& bytes() const { return bytes_; }

 private:
  std::vector<uint8_t> bytes_;
};

}  // namespace revpatch_fuzz

#endif  // REVPATCH_FUZZ_FUZZ_INPUT_H_
