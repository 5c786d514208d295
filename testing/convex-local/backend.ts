// The function side of the stand-in: our real `convex/` modules, run by convex-test.
//
// Every module is imported once at start-up (no per-request loading), and each exported Convex
// function is recorded with its kind and visibility, because convex-test itself calls internal
// functions as freely as public ones and does not say which kind a path is.
import { readdir } from "node:fs/promises";
import path from "node:path";
import { pathToFileURL } from "node:url";

import { convexTest, type TestConvex } from "convex-test";
import {
  makeFunctionReference,
  type GenericSchema,
  type SchemaDefinition,
  type UserIdentityAttributes,
} from "convex/server";
import { convexToJson, getConvexSize, jsonToConvex, type JSONValue, type Value } from "convex/values";

export type Kind = "query" | "mutation" | "action";
type ModuleMap = Record<string, () => Promise<Record<string, unknown>>>;
type Backend = TestConvex<SchemaDefinition<GenericSchema, boolean>>;

interface FunctionInfo {
  kind: Kind;
  internal: boolean;
}

/** Who is calling: admin rights (internal functions) and the identity functions see, if any. */
export interface Caller {
  admin: boolean;
  identity?: UserIdentityAttributes;
}

/** The outcome of one call, in the shape of the HTTP API's 200 responses. */
export type CallResult =
  | { status: "success"; value: Value; kind: Kind }
  | { status: "error"; errorMessage: string; errorData?: Value };

// The real backend's limit on the arguments of one call (`FUNCTION_MAX_ARGS_SIZE`).
const MAX_ARGS_SIZE = 16 * 1024 * 1024;
const KIND_LABEL: Record<Kind, string> = { query: "Query", mutation: "Mutation", action: "Action" };

// The files `npx convex deploy` bundles (`entryPoints` in convex/dist/esm/bundler/index.js), so that
// exactly the functions a deployment would have are callable here: tests, `*.d.ts` and helpers such
// as `test.setup.ts` (more than one dot), dotfiles and `_generated/` are skipped, as is schema.ts.
async function listModules(dir: string, rel = ""): Promise<string[]> {
  const found: string[] = [];
  for (const entry of await readdir(path.join(dir, rel), { withFileTypes: true })) {
    const relPath = rel === "" ? entry.name : `${rel}/${entry.name}`;
    const base = entry.name;
    if (entry.isDirectory()) {
      if (relPath !== "_generated") found.push(...(await listModules(dir, relPath)));
    } else if (
      /\.([mc]?js|jsx|tsx?|mts|cts)$/.test(base) &&
      !/^[.#]/.test(base) &&
      (base.match(/\./g) ?? []).length === 1 &&
      !relPath.includes(" ") &&
      relPath !== "schema.ts" &&
      relPath !== "schema.js"
    ) {
      found.push(relPath);
    }
  }
  return found;
}

function isConvexFunction(value: unknown): value is Record<string, unknown> {
  return typeof value === "function" && ("isQuery" in value || "isMutation" in value || "isAction" in value);
}

/** Real Convex accepts `mod:fn`, `mod.js:fn` and `mod` (the default export) for the same function. */
export function canonicalPath(udfPath: string): string | null {
  const parts = udfPath.split(":");
  if (parts.length > 2 || parts.some((p) => p === "")) return null;
  const module = parts[0].replace(/\.js$/, "");
  return `${module}:${parts[1] ?? "default"}`;
}

export class Functions {
  private backend: Backend;
  /** Calls handed to convex-test, by kind (for the stand-in's stats). */
  readonly executed: Record<Kind, number> = { query: 0, mutation: 0, action: 0 };

  private constructor(
    private readonly schema: SchemaDefinition<GenericSchema, boolean>,
    private readonly modules: ModuleMap,
    private readonly registry: Map<string, FunctionInfo>,
  ) {
    this.backend = this.fresh();
  }

  static async load(functionsDir: string): Promise<Functions> {
    const modules: ModuleMap = {};
    const registry = new Map<string, FunctionInfo>();
    for (const rel of await listModules(functionsDir)) {
      const load = (): Promise<Record<string, unknown>> =>
        import(pathToFileURL(path.join(functionsDir, rel)).href) as Promise<Record<string, unknown>>;
      modules[`./${rel}`] = load;
      const modulePath = rel.replace(/\.[^./]+$/, "");
      for (const [name, value] of Object.entries(await load())) {
        if (!isConvexFunction(value)) continue;
        const kind: Kind =
          value.isQuery === true ? "query" : value.isMutation === true ? "mutation" : "action";
        registry.set(`${modulePath}:${name}`, { kind, internal: value.isInternal === true });
      }
    }
    // convex-test finds the functions' root from a key containing "_generated" and never loads it.
    modules["./_generated/api.js"] = () => Promise.resolve({});
    const schemaModule = (await import(pathToFileURL(path.join(functionsDir, "schema.ts")).href)) as {
      default: SchemaDefinition<GenericSchema, boolean>;
    };
    return new Functions(schemaModule.default, modules, registry);
  }

  /** Every callable function: path -> kind and visibility. */
  list(): Record<string, FunctionInfo> {
    return Object.fromEntries(this.registry);
  }

  resetCounts(): void {
    Object.assign(this.executed, { query: 0, mutation: 0, action: 0 });
  }

  /** Forget every document: a new in-memory database behind the same functions. */
  wipe(): void {
    this.backend = this.fresh();
  }

  private fresh(): Backend {
    return convexTest({ schema: this.schema, modules: this.modules, transactionLimits: true });
  }

  /**
   * Runs one function the way the real backend's HTTP API does: an unknown function and an internal one
   * called without admin rights get the same message (so callers cannot probe for internal names),
   * and every failure after the request was accepted is a function error, not an HTTP error.
   */
  async call(
    canonical: string,
    jsonArgs: JSONValue,
    expected: Kind | "any",
    caller: Caller,
  ): Promise<CallResult> {
    const info = this.registry.get(canonical);
    if (info === undefined || (info.internal && !caller.admin)) {
      return fail(
        `Could not find public function for '${canonical}'. ` +
          "Did you forget to run `npx convex dev` or `npx convex deploy`?",
      );
    }
    if (expected !== "any" && expected !== info.kind) {
      const [module, name] = canonical.split(":");
      return fail(
        `Trying to execute ${module}.js:${name} as ${KIND_LABEL[expected]}, ` +
          `but it is defined as ${KIND_LABEL[info.kind]}.`,
      );
    }
    let args: Value;
    try {
      // The legacy positional form `[{...}]` is still accepted by the real API.
      const positional = Array.isArray(jsonArgs) ? jsonArgs : [jsonArgs];
      if (positional.length !== 1) throw new Error(`expected one argument object, got ${positional.length}`);
      args = jsonToConvex(positional[0]);
    } catch (e) {
      return fail(`Invalid arguments for ${canonical}: ${(e as Error).message}`);
    }
    const size = getConvexSize([args]);
    if (size > MAX_ARGS_SIZE) {
      return fail(`Arguments for ${canonical} are too large (actual: ${size} B, limit: 16 MiB)`);
    }
    if (args === null || typeof args !== "object" || Array.isArray(args)) {
      return fail(`Invalid arguments for ${canonical}: the arguments must be an object`);
    }
    try {
      const value = await this.run(info.kind, canonical, args as Record<string, Value>, caller.identity);
      return { status: "success", value: value ?? null, kind: info.kind };
    } catch (e) {
      return uncaught(e);
    }
  }

  private run(
    kind: Kind,
    canonical: string,
    args: Record<string, Value>,
    identity: UserIdentityAttributes | undefined,
  ): Promise<Value | undefined> {
    this.executed[kind] += 1;
    // Without an identity, `ctx.auth.getUserIdentity()` is null: an anonymous or plain admin-key call.
    const as = identity === undefined ? this.backend : this.backend.withIdentity(identity);
    switch (kind) {
      case "query":
        return as.query(makeFunctionReference<"query">(canonical), args);
      case "mutation":
        return as.mutation(makeFunctionReference<"mutation">(canonical), args);
      case "action":
        return as.action(makeFunctionReference<"action">(canonical), args);
    }
  }
}

function fail(errorMessage: string): CallResult {
  return { status: "error", errorMessage };
}

/** What the real backend reports for an exception that escaped our code. */
function uncaught(e: unknown): CallResult {
  if (e instanceof Error) {
    if (Symbol.for("ConvexError") in e) {
      const data = (e as { data?: Value }).data ?? null;
      return { status: "error", errorMessage: `Uncaught ConvexError: ${e.message}`, errorData: data };
    }
    return fail(`Uncaught ${e.name}: ${e.message}`);
  }
  return fail(`Uncaught ${String(e)}`);
}

export type ValueFormat = "clean" | "encoded";

/** `format` as the real API parses it: "json" is the clean export, the default for unknown clients. */
export function parseFormat(format: unknown): ValueFormat | null {
  switch (format) {
    case undefined:
    case null:
    case "json":
    case "convex_clean_json":
      return "clean";
    case "convex_encoded_json":
    case "convex_json":
      return "encoded";
    default:
      return null;
  }
}

export function exportValue(value: Value, format: ValueFormat): JSONValue {
  return format === "encoded" ? convexToJson(value) : exportClean(value);
}

// The real backend's `export_clean`: int64 as a decimal string, bytes as base64, non-finite floats
// as strings; everything else as plain JSON.
function exportClean(value: Value): JSONValue {
  if (typeof value === "bigint") return value.toString();
  if (typeof value === "number") {
    if (Number.isNaN(value)) return "NaN";
    if (!Number.isFinite(value)) return value > 0 ? "Infinity" : "-Infinity";
    return value;
  }
  if (value instanceof ArrayBuffer) return Buffer.from(value).toString("base64");
  if (Array.isArray(value)) return value.map(exportClean);
  if (value !== null && typeof value === "object") {
    const out: Record<string, JSONValue> = {};
    for (const [k, v] of Object.entries(value)) {
      if (v !== undefined) out[k] = exportClean(v);
    }
    return out;
  }
  return value;
}
