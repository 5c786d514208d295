import { describe, expect, test } from "vitest";
import { api, internal } from "./_generated/api.js";
import { cwdOf } from "./summaries.js";
import { setup, setupAsAdmin, type Accessor } from "./test.setup.js";

async function apply(t: Accessor, ops: Array<{ op: string; key: string; args: Record<string, unknown> }>) {
  return await t.mutation(internal.ingest.applyBatch, { ops });
}

const page = { numItems: 10, cursor: null };

async function twoConversations(t: Accessor) {
  await apply(t, [
    {
      op: "upsertConversation",
      key: "c1",
      args: {
        conversationId: "old",
        threadId: "th-old",
        clientName: "codex_exec",
        startedAt: 1,
        lastSeenAt: 10,
      },
    },
    { op: "upsertConversation", key: "c2", args: { conversationId: "new", startedAt: 5, lastSeenAt: 50 } },
    {
      op: "upsertTurn",
      key: "t1",
      args: { turnId: "t1", conversationId: "old", startedAt: 2, model: "m-1" },
    },
    {
      op: "upsertTurn",
      key: "t2",
      args: { turnId: "t2", conversationId: "old", startedAt: 3, model: "m-2" },
    },
    { op: "upsertTurn", key: "t3", args: { turnId: "t3", conversationId: "old", startedAt: 4 } },
    {
      op: "upsertCommand",
      key: "x1",
      args: { callId: "a", turnId: "t1", command: ["ls"], startedAt: 2, cwd: "/from/command" },
    },
    {
      op: "upsertCommand",
      key: "x2",
      args: { callId: "b", turnId: "t2", command: ["apply_patch", "f"], source: "file", startedAt: 3 },
    },
    {
      op: "appendEvent",
      key: "e1",
      args: {
        conversationId: "new",
        method: "session_meta",
        payload: { type: "session_meta", payload: { cwd: "/work/repo" } },
        receivedAt: 5,
      },
    },
  ]);
}

describe("summaries:listConversations", () => {
  test("most recently active first, with counts, latest model and cwd", async () => {
    const t = setupAsAdmin();
    await twoConversations(t);
    const result = await t.query(api.summaries.listConversations, { paginationOpts: page });
    expect(result.isDone).toBe(true);
    expect(result.page).toEqual([
      {
        conversationId: "new",
        startedAt: 5,
        lastSeenAt: 50,
        turns: 0,
        commands: 0,
        toolCalls: 0,
        cwd: "/work/repo",
      },
      {
        conversationId: "old",
        threadId: "th-old",
        clientName: "codex_exec",
        startedAt: 1,
        lastSeenAt: 10,
        turns: 3,
        commands: 1,
        toolCalls: 1,
        model: "m-2",
        cwd: "/from/command",
      },
    ]);
  });

  test("pages follow the cursor", async () => {
    const t = setupAsAdmin();
    await twoConversations(t);
    const first = await t.query(api.summaries.listConversations, {
      paginationOpts: { numItems: 1, cursor: null },
    });
    expect(first.page.map((row) => row.conversationId)).toEqual(["new"]);
    const second = await t.query(api.summaries.listConversations, {
      paginationOpts: { numItems: 1, cursor: first.continueCursor },
    });
    expect(second.page.map((row) => row.conversationId)).toEqual(["old"]);
  });

  test("readers only", async () => {
    const t = setup();
    await expect(t.query(api.summaries.listConversations, { paginationOpts: page })).rejects.toThrow(
      /Unauthenticated/,
    );
  });
});

describe("summaries:listUsage", () => {
  test("every snapshot with its conversation, thread and model", async () => {
    const t = setupAsAdmin();
    await twoConversations(t);
    await apply(t, [
      {
        op: "appendUsageSnapshot",
        key: "u1",
        args: { turnId: "t2", totalInputTokens: 10, cachedInputTokens: 0, outputTokens: 1, capturedAt: 3 },
      },
      {
        op: "appendUsageSnapshot",
        key: "u2",
        args: { turnId: "orphan", totalInputTokens: 5, capturedAt: 9 },
      },
    ]);
    const result = await t.query(api.summaries.listUsage, { paginationOpts: page });
    expect(result.page).toEqual([
      {
        turnId: "t2",
        conversationId: "old",
        threadId: "th-old",
        model: "m-2",
        capturedAt: 3,
        totalInputTokens: 10,
        cachedInputTokens: 0,
        outputTokens: 1,
      },
      { turnId: "orphan", capturedAt: 9, totalInputTokens: 5 },
    ]);
  });

  test("a snapshot whose totals Codex began again is marked restarted (0.63 exec resume)", async () => {
    const t = setupAsAdmin();
    await twoConversations(t);
    const run = (key: string, totalInputTokens: number, capturedAt: number) => ({
      op: "appendUsageSnapshot",
      key,
      args: { turnId: "t2", totalInputTokens, restarted: true, capturedAt },
    });
    await apply(t, [run("u1", 2300, 3), run("u2", 2700, 4)]);
    await apply(t, [{ ...run("u2", 2700, 5), args: { turnId: "t2", totalInputTokens: 2700, capturedAt: 5 } }]);
    const result = await t.query(api.summaries.listUsage, { paginationOpts: page });
    // The handler spreads the counters in (Object.fromEntries): their type is the validator's only.
    const rows = result.page as Array<Record<string, unknown>>;
    expect(rows.map((row) => [row.totalInputTokens, row.restarted, row.capturedAt])).toEqual([
      [2300, true, 3],
      [2700, true, 4],
    ]);
  });

  test("a fork's snapshots carry what it inherited, other conversations' nothing", async () => {
    const t = setupAsAdmin();
    const inherited = {
      totalInputTokens: 2300,
      cachedInputTokens: 200,
      outputTokens: 55,
      reasoningOutputTokens: 9,
      totalTokens: 2355,
    };
    await apply(t, [
      { op: "upsertConversation", key: "p", args: { conversationId: "parent", startedAt: 1 } },
      {
        op: "upsertConversation",
        key: "f",
        args: {
          conversationId: "fork",
          startedAt: 2,
          forkedFromThreadId: "parent",
          forkedFromUsage: inherited,
        },
      },
      { op: "upsertTurn", key: "tp", args: { turnId: "tp", conversationId: "parent", startedAt: 1 } },
      { op: "upsertTurn", key: "tf", args: { turnId: "tf", conversationId: "fork", startedAt: 2 } },
      { op: "appendUsageSnapshot", key: "up", args: { turnId: "tp", totalInputTokens: 2300, capturedAt: 1 } },
      { op: "appendUsageSnapshot", key: "uf", args: { turnId: "tf", totalInputTokens: 3600, capturedAt: 2 } },
    ]);
    const result = await t.query(api.summaries.listUsage, { paginationOpts: page });
    expect(result.page.map((row) => [row.conversationId, row.forkedFromUsage])).toEqual([
      ["parent", undefined],
      ["fork", inherited],
    ]);
  });
});

test("cwdOf reads the lines that name a directory", () => {
  expect(cwdOf({ type: "turn_context", payload: { cwd: "/a" } })).toBe("/a");
  expect(cwdOf({ method: "thread/started", params: { thread: { cwd: "/b" } } })).toBe("/b");
  expect(cwdOf({ method: "thread/started", params: { thread: {} } })).toBeUndefined();
  expect(cwdOf({ type: "session_meta", payload: { cwd: "" } })).toBeUndefined();
  expect(cwdOf("text")).toBeUndefined();
});
