import { describe, expect, test } from "vitest";
import { api, internal } from "./_generated/api.js";
import { MiB, setupAsAdmin, type Accessor } from "./test.setup.js";

const b64 = (bytes: number[]) => btoa(String.fromCharCode(...bytes));
const utf8 = (text: string) => [...new TextEncoder().encode(text)];

async function apply(t: Accessor, ops: Array<{ op: string; key: string; args: Record<string, unknown> }>) {
  return await t.mutation(internal.ingest.applyBatch, { ops });
}

describe("history:getConversation", () => {
  test("returns the conversation and its turns ordered by startedAt", async () => {
    const t = setupAsAdmin();
    await apply(t, [
      {
        op: "upsertConversation",
        key: "c",
        args: { conversationId: "conv", clientName: "openwebui", startedAt: 1, lastSeenAt: 5 },
      },
      { op: "upsertTurn", key: "t2", args: { turnId: "t2", conversationId: "conv", startedAt: 20 } },
      { op: "upsertTurn", key: "t1", args: { turnId: "t1", conversationId: "conv", startedAt: 10 } },
      { op: "upsertTurn", key: "t3", args: { turnId: "t3", conversationId: "other", startedAt: 15 } },
    ]);
    const result = await t.query(api.history.getConversation, { conversationId: "conv" });
    const { conversation, turns } = result!;
    expect(conversation).toMatchObject({ conversationId: "conv", clientName: "openwebui" });
    expect(turns.map((turn) => turn.turnId)).toEqual(["t1", "t2"]);
  });

  test("an unknown conversation is null, even when turns name it", async () => {
    const t = setupAsAdmin();
    expect(await t.query(api.history.getConversation, { conversationId: "nope" })).toBeNull();
    await apply(t, [
      { op: "upsertTurn", key: "t", args: { turnId: "t", conversationId: "early", startedAt: 1 } },
    ]);
    expect(await t.query(api.history.getConversation, { conversationId: "early" })).toBeNull();
    await apply(t, [{ op: "upsertConversation", key: "c", args: { conversationId: "early", startedAt: 1 } }]);
    expect((await t.query(api.history.getConversation, { conversationId: "early" }))?.turns).toHaveLength(1);
  });
});

describe("history:getTurn", () => {
  test("returns the turn with its children, ordered, large values reassembled", async () => {
    const t = setupAsAdmin();
    const bigMessage = "\u00e9t\u00e9 ".repeat((3 * MiB) / 6); // 3 MiB of UTF-8, non-ASCII
    const output = "out\n".repeat((2 * MiB) / 4);
    await apply(t, [
      {
        op: "upsertTurn",
        key: "t",
        args: { turnId: "t", conversationId: "c", startedAt: 1, status: "running" },
      },
      {
        op: "appendMessage",
        key: "m2",
        args: { turnId: "t", role: "assistant", content: bigMessage, createdAt: 20 },
      },
      { op: "appendMessage", key: "m1", args: { turnId: "t", role: "user", content: "hi", createdAt: 10 } },
      {
        op: "appendReasoningSection",
        key: "r2",
        args: { turnId: "t", itemId: "b", summaryText: ["second"], position: 1, createdAt: 5 },
      },
      {
        op: "appendReasoningSection",
        key: "r1",
        args: { turnId: "t", itemId: "a", summaryText: ["first"], position: 0, createdAt: 6 },
      },
      { op: "upsertCommand", key: "c2", args: { callId: "c2", turnId: "t", startedAt: 30, command: ["ls"] } },
      {
        op: "upsertCommand",
        key: "c1",
        args: {
          callId: "c1",
          turnId: "t",
          startedAt: 25,
          aggregatedOutput: output,
          parsedCmdJson: '{"$type":"read"}',
        },
      },
      { op: "appendUsageSnapshot", key: "u2", args: { turnId: "t", totalTokens: 20, capturedAt: 40 } },
      { op: "appendUsageSnapshot", key: "u1", args: { turnId: "t", totalTokens: 10, capturedAt: 30 } },
      {
        op: "appendRateLimit",
        key: "l1",
        args: { turnId: "t", scope: "primary", usedPercent: 50, capturedAt: 30 },
      },
    ]);
    const turn = (await t.query(api.history.getTurn, { turnId: "t" }))!;
    expect(turn.turn).toMatchObject({ turnId: "t", status: "running" });
    expect(turn.messages.map((m) => m.createdAt)).toEqual([10, 20]);
    expect(turn.messages[1].content).toBe(bigMessage);
    expect(turn.messages[1]).not.toHaveProperty("spilled");
    expect(turn.reasoningSections.map((r) => r.itemId)).toEqual(["a", "b"]);
    expect(turn.commands.map((c) => c.callId)).toEqual(["c1", "c2"]);
    expect(turn.commands[0].aggregatedOutput).toBe(output);
    // `$type` cannot be a Convex field name: the original text comes back, for JSON.parse.
    expect(turn.commands[0].parsedCmdJson).toBe('{"$type":"read"}');
    expect(turn.commands[0]).not.toHaveProperty("parsedCmd");
    expect(turn.usageSnapshots.map((u) => u.totalTokens)).toEqual([10, 20]);
    expect(turn.rateLimits).toHaveLength(1);
  });

  test("an unknown turn is null, even when rows name it", async () => {
    const t = setupAsAdmin();
    await apply(t, [
      { op: "appendMessage", key: "m", args: { turnId: "nope", role: "user", content: "hi", createdAt: 1 } },
    ]);
    expect(await t.query(api.history.getTurn, { turnId: "nope" })).toBeNull();
  });
});

describe("history:getCommandOutput", () => {
  test("joins chunks per stream in seq order and decodes UTF-8 with replacement", async () => {
    const t = setupAsAdmin();
    const e = utf8("\u00e9"); // two bytes, split across chunks
    const chunks = [
      { seq: 3, stream: "stdout", bytes: [e[1], ...utf8("!\n")] },
      { seq: 0, stream: "stdout", bytes: utf8("caf") },
      { seq: 1, stream: "stderr", bytes: [0x77, 0x61, 0xff, 0x72, 0x6e] }, // invalid byte 0xff
      { seq: 2, stream: "stdout", bytes: [e[0]] },
      { seq: 4, stream: "pty", bytes: utf8("+") },
    ];
    await apply(
      t,
      chunks.map(({ seq, stream, bytes }) => ({
        op: "appendCommandChunk",
        key: `k${seq}`,
        args: { callId: "c", stream, seq, chunkBase64: b64(bytes), createdAt: seq },
      })),
    );
    expect(await t.query(api.history.getCommandOutput, { callId: "c" })).toEqual({
      callId: "c",
      chunkCount: 5,
      stdout: "caf\u00e9!\n+",
      stderr: "wa\ufffdrn",
    });
  });

  test("a chunk too large for a document is spilled and still decoded", async () => {
    const t = setupAsAdmin();
    const text = "line of output\n".repeat(100_000); // 1.5 MB; 2 MB once base64
    const bytes = utf8(text);
    let binary = "";
    for (const byte of bytes) binary += String.fromCharCode(byte);
    await t.mutation(internal.app.appendCommandChunk, {
      key: "k",
      callId: "c",
      stream: "stdout",
      seq: 0,
      chunkBase64: btoa(binary),
      createdAt: 1,
    });
    const output = await t.query(api.history.getCommandOutput, { callId: "c" });
    expect(output?.stdout).toBe(text);
  });

  test("without chunks, the command's own stdout/stderr (reassembled when large), else its merged output; unknown callId is null", async () => {
    const t = setupAsAdmin();
    expect(await t.query(api.history.getCommandOutput, { callId: "none" })).toBeNull();
    const stdout = "s".repeat(2 * MiB);
    await t.mutation(internal.app.upsertCommand, {
      callId: "c",
      turnId: "t",
      startedAt: 1,
      stdout,
      stderr: "warn",
    });
    expect(await t.query(api.history.getCommandOutput, { callId: "c" })).toEqual({
      callId: "c",
      chunkCount: 0,
      stdout,
      stderr: "warn",
      call: { command: [] },
    });
    await t.mutation(internal.app.upsertCommand, {
      callId: "m",
      turnId: "t",
      startedAt: 1,
      aggregatedOutput: "merged out+err",
    });
    expect(await t.query(api.history.getCommandOutput, { callId: "m" })).toEqual({
      callId: "m",
      chunkCount: 0,
      stdout: "merged out+err",
      stderr: "",
      call: { command: [] },
      aggregatedOutput: "merged out+err",
      merged: true,
    });
    // Streamed v2 chunks that missed the first delta: the longer final output comes along.
    await t.mutation(internal.app.upsertCommand, {
      callId: "v2",
      turnId: "t",
      startedAt: 1,
      aggregatedOutput: "tick 1\ntick 2\n",
    });
    await t.mutation(internal.app.appendCommandChunk, {
      callId: "v2",
      stream: "stdout",
      chunkBase64: btoa("tick 2\n"),
      encoding: "utf-8-merged",
      createdAt: 2,
    });
    expect(await t.query(api.history.getCommandOutput, { callId: "v2" })).toEqual({
      callId: "v2",
      chunkCount: 1,
      stdout: "tick 2\n",
      stderr: "",
      call: { command: [] },
      aggregatedOutput: "tick 1\ntick 2\n",
      merged: true,
    });
    await t.mutation(internal.app.upsertCommand, { callId: "q", turnId: "t", startedAt: 1 });
    expect(await t.query(api.history.getCommandOutput, { callId: "q" })).toEqual({
      callId: "q",
      chunkCount: 0,
      stdout: "",
      stderr: "",
      call: { command: [] },
    });
  });
});

describe("history:listEvents", () => {
  test("pages through a conversation's events in receivedAt order", async () => {
    const t = setupAsAdmin();
    await apply(
      t,
      [5, 1, 4, 2, 3].map((n) => ({
        op: "appendEvent",
        key: `e${n}`,
        args: { conversationId: "conv", method: "m", payload: { n }, receivedAt: n * 100 },
      })),
    );
    const first = await t.query(api.history.listEvents, {
      conversationId: "conv",
      paginationOpts: { numItems: 3, cursor: null },
    });
    expect(first.page.map((e) => e.payload)).toEqual([{ n: 1 }, { n: 2 }, { n: 3 }]);
    expect(first.isDone).toBe(false);
    const second = await t.query(api.history.listEvents, {
      conversationId: "conv",
      paginationOpts: { numItems: 3, cursor: first.continueCursor },
    });
    expect(second.page.map((e) => e.receivedAt)).toEqual([400, 500]);
    expect(second.isDone).toBe(true);
  });

  test("payloadJson round-trip: forbidden keys come back as the original text, safe JSON as a value", async () => {
    const t = setupAsAdmin();
    const forbidden =
      '{"$schema":"https://json-schema.org/draft/2020-12/schema","properties":{"caf\u00e9":{"type":"string"}}}';
    const bigInt = '{"id":123456789012345678901234567890}';
    const safe = '{"method":"x","params":[1,2,{"ok":true}]}';
    await apply(t, [
      {
        op: "appendEvent",
        key: "e1",
        args: { conversationId: "c", method: "m", payloadJson: forbidden, receivedAt: 1 },
      },
      {
        op: "appendEvent",
        key: "e2",
        args: { conversationId: "c", method: "m", payloadJson: bigInt, receivedAt: 2 },
      },
      {
        op: "appendEvent",
        key: "e3",
        args: { conversationId: "c", method: "m", payloadJson: safe, receivedAt: 3 },
      },
    ]);
    const { page } = await t.query(api.history.listEvents, {
      conversationId: "c",
      paginationOpts: { numItems: 10, cursor: null },
    });
    expect(page[0].payloadJson).toBe(forbidden);
    expect(JSON.parse(page[0].payloadJson as string)).toEqual(JSON.parse(forbidden));
    expect(page[0]).not.toHaveProperty("payload");
    expect(page[1].payloadJson).toBe(bigInt);
    expect(page[2].payload).toEqual(JSON.parse(safe));
    expect(page[2]).not.toHaveProperty("payloadJson");
  });

  test("a 3 MiB payloadJson is split and comes back byte for byte", async () => {
    const t = setupAsAdmin();
    const text = JSON.stringify({ $schema: "s", blob: "q".repeat(3 * MiB) });
    await t.mutation(internal.app.appendEvent, {
      key: "e",
      conversationId: "c",
      method: "m",
      payloadJson: text,
      receivedAt: 1,
    });
    const { page } = await t.query(api.history.listEvents, {
      conversationId: "c",
      paginationOpts: { numItems: 1, cursor: null },
    });
    expect(page[0].payloadJson).toBe(text);
  });
});
