import type { FunctionReference } from "convex/server";
import { describe, expect, test } from "vitest";
import { internal } from "./_generated/api.js";
import { dump, largestDocumentBytes, MiB, setup } from "./test.setup.js";

const MAX_DOC = 1 * MiB;

describe("app: upserts", () => {
  test("upsertConversation inserts once, then merges and reports duplicates", async () => {
    const t = setup();
    const args = { conversationId: "conv", threadId: "th", startedAt: 100, lastSeenAt: 100 };
    expect(await t.mutation(internal.app.upsertConversation, args)).toEqual({ status: "inserted" });
    expect(await t.mutation(internal.app.upsertConversation, args)).toEqual({ status: "duplicate" });
    expect(
      await t.mutation(internal.app.upsertConversation, {
        conversationId: "conv",
        clientName: null,
        lastSeenAt: 200,
        startedAt: 150,
      }),
    ).toEqual({ status: "updated" });
    const { conversations } = await dump(t);
    expect(conversations).toHaveLength(1);
    expect(conversations[0]).toMatchObject({ threadId: "th", startedAt: 100, lastSeenAt: 200 });
    expect(conversations[0]).not.toHaveProperty("clientName");
  });

  test("upsertTurn: terminal status survives a late running update; an error after completion wins", async () => {
    const t = setup();
    const base = { turnId: "t1", conversationId: "conv", startedAt: 10 };
    await t.mutation(internal.app.upsertTurn, { ...base, status: "running", model: "m" });
    expect(
      await t.mutation(internal.app.upsertTurn, { turnId: "t1", status: "succeeded", endedAt: 30 }),
    ).toEqual({ status: "updated" });
    expect(
      await t.mutation(internal.app.upsertTurn, { turnId: "t1", status: "running", endedAt: 20 }),
    ).toEqual({ status: "duplicate" });
    expect(
      await t.mutation(internal.app.upsertTurn, { turnId: "t1", status: "failed", error: "boom" }),
    ).toEqual({ status: "updated" });
    const { turns } = await dump(t);
    expect(turns).toHaveLength(1);
    expect(turns[0]).toMatchObject({
      status: "failed",
      error: "boom",
      endedAt: 30,
      model: "m",
      startedAt: 10,
    });
  });

  test("upsertTurn: a new turn without conversationId is rejected, without writing", async () => {
    const t = setup();
    expect(await t.mutation(internal.app.upsertTurn, { turnId: "t1", startedAt: 1 })).toEqual({
      status: "rejected",
      reason: "a new turns row needs conversationId",
    });
    expect((await dump(t)).turns).toEqual([]);
  });

  test("upsertCommand: output never overwrites argv, chunked sticks, status is final", async () => {
    const t = setup();
    await t.mutation(internal.app.upsertCommand, {
      callId: "c1",
      turnId: "t1",
      command: ["ls", "-la"],
      status: "running",
      startedAt: 5,
      chunked: true,
      parsedCmd: { type: "list" },
    });
    expect(
      await t.mutation(internal.app.upsertCommand, {
        callId: "c1",
        command: ["/bin/bash", "-lc", "ls -la"],
        status: "completed",
        exitCode: 0,
        stdout: "a\nb\n",
        aggregatedOutput: "a\nb\n",
        chunked: false,
        endedAt: 9,
      }),
    ).toEqual({ status: "updated" });
    await t.mutation(internal.app.upsertCommand, { callId: "c1", status: "running", endedAt: 7 });
    const { commands } = await dump(t);
    expect(commands).toHaveLength(1);
    expect(commands[0]).toMatchObject({
      command: ["ls", "-la"],
      chunked: true,
      status: "completed",
      exitCode: 0,
      stdout: "a\nb\n",
      endedAt: 9,
      startedAt: 5,
      parsedCmd: { type: "list" },
    });
  });

  test("upsertCommand: insert fallbacks (command [], chunked false, startedAt from endedAt)", async () => {
    const t = setup();
    expect(await t.mutation(internal.app.upsertCommand, { callId: "c", turnId: "t", endedAt: 42 })).toEqual({
      status: "inserted",
    });
    expect((await dump(t)).commands[0]).toMatchObject({
      command: [],
      chunked: false,
      startedAt: 42,
      endedAt: 42,
    });
  });

  test("validators refuse wrong types and missing required columns", async () => {
    const t = setup();
    await expect(t.mutation(internal.app.upsertTurn, { turnId: 5 } as never)).rejects.toThrow(
      /Validator|turnId/,
    );
    await expect(
      t.mutation(internal.app.appendMessage, { key: "k", turnId: "t", role: "user", createdAt: 1 } as never),
    ).rejects.toThrow(/content/);
    await expect(
      t.mutation(internal.app.appendRateLimit, {
        key: "k",
        turnId: "t",
        scope: "primary",
        capturedAt: 1,
        extra: 1,
      } as never),
    ).rejects.toThrow(/extra/);
  });
});

describe("app: appends are idempotent by key", () => {
  const calls: Array<[FunctionReference<"mutation", "internal">, Record<string, unknown>, string]> = [
    [
      internal.app.appendMessage,
      { key: "m1", turnId: "t", role: "assistant", content: "hi", rawContent: { text: "hi" }, createdAt: 1 },
      "messages",
    ],
    [
      internal.app.appendReasoningSection,
      { key: "r1", turnId: "t", itemId: "i", summaryText: ["plan"], position: 0, createdAt: 1 },
      "reasoning_sections",
    ],
    [
      internal.app.appendCommandChunk,
      { key: "ch1", callId: "c", stream: "stdout", seq: 0, chunkBase64: "aGk=", createdAt: 1 },
      "command_chunks",
    ],
    [
      internal.app.appendUsageSnapshot,
      { key: "u1", turnId: "t", totalTokens: 10, source: null, capturedAt: 1 },
      "usage_snapshots",
    ],
    [
      internal.app.appendRateLimit,
      { key: "l1", turnId: "t", scope: "primary", usedPercent: 12.5, unlimited: false, capturedAt: 1 },
      "rate_limits",
    ],
    [
      internal.app.appendEvent,
      { key: "e1", conversationId: "conv", method: "turn/started", payload: { a: [1, "b"] }, receivedAt: 1 },
      "events_raw",
    ],
  ];

  for (const [fn, args, table] of calls) {
    test(table, async () => {
      const t = setup();
      expect(await t.mutation(fn, args)).toEqual({ status: "inserted" });
      expect(await t.mutation(fn, args)).toEqual({ status: "duplicate" });
      const rows = (await dump(t))[table];
      expect(rows).toHaveLength(1);
      // Stored as sent, except that null (unknown) columns are left out.
      const stored = Object.fromEntries(Object.entries(args).filter(([, value]) => value !== null));
      expect(rows[0]).toMatchObject(stored);
      expect(Object.values(rows[0])).not.toContain(null);
    });
  }

  for (const [fn, { key: _key, ...args }, table] of calls) {
    test(`${table}: without a key (the spec's shape), the same record twice is one row`, async () => {
      const t = setup();
      expect(await t.mutation(fn, args)).toEqual({ status: "inserted" });
      // Fields in another order: the same record.
      const reordered = Object.fromEntries(Object.entries(args).reverse());
      expect(await t.mutation(fn, reordered)).toMatchObject({ status: "duplicate" });
      expect((await dump(t))[table]).toHaveLength(1);
    });
  }

  test("without a key, a chunk is its (callId, stream, seq) and a reasoning section its (turnId, itemId)", async () => {
    const t = setup();
    const chunk = { callId: "c", stream: "stdout", seq: 0, chunkBase64: "aGk=", createdAt: 1 };
    await t.mutation(internal.app.appendCommandChunk, chunk);
    await t.mutation(internal.app.appendCommandChunk, { ...chunk, createdAt: 2, chunkBase64: "aGk=" });
    await t.mutation(internal.app.appendCommandChunk, { ...chunk, seq: 1 });
    const section = { turnId: "t", itemId: "i", summaryText: ["plan"], createdAt: 1 };
    await t.mutation(internal.app.appendReasoningSection, section);
    await t.mutation(internal.app.appendReasoningSection, { ...section, summaryText: ["plan", "more"] });
    await t.mutation(internal.app.appendReasoningSection, { ...section, itemId: "j" });
    const rows = await dump(t);
    expect(rows.command_chunks.map((row) => row.seq)).toEqual([0, 1]);
    expect(rows.reasoning_sections.map((row) => row.itemId)).toEqual(["i", "j"]);
  });

  test("other appends without a key differ when any column does", async () => {
    const t = setup();
    const message = { turnId: "t", role: "assistant", content: "hi", createdAt: 1 };
    await t.mutation(internal.app.appendMessage, message);
    await t.mutation(internal.app.appendMessage, { ...message, content: "hi again" });
    expect((await dump(t)).messages).toHaveLength(2);
  });

  test("a command chunk is also unique per (callId, stream, seq)", async () => {
    const t = setup();
    const chunk = { callId: "c", stream: "stdout", seq: 3, chunkBase64: "YQ==", createdAt: 1 };
    await t.mutation(internal.app.appendCommandChunk, { key: "a", ...chunk });
    expect(await t.mutation(internal.app.appendCommandChunk, { key: "b", ...chunk })).toEqual({
      status: "duplicate",
      reason: "chunk c/stdout/3 is already stored",
    });
    expect(
      await t.mutation(internal.app.appendCommandChunk, { key: "c", ...chunk, stream: "stderr" }),
    ).toEqual({ status: "inserted" });
    expect((await dump(t)).command_chunks).toHaveLength(2);
  });

  test("values the table cannot hold are rejected", async () => {
    const t = setup();
    const chunk = { key: "k", callId: "c", stream: "stdout", seq: 0, createdAt: 1 };
    expect(
      await t.mutation(internal.app.appendCommandChunk, { ...chunk, chunkBase64: "not base64!" }),
    ).toEqual({
      status: "rejected",
      reason: "chunkBase64 is not valid base64",
    });
    const event = { key: "e", conversationId: "c", method: "m", receivedAt: 1 };
    expect(await t.mutation(internal.app.appendEvent, event)).toMatchObject({ status: "rejected" });
    expect(await t.mutation(internal.app.appendEvent, { ...event, payloadJson: "{oops" })).toEqual({
      status: "rejected",
      reason: "payloadJson is not valid JSON",
    });
    expect(
      await t.mutation(internal.app.appendEvent, { ...event, payload: 1, payloadJson: "1" }),
    ).toMatchObject({ status: "rejected" });
    expect(
      await t.mutation(internal.app.appendMessage, {
        key: "",
        turnId: "t",
        role: "user",
        content: "",
        createdAt: 1,
      }),
    ).toEqual({
      status: "rejected",
      reason: "appends need a non-empty key",
    });
    const tables = await dump(t);
    expect(tables.command_chunks).toEqual([]);
    expect(tables.events_raw).toEqual([]);
  });

  test("appendEvent stores a payload with forbidden keys as payloadJson text, unchanged", async () => {
    const t = setup();
    const text = '{"$schema":"http://json-schema.org","é":[1,2],"big":12345678901234567890}';
    await t.mutation(internal.app.appendEvent, {
      key: "e",
      conversationId: "c",
      method: "mcp",
      payloadJson: text,
      receivedAt: 1,
    });
    const [row] = (await dump(t)).events_raw;
    expect(row.payloadJson).toBe(text);
    expect(row).not.toHaveProperty("payload");
  });
});

describe("app: documents stay under 1 MiB", () => {
  test("a 3 MiB message is split into blobs and every document stays under the limit", async () => {
    const t = setup();
    const content = "0123456789abcdef".repeat((3 * MiB) / 16);
    await t.mutation(internal.app.appendMessage, {
      key: "big",
      turnId: "t",
      role: "assistant",
      content,
      createdAt: 1,
    });
    const { messages, blobs } = await dump(t);
    expect(messages[0].content).toBe("");
    expect(blobs.length).toBe(6);
    expect(await largestDocumentBytes(t)).toBeLessThan(MAX_DOC);
  });

  test("a huge safe payload is spilled as JSON and a document that cannot fit is rejected", async () => {
    const t = setup();
    const payload = { lines: Array.from({ length: 4000 }, (_, i) => `${i}:${"x".repeat(500)}`) };
    expect(
      await t.mutation(internal.app.appendEvent, {
        key: "e",
        conversationId: "c",
        method: "m",
        payload,
        receivedAt: 1,
      }),
    ).toEqual({
      status: "inserted",
    });
    expect(await largestDocumentBytes(t)).toBeLessThan(MAX_DOC);
    // `cwd` is not a spillable column: 2 MiB of it cannot be stored.
    const result = await t.mutation(internal.app.upsertCommand, {
      callId: "c",
      turnId: "t",
      startedAt: 1,
      cwd: "d".repeat(2 * MiB),
    });
    expect(result.status).toBe("rejected");
    expect(result.reason).toMatch(/under 1048576/);
    expect((await dump(t)).commands).toEqual([]);
  });

  test("re-sending a spilled upsert is a duplicate; changing it replaces the blobs", async () => {
    const t = setup();
    const output = "o".repeat(2 * MiB);
    const command = { callId: "c", turnId: "t", startedAt: 1, aggregatedOutput: output };
    expect(await t.mutation(internal.app.upsertCommand, command)).toEqual({ status: "inserted" });
    expect(await t.mutation(internal.app.upsertCommand, command)).toEqual({ status: "duplicate" });
    expect(await t.mutation(internal.app.upsertCommand, { callId: "c", status: "completed" })).toEqual({
      status: "updated",
    });
    expect((await dump(t)).blobs).toHaveLength(4);
    expect(await t.mutation(internal.app.upsertCommand, { callId: "c", aggregatedOutput: "short" })).toEqual({
      status: "updated",
    });
    const { blobs, commands } = await dump(t);
    expect(blobs).toEqual([]);
    expect(commands[0]).toMatchObject({ aggregatedOutput: "short", status: "completed" });
    expect(commands[0]).not.toHaveProperty("spilled");
  });

  test("a spilled argv is still never overwritten", async () => {
    const t = setup();
    const argv = ["bash", "-lc", "x".repeat(200_000)];
    await t.mutation(internal.app.upsertCommand, { callId: "c", turnId: "t", startedAt: 1, command: argv });
    expect(await t.mutation(internal.app.upsertCommand, { callId: "c", command: ["other"] })).toEqual({
      status: "duplicate",
    });
    expect((await dump(t)).blobs).toHaveLength(1);
  });
});
