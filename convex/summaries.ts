// Listings over the whole history, for `ingestor show conversations` and `ingestor usage` (and a UI):
// one summary row per conversation, and every usage snapshot with what it is counted under.
// Public queries for allowed readers only (lib/access.ts), paginated the standard Convex way: a
// caller follows `continueCursor` until `isDone`. The token arithmetic is the caller's
// (ingestor/cli/usage.py): a query returns stored facts, the same ones the SQLite reader returns.
import { paginationOptsValidator } from "convex/server";
import { v } from "convex/values";
import type { Doc } from "./_generated/dataModel.js";
import type { QueryCtx } from "./_generated/server.js";
import { readerQuery } from "./lib/access.js";
import { readRow } from "./lib/rows.js";
import { usageTotals } from "./schema.js";

/** Sources of `commands` rows that are tool calls other than shell commands (issue 8). */
const TOOL_SOURCES = new Set(["file", "mcp", "search"]);
/** Raw events read, from a conversation's first, to find its working directory. */
const CWD_EVENTS = 20;

const summary = v.object({
  conversationId: v.string(),
  threadId: v.optional(v.string()),
  clientName: v.optional(v.string()),
  modelProvider: v.optional(v.string()),
  startedAt: v.number(),
  lastSeenAt: v.number(),
  turns: v.number(),
  commands: v.number(),
  toolCalls: v.number(),
  model: v.optional(v.string()),
  cwd: v.optional(v.string()),
});

const page = <T extends ReturnType<typeof v.object>>(row: T) =>
  v.object({
    page: v.array(row),
    isDone: v.boolean(),
    continueCursor: v.string(),
  });

/** The working directory a raw line names: a session file's `session_meta`/`turn_context`, or an
 * app-server `thread/started`. Same rule as ingestor/sinks/sqlite/summaries.py `cwd_of`. */
export function cwdOf(line: unknown): string | undefined {
  if (typeof line !== "object" || line === null) return undefined;
  const record = line as Record<string, any>;
  const found =
    record.type === "session_meta" || record.type === "turn_context"
      ? record.payload?.cwd
      : record.method === "thread/started"
        ? record.params?.thread?.cwd
        : undefined;
  return typeof found === "string" && found !== "" ? found : undefined;
}

async function conversationCwd(ctx: QueryCtx, conversationId: string, commands: Doc<"commands">[]) {
  const events = await ctx.db
    .query("events_raw")
    .withIndex("by_conversationId_receivedAt", (q) => q.eq("conversationId", conversationId))
    .take(CWD_EVENTS);
  for (const event of events) {
    const row = await readRow(ctx, event);
    const payload = row.payload ?? (typeof row.payloadJson === "string" ? JSON.parse(row.payloadJson) : null);
    const cwd = cwdOf(payload);
    if (cwd !== undefined) return cwd;
  }
  // exec --json names no directory: the first command's, when one ran.
  return commands.find((command) => command.cwd !== undefined)?.cwd;
}

async function summarize(ctx: QueryCtx, conversation: Doc<"conversations">) {
  const turns = await ctx.db
    .query("turns")
    .withIndex("by_conversationId_startedAt", (q) => q.eq("conversationId", conversation.conversationId))
    .collect();
  const commands: Doc<"commands">[] = [];
  for (const turn of turns) {
    const rows = await ctx.db
      .query("commands")
      .withIndex("by_turnId", (q) => q.eq("turnId", turn.turnId))
      .collect();
    commands.push(...rows.sort((a, b) => a.startedAt - b.startedAt));
  }
  const tools = commands.filter((command) => TOOL_SOURCES.has(command.source ?? "")).length;
  const model = turns.findLast((turn) => turn.model !== undefined)?.model;
  const cwd = await conversationCwd(ctx, conversation.conversationId, commands);
  const { conversationId, threadId, clientName, modelProvider, startedAt, lastSeenAt } = conversation;
  return {
    conversationId,
    ...(threadId === undefined ? {} : { threadId }),
    ...(clientName === undefined ? {} : { clientName }),
    ...(modelProvider === undefined ? {} : { modelProvider }),
    startedAt,
    lastSeenAt,
    turns: turns.length,
    commands: commands.length - tools,
    toolCalls: tools,
    ...(model === undefined ? {} : { model }),
    ...(cwd === undefined ? {} : { cwd }),
  };
}

/** Conversations, the most recently active first, each with its counts, latest model and cwd. */
export const listConversations = readerQuery({
  args: { paginationOpts: paginationOptsValidator },
  returns: page(summary),
  handler: async (ctx, { paginationOpts }) => {
    const result = await ctx.db
      .query("conversations")
      .withIndex("by_lastSeenAt")
      .order("desc")
      .paginate(paginationOpts);
    const rows = [];
    for (const conversation of result.page) rows.push(await summarize(ctx, conversation));
    return {
      page: rows,
      isDone: result.isDone,
      continueCursor: result.continueCursor,
    };
  },
});

const usageRow = v.object({
  turnId: v.string(),
  conversationId: v.optional(v.string()),
  threadId: v.optional(v.string()),
  model: v.optional(v.string()),
  capturedAt: v.number(),
  totalInputTokens: v.optional(v.number()),
  cachedInputTokens: v.optional(v.number()),
  outputTokens: v.optional(v.number()),
  reasoningOutputTokens: v.optional(v.number()),
  totalTokens: v.optional(v.number()),
  restarted: v.optional(v.boolean()),
  forkedFromUsage: v.optional(usageTotals),
});

/** Every usage snapshot in arrival order, with its turn's conversation and model and the
 * conversation's thread and, for a fork, what it inherited (`forkedFromUsage`). Snapshots are
 * cumulative totals: ingestor/cli/usage.py turns them into usage. */
export const listUsage = readerQuery({
  args: { paginationOpts: paginationOptsValidator },
  returns: page(usageRow),
  handler: async (ctx, { paginationOpts }) => {
    const result = await ctx.db.query("usage_snapshots").paginate(paginationOpts);
    const turns = new Map<string, Doc<"turns"> | null>();
    const conversations = new Map<string, Doc<"conversations"> | null>();
    const rows = [];
    for (const snapshot of result.page) {
      if (!turns.has(snapshot.turnId)) {
        const turn = await ctx.db
          .query("turns")
          .withIndex("by_turnId", (q) => q.eq("turnId", snapshot.turnId))
          .first();
        turns.set(snapshot.turnId, turn);
      }
      const turn = turns.get(snapshot.turnId) ?? null;
      const conversationId = turn?.conversationId;
      if (conversationId !== undefined && !conversations.has(conversationId)) {
        const conversation = await ctx.db
          .query("conversations")
          .withIndex("by_conversationId", (q) => q.eq("conversationId", conversationId))
          .first();
        conversations.set(conversationId, conversation);
      }
      const conversation = conversationId === undefined ? null : (conversations.get(conversationId) ?? null);
      const threadId = conversation?.threadId;
      const forkedFromUsage = conversation?.forkedFromUsage;
      const { turnId, capturedAt, totalInputTokens, cachedInputTokens, outputTokens } = snapshot;
      const { reasoningOutputTokens, totalTokens, restarted } = snapshot;
      const fields = {
        totalInputTokens,
        cachedInputTokens,
        outputTokens,
        reasoningOutputTokens,
        totalTokens,
        restarted,
      };
      rows.push({
        turnId,
        capturedAt,
        ...(conversationId === undefined ? {} : { conversationId }),
        ...(threadId === undefined ? {} : { threadId }),
        ...(turn?.model === undefined ? {} : { model: turn.model }),
        ...Object.fromEntries(Object.entries(fields).filter(([, value]) => value !== undefined)),
        ...(forkedFromUsage === undefined ? {} : { forkedFromUsage }),
      });
    }
    return {
      page: rows,
      isDone: result.isDone,
      continueCursor: result.continueCursor,
    };
  },
});
