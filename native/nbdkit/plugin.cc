// The nbdkit plugin that serves a device's booted view as a read-only NBD
// export (`revpatch serve-view`, docs/serve-view.md). nbdkit speaks the
// protocol; this file only answers its callbacks from the engine's View, so
// a read is one lookup in the layer index and nothing is copied.
//
//   nbdkit revpatch_nbdkit.so base=VOLUME tree=STATE/base.tree
//       layer=L1 layer=L2 ... digest=HEX state=STATE   (one command line)
//
// `verify=off` serves without the hash checks, for benchmarks that measure
// what the checks cost (bench/nbd.js); revpatch serve-view never passes it,
// and the plugin says so in nbdkit's log at start.
//
// `layer` repeats, bottom to top. The view is opened once, before nbdkit
// accepts connections (get_ready), and refused if its digest is not
// `digest`: the caller (lib/device/serve_view.ts) read that digest from the
// commit record under the device lock, so the export is exactly the booted
// view or nothing. The view never changes while served (boot refuses while
// the serve lease is held), so every connection sees the same bytes and
// several may read at once (can_multi_conn, the parallel thread model;
// View's reads are safe from several threads).
//
// Every block is checked against its leaf hash as View reads it: a block
// that fails is never served. The client gets EIO, nbdkit's log names the
// block and where it came from, and `<state>/audit.ndjson` gains a
// `corrupt-read` line with source "nbd".
//
// It is device-side code: it links the device engine (native/engine/) and
// never the generator.
#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <string.h>

#include <time.h>

#include <memory>
#include <string>
#include <vector>

#include "audit.h"
#include "sha256.h"
#include "status.h"
#include "view.h"
#include "view_map.h"

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

namespace revpatch {
namespace {

// Most blocks one extents call describes: bounds the tree lookups a base
// hole costs per request (the client asks again for the rest).
constexpr uint64_t kMaxMapBlocks = 1 << 16;

struct Config {
  std::string base;
  std::string tree;
  std::vector<std::string> layers;
  std::string digest;
  std::string state;
  bool verify = true;
};

Config config;
std::unique_ptr<View> view;
std::unique_ptr<ViewMap> view_map;

// nbdkit_realpath would fail for a path that does not exist yet; the files
// must exist, so a missing one is reported here with its key.
int Absolute(const char* key, const char* value, std::string* out) {
  char* path = nbdkit_realpath(value);
  if (path == nullptr) {
    nbdkit_error("%s=%s: cannot resolve the path", key, value);
    return -1;
  }
  *out = path;
  free(path);
  return 0;
}

int Configure(const char* key, const char* value) {
  if (strcmp(key, "base") == 0) return Absolute(key, value, &config.base);
  if (strcmp(key, "tree") == 0) return Absolute(key, value, &config.tree);
  if (strcmp(key, "state") == 0) return Absolute(key, value, &config.state);
  if (strcmp(key, "layer") == 0) {
    std::string path;
    if (Absolute(key, value, &path) == -1) return -1;
    config.layers.push_back(path);
    return 0;
  }
  if (strcmp(key, "digest") == 0) {
    Digest parsed;
    if (!DigestFromHex(value, &parsed)) {
      nbdkit_error("digest=%s is not a 64-digit hex SHA-256", value);
      return -1;
    }
    config.digest = DigestToHex(parsed);
    return 0;
  }
  if (strcmp(key, "verify") == 0) {
    if (strcmp(value, "on") != 0 && strcmp(value, "off") != 0) {
      nbdkit_error("verify=%s: expected on or off", value);
      return -1;
    }
    config.verify = strcmp(value, "on") == 0;
    return 0;
  }
  nbdkit_error("unknown parameter %s (expected base, tree, layer, digest, state, verify)", key);
  return -1;
}

int ConfigComplete() {
  const char* missing = config.base.empty()     ? "base"
                        : config.tree.empty()   ? "tree"
                        : config.digest.empty() ? "digest"
                                                : nullptr;
  if (missing != nullptr) {
    nbdkit_error("missing parameter %s=", missing);
    return -1;
  }
  return 0;
}

// ISO 8601 UTC with milliseconds, as the audit trail's other writers use.
std::string NowIso() {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  char buf[40];
  const size_t n = strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(buf + n, sizeof buf - n, ".%03ldZ", ts.tv_nsec / 1000000);
  return buf;
}

// A block that failed its hash check: one `corrupt-read` line in the
// device's audit trail (native/engine/audit.h), from the reading thread,
// before the read returns EIO. A trail that cannot be written is said in
// nbdkit's log; the read fails either way.
void RecordCorruptRead(const CorruptRead& bad) {
  std::string layer = "null";
  if (bad.layer >= 0) {
    const std::string source = view->SourceName(bad.layer);
    layer = JsonString(source.substr(source.find_last_of('/') + 1));
  }
  const std::string line = "{\"time\":" + JsonString(NowIso()) +
                           ",\"event\":\"corrupt-read\",\"source\":\"nbd\",\"block\":" +
                           std::to_string(bad.block) + ",\"layer\":" + layer +
                           ",\"detail\":" + JsonString(bad.detail) + "}";
  Status s = AppendAuditLine(config.state + "/audit.ndjson", line);
  if (!s.ok()) {
    nbdkit_error("block %" PRIu64 " failed its check and the audit line could not be written: %s",
                 bad.block, s.ToString().c_str());
  }
}

// Opens the view once, before the first connection, and checks it is the
// one the caller expects.
int GetReady() {
  Status s = View::Open(config.base, config.tree, config.layers, &view);
  if (!s.ok()) {
    nbdkit_error("cannot open the view: %s", s.ToString().c_str());
    return -1;
  }
  const std::string digest = DigestToHex(view->digest());
  if (digest != config.digest) {
    nbdkit_error("the view's digest is %s, expected %s: the device booted again or "
                 "its files changed; start the export again",
                 digest.c_str(), config.digest.c_str());
    return -1;
  }
  // Reads are verified (View's default); each bad block goes to the audit
  // trail of the state directory, when one is given.
  if (!config.state.empty()) view->SetCorruptionHandler(RecordCorruptRead);
  if (!config.verify) {
    view->SetVerifyReads(false);
    nbdkit_error("verify=off: blocks are served without their hash checks (benchmarks only)");
  }
  s = ViewMap::Open(view.get(), config.tree, &view_map);
  if (!s.ok()) {
    nbdkit_error("cannot map the view: %s", s.ToString().c_str());
    return -1;
  }
  nbdkit_debug("revpatch: serving view %s, %" PRIu64 " bytes, %zu layers",
               digest.c_str(), view->size_bytes(), view->layer_count());
  return 0;
}

void Unload() {
  view_map.reset();
  view.reset();
}

void* Open(int /*readonly*/) { return NBDKIT_HANDLE_NOT_NEEDED; }

int64_t GetSize(void*) { return static_cast<int64_t>(view->size_bytes()); }

int CanWrite(void*) { return 0; }
int CanFlush(void*) { return 0; }
int CanTrim(void*) { return 0; }
int CanZero(void*) { return 0; }
int IsRotational(void*) { return 0; }
// The view is immutable while served: every connection sees the same bytes.
int CanMultiConn(void*) { return 1; }
int CanExtents(void*) { return 1; }
// Nothing is written, so there is nothing to force to disk.
int CanFua(void*) { return NBDKIT_FUA_NONE; }
// A cache request is served by reading the range (through the view, which
// warms the page cache of the files it comes from).
int CanCache(void*) { return NBDKIT_CACHE_EMULATE; }

int BlockSize(void*, uint32_t* minimum, uint32_t* preferred, uint32_t* maximum) {
  *minimum = 1;
  *preferred = view->block_size();
  *maximum = 0xffffffff;
  return 0;
}

void ReportReadError(uint64_t offset, uint32_t count, const Status& s) {
  const uint64_t bs = view->block_size();
  const uint64_t first = offset / bs;
  const uint64_t last = (offset + (count == 0 ? 0 : count - 1)) / bs;
  if (first == last) {
    nbdkit_error("read of block %" PRIu64 " failed: %s", first, s.ToString().c_str());
  } else {
    nbdkit_error("read of blocks %" PRIu64 "..%" PRIu64 " failed: %s", first, last,
                 s.ToString().c_str());
  }
  nbdkit_set_error(EIO);
}

int Pread(void*, void* buf, uint32_t count, uint64_t offset, uint32_t /*flags*/) {
  uint8_t* out = static_cast<uint8_t*>(buf);
  const uint64_t bs = view->block_size();
  Status s;
  // Whole blocks inside the view go straight into nbdkit's buffer; anything
  // else (a partial block, the view's last block) through ReadBytes.
  if (offset % bs == 0 && count % bs == 0 && count != 0 &&
      offset + count <= view->size_bytes()) {
    s = view->ReadBlocks(offset / bs, count / bs, out);
  } else {
    s = view->ReadBytes(offset, count, out);
  }
  if (!s.ok()) {
    ReportReadError(offset, count, s);
    return -1;
  }
  return 0;
}

int Extents(void*, uint32_t count, uint64_t offset, uint32_t flags,
            struct nbdkit_extents* extents) {
  std::vector<ViewExtent> map;
  const uint64_t max_blocks = (flags & NBDKIT_FLAG_REQ_ONE) ? 1 : kMaxMapBlocks;
  Status s = view_map->Map(offset, count, max_blocks, &map);
  if (!s.ok()) {
    nbdkit_error("block status at offset %" PRIu64 " failed: %s", offset,
                 s.ToString().c_str());
    nbdkit_set_error(EIO);
    return -1;
  }
  for (const ViewExtent& e : map) {
    const uint32_t type = e.zero ? NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO : 0;
    if (nbdkit_add_extent(extents, e.offset, e.length, type) == -1) return -1;
  }
  return 0;
}

struct nbdkit_plugin MakePlugin() {
  struct nbdkit_plugin p;
  memset(&p, 0, sizeof p);
  p.name = "revpatch";
  p.longname = "revpatch booted view";
  p.version = "1";
  p.description = "serves a revpatch device's booted view (base plus layers) read-only";
  p.unload = Unload;
  p.config = Configure;
  p.config_complete = ConfigComplete;
  p.config_help =
      "base=<PATH>      (required) the base volume\n"
      "tree=<PATH>      (required) the base's tree file (state/base.tree)\n"
      "layer=<PATH>     a layer, bottom to top; repeat for each\n"
      "digest=<HEX>     (required) the booted view's digest; refused if it differs\n"
      "state=<DIR>      the device's state directory: corrupt reads go to its audit.ndjson";
  p.get_ready = GetReady;
  p.open = Open;
  p.get_size = GetSize;
  p.can_write = CanWrite;
  p.can_flush = CanFlush;
  p.can_trim = CanTrim;
  p.can_zero = CanZero;
  p.is_rotational = IsRotational;
  p.can_multi_conn = CanMultiConn;
  p.can_extents = CanExtents;
  p.can_fua = CanFua;
  p.can_cache = CanCache;
  p.block_size = BlockSize;
  p.pread = Pread;
  p.extents = Extents;
  return p;
}

struct nbdkit_plugin plugin = MakePlugin();

}  // namespace
}  // namespace revpatch

// nbdkit looks the plugin up by this symbol (plugin_init).
static struct nbdkit_plugin& revpatch_plugin = revpatch::plugin;
NBDKIT_REGISTER_PLUGIN(revpatch_plugin)
