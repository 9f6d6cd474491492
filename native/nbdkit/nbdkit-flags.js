// Whether binding.gyp builds the nbdkit plugin, printed for gyp's <!(...).
//   node native/nbdkit/nbdkit-flags.js has       1 if nbdkit-plugin.h is found, else 0
//   node native/nbdkit/nbdkit-flags.js include   the directory that holds it
// The plugin is optional: without the header (no nbdkit-plugin-dev, or a
// prebuilt install) the addon builds alone and `revpatch serve-view` says
// how to install nbdkit (lib/device/serve_view.ts). NBDKIT_INCLUDE_DIR
// names the directory to use; REVPATCH_NBDKIT=0 leaves the plugin out
// (scripts/prebuild.sh: prebuilt binaries carry the addon only).
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const dirs = process.env.NBDKIT_INCLUDE_DIR
  ? [process.env.NBDKIT_INCLUDE_DIR]
  : ['/usr/include', '/usr/local/include', '/opt/homebrew/include', '/opt/local/include'];
const found =
  process.env.REVPATCH_NBDKIT === '0' ? undefined : dirs.find((d) => fs.existsSync(path.join(d, 'nbdkit-plugin.h')));

const what = process.argv[2];
if (what === 'has') process.stdout.write(found ? '1' : '0');
else if (what === 'include') process.stdout.write(found || '');
else {
  process.stderr.write('usage: node native/nbdkit/nbdkit-flags.js has|include\n');
  process.exit(2);
}
