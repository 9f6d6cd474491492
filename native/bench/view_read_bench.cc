// Reads of a View straight through the engine, verified and not, for
// bench/view_reads.js: the cost of verification without the addon's call
// overhead (what a native reader, such as the nbdkit plugin, pays).
//
//   view_read_bench BASE TREE RUNS
//
// Prints one JSON object: per run, sequential MiB/s (4 MiB ReadBlocks into
// one buffer) with the base in the page cache and with the base's pages
// dropped first (posix_fadvise DONTNEED on that file only, so the reads come
// from the disk), and random 4 KiB reads/s (one thread, cached), unverified
// and verified, each run alternating which mode goes first.
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "view.h"

namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

bool Sequential(revpatch::View& view, double* mib_per_s) {
  const uint64_t chunk = (uint64_t{4} << 20) / view.block_size();
  std::vector<uint8_t> buffer(chunk * view.block_size());
  const uint64_t blocks = view.block_count();
  const auto start = Clock::now();
  for (uint64_t b = 0; b < blocks; b += chunk) {
    const uint64_t n = blocks - b < chunk ? blocks - b : chunk;
    revpatch::Status s = view.ReadBlocks(b, n, buffer.data());
    if (!s.ok()) {
      std::fprintf(stderr, "%s\n", s.ToString().c_str());
      return false;
    }
  }
  *mib_per_s = static_cast<double>(view.size_bytes()) / (1 << 20) / Seconds(start);
  return true;
}

bool Random(revpatch::View& view, uint64_t reads, uint32_t seed, double* per_s) {
  std::vector<uint8_t> buffer(view.block_size());
  const uint64_t blocks = view.block_count();
  uint32_t state = seed | 1;
  const auto start = Clock::now();
  for (uint64_t i = 0; i < reads; ++i) {
    state ^= state << 13;
    state ^= state >> 17;
    state ^= state << 5;
    revpatch::Status s = view.ReadBlocks(state % blocks, 1, buffer.data());
    if (!s.ok()) {
      std::fprintf(stderr, "%s\n", s.ToString().c_str());
      return false;
    }
  }
  *per_s = static_cast<double>(reads) / Seconds(start);
  return true;
}

// Drops the page cache's copy of `path` (only that file's clean pages).
// Where posix_fadvise is missing (macOS) it cannot, and says so.
bool DropCache(const char* path) {
#ifdef POSIX_FADV_DONTNEED
  int fd = ::open(path, O_RDONLY);
  if (fd < 0) return false;
  const int r = ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
  return r == 0;
#else
  (void)path;
  return false;
#endif
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: view_read_bench BASE TREE RUNS\n");
    return 2;
  }
  const int runs = std::atoi(argv[3]);
  std::printf("{\"runs\":[");
  for (int run = 0; run < runs; ++run) {
    double seq[2] = {0, 0}, cold[2] = {0, 0}, rnd[2] = {0, 0};
    for (int k = 0; k < 2; ++k) {
      const bool verify = (run + k) % 2 == 1;
      // A fresh view per measurement: the verified one starts with an empty
      // cache of tree groups, as after an open.
      std::unique_ptr<revpatch::View> view;
      revpatch::Status s = revpatch::View::Open(argv[1], argv[2], {}, &view);
      if (!s.ok()) {
        std::fprintf(stderr, "%s\n", s.ToString().c_str());
        return 1;
      }
      view->SetVerifyReads(verify);
      if (!DropCache(argv[1])) {
        std::fprintf(stderr, "cannot drop the cache of %s\n", argv[1]);
        return 1;
      }
      if (!Sequential(*view, &cold[verify]) || !Sequential(*view, &seq[verify]) ||
          !Random(*view, 200000, 1000 + run, &rnd[verify])) {
        return 1;
      }
    }
    std::printf(
        "%s{\"seqOff\":%.1f,\"seqOn\":%.1f,\"coldOff\":%.1f,\"coldOn\":%.1f,"
        "\"randomOff\":%.0f,\"randomOn\":%.0f}",
        run ? "," : "", seq[0], seq[1], cold[0], cold[1], rnd[0], rnd[1]);
  }
  std::printf("]}\n");
  return 0;
}
