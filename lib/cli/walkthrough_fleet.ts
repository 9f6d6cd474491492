/**
 * The fleet part of `npm start` (lib/cli/walkthrough.ts; docs/fleet.md): the
 * vendor's half of the report loop on its embedded default, nothing to set
 * up. A fleet service runs in this process on 127.0.0.1 with its SQLite
 * database in the demo directory (beside the repository, never inside it);
 * a bad patch, fix-3, is published at rollout 0 and given a plan with
 * auto-recall; a small fleet of simulated devices takes it stage by stage.
 *
 * The devices are light: no volume and no engine, but the real parts
 * around them. They read the published rollout, halt and recall flags
 * through the real repository client (one verified copy of the metadata
 * shared by all, as `fleet simulate` does), decide with the agent's own
 * policy functions (the rollout bucket, halt, recall), and report through
 * the real report client (pseudonyms, report ids, POST /v1/reports with an
 * enrollment token). The patch breaks the health check of most of them.
 *
 * Each round: the controller ticks (deciding from the counts and recording
 * the decision before it re-signs the repository), the devices read the
 * repository, those in the rollout stage the patch, and those that staged
 * it in the round before restart and confirm it or roll it back. The run
 * ends once the controller has halted and recalled the patch and every
 * device that held it has removed it; then `fleet status` is printed.
 *
 * The service serves its dashboard too (lib/fleet/dashboard.ts): the run
 * mints an operator token into the run directory (mode 0600) and prints the
 * dashboard's URL and how to log in, but opens no browser. With `serve`
 * (`npm start -- --serve`) the service, its controller and store stay up
 * after the story until `serve` resolves (the walkthrough waits for Ctrl-C),
 * so a newcomer can look at the rollout and its decisions.
 */
import * as crypto from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { RevpatchError } from '../engine/errors';
import { haltDecision, recallDecision, rolloutDecision } from '../agent/policy';
import { RepositoryClient } from '../repo/client';
import type { Repository } from '../repo/publisher';
import type { RepositoryServer } from '../repo/serve';
import { newReport, postBatch, pseudonymOf } from '../report/client';
import type { DeviceReport, Outcome } from '../report/format';
import { openStore } from '../fleet/store';
import { Dashboard } from '../fleet/dashboard';
import { FleetServer } from '../fleet/server';
import { mintToken } from '../fleet/tokens';
import { RolloutController } from '../fleet/controller';
import { fleetStatus, statusText } from './fleet_status';

export interface FleetWalkthroughOptions {
  /** The run directory of the walkthrough (the database goes here, beside `repoDir`). */
  runDir: string;
  repoDir: string;
  vendor: Repository;
  /** The repository being served (the devices read it). */
  repoServer: RepositoryServer;
  /** The signed bad patch to publish. */
  badPatch: string;
  say: (who: string, text: string) => void;
  log: (line: string) => void;
  /**
   * Keeps the fleet service (and its dashboard) running after the story
   * until the promise it returns resolves; given where the dashboard is and
   * the file holding the operator token.
   */
  serve?: (dashboard: { url: string; tokenFile: string }) => Promise<void>;
}

const PATCH = 'fix-3';
const DEVICES = 100;
/** Share of devices whose health check the bad patch breaks. */
const BREAKS = 0.75;
const PLAN = { stages: [10, 50, 100], soakSeconds: 0, minReports: 5, maxFailurePct: 5, autoRecall: true };
const MAX_ROUNDS = 20;

type Phase = 'waiting' | 'staged' | 'active' | 'rolled-back' | 'removed';

interface SimDevice {
  id: string;
  pseudonym: string;
  breaks: boolean;
  phase: Phase;
}

/** A path relative to the working directory when it lies below it. */
function shown(file: string): string {
  const rel = path.relative(process.cwd(), file);
  return rel && !rel.startsWith('..') && !path.isAbsolute(rel) ? rel : file;
}

/** Deterministic per device, so every run shows the same story. */
function unitOf(text: string): number {
  return crypto.createHash('sha256').update(text).digest().readUInt32BE(0) / 2 ** 32;
}

export async function runFleetWalkthrough(o: FleetWalkthroughOptions): Promise<void> {
  const { say } = o;
  const dbFile = path.join(o.runDir, 'fleet.db');
  const store = await openStore(`sqlite:${dbFile}`);
  const controller = new RolloutController({ store, repoDir: o.repoDir });
  const web = new Dashboard({ store, operator: controller });
  const service = await FleetServer.start({ store, operator: controller, host: '127.0.0.1', port: 0, web });
  try {
    say('fleet', `report collector on ${service.url}, rollout controller in this process; database ${shown(dbFile)}`);
    const tokenFile = path.join(o.runDir, 'operator.token');
    await fs.writeFile(tokenFile, `${await mintToken(store, 'operator', { now: Date.now() })}\n`, { mode: 0o600, flag: 'wx' });
    say('fleet', `dashboard: ${service.url}/ (log in with the operator token in ${shown(tokenFile)})`);
    const token = await mintToken(store, 'device', { devices: DEVICES, now: Date.now() });
    say('fleet', `enrollment token for ${DEVICES} devices minted (only its SHA-256 is stored)`);

    const published = await o.vendor.publish(o.badPatch, { rollout: 0 });
    say('vendor', `published ${published.patch.id} v${published.patch.version} at rollout 0%: it breaks the health check on most devices`);
    const { plan, decision } = await controller.plan(PATCH, { version: published.patch.version, ...PLAN });
    say(
      'vendor',
      `fleet plan ${PATCH}: stages ${plan.stages.join(', ')}%, ${plan.minReports} verdicts a stage, halt above ${plan.maxFailurePct}% with confidence, auto-recall`,
    );
    say('control', `${decision.action} ${decision.fromRollout}% → ${decision.toRollout}%: ${decision.reason}`);
    let lastDecision = decision.seq;

    const devices: SimDevice[] = Array.from({ length: DEVICES }, (_, i) => {
      const id = `sim-device-${String(i + 1).padStart(2, '0')}`;
      return { id, pseudonym: pseudonymOf(crypto.randomBytes(32), PATCH), breaks: unitOf(`breaks:${id}`) < BREAKS, phase: 'waiting' };
    });
    const clientDir = path.join(o.runDir, 'fleet-devices');
    const client = await RepositoryClient.open(clientDir, {
      url: o.repoServer.url,
      rootPath: path.join(o.repoDir, 'metadata', '1.root.json'),
    });
    say('fleet', `${DEVICES} simulated devices: real repository client, rollout policy and report client; no engine`);

    let settled = false;
    for (let round = 1; round <= MAX_ROUNDS && !settled; round++) {
      await controller.tick();
      for (const d of await store.decisions(PATCH)) {
        if (d.seq <= lastDecision) continue;
        lastDecision = d.seq;
        say('control', `${d.action} ${d.fromRollout}% → ${d.toRollout}%: ${d.reason}`);
      }
      await client.refresh();
      const offered = (await client.patches()).find((p) => p.id === PATCH);
      if (!offered) throw new RevpatchError('E_STATE', `the repository no longer lists ${PATCH}`);
      const halted = offered.halted;

      const reports: Array<{ device: SimDevice; outcome: Outcome; code: string | null; bootAttempts?: number }> = [];
      const counts = { staged: 0, confirmed: 0, rolledBack: 0, removed: 0 };
      for (const device of devices) {
        if (offered.recalled && (device.phase === 'staged' || device.phase === 'active')) {
          // A staged patch is dropped at once; a booted one at the next restart (one round here).
          const held = { id: PATCH, state: device.phase, version: offered.version, parent: offered.parent };
          if (recallDecision(held).action !== 'none') {
            device.phase = 'removed';
            reports.push({ device, outcome: 'recalled', code: 'recall' });
            counts.removed += 1;
          }
          continue;
        }
        if (device.phase === 'staged') {
          // The restart that boots the patch, then the health check.
          reports.push({ device, outcome: 'trial', code: null });
          if (device.breaks) {
            device.phase = 'rolled-back';
            reports.push({ device, outcome: 'rolled-back', code: 'health-check-failed', bootAttempts: 1 });
            counts.rolledBack += 1;
          } else {
            device.phase = 'active';
            reports.push({ device, outcome: 'confirmed', code: null });
            counts.confirmed += 1;
          }
          continue;
        }
        if (device.phase !== 'waiting' || offered.recalled) continue;
        if (haltDecision(offered, []).action !== 'continue') continue;
        if (rolloutDecision(device.id, PATCH, offered.rollout).action !== 'install') continue;
        device.phase = 'staged';
        reports.push({ device, outcome: 'staged', code: null });
        counts.staged += 1;
      }
      for (const device of devices) {
        const mine = reports.filter((r) => r.device === device);
        if (mine.length === 0) continue;
        const batch: DeviceReport[] = mine.map((r) =>
          newReport({ patch: PATCH, version: offered.version, outcome: r.outcome, code: r.code, bootAttempts: r.bootAttempts ?? 0, pseudonym: device.pseudonym }),
        );
        await postBatch(service.url, token, batch);
      }
      const holding = devices.filter((d) => d.phase === 'staged' || d.phase === 'active').length;
      const flags = [offered.recalled ? 'recalled' : '', halted ? 'halted' : ''].filter(Boolean).join(', ');
      say(
        'devices',
        `round ${round}: repository says ${offered.rollout}%${flags ? ` (${flags})` : ''}; ` +
          `${counts.staged} staged, ${counts.confirmed} confirmed, ${counts.rolledBack} rolled back, ${counts.removed} removed by recall; ` +
          `${holding} of ${DEVICES} hold ${PATCH}`,
      );
      const state = (await store.getPlan(PATCH, offered.version))?.state;
      settled = (state === 'recalled' || state === 'halted') && reports.length === 0 && holding === 0;
    }
    if (!settled) throw new RevpatchError('E_STATE', `the controller did not stop ${PATCH} within ${MAX_ROUNDS} rounds`);

    const status = await fleetStatus(store, PATCH);
    const [entry] = status;
    if (!entry || entry.state !== 'recalled') throw new RevpatchError('E_STATE', `${PATCH} ended ${entry?.state ?? 'without a plan'}, not recalled`);
    const took = devices.filter((d) => d.phase !== 'waiting').length;
    say('fleet', `${PATCH} halted and recalled at ${entry.rollout}%: ${took} of ${DEVICES} devices ever took it, none holds it now`);
    o.log(`\n$ revpatch fleet status --db sqlite:${dbFile}`);
    o.log(statusText(status));
    o.log('');
    if (o.serve) {
      controller.start(5000);
      say('fleet', `still serving: dashboard ${service.url}/ (operator token in ${shown(tokenFile)}); Ctrl-C stops it`);
      await o.serve({ url: `${service.url}/`, tokenFile });
    }
  } finally {
    await service.close();
    await controller.stop();
    await store.close();
  }
}
