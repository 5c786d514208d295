// A local stand-in for a Convex deployment's HTTP API, backed by convex-test and our real `convex/`
// functions. Request and response shapes and status codes follow get-convex/convex-backend
// (`crates/local_backend/src/public_api.rs`, `crates/errors/src/lib.rs`). What it proves and what it
// does not: README.md, "Local Convex stand-in".
//
//   npm run --silent convex:local -- --port 0 [--functions DIR]
//
// Callers, as the real backend sees them: no Authorization header (anonymous), `Convex <admin key>`,
// `Convex <admin key>:<base64 identity JSON>` (the admin key acting as an identity). Stand-in only:
// `Convex-Test-Identity: <identity JSON>` is a caller signed in as that identity (a validated JWT's).
// The functions read their Convex environment variables (lib/access.ts) from this process's.
//
// Test-only endpoints live under /_test/, for tests that need the server to misbehave on purpose:
//   POST /_test/faults {"failNext": N, "status": 503|429|500|408}  the next N API requests fail, unexecuted
//                      {"delayMs": M}                               M ms of latency on every API request
//                      {"dropAfterCommitNext": N}                   the next N successful mutations commit,
//                                                                   then their connection is cut unanswered
//   POST /_test/reset  {"data": true}?   no faults, zero stats (and, with data, an empty database)
//   GET  /_test/stats                    requests, faultsServed, droppedResponses, executed by kind
//   GET  /_test/functions                every callable function: path -> {kind, internal}
import { randomBytes } from "node:crypto";
import http from "node:http";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";

import type { JSONValue } from "convex/values";

import type { UserIdentityAttributes } from "convex/server";

import { canonicalPath, exportValue, Functions, parseFormat, type Caller, type Kind } from "./backend.js";

const HOST = "127.0.0.1";
// Bodies above this are refused unread, like an HTTP server's body limit; the real limit on the
// arguments themselves (16 MiB, checked in backend.ts) is the one callers should plan for.
const MAX_BODY_BYTES = 32 * 1024 * 1024;

/** A non-2xx answer with the real API's `{"code","message"}` body. */
class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

const badBody = (message: string): HttpError => new HttpError(400, "BadJsonBody", message);
const badShape = (message: string): HttpError =>
  badBody(`Failed to deserialize the JSON body into the target type: ${message}`);

// What the real backend sends for the statuses a caller must retry (the messages are its own).
const FAULTS: Record<number, HttpError> = {
  408: new HttpError(408, "ClientDisconnected", "Client disconnected"),
  429: new HttpError(
    429,
    "TooManyConcurrentRequests",
    "Too many concurrent requests. Your backend is limited to 16 concurrent mutations.",
  ),
  500: new HttpError(500, "InternalServerError", "Your request couldn't be completed. Try again later."),
  503: new HttpError(
    503,
    "OptimisticConcurrencyControlFailure",
    "Data read or written in this mutation changed while it was being run. Consider reducing the amount " +
      "of data read by using indexed queries with selective index range expressions " +
      "(https://docs.convex.dev/database/indexes/).",
  ),
};

interface Faults {
  failNext: number;
  status: number;
  delayMs: number;
  dropAfterCommitNext: number;
}

const noFaults = (): Faults => ({ failNext: 0, status: 503, delayMs: 0, dropAfterCommitNext: 0 });
const zeroStats = () => ({ requests: 0, faultsServed: 0, droppedResponses: 0 });

// Stand-in only: the identity a test calls as, in place of a JWT signed by an auth provider.
const TEST_IDENTITY_HEADER = "convex-test-identity";

/** `prod:name|secret` -> `name|secret` (a deployment-type prefix is not part of the key). */
function withoutTypePrefix(key: string): string {
  return /^[a-z-]+:[^:|]+\|/.test(key) ? key.slice(key.indexOf(":") + 1) : key;
}

function splitOnce(text: string, separator: string): [string, string | undefined] {
  const at = text.indexOf(separator);
  return at < 0 ? [text, undefined] : [text.slice(0, at), text.slice(at + 1)];
}

/** An identity's attributes: `subject` and `issuer` required, as the real backend parses them. */
function parseIdentity(text: string, encoding: "json" | "base64"): UserIdentityAttributes {
  const malformed = new HttpError(400, "HeaderParseFailure", "Malformed Authorization header.");
  let parsed: unknown;
  try {
    parsed = JSON.parse(encoding === "json" ? text : Buffer.from(text, "base64").toString("utf8"));
  } catch {
    throw malformed;
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) throw malformed;
  const { subject, issuer } = parsed as Record<string, unknown>;
  if (typeof subject !== "string" || typeof issuer !== "string") throw malformed;
  return parsed as UserIdentityAttributes;
}

function parseCli(argv: string[]): { port: number; functionsDir: string } {
  let port = 3210;
  let functionsDir = fileURLToPath(new URL("../../convex", import.meta.url));
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, value] = [argv[i], argv[i + 1]];
    if (flag === "--port" && value !== undefined && /^\d+$/.test(value)) port = Number(value);
    else if (flag === "--functions" && value !== undefined) functionsDir = path.resolve(value);
    else throw new Error(`usage: server.ts [--port N] [--functions DIR] (bad argument: ${flag})`);
  }
  return { port, functionsDir };
}

function readBody(req: http.IncomingMessage): Promise<Buffer | null> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      // Past the limit keep draining (so the connection stays usable) but stop holding the bytes.
      if (size <= MAX_BODY_BYTES) chunks.push(chunk);
    });
    req.on("end", () => resolve(size <= MAX_BODY_BYTES ? Buffer.concat(chunks) : null));
    req.on("error", reject);
  });
}

function send(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

function isJsonContentType(header: string | undefined): boolean {
  const mime = (header ?? "").split(";")[0].trim().toLowerCase();
  return mime === "application/json" || (mime.startsWith("application/") && mime.endsWith("+json"));
}

/** The route of an API request: the kind it may run and, for /api/run, the path from the URL. */
function apiRoute(pathname: string): { expected: Kind | "any"; urlPath?: string } | null {
  const fixed = /^\/api\/(query|mutation|action)$/.exec(pathname);
  if (fixed !== null) return { expected: fixed[1] as Kind };
  const run = /^\/api\/run\/(.*)$/.exec(pathname);
  if (run === null) return null;
  const parts = run[1].split("/").map((p) => {
    try {
      return decodeURIComponent(p);
    } catch {
      return "";
    }
  });
  const missing = new HttpError(
    400,
    "MissingIdentifier",
    "Path or function name not provided in path, e.g. /api/run/messages/list",
  );
  if (parts.length < 2 || parts.includes("")) throw missing;
  const name = parts.pop() as string;
  return { expected: "any", urlPath: `${parts.join("/")}:${name}` };
}

class Server {
  private faults = noFaults();
  private stats = zeroStats();
  // One call at a time: convex-test is not safe for interleaved transactions, and the real
  // backend's mutations are serializable, so a queue is the faithful simplification.
  private tail: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly functions: Functions,
    private readonly adminKey: string | undefined,
  ) {}

  private serial<T>(task: () => Promise<T>): Promise<T> {
    const run = this.tail.then(task, task);
    this.tail = run.catch(() => undefined);
    return run;
  }

  async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", `http://${HOST}`);
    try {
      if (url.pathname.startsWith("/_test/")) {
        await this.handleTest(req, res, url.pathname);
        return;
      }
      const route = apiRoute(url.pathname);
      if (route === null || req.method !== "POST") {
        req.resume();
        const [status, code] = route === null ? [404, "NotFound"] : [405, "MethodNotAllowed"];
        send(res, status, { code, message: `${req.method ?? ""} ${url.pathname}` });
        return;
      }
      this.stats.requests += 1;
      const body = await readBody(req);
      if (this.faults.failNext > 0) {
        this.faults.failNext -= 1;
        this.stats.faultsServed += 1;
        const fault = FAULTS[this.faults.status];
        send(res, fault.status, { code: fault.code, message: fault.message });
        return;
      }
      if (this.faults.delayMs > 0) await sleep(this.faults.delayMs);
      await this.handleCall(req, res, route, body);
    } catch (e) {
      req.resume(); // whatever of the body is unread, so the kept-alive connection stays usable
      if (e instanceof HttpError) {
        send(res, e.status, { code: e.code, message: e.message });
      } else {
        console.error("convex-local: internal error", e);
        const fault = FAULTS[500];
        send(res, 500, { code: fault.code, message: fault.message });
      }
    }
  }

  private async handleCall(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    route: { expected: Kind | "any"; urlPath?: string },
    body: Buffer | null,
  ): Promise<void> {
    const caller = this.authenticate(req.headers);
    if (body === null) throw badBody("Failed to buffer the request body: length limit exceeded");
    if (!isJsonContentType(req.headers["content-type"])) {
      throw badBody("Expected request with `Content-Type: application/json`");
    }
    let request: unknown;
    try {
      request = JSON.parse(body.toString("utf8"));
    } catch (e) {
      throw badBody(`Failed to parse the request body as JSON: ${(e as Error).message}`);
    }
    if (request === null || typeof request !== "object" || Array.isArray(request)) {
      throw badShape("invalid type, expected a struct");
    }
    const fields = request as Record<string, JSONValue | undefined>;
    const udfPath = route.urlPath ?? fields.path;
    if (udfPath === undefined) throw badShape("missing field `path`");
    if (typeof udfPath !== "string") throw badShape("invalid type for `path`, expected a string");
    if (!("args" in fields)) throw badShape("missing field `args`");
    const format = parseFormat(fields.format);
    if (format === null) {
      const got = String(fields.format);
      throw new HttpError(400, "BadFormat", `format param must be one of [\`json\`]. Got ${got}`);
    }
    const canonical = canonicalPath(udfPath);
    if (canonical === null) {
      throw new HttpError(
        400,
        "BadConvexFunctionIdentifier",
        `${udfPath} is not a valid path to a Convex function.`,
      );
    }
    const args = fields.args ?? null;
    const result = await this.serial(() => this.functions.call(canonical, args, route.expected, caller));
    if (result.status === "success") {
      if (result.kind === "mutation" && this.faults.dropAfterCommitNext > 0) {
        // The write is committed; the caller only loses the answer, as with a network cut.
        this.faults.dropAfterCommitNext -= 1;
        this.stats.droppedResponses += 1;
        req.socket.destroy();
        return;
      }
      send(res, 200, { status: "success", value: exportValue(result.value, format) });
      return;
    }
    // Dev deployments prefix every function error this way (`RedactedJsError`'s Display).
    const requestId = randomBytes(8).toString("hex");
    send(res, 200, {
      status: "error",
      errorMessage: `[Request ID: ${requestId}] Server Error\n${result.errorMessage}`,
      ...(result.errorData === undefined ? {} : { errorData: exportValue(result.errorData, format) }),
    });
  }

  /**
   * Who is calling, from the headers (throws on a bad one). As the real backend: `Convex <key>` is the
   * admin key, with no identity; `Convex <key>:<base64 JSON>` is the admin key acting as that identity;
   * a `Bearer` JWT needs an auth provider, which the stand-in has not (no auth.config providers). In
   * its place, `Convex-Test-Identity: <JSON>` (stand-in only) is a caller signed in as that identity.
   */
  private authenticate(headers: http.IncomingHttpHeaders): Caller {
    const header = headers.authorization;
    const testIdentity = headers[TEST_IDENTITY_HEADER];
    if (testIdentity !== undefined) {
      if (header !== undefined) throw badBody(`send ${TEST_IDENTITY_HEADER} or Authorization, not both`);
      return { admin: this.adminKey === undefined, identity: parseIdentity(String(testIdentity), "json") };
    }
    if (header === undefined) return { admin: this.adminKey === undefined };
    if (header.length < 7) throw new HttpError(400, "InvalidHeaderFailure", "Invalid authentication header");
    const scheme = header.slice(0, 7).toLowerCase();
    if (scheme === "convex ") {
      // The deployment-type prefix (`prod:`) ends in a colon too: strip it before looking for the
      // identity's colon (the real backend's extract_admin_key).
      const [key, acting] = splitOnce(withoutTypePrefix(header.slice(7)), ":");
      const identity = acting === undefined ? undefined : parseIdentity(acting, "base64");
      if (this.adminKey === undefined || key === withoutTypePrefix(this.adminKey)) {
        return { admin: true, identity };
      }
      throw new HttpError(401, "BadAdminKey", "The provided admin key was invalid for this instance");
    }
    if (scheme === "bearer ") {
      // No auth providers are configured here, as in a deployment without auth.config.ts providers.
      throw new HttpError(401, "NoAuthProvider", "No auth provider found matching the given token");
    }
    throw new HttpError(400, "InvalidAdminKey", "Invalid admin key");
  }

  private async handleTest(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    route: string,
  ): Promise<void> {
    const raw = await readBody(req);
    let body: Record<string, unknown> = {};
    if (raw !== null && raw.length > 0) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(raw.toString("utf8"));
      } catch {
        throw badBody("expected a JSON object");
      }
      if (parsed === null || typeof parsed !== "object") throw badBody("expected a JSON object");
      body = parsed as Record<string, unknown>;
    }
    if (route === "/_test/stats" && req.method === "GET") {
      send(res, 200, { ...this.stats, executed: { ...this.functions.executed }, faults: this.faults });
    } else if (route === "/_test/functions" && req.method === "GET") {
      send(res, 200, this.functions.list());
    } else if (route === "/_test/faults" && req.method === "POST") {
      const next = { ...this.faults };
      for (const key of ["failNext", "status", "delayMs", "dropAfterCommitNext"] as const) {
        const value = body[key];
        if (value === undefined) continue;
        if (typeof value !== "number" || !Number.isInteger(value) || value < 0) {
          throw badBody(`${key} must be a non-negative integer`);
        }
        next[key] = value;
      }
      if (!(next.status in FAULTS)) throw badBody(`status must be one of ${Object.keys(FAULTS).join(", ")}`);
      this.faults = next;
      send(res, 200, this.faults);
    } else if (route === "/_test/reset" && req.method === "POST") {
      this.faults = noFaults();
      this.stats = zeroStats();
      this.functions.resetCounts();
      // Queued behind any running call, so a call never sees the database swapped under it.
      if (body.data === true) await this.serial(async () => this.functions.wipe());
      send(res, 200, { ok: true });
    } else {
      send(res, 404, { code: "NotFound", message: `${req.method ?? ""} ${route}` });
    }
  }
}

async function main(): Promise<void> {
  const { port, functionsDir } = parseCli(process.argv.slice(2));
  const functions = await Functions.load(functionsDir);
  const adminKey = process.env.CONVEX_ADMIN_KEY || undefined;
  const app = new Server(functions, adminKey);
  const server = http.createServer((req, res) => void app.handle(req, res));
  // Longer than typical client pools' idle timeouts, so kept-alive connections are closed by clients.
  server.keepAliveTimeout = 75_000;
  server.headersTimeout = 80_000;

  const stop = (): void => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);

  server.listen(port, HOST, () => {
    const address = server.address();
    const actual = typeof address === "object" && address !== null ? address.port : port;
    if (adminKey === undefined) {
      console.log("convex-local: WARNING CONVEX_ADMIN_KEY is unset: internal functions are open to anyone");
    }
    const count = Object.keys(functions.list()).length;
    console.log(`convex-local: ${count} functions from ${functionsDir} at http://${HOST}:${actual}`);
  });
}

main().catch((e: unknown) => {
  console.error("convex-local: failed to start:", e);
  process.exit(1);
});
