/**
 * The device settings page (`revpatch agent --ui HOST:PORT`; docs/agent.md,
 * "Settings page"): a small local web page on the agent, for the device's
 * user — what is installed, what the next restart does, the
 * automatic-install switch, Install for offered patches while it is off,
 * Remove for removable ones. Every change goes through the running agent
 * (Agent.setAutoInstall, Agent.installOffered, Agent.removeByUser), so it
 * is serialised with the agent's own checks and audited like them.
 *
 *   GET  /?token=T            exchanges the per-start token for a session
 *                             cookie and redirects to /
 *   GET  /                    the page (server-rendered; settings_html.ts)
 *   GET  /panel               its changing part, which the script swaps in
 *   GET  /api/state           the same as JSON
 *   POST /api/auto-install    {"on": boolean}
 *   POST /api/install         {"id": ID}
 *   POST /api/remove          {"id": ID}
 *   GET  /assets/settings.js|.css   the page script (dist/web) and styles
 *
 * Another local program's web page must not be able to drive it:
 * - it listens on loopback unless the caller explicitly allows a remote
 *   host (`allowRemote`);
 * - a random token made at each start (printed with the URL) is exchanged
 *   once per browser for a session cookie (HttpOnly, SameSite=Strict,
 *   Path=/); without a session every request but the assets is refused;
 * - each session has its own CSRF token, in the page, which every POST must
 *   send back in `X-CSRF-Token` with a JSON body (so no form of a foreign
 *   page can post); tokens are compared in constant time;
 * - the Host header must name this server (DNS rebinding) and a present
 *   Origin must be this server's; a cross-site Sec-Fetch-Site is refused;
 * - a Content-Security-Policy without inline script or style, no framing.
 *
 * Refusals are `{"error":{"code","message"}}` with the code's HTTP status
 * and change nothing: every check happens before the agent is asked.
 */
import * as crypto from 'node:crypto';
import { existsSync, promises as fs } from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { Device } from '../device/device';
import { RevpatchError, toRevpatchError, type ErrorCode } from '../engine/errors';
import { ID_PATTERN } from '../patch/manifest';
import type { Agent } from './agent';
import { AuditTrail } from './log';
import { renderPage, renderPanel, SETTINGS_CSS, type InstalledView, type SettingsView } from './settings_html';

export const SESSION_COOKIE = 'revpatch_settings';
const MAX_SESSIONS = 64;
const MAX_BODY = 4096;

export interface SettingsPageOptions {
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 0: a free port. */
  port?: number;
  /** Allow a host that is not loopback (the page is then reachable from the network). */
  allowRemote?: boolean;
  /** The per-start token; default 32 random bytes. */
  token?: string;
  /** Where settings.js is; default dist/web. */
  webDir?: string;
}

export interface SettingsPage {
  /** http://host:port */
  url: string;
  /** The URL to open: url/?token=… */
  loginUrl: string;
  token: string;
  port: number;
  close(): Promise<void>;
}

/** Whether `host` names this machine's loopback interface. */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

/** Parses HOST:PORT (`[::1]:8080` for IPv6); a bad one throws E_INVALID_ARGUMENT. */
export function parseListen(text: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(text);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new RevpatchError('E_INVALID_ARGUMENT', `--ui ${JSON.stringify(text)} is not HOST:PORT (e.g. 127.0.0.1:8080)`);
  return { host: m[1] ?? m[2], port };
}

function sameSecret(a: string, b: string): boolean {
  const x = crypto.createHash('sha256').update(a).digest();
  const y = crypto.createHash('sha256').update(b).digest();
  return crypto.timingSafeEqual(x, y) && a.length === b.length;
}

const STATUS: Partial<Record<ErrorCode, number>> = {
  E_AUTH: 401,
  E_FORBIDDEN: 403,
  E_INVALID_ARGUMENT: 400,
  E_NOT_FOUND: 404,
  E_NOT_OFFERED: 404,
  E_UNKNOWN_PATCH: 404,
  E_STATE: 409,
  E_EXISTS: 409,
  E_RECALLED: 409,
  E_HALTED: 409,
  E_OUTSIDE_ROLLOUT: 409,
  E_PARENT_MISSING: 409,
  E_BASE_MISMATCH: 409,
  E_NO_REPOSITORY: 409,
  E_BUSY: 503,
  E_NETWORK: 503,
  E_SLOW_RETRIEVAL: 503,
  E_NO_SPACE: 507,
};

const SECURITY_HEADERS: Record<string, string> = {
  'Content-Security-Policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
  'X-Content-Type-Options': 'nosniff',
  'X-Frame-Options': 'DENY',
  'Referrer-Policy': 'no-referrer',
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Resource-Policy': 'same-origin',
  'Cache-Control': 'no-store',
};

interface Session {
  csrf: string;
}

/** The settings as the page shows them, read fresh from the device, the agent and the audit trail. */
export async function settingsView(agent: Agent): Promise<SettingsView> {
  const device = await Device.open(agent.stateDir);
  const patches = device.list();
  const audit = await AuditTrail.forState(agent.stateDir).read();
  const activatedAt = (id: string, installedAt: string): string | null => {
    let at: string | null = null;
    for (const e of audit) if (e.event === 'activated' && e.patch === id && e.time >= installedAt) at = e.time;
    return at;
  };
  const live = (state: string) => state === 'staged' || state === 'trial' || state === 'active';
  const installed: InstalledView[] = patches.map((p, i) => ({
    id: p.id,
    title: p.title,
    severity: p.severity,
    version: p.version,
    state: p.state,
    installedAt: p.installedAt,
    activatedAt: activatedAt(p.id, p.installedAt) ?? (p.state === 'active' ? p.stateChangedAt : null),
    removable: p.removable,
    stacked: live(p.state) ? patches.slice(i + 1).filter((q) => live(q.state)).map((q) => q.id) : [],
    reason: p.reason ?? null,
  }));
  const autoInstall = await agent.autoInstall();
  const last = agent.lastCheck();
  const held = new Set(patches.map((p) => p.id));
  const available = (last?.report.available ?? [])
    .filter((id) => !held.has(id))
    .map((id) => last!.offered.filter((o) => o.id === id).sort((a, b) => b.version - a.version)[0])
    .filter((o) => o !== undefined)
    .map((o) => ({ id: o.id, title: o.title, severity: o.severity, version: o.version }));
  const notice = await agent.restartNotice();
  const byId = new Map(patches.map((p) => [p.id, p]));
  return {
    autoInstall,
    installed,
    available,
    lastCheckAt: last?.at ?? null,
    restart: {
      pending: notice.pending,
      activates: notice.patches.filter((id) => byId.get(id)?.state === 'staged'),
      removes: notice.patches.filter((id) => byId.get(id)?.state === 'pending-removal'),
      deferrals: notice.deferrals,
      deferralsLeft: notice.deferralsLeft,
      deadline: notice.deadline,
      exhausted: notice.decision.action === 'exhausted',
      reason: notice.decision.reason,
    },
  };
}

function webDirOf(given?: string): string {
  if (given) return given;
  const candidates = [path.join(__dirname, '..', 'web'), path.join(__dirname, '..', '..', 'dist', 'web')];
  return candidates.find((d) => existsSync(path.join(d, 'settings.js'))) ?? candidates[0];
}

export async function startSettingsPage(agent: Agent, options: SettingsPageOptions = {}): Promise<SettingsPage> {
  const host = options.host ?? '127.0.0.1';
  if (!isLoopbackHost(host) && !options.allowRemote) {
    throw new RevpatchError(
      'E_INVALID_ARGUMENT',
      `${host} is not a loopback address: the settings page listens on loopback unless --ui-allow-remote says otherwise`,
    );
  }
  const token = options.token ?? crypto.randomBytes(32).toString('base64url');
  const webDir = webDirOf(options.webDir);
  const sessions = new Map<string, Session>();
  let allowedHosts = new Set<string>();
  let allowedOrigins = new Set<string>();

  const send = (res: http.ServerResponse, status: number, type: string, body: string | Buffer, extra: Record<string, string> = {}) => {
    res.writeHead(status, { ...SECURITY_HEADERS, 'Content-Type': type, 'Content-Length': Buffer.byteLength(body), ...extra });
    res.end(body);
  };
  const json = (res: http.ServerResponse, status: number, value: unknown) =>
    send(res, status, 'application/json; charset=utf-8', `${JSON.stringify(value)}\n`);
  const refuse = (res: http.ServerResponse, code: ErrorCode, message: string) =>
    json(res, STATUS[code] ?? 500, { error: { code, message } });

  const sessionOf = (req: http.IncomingMessage): Session | null => {
    for (const part of (req.headers.cookie ?? '').split(';')) {
      const [name, ...rest] = part.trim().split('=');
      if (name !== SESSION_COOKIE) continue;
      const id = rest.join('=');
      for (const [sid, session] of sessions) if (sameSecret(sid, id)) return session;
    }
    return null;
  };

  const readJson = async (req: http.IncomingMessage): Promise<Record<string, unknown>> => {
    const type = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
    if (type !== 'application/json') throw new RevpatchError('E_INVALID_ARGUMENT', 'the body must be application/json');
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req) {
      size += (chunk as Buffer).length;
      if (size > MAX_BODY) throw new RevpatchError('E_INVALID_ARGUMENT', `the body is larger than ${MAX_BODY} bytes`);
      chunks.push(chunk as Buffer);
    }
    let value: unknown;
    try {
      value = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch {
      throw new RevpatchError('E_INVALID_ARGUMENT', 'the body is not JSON');
    }
    if (!value || typeof value !== 'object' || Array.isArray(value)) throw new RevpatchError('E_INVALID_ARGUMENT', 'the body must be a JSON object');
    return value as Record<string, unknown>;
  };

  const patchId = (body: Record<string, unknown>): string => {
    if (typeof body.id !== 'string' || !ID_PATTERN.test(body.id)) throw new RevpatchError('E_INVALID_ARGUMENT', 'id must be a patch id');
    return body.id;
  };

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    const hostHeader = (req.headers.host ?? '').toLowerCase();
    if (!allowedHosts.has(hostHeader)) {
      refuse(res, 'E_FORBIDDEN', `Host ${JSON.stringify(req.headers.host ?? '')} is not this server`);
      return;
    }
    const origin = req.headers.origin;
    if (origin !== undefined && !allowedOrigins.has(origin.toLowerCase())) {
      refuse(res, 'E_FORBIDDEN', `Origin ${JSON.stringify(origin)} is not this server`);
      return;
    }
    if (req.headers['sec-fetch-site'] === 'cross-site') {
      refuse(res, 'E_FORBIDDEN', 'a cross-site request');
      return;
    }
    const url = new URL(req.url ?? '/', 'http://settings.invalid');
    const method = req.method ?? 'GET';

    if (method === 'GET' && (url.pathname === '/assets/settings.js' || url.pathname === '/assets/settings.js.map')) {
      const file = path.join(webDir, url.pathname.slice('/assets/'.length));
      const body = await fs.readFile(file).catch(() => null);
      if (!body) {
        refuse(res, 'E_NOT_FOUND', 'the page script is not built (npm run build)');
        return;
      }
      send(res, 200, url.pathname.endsWith('.map') ? 'application/json' : 'text/javascript; charset=utf-8', body);
      return;
    }
    if (method === 'GET' && url.pathname === '/favicon.ico') {
      res.writeHead(204, SECURITY_HEADERS).end();
      return;
    }
    if (method === 'GET' && url.pathname === '/assets/settings.css') {
      send(res, 200, 'text/css; charset=utf-8', SETTINGS_CSS);
      return;
    }
    if (method === 'GET' && url.pathname === '/' && url.searchParams.has('token')) {
      if (!sameSecret(url.searchParams.get('token') ?? '', token)) {
        refuse(res, 'E_AUTH', 'the token is not this page’s (it changes at every start: see the agent’s output)');
        return;
      }
      const sid = crypto.randomBytes(32).toString('base64url');
      sessions.set(sid, { csrf: crypto.randomBytes(32).toString('base64url') });
      while (sessions.size > MAX_SESSIONS) sessions.delete(sessions.keys().next().value as string);
      send(res, 303, 'text/plain; charset=utf-8', 'signed in\n', {
        Location: '/',
        'Set-Cookie': `${SESSION_COOKIE}=${sid}; HttpOnly; SameSite=Strict; Path=/`,
      });
      return;
    }
    const session = sessionOf(req);
    if (!session) {
      refuse(res, 'E_AUTH', 'no session: open the URL with the token the agent printed');
      return;
    }
    if (method === 'GET') {
      if (url.pathname === '/') {
        send(res, 200, 'text/html; charset=utf-8', renderPage(await settingsView(agent), session.csrf));
      } else if (url.pathname === '/panel') {
        send(res, 200, 'text/html; charset=utf-8', renderPanel(await settingsView(agent)));
      } else if (url.pathname === '/api/state') {
        json(res, 200, await settingsView(agent));
      } else {
        refuse(res, 'E_NOT_FOUND', `no page ${url.pathname}`);
      }
      return;
    }
    if (method !== 'POST') {
      refuse(res, 'E_INVALID_ARGUMENT', `method ${method} is not allowed`);
      return;
    }
    const csrf = req.headers['x-csrf-token'];
    if (typeof csrf !== 'string' || !sameSecret(csrf, session.csrf)) {
      refuse(res, 'E_FORBIDDEN', 'a change needs the page’s CSRF token (X-CSRF-Token)');
      return;
    }
    const body = await readJson(req);
    switch (url.pathname) {
      case '/api/auto-install': {
        if (typeof body.on !== 'boolean') throw new RevpatchError('E_INVALID_ARGUMENT', 'on must be true or false');
        await agent.setAutoInstall(body.on);
        json(res, 200, { autoInstall: body.on });
        return;
      }
      case '/api/install': {
        const result = await agent.installOffered(patchId(body));
        json(res, 200, { patch: result.patch });
        return;
      }
      case '/api/remove': {
        const changed = await agent.removeByUser(patchId(body));
        json(res, 200, { changed: changed.map((p) => ({ id: p.id, state: p.state })) });
        return;
      }
      default:
        refuse(res, 'E_NOT_FOUND', `no action ${url.pathname}`);
    }
  };

  const server = http.createServer((req, res) => {
    handle(req, res).catch((err) => {
      const e = toRevpatchError(err);
      if (!res.headersSent) refuse(res, e.code, e.message);
      else res.destroy();
    });
  });
  server.headersTimeout = 10_000;
  server.requestTimeout = 10 * 60_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(new RevpatchError('E_IO', `the settings page cannot listen on ${host}:${options.port ?? 0}: ${err.code ?? err.message}`, { cause: err })),
    );
    server.listen(options.port ?? 0, host, () => resolve());
  });
  const address = server.address() as AddressInfo;
  const listenHost = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const port = address.port;
  const names = [`${listenHost}:${port}`, ...(isLoopbackHost(host) ? ['localhost', '127.0.0.1', '[::1]'].map((h) => `${h}:${port}`) : [])];
  allowedHosts = new Set(names.map((n) => n.toLowerCase()));
  allowedOrigins = new Set(names.map((n) => `http://${n}`.toLowerCase()));
  const url = `http://${listenHost}:${port}`;
  return {
    url,
    loginUrl: `${url}/?token=${token}`,
    token,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
