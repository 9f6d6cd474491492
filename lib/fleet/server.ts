/**
 * The fleet service's HTTP side (`revpatch fleet serve`; DESIGN.md,
 * "Fleet"; docs/fleet.md): the report collector and the operator JSON API,
 * on Node's own `http` module. Two APIs, kept apart (STYLE.md): they share
 * no handler and no token.
 *
 * Device API
 *   POST /v1/reports              device token; body a ReportBatch
 *                                 → 200 {accepted, duplicates}, once durable
 * Operator API (operator token)
 *   GET  /v1/patches              {patches: [status of every plan]}
 *   GET  /v1/patches/:id          {patches: [status of each plan of one patch]}
 *   POST /v1/patches/:id/halt|resume|recall|advance
 *                                 body empty, {} or {"version": N}
 * Without auth
 *   GET  /v1/health
 * Pages (optional, `web`): the operator's dashboard (lib/fleet/dashboard.ts)
 *   claims `/`, `/web/…` and `/api/…`, with its own session cookie and CSRF
 *   token; it passes the same Host and Origin checks first, and nothing of
 *   it reaches the /v1 API, which still takes a Bearer header only.
 *
 * Every refusal is `{"error":{"code":"E_…","message":"…"}}` with the HTTP
 * status of its code (httpStatusOf) and changes nothing: a batch is checked
 * whole at the edge (lib/fleet/batch_schema.ts) before the store sees it,
 * and stored in one transaction with the batches that arrived beside it
 * (lib/fleet/group_commit.ts). A failed commit answers 503: retry.
 *
 * Secure by default: it listens on loopback unless told otherwise; the Host
 * header must name this server (its listen host:port, a loopback name with
 * its port, or one of `allowedHosts`), which defeats DNS rebinding; a present Origin must
 * name it too; authentication is a Bearer header only (no cookies, so no
 * ambient credential a foreign page could ride on, and no CORS headers, so
 * a browser never sends one cross-origin); request bodies are JSON or
 * empty; every answer is `Cache-Control: no-store` and `nosniff`. Headers,
 * bodies and the time a request may take are bounded.
 */
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { RevpatchError, toRevpatchError, type ErrorCode } from '../engine/errors';
import { ID_PATTERN, MAX_VERSION } from '../patch/manifest';
import { MAX_BATCH_BYTES, type StoredReport } from '../report/format';
import { parseReportBatch } from './batch_schema';
import { GroupCommitter } from './group_commit';
import { authenticate } from './tokens';
import type { FleetStore } from './types';

/** The operator actions of the JSON API, each a POST /v1/patches/:id/<action>. */
export const OPERATOR_ACTIONS = ['halt', 'resume', 'recall', 'advance'] as const;
export type OperatorAction = (typeof OPERATOR_ACTIONS)[number];

/**
 * What the operator API drives: the rollout controller satisfies it
 * (RolloutController, lib/fleet/controller.ts). `status` returns one
 * JSON-able entry per plan (patch version), only those of `patch` when it
 * is given; the server sends them as they are. An action names a patch and,
 * optionally, a version (default: the patch's newest plan). Results are
 * sent as JSON; a RevpatchError's code becomes the HTTP status
 * (E_UNKNOWN_PATCH 404, E_STATE 409, E_BUSY 503, …).
 */
export interface FleetOperator {
  status(patch?: string): Promise<readonly object[]>;
  halt(patch: string, version?: number): Promise<unknown>;
  resume(patch: string, version?: number): Promise<unknown>;
  recall(patch: string, version?: number): Promise<unknown>;
  advance(patch: string, version?: number): Promise<unknown>;
}

/**
 * Pages served beside the JSON API (the dashboard). They own the paths
 * `claims` accepts (never one under /v1/), answer after the server's Host
 * and Origin checks and its security headers, and throw a RevpatchError
 * (or HttpError) to refuse: the server sends it in the stable shape.
 */
export interface FleetWebRoutes {
  claims(path: string): boolean;
  handle(req: http.IncomingMessage, res: http.ServerResponse, path: string): Promise<void>;
}

/** Where the server writes what it refused or failed; a pino logger fits. */
export interface FleetLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export interface FleetServerOptions {
  store: FleetStore;
  /** The operator API's actions; without it GET reads plans from the store and actions answer 503. */
  operator?: FleetOperator;
  /** The server clock (ms since epoch): reports' receivedAt, token times. */
  clock?: () => number;
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 0: a free port. */
  port?: number;
  /** More names the Host (and Origin) header may give, as `name` or `name:port` (e.g. a proxy's). */
  allowedHosts?: readonly string[];
  /** Largest report batch body; default MAX_BATCH_BYTES. */
  maxBatchBytes?: number;
  /** Reports that may wait for a commit; a batch beyond is answered 503 E_BUSY (retry later). Default MAX_QUEUED_REPORTS. */
  maxQueuedReports?: number;
  logger?: FleetLogger;
  /** Most ms a request may take from its first byte; default 30 s. */
  requestTimeoutMs?: number;
  /** Pages beside the API (the dashboard); none by default. */
  web?: FleetWebRoutes;
}

/** Largest request header block. */
export const MAX_HEADER_BYTES = 16 * 1024;
/** Reports waiting for a commit at most (about 30 MB): beyond, the store is not keeping up and devices retry later. */
export const MAX_QUEUED_REPORTS = 100_000;
/** Largest body of an operator request. */
export const MAX_OPERATOR_BODY_BYTES = 16 * 1024;

/** The HTTP status of each stable code the API answers with. */
export function httpStatusOf(code: ErrorCode): number {
  switch (code) {
    case 'E_INVALID_ARGUMENT':
    case 'E_UNSUPPORTED':
    case 'E_FORMAT':
      return 400;
    case 'E_AUTH':
      return 401;
    case 'E_FORBIDDEN':
      return 403;
    case 'E_NOT_FOUND':
    case 'E_UNKNOWN_PATCH':
      return 404;
    case 'E_STATE':
    case 'E_EXISTS':
      return 409;
    case 'E_TOO_LARGE':
      return 413;
    case 'E_BUSY':
    case 'E_IO':
    case 'E_NO_SPACE':
    case 'E_POISONED':
    case 'E_NETWORK':
      return 503;
    default:
      return 500;
  }
}

/** A refusal with an HTTP status other than its code's (405, 415, 503 of a failed commit). */
export class HttpError extends RevpatchError {
  constructor(
    readonly status: number,
    code: ErrorCode,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(code, message);
  }
}

const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  'Cache-Control': 'no-store',
  'X-Content-Type-Options': 'nosniff',
  'Content-Security-Policy': "default-src 'none'; frame-ancestors 'none'",
  'Referrer-Policy': 'no-referrer',
};

const noLogger: FleetLogger = { info() {}, warn() {}, error() {} };

interface Route {
  methods: readonly string[];
  handle(req: http.IncomingMessage, res: http.ServerResponse, param: string | null, method: string): Promise<void>;
}

export class FleetServer {
  readonly url: string;
  readonly port: number;
  readonly host: string;
  /** Commits so far (for benchmarks and tests). */
  get commitStats() {
    return this.committer.stats;
  }

  /** Batches waiting for the next commit. */
  get queuedBatches(): number {
    return this.committer.queued;
  }

  private readonly committer: GroupCommitter;
  private readonly allowedHosts: Set<string>;
  private readonly clock: () => number;
  private readonly maxBatchBytes: number;
  private readonly maxQueuedReports: number;
  private readonly logger: FleetLogger;
  private readonly active = new Set<Promise<void>>();
  private closing: Promise<void> | null = null;

  private constructor(
    private readonly server: http.Server,
    private readonly options: FleetServerOptions,
    address: AddressInfo,
  ) {
    this.port = address.port;
    this.host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
    this.url = `http://${this.host}:${this.port}`;
    this.committer = new GroupCommitter(options.store);
    this.clock = options.clock ?? Date.now;
    this.maxBatchBytes = options.maxBatchBytes ?? MAX_BATCH_BYTES;
    this.maxQueuedReports = options.maxQueuedReports ?? MAX_QUEUED_REPORTS;
    this.logger = options.logger ?? noLogger;
    // Loopback names cannot be a rebinding page's (that needs a name of the attacker's), so they always pass.
    const loopback = ['localhost', '127.0.0.1', '[::1]'].map((h) => `${h}:${this.port}`);
    this.allowedHosts = new Set([`${this.host}:${this.port}`, ...loopback, ...(options.allowedHosts ?? [])].map((h) => h.toLowerCase()));
  }

  /** Listens and resolves once the server accepts connections. */
  static async start(options: FleetServerOptions): Promise<FleetServer> {
    if (!options || typeof options.store !== 'object' || options.store === null) {
      throw new RevpatchError('E_INVALID_ARGUMENT', 'FleetServer.start needs a store');
    }
    const maxBatch = options.maxBatchBytes ?? MAX_BATCH_BYTES;
    if (!Number.isSafeInteger(maxBatch) || maxBatch < 1) {
      throw new RevpatchError('E_INVALID_ARGUMENT', `maxBatchBytes must be a positive integer, not ${String(maxBatch)}`);
    }
    const maxQueued = options.maxQueuedReports ?? MAX_QUEUED_REPORTS;
    if (!Number.isSafeInteger(maxQueued) || maxQueued < 1) {
      throw new RevpatchError('E_INVALID_ARGUMENT', `maxQueuedReports must be a positive integer, not ${String(maxQueued)}`);
    }
    const requestTimeout = options.requestTimeoutMs ?? 30_000;
    const server = http.createServer({
      maxHeaderSize: MAX_HEADER_BYTES,
      requestTimeout,
      headersTimeout: Math.min(10_000, requestTimeout),
      keepAliveTimeout: 5_000,
      // How often the timeouts above are checked (Node's default, 30 s, would let a slow request live twice as long).
      connectionsCheckingInterval: Math.min(1_000, requestTimeout),
    });
    server.maxHeadersCount = 64;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(options.port ?? 0, options.host ?? '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
    const fleet = new FleetServer(server, options, server.address() as AddressInfo);
    server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => fleet.onRequest(req, res));
    server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
      if (!socket.writable) return socket.destroy();
      const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
      const body = JSON.stringify({ error: { code: status === 431 ? 'E_TOO_LARGE' : 'E_INVALID_ARGUMENT', message: 'bad request' } });
      socket.end(
        `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
          `Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n${body}`,
      );
    });
    return fleet;
  }

  /**
   * Stops accepting connections, answers the requests already in, waits
   * for their commits, then resolves. Idempotent.
   */
  close(): Promise<void> {
    if (this.closing) return this.closing;
    this.closing = (async () => {
      const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
      this.server.closeIdleConnections();
      while (this.active.size > 0) await Promise.allSettled([...this.active]);
      await this.committer.drain();
      this.server.closeAllConnections();
      await closed;
    })();
    return this.closing;
  }

  // ---------------------------------------------------------------- routing

  private readonly routes: Record<string, Route> = {
    '/v1/health': { methods: ['GET'], handle: (_req, res) => this.health(res) },
    '/v1/reports': { methods: ['POST'], handle: (req, res) => this.postReports(req, res) },
    '/v1/patches': { methods: ['GET'], handle: (req, res) => this.listPatches(req, res) },
    '/v1/patches/:id': { methods: ['GET'], handle: (req, res, id) => this.getPatch(req, res, id as string) },
    '/v1/patches/:id/:action': {
      methods: ['POST'],
      handle: (req, res, id, action) => this.act(req, res, id as string, action as OperatorAction),
    },
  };

  /** The route of a path, with its :id parameter and the action, or null. */
  private route(path: string): { route: Route; id: string | null; action: string } | null {
    const direct = this.routes[path];
    if (direct) return { route: direct, id: null, action: '' };
    const m = /^\/v1\/patches\/([^/]+)(?:\/([^/]+))?$/.exec(path);
    if (!m) return null;
    if (m[2] === undefined) return { route: this.routes['/v1/patches/:id'], id: m[1], action: '' };
    if (!(OPERATOR_ACTIONS as readonly string[]).includes(m[2])) return null;
    return { route: this.routes['/v1/patches/:id/:action'], id: m[1], action: m[2] };
  }

  private onRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
    const work = this.dispatch(req, res)
      .catch((err) => this.fail(req, res, err))
      .finally(() => this.active.delete(work));
    this.active.add(work);
  }

  private async dispatch(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    for (const [name, value] of Object.entries(SECURITY_HEADERS)) res.setHeader(name, value);
    if (this.closing) {
      res.setHeader('Connection', 'close');
      throw new HttpError(503, 'E_BUSY', 'the server is shutting down; retry');
    }
    this.checkHost(req);
    this.checkOrigin(req);
    const rawUrl = req.url ?? '/';
    const path = rawUrl.split('?')[0];
    const web = this.options.web;
    if (web && !path.startsWith('/v1/') && web.claims(path)) return web.handle(req, res, path);
    const found = this.route(path);
    if (!found) throw new RevpatchError('E_NOT_FOUND', `no such resource: ${path.slice(0, 200)}`);
    const method = req.method ?? 'GET';
    if (!found.route.methods.includes(method)) {
      throw new HttpError(405, 'E_UNSUPPORTED', `${method} is not allowed on ${path}`, { Allow: found.route.methods.join(', ') });
    }
    if (found.id !== null && !ID_PATTERN.test(found.id)) {
      throw new RevpatchError('E_INVALID_ARGUMENT', `${JSON.stringify(found.id.slice(0, 200))} is not a patch id`);
    }
    await found.route.handle(req, res, found.id, found.action);
  }

  /** The Host header must name this server: a foreign name is a DNS-rebinding page. */
  private checkHost(req: http.IncomingMessage): void {
    const host = req.headers.host;
    if (host === undefined || !this.allowedHosts.has(host.toLowerCase())) {
      throw new RevpatchError('E_FORBIDDEN', `the Host header ${JSON.stringify(String(host ?? '').slice(0, 200))} does not name this server`);
    }
  }

  /** A browser's Origin, when sent, must be this server's own. */
  private checkOrigin(req: http.IncomingMessage): void {
    const origin = req.headers.origin;
    if (origin === undefined) return;
    let host: string | null = null;
    try {
      const u = new URL(origin);
      if ((u.protocol === 'http:' || u.protocol === 'https:') && u.origin === origin.replace(/\/$/, '')) host = u.host;
    } catch {
      host = null;
    }
    if (host === null || !this.allowedHosts.has(host.toLowerCase())) {
      throw new RevpatchError('E_FORBIDDEN', `requests from the origin ${JSON.stringify(origin.slice(0, 200))} are not allowed`);
    }
  }

  // -------------------------------------------------------------- handlers

  private async health(res: http.ServerResponse): Promise<void> {
    this.send(res, 200, { ok: true });
  }

  private async postReports(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    await this.authenticate(req, 'device');
    requireJson(req, false);
    const body = await readBody(req, this.maxBatchBytes);
    const batch = parseReportBatch(body);
    if (this.committer.queuedReports + batch.reports.length > this.maxQueuedReports) {
      throw new HttpError(503, 'E_BUSY', 'the collector is not keeping up; retry later', { 'Retry-After': '5' });
    }
    const receivedAt = this.clock();
    // The parsed reports are fresh objects holding exactly the schema's fields: stamp them in place.
    const stored = batch.reports as StoredReport[];
    for (const r of stored) r.receivedAt = receivedAt;
    let ack;
    try {
      ack = await this.committer.submit(stored);
    } catch (err) {
      const e = toRevpatchError(err);
      if (e.code === 'E_INVALID_ARGUMENT' || e.code === 'E_TOO_LARGE') {
        this.logger.warn({ code: e.code, reports: stored.length }, `the store refused a batch: ${e.message}`);
        throw new RevpatchError(e.code, `the batch was refused: ${e.message}`);
      }
      this.logger.error({ code: e.code, reports: stored.length }, `report commit failed: ${e.message}`);
      throw new HttpError(503, e.code, `the reports could not be stored (${e.code}); retry`, { 'Retry-After': '1' });
    }
    this.send(res, 200, { accepted: ack.accepted, duplicates: ack.duplicates });
  }

  private async listPatches(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    await this.authenticate(req, 'operator');
    this.send(res, 200, { patches: await this.statuses() });
  }

  private async getPatch(req: http.IncomingMessage, res: http.ServerResponse, id: string): Promise<void> {
    await this.authenticate(req, 'operator');
    const patches = await this.statuses(id);
    if (patches.length === 0) throw new RevpatchError('E_UNKNOWN_PATCH', `${id} has no rollout plan`);
    this.send(res, 200, { patches });
  }

  private async act(req: http.IncomingMessage, res: http.ServerResponse, id: string, action: OperatorAction): Promise<void> {
    await this.authenticate(req, 'operator');
    requireJson(req, true);
    const version = parseActionBody(await readBody(req, MAX_OPERATOR_BODY_BYTES), action);
    const operator = this.options.operator;
    if (!operator) throw new HttpError(503, 'E_STATE', 'this server runs no rollout controller');
    const result = await operator[action](id, version);
    this.logger.info({ patch: id, version, action }, 'operator action');
    this.send(res, 200, result === undefined ? { ok: true } : result);
  }

  /** The operator's view, or, without a controller, the plans as the store holds them. */
  private async statuses(patch?: string): Promise<readonly object[]> {
    const operator = this.options.operator;
    if (operator) return await operator.status(patch);
    const store = this.options.store;
    const plans = (await store.listPlans()).filter((p) => patch === undefined || p.patch === patch);
    return Promise.all(
      plans.map(async (plan) => ({
        plan,
        counts: await store.counts(plan.patch, plan.version),
        decisions: await store.decisions(plan.patch, plan.version),
      })),
    );
  }

  private async authenticate(req: http.IncomingMessage, kind: 'device' | 'operator'): Promise<void> {
    try {
      await authenticate(this.options.store, req.headers.authorization, kind);
    } catch (err) {
      const e = toRevpatchError(err);
      if (e.code === 'E_AUTH') throw new HttpError(401, 'E_AUTH', e.message, { 'WWW-Authenticate': 'Bearer' });
      if (e.code === 'E_FORBIDDEN') throw e;
      throw new HttpError(503, e.code, `the token could not be checked (${e.code}); retry`);
    }
  }

  // --------------------------------------------------------------- answers

  private send(res: http.ServerResponse, status: number, value: unknown): void {
    const body = JSON.stringify(value);
    if (this.closing) res.setHeader('Connection', 'close');
    res.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
  }

  private fail(req: http.IncomingMessage, res: http.ServerResponse, err: unknown): void {
    const e = toRevpatchError(err);
    const status = err instanceof HttpError ? err.status : httpStatusOf(e.code);
    if (status >= 500) this.logger.warn({ code: e.code, status, path: req.url }, e.message);
    if (res.headersSent) {
      res.destroy();
      return;
    }
    if (err instanceof HttpError) for (const [name, value] of Object.entries(err.headers)) res.setHeader(name, value);
    // A body left unread is not drained: the connection closes after the answer.
    if (!req.complete) res.setHeader('Connection', 'close');
    const message = status === 500 ? 'internal error' : e.message;
    this.send(res, status, { error: { code: e.code, message } });
  }
}

/** The body of an operator action: empty, {} or {"version": N}; returns the version, if any. */
function parseActionBody(body: Buffer, action: string): number | undefined {
  if (body.length === 0) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(body.toString('utf8'));
  } catch {
    throw new RevpatchError('E_INVALID_ARGUMENT', 'the body is not JSON');
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new RevpatchError('E_INVALID_ARGUMENT', `the body of ${action} must be a JSON object`);
  }
  const { version, ...rest } = value as { version?: unknown };
  const unknown = Object.keys(rest);
  if (unknown.length > 0) throw new RevpatchError('E_INVALID_ARGUMENT', `${action} takes only a version, not ${JSON.stringify(unknown[0].slice(0, 100))}`);
  if (version === undefined) return undefined;
  if (typeof version !== 'number' || !Number.isSafeInteger(version) || version < 1 || version > MAX_VERSION) {
    throw new RevpatchError('E_INVALID_ARGUMENT', `version must be an integer from 1 to ${MAX_VERSION}`);
  }
  return version;
}

/** Refuses a body that is not JSON (415); `emptyOk` lets a body-less request through. */
export function requireJson(req: http.IncomingMessage, emptyOk: boolean): void {
  const type = req.headers['content-type'];
  if (type === undefined && emptyOk && !hasBody(req)) return;
  const mime = (type ?? '').split(';')[0].trim().toLowerCase();
  if (mime !== 'application/json') {
    throw new HttpError(415, 'E_UNSUPPORTED', `the body must be application/json, not ${JSON.stringify((type ?? 'none').slice(0, 100))}`);
  }
  const charset = /;\s*charset\s*=\s*"?([^";\s]+)/i.exec(type ?? '');
  if (charset && charset[1].toLowerCase() !== 'utf-8') {
    throw new HttpError(415, 'E_UNSUPPORTED', `the body must be UTF-8, not ${charset[1].slice(0, 40)}`);
  }
}

function hasBody(req: http.IncomingMessage): boolean {
  const length = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}

/** The whole body, or E_TOO_LARGE as soon as it passes `max` bytes (nothing more is read). */
export function readBody(req: http.IncomingMessage, max: number): Promise<Buffer> {
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > max) {
    return Promise.reject(new RevpatchError('E_TOO_LARGE', `the body of ${declared} bytes is larger than ${max}`));
  }
  return new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const finish = (err: Error | null): void => {
      if (done) return;
      done = true;
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      req.off('aborted', onAborted);
      if (err) reject(err);
      else resolve(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, size));
    };
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size > max) {
        req.pause();
        finish(new RevpatchError('E_TOO_LARGE', `the body is larger than ${max} bytes`));
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = (): void => finish(null);
    const onError = (err: Error): void => finish(new RevpatchError('E_INVALID_ARGUMENT', `the body could not be read: ${err.message}`));
    const onAborted = (): void => finish(new RevpatchError('E_INVALID_ARGUMENT', 'the request was aborted'));
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
    req.on('aborted', onAborted);
  });
}
