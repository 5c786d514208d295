// The one implementation of the nine ops (docs/operations.md), used by `app:*` and
// `ingest:applyBatch`. Each op returns {status: inserted|updated|duplicate|rejected, reason?};
// rejections are deterministic (a value the table cannot hold), everything else throws.
import type { Infer } from "convex/values";
import type { MutationCtx } from "../_generated/server.js";
import type { Row } from "./blobs.js";
import { checkFields } from "./check.js";
import { ANY_COLUMNS, anySibling, mergeRow, missingColumns, type UpsertTable } from "./merge.js";
import { insertRow, loadRow, replaceRow, sameRow } from "./rows.js";
import { isOpName, opArgs, type OpName, opResult } from "./validators.js";

export type OpResult = Infer<typeof opResult>;

const inserted: OpResult = { status: "inserted" };
const rejected = (reason: string): OpResult => ({ status: "rejected", reason });

type AppendTable =
  "messages" | "reasoning_sections" | "command_chunks" | "usage_snapshots" | "rate_limits" | "events_raw";

const APPEND_TABLE: Partial<Record<OpName, AppendTable>> = {
  appendMessage: "messages",
  appendReasoningSection: "reasoning_sections",
  appendCommandChunk: "command_chunks",
  appendUsageSnapshot: "usage_snapshots",
  appendRateLimit: "rate_limits",
  appendEvent: "events_raw",
};

const UPSERT_TABLE: Partial<Record<OpName, { table: UpsertTable; id: string }>> = {
  upsertConversation: { table: "conversations", id: "conversationId" },
  upsertTurn: { table: "turns", id: "turnId" },
  upsertCommand: { table: "commands", id: "callId" },
};

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** Checks the contract places on values beyond their types; a reason, or null. */
function invalidValues(row: Row): string | null {
  for (const column of ANY_COLUMNS) {
    const text = row[`${column}Json`];
    if (text === undefined) continue;
    if (row[column] !== undefined) return `${column} and ${column}Json are two forms of one value: send one`;
    try {
      JSON.parse(text as string);
    } catch {
      return `${column}Json is not valid JSON`;
    }
  }
  const chunk = row.chunkBase64;
  if (typeof chunk === "string" && !BASE64.test(chunk)) return "chunkBase64 is not valid base64";
  return null;
}

/** Drops null columns: unknown, like absent. For appends an `any` column's null is a value. */
function withoutNulls(args: Row, keepAnyNull: boolean): Row {
  const row: Row = {};
  for (const [field, value] of Object.entries(args)) {
    const isAny = (ANY_COLUMNS as readonly string[]).includes(field);
    if (value !== null || (keepAnyNull && isAny)) row[field] = value;
  }
  return row;
}

async function append(ctx: MutationCtx, table: AppendTable, key: string, row: Row): Promise<OpResult> {
  // All append tables have `by_key`; the cast picks one to satisfy the table-generic index types.
  const byKey = await ctx.db
    .query(table as "messages")
    .withIndex("by_key", (q) => q.eq("key", key))
    .first();
  if (byKey !== null) return { status: "duplicate" };
  if (table === "command_chunks") {
    const { callId, stream, seq } = row as { callId: string; stream: string; seq: number };
    const atPosition = await ctx.db
      .query("command_chunks")
      .withIndex("by_callId_stream_seq", (q) => q.eq("callId", callId).eq("stream", stream).eq("seq", seq))
      .first();
    if (atPosition !== null) {
      return { status: "duplicate", reason: `chunk ${callId}/${stream}/${seq} is already stored` };
    }
  }
  const problem = await insertRow(ctx, table, { ...row, key });
  return problem === null ? inserted : rejected(problem);
}

async function upsert(ctx: MutationCtx, table: UpsertTable, idField: string, row: Row): Promise<OpResult> {
  const id = row[idField] as string;
  // Each upsert table is indexed `by_<idField>`; the casts name one for the generic index types.
  const doc = await ctx.db
    .query(table as "conversations")
    .withIndex(`by_${idField}` as "by_conversationId", (q) => q.eq(idField as "conversationId", id))
    .first();
  if (doc === null) {
    const created = mergeRow(table, null, row);
    const missing = missingColumns(table, created);
    if (missing.length > 0) return rejected(`a new ${table} row needs ${missing.join(", ")}`);
    const problem = await insertRow(ctx, table, created);
    return problem === null ? inserted : rejected(problem);
  }
  const touched = new Set(Object.keys(row).flatMap((field) => [field, anySibling(field) ?? field]));
  const loaded = await loadRow(ctx, doc, touched);
  const merged = mergeRow(table, loaded.row, row);
  if (sameRow(loaded.row, merged)) return { status: "duplicate" };
  const problem = await replaceRow(ctx, table, loaded, merged);
  return problem === null ? { status: "updated" } : rejected(problem);
}

/**
 * Applies one op. `args` are the op's columns; the op's `key` is passed apart and wins over any
 * `key` inside `args`. Validated here, so callers may pass anything. A rejected op writes nothing.
 */
export async function applyOp(ctx: MutationCtx, op: string, key: string, args: unknown): Promise<OpResult> {
  if (!isOpName(op)) return rejected(`unknown op ${JSON.stringify(op)}`);
  if (typeof args !== "object" || args === null || Array.isArray(args))
    return rejected("args must be an object");
  const columns: Row = { ...(args as Row) };
  delete columns.key;
  const problem = checkFields(opArgs[op], { ...columns, key }, "args");
  if (problem !== null) return rejected(problem);
  const upsertTable = UPSERT_TABLE[op];
  if (upsertTable === undefined && key.length === 0) return rejected("appends need a non-empty key");
  const row = withoutNulls(columns, upsertTable === undefined);
  const invalid = invalidValues(row);
  if (invalid !== null) return rejected(invalid);
  if (upsertTable !== undefined) return await upsert(ctx, upsertTable.table, upsertTable.id, row);
  const table = APPEND_TABLE[op] as AppendTable;
  if (table === "events_raw" && row.payload === undefined && row.payloadJson === undefined) {
    return rejected("an event needs payload or payloadJson");
  }
  return await append(ctx, table, key, row);
}
