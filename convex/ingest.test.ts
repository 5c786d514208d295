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
  args: { turnId: "t1", conversationId: "conv", startedAt: 2, status: "running" },
};
const message = {
  op: "appendMessage",
  key: "m:1",
  args: { turnId: "t1", role: "user", content: "hello", createdAt: 3 },
};
const turnDone = { op: "upsertTurn", key: "t:2", args: { turnId: "t1", status: "succeeded", endedAt: 9 } };

async function batchError(promise: Promise<unknown>): Promise<Record<string, unknown>> {
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
    expect(tables.turns[0]).toMatchObject({ status: "succeeded", endedAt: 9, startedAt: 2 });
    expect(tables.messages[0]).toMatchObject({ key: "m:1", content: "hello" });
  });

  test("replaying a batch changes nothing and reports duplicates", async () => {
    const t = setup();
    const ops = [conversation, turn, message, turnDone];
    await t.mutation(internal.ingest.applyBatch, { ops });
    const before = await dump(t);
    const results = await t.mutation(internal.ingest.applyBatch, { ops });
    // The second `turn` op meets a succeeded turn: its `running` cannot undo it.
    expect(results.map((r) => r.status)).toEqual(["duplicate", "duplicate", "duplicate", "duplicate"]);
    expect(await dump(t)).toEqual(before);
  });

  test("a rejected op does not stop the others", async () => {
    const t = setup();
    const results = await t.mutation(internal.ingest.applyBatch, {
      ops: [
        { op: "dropTables", key: "x", args: {} },
        { op: "appendMessage", key: "m:bad", args: { turnId: "t1", role: "user", createdAt: 3 } },
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
      { status: "rejected", reason: "args.content must be a string, got number" },
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
    expect((await dump(t)).messages[0].key).toBe("m:1");
  });

  test(`a batch over ${MAX_BATCH_OPS} ops is refused whole`, async () => {
    const t = setup();
    const ops = Array.from({ length: MAX_BATCH_OPS + 1 }, (_, i) => ({ ...message, key: `m:${i}` }));
    const data = await batchError(t.mutation(internal.ingest.applyBatch, { ops }));
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
      ...[1, 2, 3].map((i) => ({ ...message, key: `m:${i}`, args: { ...message.args, content } })),
    ];
    const data = await batchError(t.mutation(internal.ingest.applyBatch, { ops }));
    expect(data).toMatchObject({ code: "BatchTooLarge", limit: "MAX_BATCH_BYTES", max: MAX_BATCH_BYTES });
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
      args: { callId: "c", stream: "stdout", seq, chunkBase64: "aGkK", createdAt: seq },
    }));
    const results = await t.mutation(internal.ingest.applyBatch, { ops });
    expect(results.every((r) => r.status === "inserted")).toBe(true);
    expect((await dump(t)).command_chunks).toHaveLength(MAX_BATCH_OPS);
  }, 60_000);

  test("a batch near the byte limit with big values fits, split under 1 MiB per document", async () => {
    const t = setup();
    const content = "y".repeat(3 * MiB);
    const output = "z".repeat(2 * MiB);
    const ops = [
      { ...message, args: { ...message.args, content } },
      {
        op: "upsertCommand",
        key: "cmd",
        args: { callId: "c", turnId: "t1", startedAt: 1, aggregatedOutput: output },
      },
      { op: "upsertCommand", key: "cmd2", args: { callId: "c", stdout: output, status: "completed" } },
    ];
    const results = await t.mutation(internal.ingest.applyBatch, { ops });
    expect(results).toEqual([{ status: "inserted" }, { status: "inserted" }, { status: "updated" }]);
    expect(await largestDocumentBytes(t)).toBeLessThan(MiB);
    expect((await dump(t)).blobs).toHaveLength(6 + 4 + 4);
  }, 60_000);
});
