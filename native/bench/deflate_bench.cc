// Exact deflate on real files, for measuring (not a test): the deflate
// streams FindDeflateStreams finds in FILE, each one's data and structure
// sizes and the time to expand and to rebuild it (median of RUNS). With a
// second file, also the size of EncodeDiff between the two files' bytes and
// between their expansions (every stream replaced by its expansion, as
// the stream delta does; no reference prediction).
//
//   deflate_bench FILE [NEW_FILE] [RUNS]
//
// Prints one JSON object per file, then one for the pair.
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "deflate_scan.h"
#include "deflate_stream.h"
#include "diff_encoder.h"

namespace {

using Clock = std::chrono::steady_clock;
using Bytes = std::vector<uint8_t>;

double Seconds(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

bool ReadFile(const char* path, Bytes* b) {
  FILE* f = std::fopen(path, "rb");
  if (f == nullptr) return false;
  uint8_t buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) b->insert(b->end(), buf, buf + n);
  std::fclose(f);
  return true;
}

double CpuSeconds() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) * 1e-9;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// The file with every stream replaced by its expansion.
Bytes Measure(const char* path, const Bytes& file, int runs) {
  const auto scan_start = Clock::now();
  const double scan_cpu = CpuSeconds();
  std::vector<revpatch::FoundStream> found;
  revpatch::FindDeflateStreams(file.data(), file.size(), &found);
  const double scan = Seconds(scan_start);
  std::printf("{\"file\":\"%s\",\"size\":%zu,\"scan_s\":%.3f,\"scan_cpu_s\":%.3f,\"streams\":[",
              path, file.size(), scan, CpuSeconds() - scan_cpu);
  Bytes whole;
  uint64_t at = 0;
  for (size_t i = 0; i < found.size(); ++i) {
    const auto& s = found[i];
    const uint8_t* in = file.data() + s.offset;
    std::vector<double> expand_s, rebuild_s, expand_cpu, rebuild_cpu;
    Bytes expanded, out(s.length);
    bool exact = true;
    for (int r = 0; r < runs; ++r) {
      expanded.clear();
      auto t = Clock::now();
      double c = CpuSeconds();
      if (!revpatch::DeflateExpand(in, s.length, uint64_t{1} << 32, &expanded).ok()) exact = false;
      expand_s.push_back(Seconds(t));
      expand_cpu.push_back(CpuSeconds() - c);
      t = Clock::now();
      c = CpuSeconds();
      if (!revpatch::DeflateRebuild(expanded.data(), expanded.size(), out.data(), out.size()).ok()) {
        exact = false;
      }
      rebuild_s.push_back(Seconds(t));
      rebuild_cpu.push_back(CpuSeconds() - c);
      exact = exact && std::equal(out.begin(), out.end(), in);
    }
    uint64_t data_size = 0;
    (void)revpatch::DeflateExpansionDataSize(expanded.data(), expanded.size(), &data_size);
    std::printf("%s{\"offset\":%llu,\"length\":%llu,\"data\":%llu,\"structure\":%llu,"
                "\"expand_s\":%.3f,\"expand_cpu_s\":%.3f,\"rebuild_s\":%.3f,\"rebuild_cpu_s\":%.3f,"
                "\"exact\":%s}",
                i ? "," : "", static_cast<unsigned long long>(s.offset),
                static_cast<unsigned long long>(s.length),
                static_cast<unsigned long long>(data_size),
                static_cast<unsigned long long>(expanded.size() - data_size - 8), Median(expand_s),
                Median(expand_cpu), Median(rebuild_s), Median(rebuild_cpu), exact ? "true" : "false");
    whole.insert(whole.end(), file.begin() + at, file.begin() + s.offset);
    whole.insert(whole.end(), expanded.begin(), expanded.end());
    at = s.offset + s.length;
  }
  whole.insert(whole.end(), file.begin() + at, file.end());
  std::printf("]}\n");
  return whole;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: deflate_bench FILE [NEW_FILE] [RUNS]\n");
    return 2;
  }
  const bool pair = argc >= 3 && std::atoi(argv[2]) == 0;
  const int runs = std::max(1, std::atoi(argv[pair ? 3 : 2] ? argv[pair ? 3 : 2] : "3"));
  Bytes a, b;
  if (!ReadFile(argv[1], &a) || (pair && !ReadFile(argv[2], &b))) {
    std::fprintf(stderr, "deflate_bench: cannot read the input\n");
    return 1;
  }
  const Bytes ea = Measure(argv[1], a, runs);
  if (!pair) return 0;
  const Bytes eb = Measure(argv[2], b, runs);
  Bytes plain, through;
  auto t = Clock::now();
  if (!revpatch::EncodeDiff(a, b, &plain).ok()) return 1;
  const double plain_s = Seconds(t);
  t = Clock::now();
  if (!revpatch::EncodeDiff(ea, eb, &through).ok()) return 1;
  std::printf("{\"delta_plain\":%zu,\"delta_expanded\":%zu,\"plain_s\":%.1f,\"expanded_s\":%.1f}\n",
              plain.size(), through.size(), plain_s, Seconds(t));
  return 0;
}
