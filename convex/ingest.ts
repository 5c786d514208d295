// `ingest:applyBatch`: the daemon's write path. One transaction applies a batch of ops in order and
// returns one result per op; a batch over our limits is refused whole, before any write.
// `ingest:stageBlobPart` uploads a part of a value too large for a batch, `ingest:dropStage` deletes
// a staged value its row replaced (lib/stages.ts).
// Internal: only a holder of the admin/deploy key can call them over HTTP.
import { ConvexError, getConvexSize, v } from "convex/values";
import { internal } from "./_generated/api.js";
import { internalMutation } from "./_generated/server.js";
import { MAX_BATCH_BYTES, MAX_BATCH_OPS } from "./lib/limits.js";
import { applyOp, BatchState } from "./lib/ops.js";
import {
  dropStageArgs,
  dropStagePage,
  stagePart,
  stagePartArgs,
} from "./lib/stages.js";
import { opResult } from "./lib/validators.js";

const op = v.object({
  op: v.string(),
  key: v.string(),
  args: v.any(),
  // The Codex thread the op belongs to, and (rate limits) the channel that reported it: lib/threads.ts.
  thread: v.optional(v.string()),
  channel: v.optional(v.string()),
  // upsertConversation: the thread's model, for its turns whose stream did not say.
  model: v.optional(v.string()),
  // appendEvent: the stream knew no turn of the thread yet (lib/threads.ts: runningTurn).
  unknown_turn: v.optional(v.boolean()),
  // The op's turnId names an exec run, not a Codex turn (lib/threads.ts: place).
  run: v.optional(v.boolean()),
  // upsertCommand: the call's identity in its turn (lib/threads.ts: place).
  call: v.optional(v.string()),
});

/** Throws when a batch could exceed Convex's per-transaction limits (lib/limits.ts says why). */
function checkBatchLimits(ops: Array<typeof op.type>): void {
  if (ops.length > MAX_BATCH_OPS) {
    throw new ConvexError({
      code: "BatchTooLarge",
      limit: "MAX_BATCH_OPS",
      max: MAX_BATCH_OPS,
      actual: ops.length,
      message: `batch has ${ops.length} ops; at most ${MAX_BATCH_OPS} per call`,
    });
  }
  const bytes = getConvexSize(ops);
  if (bytes > MAX_BATCH_BYTES) {
    throw new ConvexError({
      code: "BatchTooLarge",
      limit: "MAX_BATCH_BYTES",
      max: MAX_BATCH_BYTES,
      actual: bytes,
      message: `batch is ${bytes} bytes; at most ${MAX_BATCH_BYTES} per call`,
    });
  }
}

export const applyBatch = internalMutation({
  args: { ops: v.array(op) },
  returns: v.array(opResult),
  handler: async (ctx, { ops }) => {
    checkBatchLimits(ops);
    const results = [];
    const batch = new BatchState(true);
    // In order: a later op may update the row an earlier one inserted.
    for (const { op: name, key, args, ...hints } of ops) {
      results.push(await applyOp(ctx, name, key, args, batch, hints));
    }
    return results;
  },
});

export const stageBlobPart = internalMutation({
  args: stagePartArgs,
  returns: v.object({
    status: v.union(v.literal("inserted"), v.literal("duplicate")),
  }),
  handler: async (ctx, args) => ({ status: await stagePart(ctx, args) }),
});

export const dropStage = internalMutation({
  args: dropStageArgs,
  returns: v.null(),
  handler: async (ctx, args) => {
    // A staged value may be larger than one transaction can read: one page per run.
    if (await dropStagePage(ctx, args))
      await ctx.scheduler.runAfter(0, internal.ingest.dropStage, args);
    return null;
  },
});
