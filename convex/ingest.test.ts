import { ConvexError } from "convex/values";
import { describe, expect, test } from "vitest";
import { internal } from "./_generated/api.js";
import { MAX_BATCH_BYTES, MAX_BATCH_OPS } from "./lib/limits.js";
import { dump, largestDocumentBytes, MiB, setup } from "./test.setup.js";

const conversation = {
  op: "upsertConversation",
  key: "c:1",
  args: { conversationId: "conv", startedAt: 1, lastSeenAt: 1 },
};
const turn = {
  op: "upsertTurn",
  key: "t:1",
  args: {
    turnId: "t1",
    conversationId: "conv",
    startedAt: 2,
    status: "running",
  },
};
const message = {
  op: "appendMessage",
  key: "m:1",
  args: { turnId: "t1", role: "user", content: "hello", createdAt: 3 },
};
const turnDone = {
  op: "upsertTurn",
  key: "t:2",
  args: { turnId: "t1", status: "succeeded", endedAt: 9 },
};

async function batchError(
  promise: Promise<unknown>,
): Promise<Record<string, unknown>> {
  const error = await promise.then(
    () => {
      throw new Error("batch was accepted");
    },
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(ConvexError);
  return (error as { data: Record<string, unknown> }).data;
}

describe("ingest:applyBatch", () => {
  test("a fork's conversation keeps its parent and the usage it inherited", async () => {
    const t = setup();
    const inherited = { totalInputTokens: 2300, cachedInputTokens: 200, outputTokens: 55, totalTokens: 2355 };
    const fork = { ...conversation.args, forkedFromThreadId: "parent", forkedFromUsage: inherited };
    await t.mutation(internal.ingest.applyBatch, { ops: [{ ...conversation, args: fork }] });
    const [stored] = (await dump(t)).conversations;
    expect(stored).toMatchObject({ forkedFromThreadId: "parent", forkedFromUsage: inherited });
  });

  test("applies ops in order and returns one result per op", async () => {
    const t = setup();
    const results = await t.mutation(internal.ingest.applyBatch, {
      ops: [conversation, turn, message, turnDone],
    });
    expect(results).toEqual([
      { status: "inserted" },
      { status: "inserted" },
      { status: "inserted" },
      { status: "updated" },
    ]);
    const tables = await dump(t);
    expect(tables.turns[0]).toMatchObject({
      status: "succeeded",
      endedAt: 9,
      startedAt: 2,
    });
    // The daemon's message keys are their identity within the turn, scoped by the turn they landed in.
    expect(tables.messages[0]).toMatchObject({
      key: "m:1@t1",
      content: "hello",
    });
  });

  test("replaying a batch changes nothing and reports duplicates", async () => {
    const t = setup();
    const ops = [conversation, turn, message, turnDone];
    await t.mutation(internal.ingest.applyBatch, { ops });
    const before = await dump(t);
    const results = await t.mutation(internal.ingest.applyBatch, { ops });
    // The second `turn` op meets a succeeded turn: its `running` cannot undo it.
    expect(results.map((r) => r.status)).toEqual([
      "duplicate",
      "duplicate",
      "duplicate",
      "duplicate",
    ]);
    expect(await dump(t)).toEqual(before);
  });

  test("a rejected op does not stop the others", async () => {
    const t = setup();
    const results = await t.mutation(internal.ingest.applyBatch, {
      ops: [
        { op: "dropTables", key: "x", args: {} },
        {
          op: "appendMessage",
          key: "m:bad",
          args: { turnId: "t1", role: "user", createdAt: 3 },
        },
        {
          op: "appendMessage",
          key: "m:bad2",
          args: { turnId: "t1", role: "user", content: 5, createdAt: 3 },
        },
        { op: "appendEvent", key: "e:1", args: "not an object" },
        message,
      ],
    });
    expect(results).toEqual([
      { status: "rejected", reason: 'unknown op "dropTables"' },
      { status: "rejected", reason: "args.content is required" },
      {
        status: "rejected",
        reason: "args.content must be a string, got number",
      },
      { status: "rejected", reason: "args must be an object" },
      { status: "inserted" },
    ]);
    expect((await dump(t)).messages).toHaveLength(1);
  });

  test("the op key wins over a key inside args", async () => {
    const t = setup();
    await t.mutation(internal.ingest.applyBatch, {
      ops: [{ ...message, args: { ...message.args, key: "other" } }],
    });
    expect((await dump(t)).messages[0].key).toBe("m:1@t1");
  });

  test(`a batch over ${MAX_BATCH_OPS} ops is refused whole`, async () => {
    const t = setup();
    const ops = Array.from({ length: MAX_BATCH_OPS + 1 }, (_, i) => ({
      ...message,
      key: `m:${i}`,
    }));
    const data = await batchError(
      t.mutation(internal.ingest.applyBatch, { ops }),
    );
    expect(data).toMatchObject({
      code: "BatchTooLarge",
      limit: "MAX_BATCH_OPS",
      max: MAX_BATCH_OPS,
      actual: MAX_BATCH_OPS + 1,
    });
    expect((await dump(t)).messages).toEqual([]);
  });

  test(`a batch over ${MAX_BATCH_BYTES} bytes is refused whole`, async () => {
    const t = setup();
    const content = "x".repeat(3 * MiB);
    const ops = [
      conversation,
      ...[1, 2, 3].map((i) => ({
        ...message,
        key: `m:${i}`,
        args: { ...message.args, content },
      })),
    ];
    const data = await batchError(
      t.mutation(internal.ingest.applyBatch, { ops }),
    );
    expect(data).toMatchObject({
      code: "BatchTooLarge",
      limit: "MAX_BATCH_BYTES",
      max: MAX_BATCH_BYTES,
    });
    expect(data.actual).toBeGreaterThan(MAX_BATCH_BYTES);
    const tables = await dump(t);
    expect(tables.conversations).toEqual([]);
    expect(tables.blobs).toEqual([]);
  });

  test(`a full batch (${MAX_BATCH_OPS} chunk ops, the costliest kind) fits Convex's transaction limits`, async () => {
    const t = setup();
    const ops = Array.from({ length: MAX_BATCH_OPS }, (_, seq) => ({
      op: "appendCommandChunk",
      key: `ch:${seq}`,
      args: {
        callId: "c",
        stream: "stdout",
        seq,
        chunkBase64: "aGkK",
        createdAt: seq,
      },
    }));
    const results = await t.mutation(internal.ingest.applyBatch, { ops });
    expect(results.every((r) => r.status === "inserted")).toBe(true);
    expect((await dump(t)).command_chunks).toHaveLength(MAX_BATCH_OPS);
    // convex-test runs every index read of the 2,000 ops in JavaScript: 45 s on a quiet core, twice
    // that beside the other test steps. The time is the stand-in's; the limits are what is tested.
  }, 240_000);

  test("a batch near the byte limit with big values fits, split under 1 MiB per document", async () => {
    const t = setup();
    const content = "y".repeat(3 * MiB);
    const output = "z".repeat(2 * MiB);
    const ops = [
      { ...message, args: { ...message.args, content } },
      {
        op: "upsertCommand",
        key: "cmd",
        args: {
          callId: "c",
          turnId: "t1",
          startedAt: 1,
          aggregatedOutput: output,
        },
      },
      {
        op: "upsertCommand",
        key: "cmd2",
        args: { callId: "c", stdout: output, status: "completed" },
      },
    ];
    const results = await t.mutation(internal.ingest.applyBatch, { ops });
    expect(results).toEqual([
      { status: "inserted" },
      { status: "inserted" },
      { status: "updated" },
    ]);
    expect(await largestDocumentBytes(t)).toBeLessThan(MiB);
    expect((await dump(t)).blobs).toHaveLength(6 + 4 + 4);
  }, 60_000);
});

describe("one call's chunks, one thread's conversation, across batches (docs/operations.md)", () => {
  const chunk = (key: string, text: string, encoding = "raw") => ({
    op: "appendCommandChunk",
    key,
    args: {
      callId: "call",
      stream: "stdout",
      chunkBase64: btoa(text),
      encoding,
      createdAt: 1,
    },
  });

  test("chunks without a seq are numbered after the stored ones, in arrival order", async () => {
    const t = setup();
    await t.mutation(internal.ingest.applyBatch, {
      ops: [chunk("k:a", "a"), chunk("k:b", "b")],
    });
    // A second process continues the call: its chunks go on from seq 2; a replay adds nothing.
    const results = await t.mutation(internal.ingest.applyBatch, {
      ops: [chunk("k:b", "b"), chunk("k:c", "c"), chunk("k:d", "d")],
    });
    expect(results.map((r) => r.status)).toEqual([
      "duplicate",
      "inserted",
      "inserted",
    ]);
    const rows = (await dump(t)).command_chunks as Array<{
      seq: number;
      chunkBase64: string;
    }>;
    expect(rows.map((r) => [r.seq, atob(r.chunkBase64)])).toEqual([
      [0, "a"],
      [1, "b"],
      [2, "c"],
      [3, "d"],
    ]);
  });

  test("a call keeps the chunks of its first chunk's encoding", async () => {
    const t = setup();
    const results = await t.mutation(internal.ingest.applyBatch, {
      ops: [
        chunk("k:raw", "x"),
        chunk("k:text", "x", "utf-8-merged"),
        chunk("k:raw2", "y"),
      ],
    });
    expect(results.map((r) => r.status)).toEqual([
      "inserted",
      "duplicate",
      "inserted",
    ]);
    const rows = (await dump(t)).command_chunks as Array<{ seq: number }>;
    expect(rows.map((r) => r.seq)).toEqual([0, 1]);
  });

  test("a thread stays in the first conversation it was filed under", async () => {
    const t = setup();
    const filed = (conversationId: string, key: string) => [
      {
        op: "upsertConversation",
        key: `c:${key}`,
        thread: "th",
        args: { conversationId, threadId: "th", startedAt: 5, lastSeenAt: 5 },
      },
      {
        op: "upsertTurn",
        key: `t:${key}`,
        thread: "th",
        args: { turnId: "tu", conversationId, startedAt: 5 },
      },
      {
        op: "appendEvent",
        key: `e:${key}`,
        thread: "th",
        args: { conversationId, method: "m", payload: key, receivedAt: 5 },
      },
    ];
    await t.mutation(internal.ingest.applyBatch, {
      ops: filed("chat-42", "live"),
    });
    await t.mutation(internal.ingest.applyBatch, {
      ops: filed("th", "session-file"),
    });
    const tables = await dump(t);
    const conversations = (table: string) =>
      (tables[table] as Array<{ conversationId: string }>).map(
        (row) => row.conversationId,
      );
    expect(conversations("conversations")).toEqual(["chat-42"]);
    expect(conversations("turns")).toEqual(["chat-42"]);
    expect(conversations("events_raw")).toEqual(["chat-42", "chat-42"]);
  });

  test("a thread keeps the rate limits of the first channel that reported them", async () => {
    const t = setup();
    const limit = (key: string, channel: string, usedPercent: number) => ({
      op: "appendRateLimit",
      key,
      thread: "th",
      channel,
      args: { turnId: "tu", scope: "secondary", usedPercent, capturedAt: 1 },
    });
    const results = await t.mutation(internal.ingest.applyBatch, {
      ops: [
        limit("l:1", "session-file", 40.5),
        limit("l:2", "app-server", 41),
        limit("l:3", "session-file", 41.5),
      ],
    });
    expect(results.map((r) => r.status)).toEqual([
      "inserted",
      "duplicate",
      "inserted",
    ]);
  });
});

describe("an exec run and its session file meet in the store (docs/operations.md)", () => {
  // exec names no turns: the daemon names each run (`th/run:<hash>`) and marks its ops `run`; the
  // session file tells the same turn with Codex's id and the call with the model's call id.
  const execRun = (run: string, text: string) => [
    {
      op: "upsertTurn",
      key: `t:${run}`,
      thread: "th",
      run: true,
      args: {
        turnId: `th/${run}`,
        conversationId: "th",
        startedAt: 1,
        status: "running",
      },
    },
    {
      op: "upsertCommand",
      key: `x:${run}`,
      thread: "th",
      run: true,
      call: `cc:${text}`,
      args: {
        callId: `th/${run}/item_1`,
        turnId: `th/${run}`,
        command: ["echo", text],
        status: "completed",
        startedAt: 2,
      },
    },
    {
      op: "appendMessage",
      key: `m:${text}`,
      thread: "th",
      args: {
        turnId: `th/${run}`,
        role: "assistant",
        content: text,
        createdAt: 3,
      },
    },
    {
      op: "appendReasoningSection",
      key: `r:${text}`,
      thread: "th",
      run: true,
      args: {
        turnId: `th/${run}`,
        itemId: `th/${run}/item_0`,
        summaryText: [text],
        position: 0,
        createdAt: 2,
      },
    },
    {
      op: "upsertTurn",
      key: `t:${run}:end`,
      thread: "th",
      run: true,
      args: { turnId: `th/${run}`, status: "succeeded", endedAt: 4 },
    },
  ];
  const sessionTurn = (turn: string, call: string, text: string) => [
    {
      op: "upsertTurn",
      key: `t:${turn}`,
      thread: "th",
      args: {
        turnId: turn,
        conversationId: "th",
        startedAt: 1,
        status: "running",
      },
    },
    {
      op: "appendMessage",
      key: `m:u:${text}`,
      thread: "th",
      args: { turnId: turn, role: "user", content: `do ${text}`, createdAt: 1 },
    },
    {
      op: "upsertCommand",
      key: `x:${call}`,
      thread: "th",
      call: `cc:${text}`,
      args: {
        callId: call,
        turnId: turn,
        command: ["echo", text],
        status: "completed",
        startedAt: 2,
      },
    },
    {
      op: "appendMessage",
      key: `m:${text}`,
      thread: "th",
      args: { turnId: turn, role: "assistant", content: text, createdAt: 3 },
    },
    {
      op: "appendReasoningSection",
      key: `r:${text}`,
      thread: "th",
      args: {
        turnId: turn,
        itemId: `rs_${text}`,
        summaryText: [text],
        position: 0,
        createdAt: 2,
      },
    },
    {
      op: "upsertTurn",
      key: `t:${turn}:end`,
      thread: "th",
      args: { turnId: turn, status: "succeeded", endedAt: 4 },
    },
  ];
  const session = [
    ...sessionTurn("T1", "call_1", "one"),
    ...sessionTurn("T2", "call_2", "two"),
  ];
  const exec = [...execRun("run:a", "one"), ...execRun("run:b", "two")];

  type Rows = Record<string, Array<Record<string, unknown>>>;
  const shape = (tables: Rows) => ({
    turns: tables.turns.map((r) => [r.turnId, r.turnNumber]),
    commands: tables.commands.map((r) => [r.callId, r.turnId]),
    messages: tables.messages.map((r) => [r.role, r.content, r.turnId]),
    reasoning: tables.reasoning_sections.map((r) => [r.itemId, r.turnId]),
  });

  test("exec first: the session file's turns and calls join the runs' rows", async () => {
    const t = setup();
    for (const ops of [exec, session, exec, session])
      await t.mutation(internal.ingest.applyBatch, { ops });
    expect(shape((await dump(t)) as Rows)).toEqual({
      turns: [
        ["th/turn-1", 1],
        ["th/turn-2", 2],
      ],
      commands: [
        ["th/turn-1/item_1", "th/turn-1"],
        ["th/turn-2/item_1", "th/turn-2"],
      ],
      messages: [
        ["assistant", "one", "th/turn-1"],
        ["assistant", "two", "th/turn-2"],
        ["user", "do one", "th/turn-1"],
        ["user", "do two", "th/turn-2"],
      ],
      reasoning: [
        ["th/turn-1/item_0", "th/turn-1"],
        ["th/turn-2/item_0", "th/turn-2"],
      ],
    });
  });

  test("session file first: the runs land in Codex's turns and calls", async () => {
    const t = setup();
    for (const ops of [session, exec, session, exec])
      await t.mutation(internal.ingest.applyBatch, { ops });
    expect(shape((await dump(t)) as Rows)).toEqual({
      turns: [
        ["T1", 1],
        ["T2", 2],
      ],
      commands: [
        ["call_1", "T1"],
        ["call_2", "T2"],
      ],
      messages: [
        ["user", "do one", "T1"],
        ["assistant", "one", "T1"],
        ["user", "do two", "T2"],
        ["assistant", "two", "T2"],
      ],
      reasoning: [
        ["rs_one", "T1"],
        ["rs_two", "T2"],
      ],
    });
  });

  test("a resumed run in its own batch continues the thread; a replayed run keeps its turn", async () => {
    const t = setup();
    for (const ops of [
      execRun("run:a", "one"),
      execRun("run:b", "two"),
      execRun("run:a", "one"),
    ]) {
      await t.mutation(internal.ingest.applyBatch, { ops });
    }
    const tables = (await dump(t)) as Rows;
    expect(shape(tables).messages).toEqual([
      ["assistant", "one", "th/turn-1"],
      ["assistant", "two", "th/turn-2"],
    ]);
    expect(tables.threads).toMatchObject([{ threadId: "th", execTurns: 2 }]);
  });
});
