// Argument validators of the nine ops (docs/operations.md), shared by `app:*` (as `args`) and
// `ingest:applyBatch` (checked per op by lib/check.ts). `key` is optional as in the spec; an append
// without one is keyed on its natural identity (lib/naturalKey.ts). Columns are the table's, camelCase, times in
// epoch ms. Nullable columns also accept `null`, which the merge rules read as "unknown".
import { v, type Validator } from "convex/values";

function nullable<T>(validator: Validator<T, "required", string>) {
  return v.optional(v.union(validator, v.null()));
}

const str = nullable(v.string());
const num = nullable(v.number());
const bool = nullable(v.boolean());
// `any` columns: `v.any()` already admits null. `<column>Json` carries values Convex cannot hold.
const any = v.optional(v.any());

export const opArgs = {
  upsertConversation: {
    key: v.optional(v.string()),
    conversationId: v.string(),
    threadId: str,
    modelProvider: str,
    clientName: str,
    startedAt: num,
    lastSeenAt: num,
    forkedFromThreadId: str,
    forkedFromUsage: nullable(
      v.object({
        totalInputTokens: v.optional(v.number()),
        cachedInputTokens: v.optional(v.number()),
        outputTokens: v.optional(v.number()),
        reasoningOutputTokens: v.optional(v.number()),
        totalTokens: v.optional(v.number()),
      }),
    ),
  },
  upsertTurn: {
    key: v.optional(v.string()),
    turnId: v.string(),
    conversationId: str,
    chatId: str,
    userId: str,
    model: str,
    serviceTier: str,
    status: str,
    error: str,
    path: str,
    turnNumber: num,
    startedAt: num,
    endedAt: num,
  },
  upsertCommand: {
    key: v.optional(v.string()),
    callId: v.string(),
    turnId: str,
    command: nullable(v.array(v.string())),
    cwd: str,
    source: str,
    parsedCmd: any,
    parsedCmdJson: str,
    status: str,
    startedAt: num,
    endedAt: num,
    exitCode: num,
    durationMs: num,
    stdout: str,
    stderr: str,
    aggregatedOutput: str,
    chunked: bool,
  },
  appendMessage: {
    key: v.optional(v.string()),
    turnId: v.string(),
    role: v.string(),
    content: v.string(),
    rawContent: any,
    rawContentJson: str,
    createdAt: v.number(),
  },
  appendReasoningSection: {
    key: v.optional(v.string()),
    turnId: v.string(),
    itemId: v.string(),
    summaryText: nullable(v.array(v.string())),
    rawContent: any,
    rawContentJson: str,
    position: num,
    createdAt: v.number(),
  },
  appendCommandChunk: {
    key: v.optional(v.string()),
    callId: v.string(),
    stream: v.string(),
    // Absent: the store numbers the call's chunks in arrival order (docs/operations.md).
    seq: v.optional(v.number()),
    chunkBase64: v.string(),
    encoding: str,
    createdAt: v.number(),
  },
  appendUsageSnapshot: {
    key: v.optional(v.string()),
    // Absent only with the op's `thread` (ingest:applyBatch): the thread's latest turn.
    turnId: v.optional(v.string()),
    totalInputTokens: num,
    cachedInputTokens: num,
    outputTokens: num,
    reasoningOutputTokens: num,
    totalTokens: num,
    modelContextWindow: num,
    source: str,
    capturedAt: v.number(),
    restarted: v.optional(v.boolean()),
  },
  appendRateLimit: {
    key: v.optional(v.string()),
    // Absent only with the op's `thread` (ingest:applyBatch): the thread's latest turn.
    turnId: v.optional(v.string()),
    scope: v.string(),
    usedPercent: num,
    windowMinutes: num,
    resetsAt: num,
    balance: str,
    unlimited: bool,
    hasCredits: bool,
    capturedAt: v.number(),
  },
  appendEvent: {
    key: v.optional(v.string()),
    conversationId: v.string(),
    turnId: str,
    method: v.string(),
    payload: any,
    payloadJson: str,
    receivedAt: v.number(),
  },
};

export type OpName = keyof typeof opArgs;

export function isOpName(name: string): name is OpName {
  return Object.prototype.hasOwnProperty.call(opArgs, name);
}

export const opResult = v.object({
  status: v.union(v.literal("inserted"), v.literal("updated"), v.literal("duplicate"), v.literal("rejected")),
  reason: v.optional(v.string()),
});
