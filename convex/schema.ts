// The ten tables of docs/spec (persistence + work orders) plus `threads`, `thread_turns`,
// `thread_calls`, `blobs` and `stages`.
//
// Foreign-key columns (conversationId, turnId, callId, sessionId) hold the external ids as Codex or
// the UI gives them: writers never look a parent up first, so rows may arrive in any order.
// Nullable spec columns are `v.optional`. `any` columns have a `<column>Json` string sibling for
// values Convex cannot hold (docs/operations.md), and tables whose values can outgrow a document
// carry a `spilled` list naming the columns moved into `blobs` (convex/lib/blobs.ts); an entry with a
// `stage` names parts uploaded before the op by `ingest:stageBlobPart` (convex/lib/stages.ts).
import { defineSchema, defineTable } from "convex/server";
import { v } from "convex/values";

/** Usage totals: a fork's inherited usage (`conversations.forkedFromUsage`, docs/operations.md). */
export const usageTotals = v.object({
  totalInputTokens: v.optional(v.number()),
  cachedInputTokens: v.optional(v.number()),
  outputTokens: v.optional(v.number()),
  reasoningOutputTokens: v.optional(v.number()),
  totalTokens: v.optional(v.number()),
});

const spilled = v.optional(
  v.array(
    v.object({
      field: v.string(),
      json: v.boolean(),
      parts: v.number(),
      stage: v.optional(v.string()),
    }),
  ),
);

export default defineSchema({
  // The store's side of "one thread, many channels" (docs/operations.md): the conversation each Codex
  // thread was first filed under, the one channel whose rate-limit reports it keeps, its model and
  // latest turn (for what a stream told without saying them).
  threads: defineTable({
    threadId: v.string(),
    conversationId: v.optional(v.string()),
    rateLimitSource: v.optional(v.string()),
    model: v.optional(v.string()),
    lastTurnId: v.optional(v.string()),
    // How many turns the thread has of each kind: Codex's own turn ids, and `exec --json` runs.
    codexTurns: v.optional(v.number()),
    execTurns: v.optional(v.number()),
  }).index("by_threadId", ["threadId"]),
  // Every id a thread's turn is known by (Codex's turn id, an exec run's name) with the turn's
  // ordinal in the thread and the turn it is stored as: how an exec run and the session file of the
  // same thread meet (docs/operations.md, "Across processes and channels").
  thread_turns: defineTable({
    alias: v.string(),
    threadId: v.string(),
    turnNumber: v.number(),
    turnId: v.string(),
  })
    .index("by_alias", ["alias"])
    .index("by_threadId_turnNumber", ["threadId", "turnNumber"]),
  // Every call id a turn's call is known by, with the call's identity in its turn (the op's `call`)
  // and the call id it is stored as.
  thread_calls: defineTable({
    alias: v.string(),
    turnId: v.string(),
    identity: v.string(),
    callId: v.string(),
  })
    .index("by_alias", ["alias"])
    .index("by_turnId_identity", ["turnId", "identity"]),

  conversations: defineTable({
    conversationId: v.string(),
    threadId: v.optional(v.string()),
    modelProvider: v.optional(v.string()),
    clientName: v.optional(v.string()),
    startedAt: v.number(),
    lastSeenAt: v.number(),
    // A fork (Codex thread/fork): the thread it was forked from, and the usage totals it inherited,
    // which its own snapshots include (docs/operations.md, "Forks").
    forkedFromThreadId: v.optional(v.string()),
    forkedFromUsage: v.optional(usageTotals),
  })
    .index("by_conversationId", ["conversationId"])
    .index("by_lastSeenAt", ["lastSeenAt"]),

  turns: defineTable({
    turnId: v.string(),
    conversationId: v.string(),
    chatId: v.optional(v.string()),
    userId: v.optional(v.string()),
    model: v.optional(v.string()),
    serviceTier: v.optional(v.string()),
    status: v.string(),
    error: v.optional(v.string()),
    path: v.optional(v.string()),
    turnNumber: v.optional(v.number()),
    startedAt: v.number(),
    endedAt: v.optional(v.number()),
    spilled,
  })
    .index("by_conversationId", ["conversationId"])
    .index("by_conversationId_startedAt", ["conversationId", "startedAt"])
    .index("by_chatId", ["chatId"])
    .index("by_turnId", ["turnId"]),

  messages: defineTable({
    key: v.string(),
    turnId: v.string(),
    role: v.string(),
    content: v.string(),
    rawContent: v.optional(v.any()),
    rawContentJson: v.optional(v.string()),
    createdAt: v.number(),
    spilled,
  })
    .index("by_key", ["key"])
    .index("by_turnId", ["turnId"])
    .index("by_turnId_createdAt", ["turnId", "createdAt"])
    .index("by_createdAt", ["createdAt"]),

  reasoning_sections: defineTable({
    key: v.string(),
    turnId: v.string(),
    itemId: v.string(),
    summaryText: v.optional(v.array(v.string())),
    rawContent: v.optional(v.any()),
    rawContentJson: v.optional(v.string()),
    position: v.optional(v.number()),
    createdAt: v.number(),
    spilled,
  })
    .index("by_key", ["key"])
    .index("by_turnId", ["turnId"]),

  commands: defineTable({
    callId: v.string(),
    turnId: v.string(),
    command: v.array(v.string()),
    cwd: v.optional(v.string()),
    source: v.optional(v.string()),
    parsedCmd: v.optional(v.any()),
    parsedCmdJson: v.optional(v.string()),
    status: v.optional(v.string()),
    startedAt: v.number(),
    endedAt: v.optional(v.number()),
    exitCode: v.optional(v.number()),
    durationMs: v.optional(v.number()),
    stdout: v.optional(v.string()),
    stderr: v.optional(v.string()),
    aggregatedOutput: v.optional(v.string()),
    chunked: v.boolean(),
    spilled,
  })
    .index("by_turnId", ["turnId"])
    .index("by_callId", ["callId"]),

  command_chunks: defineTable({
    key: v.string(),
    callId: v.string(),
    stream: v.string(),
    seq: v.number(),
    chunkBase64: v.string(),
    encoding: v.optional(v.string()),
    createdAt: v.number(),
    spilled,
  })
    .index("by_key", ["key"])
    .index("by_callId_seq", ["callId", "seq"])
    .index("by_callId_stream_seq", ["callId", "stream", "seq"]),

  usage_snapshots: defineTable({
    key: v.string(),
    turnId: v.string(),
    totalInputTokens: v.optional(v.number()),
    cachedInputTokens: v.optional(v.number()),
    outputTokens: v.optional(v.number()),
    reasoningOutputTokens: v.optional(v.number()),
    totalTokens: v.optional(v.number()),
    modelContextWindow: v.optional(v.number()),
    source: v.optional(v.string()),
    capturedAt: v.number(),
    // The totals count from zero here (0.63 `exec resume` began them again): counted in full.
    restarted: v.optional(v.boolean()),
  })
    .index("by_key", ["key"])
    .index("by_turnId_capturedAt", ["turnId", "capturedAt"]),

  rate_limits: defineTable({
    key: v.string(),
    turnId: v.string(),
    scope: v.string(),
    usedPercent: v.optional(v.number()),
    windowMinutes: v.optional(v.number()),
    resetsAt: v.optional(v.number()),
    balance: v.optional(v.string()),
    unlimited: v.optional(v.boolean()),
    hasCredits: v.optional(v.boolean()),
    capturedAt: v.number(),
  })
    .index("by_key", ["key"])
    .index("by_turnId_capturedAt", ["turnId", "capturedAt"]),

  // `payload` is required by the spec; it is optional here because an unsafe payload arrives as
  // `payloadJson` instead and a huge one lives in `blobs`. Exactly one of the forms is stored.
  events_raw: defineTable({
    key: v.string(),
    conversationId: v.string(),
    turnId: v.optional(v.string()),
    method: v.string(),
    payload: v.optional(v.any()),
    payloadJson: v.optional(v.string()),
    receivedAt: v.number(),
    spilled,
  })
    .index("by_key", ["key"])
    .index("by_conversationId_receivedAt", ["conversationId", "receivedAt"]),

  // Values too large for one document, split into ordered parts (convex/lib/blobs.ts).
  // `ownerId` is the owning document's `_id`, or for staged parts the stage key
  // (`ownerTable: "stages"`); `field` the column it belongs to.
  blobs: defineTable({
    ownerTable: v.string(),
    ownerId: v.string(),
    field: v.string(),
    part: v.number(),
    data: v.string(),
  }).index("by_owner", ["ownerId", "field", "part"]),

  // Which parts of a staged value are in `blobs`, kept in step with them by every writer, so that
  // applying an op checks a staged value is complete without reading its (up to 16 MiB of) parts.
  stages: defineTable({
    stageKey: v.string(),
    field: v.string(),
    parts: v.array(v.number()),
  }).index("by_stageKey_field", ["stageKey", "field"]),

  work_orders: defineTable({
    sessionId: v.string(),
    workflowType: v.string(),
    workflowArgs: v.optional(v.any()),
    workflowArgsJson: v.optional(v.string()),
    githubIssueUrl: v.optional(v.string()),
    prompt: v.string(),
    title: v.string(),
    status: v.string(),
    createdAt: v.number(),
    updatedAt: v.number(),
    requestedBy: v.string(),
    targetRepo: v.string(),
    targetBranch: v.string(),
    commitSha: v.optional(v.string()),
    prUrl: v.optional(v.string()),
  })
    .index("by_sessionId_createdAt", ["sessionId", "createdAt"])
    .index("by_status_updatedAt", ["status", "updatedAt"]),
});
