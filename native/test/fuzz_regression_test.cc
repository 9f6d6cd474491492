// Replays every saved fuzz input through the entry point libFuzzer ran:
// the seed corpus (native/fuzz/corpus/<target>/) and the inputs that once
// crashed a target (native/fuzz/regressions/<target>/). The harnesses abort
// on a failed check, so a regression fails this binary. It runs in the
// plain and the ASan/UBSan builds, with g++, without libFuzzer.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "../fuzz/fuzz_support.h"
#include "../fuzz/fuzz_targets.h"
#include "testing.h"

namespace {

namespace fs = std::filesystem;

size_t Replay(const char* target, revpatch_fuzz::FuzzEntry entry) {
  size_t replayed = 0;
  for (const char* kind : {"corpus", "regressions"}) {
    const fs::path dir = fs::path(REVPATCH_FUZZ_DIR) / kind / target;
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) continue;
    std::vector<fs::path> inputs;
    for (const auto& entry_path : fs::directory_iterator(dir)) {
      if (entry_path.is_regular_file()) inputs.push_back(entry_path.path());
    }
    std::sort(inputs.begin(), inputs.end());
    for (const fs::path& input : inputs) {
      std::printf("  replay %s/%s/%s\n", kind, target, input.filename().c_str());
      std::fflush(stdout);
      const revpatch_fuzz::Bytes bytes = revpatch_fuzz::ReadFileOrDie(input.string());
      entry(bytes.data(), bytes.size());
      ++replayed;
    }
  }
  return replayed;
}

}  // namespace

TEST(operation_fuzzer_inputs_replay_cleanly) {
  EXPECT_TRUE(Replay("operation_fuzzer", revpatch_fuzz::FuzzOperation) > 0);
}

TEST(diff_fuzzer_inputs_replay_cleanly) {
  EXPECT_TRUE(Replay("diff_fuzzer", revpatch_fuzz::FuzzDiff) > 0);
}

TEST(payload_fuzzer_inputs_replay_cleanly) {
  EXPECT_TRUE(Replay("payload_fuzzer", revpatch_fuzz::FuzzPayload) > 0);
}

TEST(layer_fuzzer_inputs_replay_cleanly) {
  EXPECT_TRUE(Replay("layer_fuzzer", revpatch_fuzz::FuzzLayer) > 0);
}

TEST(stream_codec_fuzzer_inputs_replay_cleanly) {
  EXPECT_TRUE(Replay("stream_codec_fuzzer", revpatch_fuzz::FuzzStreamCodec) > 0);
}

TEST(commit_record_fuzzer_inputs_replay_cleanly) {
  EXPECT_TRUE(Replay("commit_record_fuzzer", revpatch_fuzz::FuzzCommitRecord) > 0);
}

TEST(elf_fuzzer_inputs_replay_cleanly) {
  EXPECT_TRUE(Replay("elf_fuzzer", revpatch_fuzz::FuzzElf) > 0);
}

TEST(macho_pe_fuzzer_inputs_replay_cleanly) {
  EXPECT_TRUE(Replay("macho_pe_fuzzer", revpatch_fuzz::FuzzMachOPe) > 0);
}

TEST(deflate_fuzzer_inputs_replay_cleanly) {
  EXPECT_TRUE(Replay("deflate_fuzzer", revpatch_fuzz::FuzzDeflate) > 0);
}

TEST(empty_and_tiny_inputs_are_harmless) {
  const uint8_t bytes[3] = {0xff, 0xff, 0xff};
  for (revpatch_fuzz::FuzzEntry entry :
       {revpatch_fuzz::FuzzOperation, revpatch_fuzz::FuzzDiff, revpatch_fuzz::FuzzPayload,
        revpatch_fuzz::FuzzLayer, revpatch_fuzz::FuzzCommitRecord, revpatch_fuzz::FuzzElf,
        revpatch_fuzz::FuzzMachOPe,
        revpatch_fuzz::FuzzDeflate}) {
    for (size_t n = 0; n <= sizeof(bytes); ++n) EXPECT_EQ(entry(bytes, n), 0);
  }
}
