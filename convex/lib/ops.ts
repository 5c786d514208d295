// The one implementation of the nine ops (docs/operations.md), used by `app:*` and
// `ingest:applyBatch`. Each op returns {status: inserted|updated|duplicate|rejected, reason?};
// rejections are deterministic (a value the table cannot hold), everything else throws.
import {
  v,
  type GenericValidator,
  type Infer,
  type PropertyValidators,
} from "convex/values";
import type { TableNames } from "../_generated/dataModel.js";
import type { MutationCtx } from "../_generated/server.js";
import { isSpillable, type Row, type SpillEntry } from "./blobs.js";
import { checkFields, checkValue } from "./check.js";
import {
  ANY_COLUMNS,
  anySibling,
  mergeRow,
  missingColumns,
  TURN_TERMINAL,
  UPSERT_TABLES,
  type UpsertTable,
} from "./merge.js";
import {
  insertRow,
  loadRow,
  replaceRow,
  sameRow,
  type StoredDoc,
} from "./rows.js";
import { requireStaged, stagedRef, type StagedRef } from "./stages.js";
import { Threads } from "./threads.js";
import { isOpName, opArgs, type OpName, opResult } from "./validators.js";

export type OpResult = Infer<typeof opResult>;

const inserted: OpResult = { status: "inserted" };
const rejected = (reason: string): OpResult => ({ status: "rejected", reason });

type AppendTable =
  | "messages"
  | "reasoning_sections"
  | "command_chunks"
  | "usage_snapshots"
  | "rate_limits"
  | "events_raw";

const APPEND_TABLE: Partial<Record<OpName, AppendTable>> = {
  appendMessage: "messages",
  appendReasoningSection: "reasoning_sections",
  appendCommandChunk: "command_chunks",
  appendUsageSnapshot: "usage_snapshots",
  appendRateLimit: "rate_limits",
  appendEvent: "events_raw",
};

const UPSERT_TABLE: Partial<
  Record<OpName, { table: UpsertTable; id: string }>
> = {
  upsertConversation: { table: "conversations", id: "conversationId" },
  upsertTurn: { table: "turns", id: "turnId" },
  upsertCommand: { table: "commands", id: "callId" },
};

/** Can a staged value, a string (`json` false) or the JSON text of another value, have this type? */
function admitsStaged(validator: GenericValidator, json: boolean): boolean {
  switch (validator.kind) {
    case "any":
      return true;
    case "string":
      return !json;
    case "array":
      return json;
    case "union":
      return validator.members.some((member) => admitsStaged(member, json));
    default:
      return false;
  }
}

/**
 * `args.staged` as spill entries, or a rejection reason. Each column must be spillable, of a type
 * the staged form can have, and sent in one form only. Its content is not read, so not checked
 * further: `ingest:*` is internal, and the daemon stages only what it would otherwise have sent.
 * A column with a merge rule of its own (`command`) cannot be staged: the rule would need the
 * value. The daemon never needs to: argv is bounded by the OS (2 MiB) below what a batch carries.
 */
function parseStaged(
  table: TableNames,
  fields: PropertyValidators,
  columns: Row,
): SpillEntry[] | string {
  const staged = columns.staged;
  if (staged === undefined) return [];
  const problem = checkValue(v.array(stagedRef), staged, "args.staged");
  if (problem !== null) return problem;
  const entries: SpillEntry[] = [];
  for (const { field, json, parts, stageKey } of staged as StagedRef[]) {
    const sent = (name: string | null) =>
      name !== null &&
      (columns[name] !== undefined ||
        entries.some((entry) => entry.field === name));
    const rules: Record<string, unknown> =
      table in UPSERT_TABLES ? UPSERT_TABLES[table as UpsertTable].rules : {};
    if (!isSpillable(table, field) || !(field in fields) || field in rules)
      return `${field} cannot be staged`;
    if (!admitsStaged(fields[field], json))
      return `staged ${field} cannot be ${json ? "JSON" : "a string"}`;
    if (!Number.isInteger(parts) || parts < 1 || stageKey.length === 0) {
      return `staged ${field} needs a stageKey and a positive number of parts`;
    }
    if (sent(field) || sent(anySibling(field)))
      return `${field} is sent twice (staged and inline, or in two forms)`;
    entries.push({ field, json, parts, stage: stageKey });
  }
  return entries;
}

const BASE64 =
  /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** Checks the contract places on values beyond their types; a reason, or null. */
function invalidValues(row: Row): string | null {
  for (const column of ANY_COLUMNS) {
    const text = row[`${column}Json`];
    if (text === undefined) continue;
    if (row[column] !== undefined)
      return `${column} and ${column}Json are two forms of one value: send one`;
    try {
      JSON.parse(text as string);
    } catch {
      return `${column}Json is not valid JSON`;
    }
  }
  const chunk = row.chunkBase64;
  if (typeof chunk === "string" && !BASE64.test(chunk))
    return "chunkBase64 is not valid base64";
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

/**
 * Merge rule 6: a turn that has ended ends its calls still running, `canceled` at the turn's end
 * (Codex sends no end for a call its turn cut short), whichever process saw the call start.
 */
async function closeCallsOfEndedTurn(
  ctx: MutationCtx,
  turnId: string,
): Promise<void> {
  const turn = await ctx.db
    .query("turns")
    .withIndex("by_turnId", (q) => q.eq("turnId", turnId))
    .first();
  if (turn === null || !TURN_TERMINAL.has(turn.status)) return;
  const running = await ctx.db
    .query("commands")
    .withIndex("by_turnId", (q) => q.eq("turnId", turnId))
    .filter((q) => q.eq(q.field("status"), "running"))
    .collect();
  for (const command of running) {
    await ctx.db.patch(command._id, {
      status: "canceled",
      endedAt: command.endedAt ?? turn.endedAt,
    });
  }
}

/** What the ops of one transaction share: the threads they touched, the calls whose chunks they number. */
export class BatchState {
  /**
   * The daemon's ops (`ingest:applyBatch`): a message's or reasoning section's key is its identity
   * within its turn, scoped by the turn the store files it in. `app:*` callers' keys are kept as sent.
   */
  constructor(readonly turnScopedKeys = false) {}
  readonly threads = new Threads();
  /** callId -> the next `seq` and the encoding the call's chunks have. */
  readonly calls = new Map<string, { next: number; encoding: unknown }>();
}

/** Where an op comes from, beside its columns (`ingest:applyBatch` ops carry them). */
export type OpHints = {
  thread?: string;
  channel?: string;
  model?: string;
  unknown_turn?: boolean;
  run?: boolean;
  call?: string;
};

/**
 * Appends whose key is their identity within their turn: stored as `<key>@<turnId>`, the turn the
 * store filed them in (an exec run's turn is the store's decision).
 */
const TURN_SCOPED: ReadonlySet<string> = new Set([
  "appendMessage",
  "appendReasoningSection",
]);

/**
 * Numbers a chunk sent without `seq`: after the highest the call has, in the transaction that checked
 * its key, so a call continued by a second process or connection goes on where the first stopped.
 * A call keeps the chunks of one encoding, its first chunk's (app-server 0.63 streamed each delta
 * twice: v2 text, legacy bytes). Null: the chunk is the call's output as another channel sent it.
 */
async function numberChunk(
  ctx: MutationCtx,
  batch: BatchState,
  row: Row,
): Promise<number | null> {
  const callId = row.callId as string;
  let call = batch.calls.get(callId);
  if (call === undefined) {
    const chunks = () =>
      ctx.db
        .query("command_chunks")
        .withIndex("by_callId_seq", (q) => q.eq("callId", callId));
    const last = await chunks().order("desc").first();
    const first = last === null ? null : await chunks().order("asc").first();
    call = {
      next: last === null ? 0 : last.seq + 1,
      encoding: first === null ? row.encoding : first.encoding,
    };
    batch.calls.set(callId, call);
  }
  if (row.encoding !== call.encoding) return null;
  return call.next++;
}

async function append(
  ctx: MutationCtx,
  table: AppendTable,
  key: string,
  row: Row,
  staged: SpillEntry[],
  batch: BatchState,
): Promise<OpResult> {
  // All append tables have `by_key`; the cast picks one to satisfy the table-generic index types.
  const byKey = await ctx.db
    .query(table as "messages")
    .withIndex("by_key", (q) => q.eq("key", key))
    .first();
  if (byKey !== null) return { status: "duplicate" };
  if (table === "command_chunks" && row.seq === undefined) {
    const seq = await numberChunk(ctx, batch, row);
    if (seq === null) {
      return {
        status: "duplicate",
        reason: `chunk of ${row.callId as string} in another encoding`,
      };
    }
    row.seq = seq;
  } else if (table === "command_chunks") {
    const { callId, stream, seq } = row as {
      callId: string;
      stream: string;
      seq: number;
    };
    const atPosition = await ctx.db
      .query("command_chunks")
      .withIndex("by_callId_stream_seq", (q) =>
        q.eq("callId", callId).eq("stream", stream).eq("seq", seq),
      )
      .first();
    if (atPosition !== null) {
      return {
        status: "duplicate",
        reason: `chunk ${callId}/${stream}/${seq} is already stored`,
      };
    }
  }
  const problem = await insertRow(ctx, table, { ...row, key }, staged);
  return problem === null ? inserted : rejected(problem);
}

async function upsert(
  ctx: MutationCtx,
  table: UpsertTable,
  idField: string,
  row: Row,
  staged: SpillEntry[],
): Promise<OpResult> {
  const id = row[idField] as string;
  // Each upsert table is indexed `by_<idField>`; the casts name one for the generic index types.
  const doc = await ctx.db
    .query(table as "conversations")
    .withIndex(`by_${idField}` as "by_conversationId", (q) =>
      q.eq(idField as "conversationId", id),
    )
    .first();
  if (doc === null) {
    const created = mergeRow(table, null, row);
    const missing = missingColumns(table, created);
    if (missing.length > 0)
      return rejected(`a new ${table} row needs ${missing.join(", ")}`);
    const problem = await insertRow(ctx, table, created, staged);
    return problem === null ? inserted : rejected(problem);
  }
  // Staged columns replace the stored value (merge rule 5: parseStaged refuses columns with other
  // rules). A stage the row already holds is the same value (a stage key names one op's value).
  const stored = (doc as StoredDoc).spilled ?? [];
  const fresh = staged.filter(
    (entry) =>
      !stored.some((s) => s.field === entry.field && s.stage === entry.stage),
  );
  const incoming = [...Object.keys(row), ...fresh.map((entry) => entry.field)];
  const touched = new Set(
    incoming.flatMap((field) => [field, anySibling(field) ?? field]),
  );
  const loaded = await loadRow(ctx, doc, touched);
  const merged = mergeRow(table, loaded.row, row);
  for (const { field } of fresh) {
    delete merged[field];
    delete merged[anySibling(field) ?? field];
  }
  if (fresh.length === 0 && sameRow(loaded.row, merged))
    return { status: "duplicate" };
  const problem = await replaceRow(ctx, table, loaded, merged, fresh);
  return problem === null ? { status: "updated" } : rejected(problem);
}

/**
 * Applies one op. `args` are the op's columns; the op's `key` is passed apart and wins over any
 * `key` inside `args`. Validated here, so callers may pass anything. A rejected op writes nothing.
 */
export async function applyOp(
  ctx: MutationCtx,
  op: string,
  key: string,
  args: unknown,
  batch: BatchState = new BatchState(),
  hints: OpHints = {},
): Promise<OpResult> {
  if (!isOpName(op)) return rejected(`unknown op ${JSON.stringify(op)}`);
  if (typeof args !== "object" || args === null || Array.isArray(args))
    return rejected("args must be an object");
  const columns: Row = { ...(args as Row) };
  delete columns.key;
  const upsertTable = UPSERT_TABLE[op];
  const table = upsertTable?.table ?? (APPEND_TABLE[op] as AppendTable);
  const staged = parseStaged(table, opArgs[op], columns);
  if (typeof staged === "string") return rejected(staged);
  delete columns.staged;
  // Staged columns are checked by parseStaged; the others (required ones included) as usual.
  const unstaged: PropertyValidators = { ...opArgs[op] };
  for (const { field } of staged) delete unstaged[field];
  const problem = checkFields(unstaged, { ...columns, key }, "args");
  if (problem !== null) return rejected(problem);
  if (upsertTable === undefined && key.length === 0)
    return rejected("appends need a non-empty key");
  const row = withoutNulls(columns, upsertTable === undefined);
  const invalid = invalidValues(row);
  if (invalid !== null) return rejected(invalid);
  await requireStaged(ctx, staged);
  if (hints.thread !== undefined) {
    if (typeof row.conversationId === "string") {
      row.conversationId = await batch.threads.resolve(
        ctx,
        hints.thread,
        row.conversationId,
      );
    }
    if (op === "upsertConversation" && hints.model !== undefined) {
      await batch.threads.rememberModel(ctx, hints.thread, hints.model);
    } else if (
      op === "appendEvent" &&
      hints.unknown_turn === true &&
      row.turnId === undefined
    ) {
      const running = await batch.threads.runningTurn(ctx, hints.thread);
      if (running !== undefined) row.turnId = running;
    } else {
      await batch.threads.place(ctx, hints.thread, op, row, hints);
    }
    if (op === "upsertTurn") {
      const turnId = row.turnId as string;
      const stored = await ctx.db
        .query("turns")
        .withIndex("by_turnId", (q) => q.eq("turnId", turnId))
        .first();
      await batch.threads.turn(ctx, hints.thread, row, stored === null);
    } else if (op === "appendRateLimit" || op === "appendUsageSnapshot") {
      const channel = hints.channel;
      if (
        channel !== undefined &&
        !(await batch.threads.keepsRateLimits(ctx, hints.thread, channel))
      ) {
        return {
          status: "duplicate",
          reason: "the thread's rate limits come from another channel",
        };
      }
      if (row.turnId === undefined)
        row.turnId = await batch.threads.latestTurn(ctx, hints.thread);
    }
  }
  if (
    (op === "appendRateLimit" || op === "appendUsageSnapshot") &&
    row.turnId === undefined
  ) {
    return rejected("told without a turn, and no turn of its thread is stored");
  }
  if (upsertTable !== undefined) {
    const result = await upsert(
      ctx,
      upsertTable.table,
      upsertTable.id,
      row,
      staged,
    );
    if (op === "upsertTurn" && result.status !== "rejected") {
      await closeCallsOfEndedTurn(ctx, row.turnId as string);
    }
    return result;
  }
  const hasPayload = ["payload", "payloadJson"].some(
    (field) =>
      row[field] !== undefined || staged.some((entry) => entry.field === field),
  );
  if (table === "events_raw" && !hasPayload)
    return rejected("an event needs payload or payloadJson");
  const stored =
    batch.turnScopedKeys && TURN_SCOPED.has(op)
      ? `${key}@${row.turnId as string}`
      : key;
  return await append(ctx, table as AppendTable, stored, row, staged, batch);
}
