/**
 * A progress bar on a terminal, nothing in a pipe: long steps (create,
 * install, export) show one on stderr only when stderr is a TTY and --json
 * is off, so scripts and logs never see escape codes.
 */
import type * as CliProgress from 'cli-progress';
import type { Progress } from '../engine/engine';

export interface ProgressBar {
  update: Progress;
  stop(): void;
}

const silent: ProgressBar = { update: () => undefined, stop: () => undefined };

export function progressBar(label: string, enabled: boolean): ProgressBar {
  if (!enabled || !process.stderr.isTTY) return silent;
  // Loaded only for a bar that shows: a pipe or --json never pays for it.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { SingleBar, Presets } = require('cli-progress') as typeof CliProgress;
  const bar = new SingleBar(
    {
      format: `${label} [{bar}] {percentage}% | {doneMiB}/{totalMiB} MiB | {eta_formatted}`,
      stream: process.stderr,
      hideCursor: true,
      clearOnComplete: true,
    },
    Presets.shades_classic,
  );
  let started = false;
  const mib = (bytes: number) => (bytes / (1024 * 1024)).toFixed(1);
  return {
    update(done, total) {
      if (!started) {
        bar.start(Math.max(total, 1), 0, { doneMiB: mib(0), totalMiB: mib(total) });
        started = true;
      }
      bar.setTotal(Math.max(total, 1));
      bar.update(done, { doneMiB: mib(done), totalMiB: mib(total) });
    },
    stop() {
      if (started) bar.stop();
    },
  };
}
