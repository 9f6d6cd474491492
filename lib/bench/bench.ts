/**
 * Measuring revpatch against the delta tools a user would otherwise pick
 * (bsdiff/bspatch, zstd --patch-from, xdelta3), on the user's own images:
 * the code behind `revpatch bench` and the repository's benchmarks (bench/).
 *
 * Every step runs as a child process, timed from spawn to exit; its peak
 * resident memory comes from GNU time (`/usr/bin/time -f %M`, Debian package
 * `time`) when that is installed, else from polling the child's VmHWM in
 * /proc, which can miss growth in the last few milliseconds and is marked
 * approximate. revpatch itself is measured through its command line, so its
 * figures include the Node start-up a device pays for every command.
 *
 * A step is repeated and its median reported; every tool's output is
 * checked once against the target (a byte comparison, for revpatch the
 * booted view's digest against the target's), so a tool that is fast
 * because it is wrong cannot win.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, promises as fs, readFileSync, statSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Device } from '../device/device';
import { RevpatchError } from '../engine/errors';

export const TIME_BINARY = '/usr/bin/time';
/** bsdiff holds both files, a suffix array and its work space: about 17 times the old file's size. */
export const BSDIFF_MEMORY_FACTOR = 17;

export interface Sample {
  seconds: number;
  /** Peak resident set size in bytes, null where it could not be read. */
  peakRss: number | null;
}

export interface StepResult {
  /** Medians over `runs`. */
  seconds: number;
  peakRss: number | null;
  runs: number;
  samples: Sample[];
  /** False when peak memory came from polling /proc rather than the kernel's accounting. */
  rssExact: boolean;
}

export interface CommandResult extends Sample {
  code: number;
  /** Stopped after `timeoutSeconds`. */
  timedOut: boolean;
  stdout: string;
  stderr: string;
  rssExact: boolean;
}

let timeAvailable: boolean | undefined;

function hasGnuTime(): boolean {
  if (timeAvailable === undefined) {
    timeAvailable = false;
    try {
      timeAvailable = statSync(TIME_BINARY).isFile();
    } catch {
      /* not installed */
    }
  }
  return timeAvailable;
}

function vmHwm(pid: number): number | null {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

/**
 * Runs a command to completion and measures its wall time and peak RSS.
 * Never throws for a non-zero exit: the caller decides what failure means.
 */
export async function runMeasured(
  command: string,
  args: string[],
  options: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutSeconds?: number } = {},
): Promise<CommandResult> {
  const gnu = hasGnuTime();
  let rssFile: string | null = null;
  let file = command;
  let argv = args;
  if (gnu) {
    rssFile = path.join(os.tmpdir(), `revpatch-bench-rss-${process.pid}-${Math.random().toString(36).slice(2)}`);
    file = TIME_BINARY;
    argv = ['-f', '%M', '-o', rssFile, command, ...args];
  }
  const started = performance.now();
  // Its own process group, so a timeout stops the command under GNU time too.
  const child = spawn(file, argv, { cwd: options.cwd, env: options.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let timedOut = false;
  const timer = options.timeoutSeconds
    ? setTimeout(() => {
        timedOut = true;
        try {
          if (child.pid) process.kill(-child.pid, 'SIGKILL');
        } catch {
          /* already gone */
        }
      }, options.timeoutSeconds * 1000)
    : null;
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout.on('data', (b: Buffer) => out.push(b));
  child.stderr.on('data', (b: Buffer) => err.push(b));
  let polled: number | null = null;
  const poll = gnu
    ? null
    : setInterval(() => {
        const v = child.pid ? vmHwm(child.pid) : null;
        if (v !== null) polled = Math.max(polled ?? 0, v);
      }, 5);
  const code = await new Promise<number>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (c, signal) => resolve(c ?? (signal ? 128 : 1)));
  }).finally(() => {
    if (poll) clearInterval(poll);
    if (timer) clearTimeout(timer);
  });
  const seconds = (performance.now() - started) / 1000;
  let peakRss: number | null = polled;
  if (rssFile) {
    const text = await fs.readFile(rssFile, 'utf8').catch(() => '');
    await fs.rm(rssFile, { force: true });
    // GNU time writes "Command exited with non-zero status N" before the figure.
    const lines = text.trim().split('\n');
    const kib = Number(lines[lines.length - 1]);
    peakRss = Number.isFinite(kib) && kib > 0 ? kib * 1024 : null;
  }
  return {
    code,
    timedOut,
    seconds,
    peakRss,
    rssExact: gnu,
    stdout: Buffer.concat(out).toString(),
    stderr: Buffer.concat(err).toString(),
  };
}

/** How many times to run a step. */
export interface RunPolicy {
  runs: number;
  /**
   * Cut repetitions of slow steps: after a first run over 10 s, three runs
   * in all; over 40 s, that one run. Keeps a full benchmark within minutes.
   */
  capSlow?: boolean;
}

export function median(values: number[]): number {
  const v = [...values].sort((a, b) => a - b);
  const mid = v.length >> 1;
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

export function summarize(samples: Sample[], rssExact = true): StepResult {
  const rss = samples.map((s) => s.peakRss).filter((r): r is number => r !== null);
  return {
    seconds: median(samples.map((s) => s.seconds)),
    peakRss: rss.length ? median(rss) : null,
    runs: samples.length,
    samples,
    rssExact,
  };
}

/** Repeats `once` as the policy says and summarizes the samples. */
/** `once` may return `stop: true` (a failed run) to end the repetitions. */
export async function repeat(policy: RunPolicy, once: (run: number) => Promise<Sample & { rssExact?: boolean; stop?: boolean }>): Promise<StepResult> {
  const samples: Sample[] = [];
  let exact = true;
  let runs = policy.runs;
  for (let i = 0; i < runs; i++) {
    const s = await once(i);
    samples.push({ seconds: s.seconds, peakRss: s.peakRss });
    if (s.rssExact === false) exact = false;
    if (s.stop) break;
    if (i === 0 && policy.capSlow) {
      if (s.seconds > 40) runs = 1;
      else if (s.seconds > 10) runs = Math.min(runs, 3);
    }
  }
  return summarize(samples, exact);
}

/**
 * Reads each file once, so that the timed run after it finds its inputs in
 * the page cache. A shared VM evicts idle cache between runs, partly and
 * unevenly; without this, which tool reads from disk depends on how long
 * the inputs sat idle, not on the tool. Every tool's inputs are warmed
 * alike before each of its timed runs.
 */
export async function warmInputs(paths: readonly string[]): Promise<void> {
  const buffer = Buffer.allocUnsafe(4 << 20);
  for (const p of paths) {
    const handle = await fs.open(p, 'r');
    try {
      while ((await handle.read(buffer, 0, buffer.length, null)).bytesRead > 0) {
        /* reading is the point */
      }
    } finally {
      await handle.close();
    }
  }
}

/** Sums two steps run back to back (remove, then restart) sample by sample. */
export function sumSamples(a: Sample, b: Sample): Sample {
  return {
    seconds: a.seconds + b.seconds,
    peakRss: a.peakRss === null || b.peakRss === null ? null : Math.max(a.peakRss, b.peakRss),
  };
}

/** Whether two files hold the same bytes. */
export async function sameBytes(a: string, b: string): Promise<boolean> {
  const [sa, sb] = await Promise.all([fs.stat(a), fs.stat(b)]);
  if (sa.size !== sb.size) return false;
  const chunk = 4 * 1024 * 1024;
  const fa = await fs.open(a, 'r');
  const fb = await fs.open(b, 'r');
  try {
    const ba = Buffer.allocUnsafe(chunk);
    const bb = Buffer.allocUnsafe(chunk);
    for (let off = 0; off < sa.size; off += chunk) {
      const n = Math.min(chunk, sa.size - off);
      const [ra, rb] = await Promise.all([fa.read(ba, 0, n, off), fb.read(bb, 0, n, off)]);
      if (ra.bytesRead !== n || rb.bytesRead !== n || !ba.subarray(0, n).equals(bb.subarray(0, n))) return false;
    }
    return true;
  } finally {
    await fa.close();
    await fb.close();
  }
}

// ---------------------------------------------------------------------------
// The other tools

export type ToolName = 'bsdiff' | 'zstd' | 'xdelta3';
export const TOOL_NAMES: readonly ToolName[] = ['bsdiff', 'zstd', 'xdelta3'];

export interface DeltaTool {
  name: ToolName;
  /** The executables it needs. */
  binaries: string[];
  /** Debian package. */
  debianPackage: string;
  create(oldPath: string, newPath: string, patch: string): [string, string[]];
  apply(oldPath: string, patch: string, out: string): [string, string[]];
  /** Why the tool cannot run on this pair here, or null. */
  unsuitable(oldSize: number, newSize: number): string | null;
}

export function memAvailable(): number {
  try {
    const m = /MemAvailable:\s+(\d+) kB/.exec(readFileSync('/proc/meminfo', 'utf8'));
    if (m) return Number(m[1]) * 1024;
  } catch {
    /* not Linux */
  }
  return os.freemem();
}

/** Whether bsdiff's working set fits in three quarters of the memory available now (others share the machine). */
export function bsdiffFits(oldSize: number, newSize: number): boolean {
  return BSDIFF_MEMORY_FACTOR * Math.max(oldSize, newSize) + (1 << 30) <= 0.75 * memAvailable();
}

export const ZSTD_MAX_REFERENCE = 2 ** 31;

export const TOOLS: Record<ToolName, DeltaTool> = {
  bsdiff: {
    name: 'bsdiff',
    binaries: ['bsdiff', 'bspatch'],
    debianPackage: 'bsdiff',
    create: (o, n, p) => ['bsdiff', [o, n, p]],
    apply: (o, p, out) => ['bspatch', [o, out, p]],
    unsuitable: (o, n) =>
      bsdiffFits(o, n)
        ? null
        : `needs about ${fmtBytes(BSDIFF_MEMORY_FACTOR * Math.max(o, n))} of memory (${BSDIFF_MEMORY_FACTOR}x the file), ${fmtBytes(memAvailable())} available`,
  },
  zstd: {
    name: 'zstd',
    binaries: ['zstd'],
    debianPackage: 'zstd',
    create: (o, n, p) => ['zstd', ['-q', '-f', '-19', '--long=31', `--patch-from=${o}`, n, '-o', p]],
    apply: (o, p, out) => ['zstd', ['-q', '-f', '-d', '--long=31', `--patch-from=${o}`, p, '-o', out]],
    unsuitable: (o) => (o > ZSTD_MAX_REFERENCE ? `--patch-from takes a reference of at most 2 GiB (--long=31 window), this one is ${fmtBytes(o)}` : null),
  },
  xdelta3: {
    name: 'xdelta3',
    binaries: ['xdelta3'],
    debianPackage: 'xdelta3',
    create: (o, n, p) => ['xdelta3', ['-9', '-e', '-f', '-s', o, n, p]],
    apply: (o, p, out) => ['xdelta3', ['-d', '-f', '-s', o, p, out]],
    unsuitable: () => null,
  },
};

/** The first directory on PATH that holds `binary`, or null. */
export function which(binary: string): string | null {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const full = path.join(dir, binary);
    try {
      if (statSync(full).isFile()) return full;
    } catch {
      /* next */
    }
  }
  return null;
}

export function toolInstalled(tool: DeltaTool): boolean {
  return tool.binaries.every((b) => which(b) !== null);
}

/** A shell-style rendering of a command line, for reports. */
export function commandLine(cmd: string, args: string[]): string {
  const quote = (s: string) => (/^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);
  return [cmd, ...args].map(quote).join(' ');
}

// ---------------------------------------------------------------------------
// Results

export interface ToolResult {
  tool: 'revpatch' | ToolName;
  patchSize: number | null;
  create: StepResult | null;
  /** For revpatch: `revpatch install` on a fresh state directory. */
  apply: StepResult | null;
  /** revpatch only: `revpatch boot` after the install. */
  restart?: StepResult | null;
  /** revpatch only: `revpatch remove ID` then `revpatch boot`. */
  removeRestart?: StepResult | null;
  /** The output was checked against the target and matched. */
  verified: boolean;
  /** Why the tool did not run (not installed, too big), or how it failed. */
  skipped?: string;
  commands?: { create: string; apply: string };
}

export interface PairResult {
  name: string;
  oldSize: number;
  newSize: number;
  /** revpatch first, then the other tools. */
  tools: [RevpatchResult, ...ToolResult[]];
}

export interface BenchOptions {
  policy: RunPolicy;
  /** Scratch directory; the caller creates and removes it. */
  workDir: string;
  /** Which other tools to try (default all that are installed). */
  tools?: readonly ToolName[];
  /** The revpatch command line: [node, bin/revpatch.js] by default. */
  revpatch?: string[];
  /** Told about each step, for progress lines. */
  onStep?: (message: string) => void;
  /** Stop another tool's step after this long (for NEW of `bytes`) and report it as not finished; default never. */
  toolTimeout?: (bytes: number) => number;
  /**
   * Called after each run of the CLI install loop: for a comparison
   * measured side by side with the installs (cp of the same bytes), so
   * that a shared machine's drift hits both alike.
   */
  afterInstallRun?: (run: number) => Promise<void>;
}

export function revpatchCommand(): string[] {
  return [process.execPath, path.resolve(__dirname, '..', '..', 'bin', 'revpatch.js')];
}

/** Thrown when revpatch itself fails during a benchmark: keeps the child's error code. */
function childError(step: string, r: CommandResult): RevpatchError {
  const m = /error (E_[A-Z_]+): (.*)/.exec(r.stderr);
  if (m) return new RevpatchError(m[1] as never, `revpatch ${step} failed: ${m[2]}`);
  return new RevpatchError('E_UNKNOWN', `revpatch ${step} exited with ${r.code}: ${r.stderr.trim().slice(0, 500)}`);
}

/**
 * revpatch on one pair: create (the publisher's step); then for each run a
 * fresh state directory as `revpatch init` leaves it, and in it install,
 * boot (restart-activate), confirm, then remove + boot (remove-and-restart).
 */
export interface RevpatchResult extends ToolResult {
  /** Payload bytes of the patch; the rest is header, manifest and signature. */
  payloadSize: number;
  targetDigest: string;
  /** The one `revpatch init` of the base the runs' state directories are copied from. */
  init: Sample;
  /**
   * `Device.install` timed inside this process, as a device agent that
   * embeds the library installs: no Node start-up, no module loading. Peak
   * RSS is not separable from this process's and is not reported.
   */
  applyInProcess: StepResult;
}

/**
 * A fresh copy of the state `revpatch init` left, written back to disk
 * before it is timed: the tree file of a 4 GiB volume is 64 MiB, and an
 * install's fsync right after copying it would pay for that writeback too,
 * which no device does (its state was written long before).
 */
async function copyState(pristine: string, state: string): Promise<void> {
  await fs.cp(pristine, state, { recursive: true });
  execFileSync('sync');
}

export async function benchRevpatch(oldPath: string, newPath: string, options: BenchOptions): Promise<RevpatchResult> {
  const rp = options.revpatch ?? revpatchCommand();
  const work = path.join(options.workDir, 'revpatch');
  await fs.rm(work, { recursive: true, force: true });
  await fs.mkdir(work, { recursive: true });
  const cli = async (step: string, args: string[]): Promise<CommandResult> => {
    const r = await runMeasured(rp[0], [...rp.slice(1), ...args]);
    if (r.code !== 0) throw childError(step, r);
    return r;
  };
  const keys = path.join(work, 'keys');
  await cli('keygen', ['keygen', '--out', keys]);
  const patch = path.join(work, 'bench.rvp');
  const createArgs = ['create', '--from', oldPath, '--to', newPath, '--key', path.join(keys, 'revpatch.key'), '--id', 'bench', '--out', patch];
  options.onStep?.('revpatch create');
  const create = await repeat(options.policy, async () => cli('create', createArgs));
  const patchSize = (await fs.stat(patch)).size;
  const info = JSON.parse((await cli('inspect', ['inspect', patch, '--json'])).stdout) as {
    manifest: { target: { digest: string }; payload: { size: number } };
  };
  const targetDigest = info.manifest.target.digest;

  // One init, copied for every run: each run starts from the same fresh state.
  const pristine = path.join(work, 'state-init');
  const init = await cli('init', ['--state', pristine, 'init', '--volume', oldPath, '--trust', path.join(keys, 'revpatch.pub')]);
  const installs: Sample[] = [];
  const boots: Sample[] = [];
  const removes: Sample[] = [];
  let verified = false;
  options.onStep?.('revpatch install, restart, remove');
  await repeat(options.policy, async (run) => {
    const state = path.join(work, `state-${run}`);
    await copyState(pristine, state);
    const s = ['--state', state];
    try {
      await warmInputs([oldPath, patch]);
      const install = await cli('install', [...s, 'install', patch]);
      const boot = await cli('boot', [...s, '--json', 'boot']);
      if (!verified) {
        const digest = (JSON.parse(boot.stdout) as { viewDigest: string }).viewDigest;
        if (digest !== targetDigest) throw new RevpatchError('E_HASH_MISMATCH', `after install and boot the view is ${digest}, the patch's target ${targetDigest}`);
        verified = true;
      }
      await cli('confirm', [...s, 'confirm']);
      const remove = await cli('remove', [...s, 'remove', 'bench']);
      const reboot = await cli('boot', [...s, 'boot']);
      installs.push(install);
      boots.push(boot);
      removes.push(sumSamples(remove, reboot));
      await options.afterInstallRun?.(run);
      return install;
    } finally {
      await fs.rm(state, { recursive: true, force: true });
    }
  });
  options.onStep?.('revpatch install, in-process');
  const applyInProcess = await repeat(options.policy, async (run) => {
    const state = path.join(work, `state-in-process-${run}`);
    await copyState(pristine, state);
    try {
      const device = await Device.open(state);
      await warmInputs([oldPath, patch]);
      const t0 = performance.now();
      await device.install(patch);
      return { seconds: (performance.now() - t0) / 1000, peakRss: null };
    } finally {
      await fs.rm(state, { recursive: true, force: true });
    }
  });
  const exact = hasGnuTime();
  return {
    tool: 'revpatch',
    patchSize,
    create,
    apply: summarize(installs, exact),
    restart: summarize(boots, exact),
    removeRestart: summarize(removes, exact),
    verified,
    payloadSize: info.manifest.payload.size,
    targetDigest,
    init: { seconds: init.seconds, peakRss: init.peakRss },
    applyInProcess,
    commands: {
      create: 'revpatch create --from OLD --to NEW --key KEY --id bench --out PATCH',
      apply: 'revpatch --state STATE install PATCH   (STATE: a copy of what revpatch init --volume OLD left)',
    },
  };
}

/** One other tool on one pair: create, then apply to a scratch output, checked against NEW once. */
export async function benchTool(tool: DeltaTool, oldPath: string, newPath: string, options: BenchOptions): Promise<ToolResult> {
  const [oldSize, newSize] = [(await fs.stat(oldPath)).size, (await fs.stat(newPath)).size];
  const work = path.join(options.workDir, tool.name);
  const patch = path.join(work, 'patch');
  const out = path.join(work, 'out');
  const display = {
    create: commandLine(...tool.create('OLD', 'NEW', 'PATCH')),
    apply: commandLine(...tool.apply('OLD', 'PATCH', 'OUT')),
  };
  const base: ToolResult = { tool: tool.name, patchSize: null, create: null, apply: null, verified: false, commands: display };
  if (!toolInstalled(tool)) return { ...base, skipped: `not installed (Debian package ${tool.debianPackage})` };
  const why = tool.unsuitable(oldSize, newSize);
  if (why) return { ...base, skipped: why };
  await fs.rm(work, { recursive: true, force: true });
  await fs.mkdir(work, { recursive: true });
  try {
    const timeoutSeconds = options.toolTimeout?.(newSize);
    const failure = (step: string, r: CommandResult) =>
      r.timedOut
        ? `${step} did not finish within ${timeoutSeconds} s (stopped)`
        : `${step} failed (exit ${r.code}): ${r.stderr.trim().split('\n').slice(-1)[0] ?? ''}`;
    options.onStep?.(`${tool.name} create`);
    const status: { failed: string | null } = { failed: null };
    const create = await repeat(options.policy, async () => {
      const [cmd, args] = tool.create(oldPath, newPath, patch);
      const r = await runMeasured(cmd, args, { timeoutSeconds });
      if (r.code !== 0) status.failed = failure('create', r);
      return { ...r, stop: r.code !== 0 };
    });
    if (status.failed) return { ...base, skipped: status.failed };
    const patchSize = (await fs.stat(patch)).size;
    options.onStep?.(`${tool.name} apply`);
    let verified = false;
    const apply = await repeat(options.policy, async () => {
      await fs.rm(out, { force: true });
      await warmInputs([oldPath, patch]);
      const [cmd, args] = tool.apply(oldPath, patch, out);
      const r = await runMeasured(cmd, args, { timeoutSeconds });
      if (r.code !== 0) status.failed = failure('apply', r);
      else if (!verified) {
        if (!(await sameBytes(out, newPath))) status.failed = 'apply produced other bytes than NEW';
        verified = true;
      }
      await fs.rm(out, { force: true });
      return { ...r, stop: status.failed !== null };
    });
    if (status.failed) return { ...base, skipped: status.failed };
    return { ...base, patchSize, create, apply, verified };
  } finally {
    await fs.rm(work, { recursive: true, force: true });
  }
}

/** revpatch and every requested tool on one pair. */
export async function benchPair(name: string, oldPath: string, newPath: string, options: BenchOptions): Promise<PairResult> {
  const [oldStat, newStat] = await Promise.all([fs.stat(oldPath), fs.stat(newPath)]);
  const tools: PairResult['tools'] = [await benchRevpatch(oldPath, newPath, options)];
  for (const name of options.tools ?? TOOL_NAMES) tools.push(await benchTool(TOOLS[name], oldPath, newPath, options));
  return { name, oldSize: oldStat.size, newSize: newStat.size, tools };
}

/** Peak RSS of a Node process that does nothing: the floor every revpatch command stands on. */
export async function idleNodeRss(runs = 3): Promise<number | null> {
  const step = await repeat({ runs }, () => runMeasured(process.execPath, ['-e', 'setTimeout(() => {}, 50)']));
  return step.peakRss;
}

/** Median wall time of `node -e 0`: what every command-line step pays before revpatch runs. */
export async function nodeStartup(runs = 5): Promise<number> {
  const step = await repeat({ runs }, () => runMeasured(process.execPath, ['-e', '0']));
  return step.seconds;
}

// ---------------------------------------------------------------------------
// The machine

export interface MachineInfo {
  cpus: number;
  cpuModel: string;
  memory: number;
  kernel: string;
  filesystem: string;
  node: string;
  tools: Record<string, string>;
  rssSource: string;
}

async function firstLine(cmd: string, args: string[]): Promise<string> {
  if (!which(cmd)) return '';
  const r = await runMeasured(cmd, args).catch(() => null);
  if (!r) return '';
  return `${r.stdout}${r.stderr}`.trim().split('\n')[0] ?? '';
}

export async function toolVersion(tool: ToolName): Promise<string> {
  const pkg = await firstLine('dpkg-query', ['-W', '-f', '${Version}', TOOLS[tool].debianPackage]);
  const own = tool === 'zstd' ? await firstLine('zstd', ['--version']) : tool === 'xdelta3' ? await firstLine('xdelta3', ['-V']) : '';
  if (!toolInstalled(TOOLS[tool])) return 'not installed';
  return [own.replace(/^\*+\s*|\s*\*+$/g, '').replace(/, Copyright.*/, ''), pkg && !pkg.includes('no packages') ? `Debian ${pkg}` : '']
    .filter(Boolean)
    .join('; ') || 'installed';
}

export async function machineInfo(dir: string): Promise<MachineInfo> {
  const cpuinfo = existsSync('/proc/cpuinfo') ? readFileSync('/proc/cpuinfo', 'utf8') : '';
  const model = /model name\s*:\s*(.*)/.exec(cpuinfo)?.[1] ?? os.cpus()[0]?.model ?? 'unknown';
  let filesystem = (await firstLine('stat', ['-f', '-c', '%T', dir])) || 'unknown';
  const df = await runMeasured('df', ['-T', dir]).catch(() => null);
  const dev = df?.stdout.trim().split('\n')[1]?.split(/\s+/);
  if (dev && dev.length > 1) filesystem = `${dev[1]} on ${dev[0]}`;
  // Options such as discard change what writes and deletions cost.
  const mountOptions = await firstLine('findmnt', ['-n', '-o', 'OPTIONS', '--target', dir]);
  if (mountOptions) filesystem += `, mounted ${mountOptions}`;
  const tools: Record<string, string> = {};
  for (const t of TOOL_NAMES) tools[t] = await toolVersion(t);
  return {
    cpus: os.availableParallelism ? os.availableParallelism() : os.cpus().length,
    cpuModel: model.trim(),
    memory: os.totalmem(),
    kernel: `${os.type()} ${os.release()}`,
    filesystem,
    node: process.version,
    tools,
    rssSource: hasGnuTime() ? 'GNU time %M (getrusage ru_maxrss of the child)' : 'polled VmHWM from /proc (approximate)',
  };
}

// ---------------------------------------------------------------------------
// Formatting

export function fmtBytes(n: number | null | undefined): string {
  if (n === null || n === undefined) return '—';
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)} ${units[u]}`;
}

export function fmtSeconds(s: number | null | undefined): string {
  if (s === null || s === undefined) return '—';
  if (s < 1) return `${(s * 1000).toFixed(0)} ms`;
  return `${s.toFixed(s < 10 ? 2 : 1)} s`;
}

export function fmtRatio(value: number | null | undefined, reference: number | null | undefined): string {
  if (value === null || value === undefined || !reference) return '—';
  return `${(value / reference).toFixed(2)}x`;
}

/** A plain text table with aligned columns (first column left, others right). */
export function textTable(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ').trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

/** A Markdown table. */
export function markdownTable(header: string[], rows: string[][]): string {
  const esc = (s: string) => s.replace(/\|/g, '\\|');
  return [
    `| ${header.map(esc).join(' | ')} |`,
    `|${header.map((_, i) => (i === 0 ? '---' : '---:')).join('|')}|`,
    ...rows.map((r) => `| ${r.map(esc).join(' | ')} |`),
  ].join('\n');
}

/** The columns of a pair's comparison, each tool against revpatch. */
export function pairRows(pair: PairResult): { header: string[]; rows: string[][] } {
  const rp = pair.tools.find((t) => t.tool === 'revpatch');
  const header = ['tool', 'patch', 'size/rp', 'create', 'create/rp', 'create peak RSS', 'apply', 'apply/rp', 'apply peak RSS', 'runs'];
  const rows = pair.tools.map((t) => {
    if (t.skipped) return [t.tool === 'bsdiff' ? 'bsdiff/bspatch' : t.tool, `skipped: ${t.skipped}`, '', '', '', '', '', '', '', ''];
    const runs = [t.create?.runs, t.apply?.runs].filter((x) => x !== undefined).join('/');
    return [
      t.tool === 'bsdiff' ? 'bsdiff/bspatch' : t.tool === 'revpatch' ? 'revpatch (install)' : t.tool,
      t.patchSize === null ? '—' : `${t.patchSize}`,
      fmtRatio(t.patchSize, rp?.patchSize),
      fmtSeconds(t.create?.seconds),
      fmtRatio(t.create?.seconds, rp?.create?.seconds),
      fmtBytes(t.create?.peakRss),
      fmtSeconds(t.apply?.seconds),
      fmtRatio(t.apply?.seconds, rp?.apply?.seconds),
      fmtBytes(t.apply?.peakRss),
      runs,
    ];
  });
  return { header, rows };
}
