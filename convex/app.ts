// `app:*`: one internal mutation per op (docs/operations.md), for callers writing a single row.
// Internal: only a holder of the admin/deploy key can call them over HTTP. Each is a thin wrapper
// over lib/ops.ts, the implementation `ingest:applyBatch` uses too. `key` is optional, as in the
// spec: an append without one is keyed on its natural identity (lib/naturalKey.ts).
import type { RegisteredMutation } from "convex/server";
import type { ObjectType, PropertyValidators } from "convex/values";
import { internalMutation } from "./_generated/server.js";
import { naturalKey } from "./lib/naturalKey.js";
import { applyOp, type OpResult } from "./lib/ops.js";
import { opArgs, opResult, type OpName } from "./lib/validators.js";

function opMutation<Args extends PropertyValidators>(name: OpName, args: Args) {
  const registered = internalMutation({
    args: args as PropertyValidators,
    returns: opResult,
    handler: async (ctx, { key, ...columns }) => {
      // Upserts are idempotent on their id; their key is informational.
      if (typeof key === "string") return await applyOp(ctx, name, key, columns);
      const isAppend = name.startsWith("append");
      return await applyOp(ctx, name, isAppend ? await naturalKey(name, columns) : "", columns);
    },
  });
  // The same function, typed with this op's own arguments for callers (through api.d.ts).
  return registered as unknown as RegisteredMutation<"internal", ObjectType<Args>, Promise<OpResult>>;
}

export const upsertConversation = opMutation("upsertConversation", opArgs.upsertConversation);
export const upsertTurn = opMutation("upsertTurn", opArgs.upsertTurn);
export const upsertCommand = opMutation("upsertCommand", opArgs.upsertCommand);
export const appendMessage = opMutation("appendMessage", opArgs.appendMessage);
export const appendReasoningSection = opMutation("appendReasoningSection", opArgs.appendReasoningSection);
export const appendCommandChunk = opMutation("appendCommandChunk", opArgs.appendCommandChunk);
export const appendUsageSnapshot = opMutation("appendUsageSnapshot", opArgs.appendUsageSnapshot);
export const appendRateLimit = opMutation("appendRateLimit", opArgs.appendRateLimit);
export const appendEvent = opMutation("appendEvent", opArgs.appendEvent);
