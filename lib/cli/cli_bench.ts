/**
 * `revpatch bench --from OLD --to NEW`: revpatch against bsdiff, zstd and
 * xdelta3 on the user's own images and hardware (lib/bench/bench.ts does the
 * measuring). Works in a temporary directory that is removed afterwards,
 * whatever happens; OLD and NEW are only read.
 */
import { Command, InvalidArgumentError } from 'commander';
import { rmSync, promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  benchPair,
  fmtBytes,
  fmtSeconds,
  idleNodeRss,
  machineInfo,
  pairRows,
  textTable,
  TOOL_NAMES,
  type PairResult,
  type StepResult,
  type ToolName,
} from '../bench/bench';
import { RevpatchError, toRevpatchError } from '../engine/errors';

interface BenchCommandOptions {
  from: string;
  to: string;
  runs: number;
  json?: boolean;
  workDir?: string;
  tools?: ToolName[];
}

function runsOption(value: string): number {
  if (!/^\d+$/.test(value)) throw new InvalidArgumentError('--runs must be a whole number');
  const n = Number(value);
  if (n < 1 || n > 100) throw new InvalidArgumentError('--runs must be from 1 to 100');
  return n;
}

function toolsOption(value: string): ToolName[] {
  const names = value.split(',').filter(Boolean);
  for (const n of names) {
    if (!(TOOL_NAMES as readonly string[]).includes(n)) throw new InvalidArgumentError(`unknown tool ${n} (choose from ${TOOL_NAMES.join(', ')})`);
  }
  return names as ToolName[];
}

async function imageSize(file: string, flag: string): Promise<number> {
  const stat = await fs.stat(file).catch((err) => {
    const e = toRevpatchError(err);
    throw new RevpatchError(e.code, `${flag} ${file}: ${e.message}`, { cause: err });
  });
  if (!stat.isFile()) throw new RevpatchError('E_INVALID_ARGUMENT', `${flag} ${file} is not a regular file (copy a block device to an image first)`);
  return stat.size;
}

function stepLine(label: string, step: StepResult | null | undefined): string {
  if (!step) return `${label} —`;
  return `${label} ${fmtSeconds(step.seconds)}, peak RSS ${fmtBytes(step.peakRss)}${step.rssExact ? '' : ' (approximate)'}`;
}

function report(pair: PairResult, runs: number, idle: number | null): string {
  const { header, rows } = pairRows(pair);
  const rp = pair.tools[0];
  return [
    `revpatch bench: ${pair.name}`,
    `  OLD ${pair.oldSize} bytes, NEW ${pair.newSize} bytes; medians of up to ${runs} runs`,
    '',
    textTable(header, rows),
    '',
    `revpatch install in-process:         ${fmtSeconds(rp.applyInProcess.seconds)} (Device.install in this process: no Node start-up)`,
    stepLine('revpatch restart-activate (boot):   ', rp.restart),
    stepLine('revpatch remove and restart:        ', rp.removeRestart),
    `idle Node process peak RSS:          ${fmtBytes(idle)}`,
    '',
    'apply: revpatch install on a fresh state directory; bspatch; zstd -d --patch-from; xdelta3 -d.',
    'x/rp: the tool\'s figure divided by revpatch\'s (above 1: revpatch is smaller or faster).',
  ].join('\n');
}

export function registerBench(program: Command): void {
  program
    .command('bench')
    .description('measure revpatch against bsdiff, zstd and xdelta3 (those installed) on your own images')
    .requiredOption('--from <old>', 'the old image')
    .requiredOption('--to <new>', 'the new image')
    .option('--runs <n>', 'runs of each step; the median is reported', runsOption, 5)
    .option('--tools <list>', `other tools to compare, comma-separated (default: ${TOOL_NAMES.join(',')})`, toolsOption)
    .option('--work-dir <dir>', 'where the temporary directory goes (default: the system temp directory); needs room for a few copies of NEW')
    .option('--json', 'machine-readable output')
    .action(async (opts: BenchCommandOptions) => {
      const json = Boolean(program.opts<{ json?: boolean }>().json || opts.json);
      const from = path.resolve(opts.from);
      const to = path.resolve(opts.to);
      await imageSize(from, '--from');
      await imageSize(to, '--to');
      const parent = path.resolve(opts.workDir ?? os.tmpdir());
      const work = await fs.mkdtemp(path.join(parent, 'revpatch-bench-')).catch((err) => {
        throw toRevpatchError(err);
      });
      const cleanup = () => rmSync(work, { recursive: true, force: true });
      const interrupted = (signal: NodeJS.Signals) => {
        cleanup();
        process.kill(process.pid, signal);
      };
      process.once('SIGINT', interrupted);
      process.once('SIGTERM', interrupted);
      try {
        const log = json || !process.stderr.isTTY ? undefined : (m: string) => process.stderr.write(`bench: ${m}\n`);
        const pair = await benchPair(`${opts.from} -> ${opts.to}`, from, to, {
          policy: { runs: opts.runs },
          workDir: work,
          tools: opts.tools,
          onStep: log,
        });
        const idle = await idleNodeRss();
        if (json) {
          const machine = await machineInfo(work);
          process.stdout.write(`${JSON.stringify({ from, to, runs: opts.runs, idleNodeRss: idle, machine, ...pair }, null, 2)}\n`);
        } else {
          process.stdout.write(`${report(pair, opts.runs, idle)}\n`);
        }
      } finally {
        process.removeListener('SIGINT', interrupted);
        process.removeListener('SIGTERM', interrupted);
        cleanup();
      }
    });
}
