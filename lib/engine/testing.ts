/**
 * Fault injection for integrators: run your own power-loss and I/O-error
 * tests against your own images, the way revpatch's suite runs its own
 * (docs/reliability.md). Every I/O call of the engine (open, read, write,
 * fsync, truncate, rename, unlink, clone, directory sync) is counted while a
 * plan is armed; a plan fails call N with EIO or ENOSPC, cuts a write short,
 * or simulates a power cut at call N, after which `recoverFromPowerLoss`
 * rolls the files back to what a real cut may leave: writes not made durable
 * by a completed fsync are undone (whole, or torn at 512-byte sectors), and
 * so are creates, renames and unlinks whose directory was not fsynced.
 *
 * The plan is process-wide: do not run two faulted operations at once.
 * From the command line, REVPATCH_FAULT="mode:N[:seed]" arms a plan when
 * the addon loads (for example REVPATCH_FAULT=power-loss:12 revpatch install
 * fix.rvp); the on-disk rollback then needs this API.
 */
import * as engine from './engine';
import { RevpatchError, toRevpatchError } from './errors';

export type FaultMode = 'eio' | 'enospc' | 'short-write' | 'power-loss' | 'power-loss-torn';
export const FAULT_MODES: readonly FaultMode[] = ['eio', 'enospc', 'short-write', 'power-loss', 'power-loss-torn'];

export interface FaultOutcome {
  /** The error the operation ended with, or null if it succeeded anyway. */
  error: RevpatchError | null;
  /** Whether the planned fault happened (call N was reached). */
  triggered: boolean;
  /** Engine I/O calls the operation made while the plan was armed. */
  calls: number;
}

/** How many engine I/O calls `run` makes (no fault injected). */
export async function countIoCalls(run: () => Promise<unknown>): Promise<number> {
  await engine.setFaultPlan({ mode: 'none', failAt: 0, seed: 0 });
  try {
    await run();
    return (await engine.faultStatus()).calls;
  } finally {
    await engine.clearFaultPlan();
  }
}

/**
 * Runs `run` with call `failAt` failing as `mode` says. For the power-loss
 * modes the files are rolled back before this returns, so what is on disk is
 * what a device would find at its next start.
 */
export async function runWithFault(
  mode: FaultMode,
  failAt: number,
  run: () => Promise<unknown>,
  seed = failAt,
): Promise<FaultOutcome> {
  await engine.setFaultPlan({ mode, failAt, seed });
  let error: RevpatchError | null = null;
  let status: { calls: number; triggered: boolean };
  try {
    try {
      await run();
    } catch (err) {
      error = toRevpatchError(err);
    }
  } finally {
    status = await engine.faultStatus();
    if (mode === 'power-loss' || mode === 'power-loss-torn') {
      await engine.recoverFromPowerLoss();
    } else {
      await engine.clearFaultPlan();
    }
  }
  return { error, triggered: status.triggered, calls: status.calls };
}

export interface SweepOptions<C> {
  modes?: readonly FaultMode[];
  /** A fresh context (for example a copy of a prepared state directory) for each run. */
  setup(): Promise<C>;
  /** The operation under test. */
  run(context: C): Promise<unknown>;
  /** Called after each faulted run (and its recovery); throw to fail. */
  check(context: C, outcome: FaultOutcome, mode: FaultMode, failAt: number): Promise<void>;
}

/**
 * Runs the operation once to count its I/O calls, then again for every
 * call number N and every mode with call N failing. Returns how many
 * faulted runs were checked.
 */
export async function sweepFaults<C>(options: SweepOptions<C>): Promise<{ calls: number; runs: number }> {
  const probe = await options.setup();
  const calls = await countIoCalls(() => options.run(probe));
  let runs = 0;
  for (const mode of options.modes ?? FAULT_MODES) {
    for (let n = 1; n <= calls; n++) {
      const context = await options.setup();
      const outcome = await runWithFault(mode, n, () => options.run(context));
      await options.check(context, outcome, mode, n);
      runs++;
    }
  }
  return { calls, runs };
}
