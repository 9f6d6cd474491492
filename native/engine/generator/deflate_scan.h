// Finding deflate streams inside a buffer (the publisher's side of
// deflate_stream.h): gzip members, zlib streams and zip entries, kept only
// when DeflateRebuild(DeflateExpand(stream)) gives back their exact bytes.
#ifndef REVPATCH_ENGINE_GENERATOR_DEFLATE_SCAN_H_
#define REVPATCH_ENGINE_GENERATOR_DEFLATE_SCAN_H_

// FindDeflateStreams and FoundStream are declared in stream_scan.h, with
// the other codecs' scans.
#include "stream_scan.h"

#endif  // REVPATCH_ENGINE_GENERATOR_DEFLATE_SCAN_H_
