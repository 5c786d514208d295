// Shared by the convex/*.test.ts files (two dots in the name: `convex deploy` skips it).
/// <reference types="vite/client" />
import { convexTest } from "convex-test";
import { getDocumentSize, type Value } from "convex/values";
import type { TableNames } from "./_generated/dataModel.js";
import { ADMIN_ISSUER } from "./lib/access.js";
import schema from "./schema.js";

export function setup() {
  // Expanded by vite at build time. Kept inside the function so that plain Node, which has no
  // `import.meta.glob` (testing/convex-local imports every module here), can still load this file.
  const modules = import.meta.glob(["./**/*.ts", "!./**/*.test.ts", "!./test.setup.ts"]);
  return convexTest({ schema, modules, transactionLimits: true });
}

export type Backend = ReturnType<typeof setup>;

/** What an admin-key caller of public functions acts as (lib/access.ts). */
export const ADMIN = { issuer: ADMIN_ISSUER, subject: "test-admin" };

/** A fresh backend whose calls come from the admin key, for tests about what functions do. */
export function setupAsAdmin() {
  return setup().withIdentity(ADMIN);
}

/** A backend seen by one caller (`withIdentity`, or the backend itself for an anonymous one). */
export type Accessor = ReturnType<Backend["withIdentity"]>;

const TABLES = Object.keys(schema.tables) as TableNames[];

/** Every stored document, by table. */
export async function dump(t: Backend): Promise<Record<string, Array<Record<string, Value>>>> {
  return await t.run(async (ctx) => {
    const out: Record<string, Array<Record<string, Value>>> = {};
    for (const table of TABLES) out[table] = await ctx.db.query(table).collect();
    return out;
  });
}

/** convex-test does not enforce Convex's 1 MiB document limit: check every stored document. */
export async function largestDocumentBytes(t: Backend): Promise<number> {
  const tables = await dump(t);
  let largest = 0;
  for (const docs of Object.values(tables)) {
    for (const doc of docs) largest = Math.max(largest, getDocumentSize(doc));
  }
  return largest;
}

export const MiB = 1024 * 1024;
