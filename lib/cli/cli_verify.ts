/**
 * `revpatch verify`: the scrub. Every block of the booted view is read and
 * checked against the hash tree, with a progress bar, and the result said
 * plainly: exit 0 if every block matches, exit 1 with `error E_CORRUPT: …`
 * (after the report, which lists the first bad blocks) if not.
 *
 * It is also the way out of E_BASE_CHANGED: when the base's fingerprint
 * differs from the record's, the whole base is checked too, and a clean
 * result records the current fingerprint so that `boot` proceeds.
 */
import { Command } from 'commander';
import * as path from 'node:path';
import { Device, type VerifyReport } from '../device/device';
import { RevpatchError } from '../engine/errors';
import { progressBar } from './progress';

function text(report: VerifyReport): string {
  const lines = [`checked ${report.blocks} blocks of the booted view ${report.viewDigest}`];
  if (report.baseChanges.length > 0) {
    lines.push(`  the base volume changed since it was recorded (${report.baseChanges.join(', ')}): every base block checked too`);
  }
  if (report.ok) {
    lines.push('  every block matches the tree');
    if (report.fingerprintRecorded) lines.push('  recorded the base volume as it is now; boot proceeds');
  } else {
    lines.push(`  ${report.bad} bad blocks (${report.baseBad} in the base, ${report.layerBad} in layers); the first:`);
    for (const b of report.badBlocks.slice(0, 20)) {
      lines.push(`    block ${b.block} from ${b.layer === null ? 'the base' : `layer ${b.layer}`}`);
    }
  }
  return lines.join('\n');
}

export function registerVerify(program: Command): void {
  program
    .command('verify')
    .description('scrub: check every block of the booted view against the hash tree')
    .option('--json', 'machine-readable output')
    .action(async (opts: { json?: boolean }) => {
      const globals = program.opts<{ state?: string; json?: boolean; wait?: number }>();
      const json = Boolean(globals.json || opts.json);
      const stateDir = path.resolve(globals.state ?? process.env.REVPATCH_STATE ?? './revpatch-state');
      const device = await Device.open(stateDir, { lockWaitMs: (globals.wait ?? 0) * 1000 });
      const bar = progressBar('verify', !json);
      let report: VerifyReport;
      try {
        report = await device.verify({ onProgress: bar.update });
      } finally {
        bar.stop();
      }
      process.stdout.write(json ? `${JSON.stringify(report, null, 2)}\n` : `${text(report)}\n`);
      if (!report.ok) {
        const first = report.badBlocks[0];
        throw new RevpatchError(
          'E_CORRUPT',
          `${report.bad} blocks of the view do not match the tree` +
            (first ? ` (first: block ${first.block} from ${first.layer === null ? 'the base' : `layer ${first.layer}`})` : '') +
            '; they are never served, and each read of one fails',
        );
      }
    });
}
