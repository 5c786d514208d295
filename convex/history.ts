// Read side of the ingested history. Public queries for allowed readers only (lib/access.ts): a UI
// (Jangar) reads them with its Convex client as a signed-in user, and the daemon's `show` calls them
// over HTTP with the admin key, acting as an admin identity.
// Large values are reassembled from `blobs`; `any` columns come back as lib/present.ts describes.
//
// Unknown ids are not errors: getConversation, getTurn and getCommandOutput return `null` (the
// shapes `ingestor show` and its SQLite reader share); listEvents returns an empty page.
// A query reads at most 16 MiB (Convex): a turn whose rows and blobs together exceed it cannot be
// read with getTurn.
import { paginationOptsValidator, paginationResultValidator } from "convex/server";
import { Base64, v } from "convex/values";
import type { Doc } from "./_generated/dataModel.js";
import type { QueryCtx } from "./_generated/server.js";
import { readerQuery } from "./lib/access.js";
import { presentRow, shownDoc } from "./lib/present.js";
import { readRow, type StoredDoc } from "./lib/rows.js";

/** A row as the queries return it: blobs reassembled, bookkeeping (`spilled`) dropped. */
export type Shown<D extends StoredDoc> = Omit<D, "spilled">;

async function show<D extends StoredDoc>(ctx: QueryCtx, doc: D): Promise<Shown<D>> {
  return presentRow(await readRow(ctx, doc)) as Shown<D>;
}

async function showAll<D extends StoredDoc>(ctx: QueryCtx, docs: D[]): Promise<Shown<D>[]> {
  return await Promise.all(docs.map((doc) => show(ctx, doc)));
}

export const getConversation = readerQuery({
  args: { conversationId: v.string() },
  returns: v.union(
    v.null(),
    v.object({ conversation: shownDoc("conversations"), turns: v.array(shownDoc("turns")) }),
  ),
  handler: async (ctx, { conversationId }) => {
    const conversation = await ctx.db
      .query("conversations")
      .withIndex("by_conversationId", (q) => q.eq("conversationId", conversationId))
      .first();
    if (conversation === null) return null;
    const turns = await ctx.db
      .query("turns")
      .withIndex("by_conversationId_startedAt", (q) => q.eq("conversationId", conversationId))
      .collect();
    return { conversation: await show(ctx, conversation), turns: await showAll(ctx, turns) };
  },
});

export const getTurn = readerQuery({
  args: { turnId: v.string() },
  returns: v.union(
    v.null(),
    v.object({
      turn: shownDoc("turns"),
      messages: v.array(shownDoc("messages")),
      reasoningSections: v.array(shownDoc("reasoning_sections")),
      commands: v.array(shownDoc("commands")),
      usageSnapshots: v.array(shownDoc("usage_snapshots")),
      rateLimits: v.array(shownDoc("rate_limits")),
    }),
  ),
  handler: async (ctx, { turnId }) => {
    const turn = await ctx.db
      .query("turns")
      .withIndex("by_turnId", (q) => q.eq("turnId", turnId))
      .first();
    if (turn === null) return null;
    const messages = await ctx.db
      .query("messages")
      .withIndex("by_turnId_createdAt", (q) => q.eq("turnId", turnId))
      .collect();
    const sections = await ctx.db
      .query("reasoning_sections")
      .withIndex("by_turnId", (q) => q.eq("turnId", turnId))
      .collect();
    // Reasoning in its declared position, then arrival; commands in start order.
    sections.sort((a, b) => (a.position ?? Infinity) - (b.position ?? Infinity) || a.createdAt - b.createdAt);
    const commands = await ctx.db
      .query("commands")
      .withIndex("by_turnId", (q) => q.eq("turnId", turnId))
      .collect();
    commands.sort((a, b) => a.startedAt - b.startedAt);
    const usageSnapshots = await ctx.db
      .query("usage_snapshots")
      .withIndex("by_turnId_capturedAt", (q) => q.eq("turnId", turnId))
      .collect();
    const rateLimits = await ctx.db
      .query("rate_limits")
      .withIndex("by_turnId_capturedAt", (q) => q.eq("turnId", turnId))
      .collect();
    return {
      turn: await show(ctx, turn),
      messages: await showAll(ctx, messages),
      reasoningSections: await showAll(ctx, sections),
      commands: await showAll(ctx, commands),
      usageSnapshots: await showAll(ctx, usageSnapshots),
      rateLimits: await showAll(ctx, rateLimits),
    };
  },
});

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((total, chunk) => total + chunk.length, 0));
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

/**
 * A command's output: its chunks joined in `seq` order per stream and decoded as UTF-8, bad bytes
 * becoming U+FFFD; chunks whose stream is not `stderr` count as stdout. A command without chunks
 * gives its own final `stdout`/`stderr` (chunkCount 0). With them, `aggregatedOutput` (the final
 * merged output, when Codex reported one) and `merged` (stdout is stdout and stderr merged).
 * null when neither is known.
 */
export const getCommandOutput = readerQuery({
  args: { callId: v.string() },
  returns: v.union(
    v.null(),
    v.object({
      callId: v.string(),
      chunkCount: v.number(),
      stdout: v.string(),
      stderr: v.string(),
      // What the output belongs to: the call's source, argv and parsedCmd (describeCall).
      call: v.optional(v.record(v.string(), v.any())),
      // The command's final merged output as Codex reported it, when it did: the whole output
      // where streamed chunks are incomplete (Codex can miss the first delta).
      aggregatedOutput: v.optional(v.string()),
      // stdout holds stdout and stderr merged (v2 deltas, or aggregatedOutput standing in).
      merged: v.optional(v.boolean()),
    }),
  ),
  handler: async (ctx, { callId }) => {
    const docs = await ctx.db
      .query("command_chunks")
      .withIndex("by_callId_seq", (q) => q.eq("callId", callId))
      .collect();
    const command = await ctx.db
      .query("commands")
      .withIndex("by_callId", (q) => q.eq("callId", callId))
      .first();
    const call = command === null ? {} : { call: await describeCall(ctx, command) };
    const final = command === null ? null : await show(ctx, command);
    const aggregated =
      final?.aggregatedOutput === undefined ? {} : { aggregatedOutput: final.aggregatedOutput };
    if (docs.length === 0) {
      if (final === null) return null;
      const { stdout, stderr, aggregatedOutput } = final;
      // Codex 0.169 streams no output for short commands and reports only the merged output: it
      // stands as stdout, as merged v2 chunks do.
      if (stdout === undefined && stderr === undefined) {
        const merged = aggregatedOutput === undefined ? {} : { merged: true };
        return {
          callId,
          chunkCount: 0,
          stdout: aggregatedOutput ?? "",
          stderr: "",
          ...call,
          ...aggregated,
          ...merged,
        };
      }
      return {
        callId,
        chunkCount: 0,
        stdout: stdout ?? "",
        stderr: stderr ?? "",
        ...call,
        ...aggregated,
      };
    }
    const stdout: Uint8Array[] = [];
    const stderr: Uint8Array[] = [];
    for (const doc of docs) {
      const { chunkBase64 } = await readRow(ctx, doc);
      (doc.stream === "stderr" ? stderr : stdout).push(Base64.toByteArray(chunkBase64 as string));
    }
    const decoder = new TextDecoder("utf-8"); // non-fatal: invalid sequences become U+FFFD
    const merged = docs.some((doc) => doc.encoding === MERGED_ENCODING) ? { merged: true } : {};
    return {
      callId,
      chunkCount: docs.length,
      stdout: decoder.decode(concat(stdout)),
      stderr: decoder.decode(concat(stderr)),
      ...call,
      ...aggregated,
      ...merged,
    };
  },
});

/** The encoding of v2 output deltas: text with stdout and stderr merged (ingestor/normalize/app_server.py). */
const MERGED_ENCODING = "utf-8-merged";

const CALL_FIELDS = ["source", "command", "parsedCmd", "parsedCmdJson"] as const;

/** What a command's output belongs to: its `source`, `command` (argv) and `parsedCmd` (a file
 * change's diffs, an MCP call's arguments and result), without reading its output columns again. */
async function describeCall(ctx: QueryCtx, doc: Doc<"commands">): Promise<Record<string, unknown>> {
  const wanted = new Set<string>(CALL_FIELDS);
  const spilled = (doc.spilled ?? []).filter((entry) => wanted.has(entry.field));
  const row = presentRow(await readRow(ctx, { ...doc, spilled })) as Record<string, unknown>;
  const present = CALL_FIELDS.filter((name) => row[name] !== undefined);
  return Object.fromEntries(present.map((name) => [name, row[name]]));
}

/** Raw events of a conversation in `receivedAt` order, paginated the standard Convex way. */
export const listEvents = readerQuery({
  args: { conversationId: v.string(), paginationOpts: paginationOptsValidator },
  returns: paginationResultValidator(shownDoc("events_raw")),
  handler: async (ctx, { conversationId, paginationOpts }) => {
    const result = await ctx.db
      .query("events_raw")
      .withIndex("by_conversationId_receivedAt", (q) => q.eq("conversationId", conversationId))
      .paginate(paginationOpts);
    return { ...result, page: await showAll(ctx, result.page) };
  },
});
