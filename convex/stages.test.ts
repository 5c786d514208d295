import { ConvexError } from "convex/values";
import { afterEach, beforeEach, describe, expect, test, vi } from "vitest";
import { api, internal } from "./_generated/api.js";
import { splitText } from "./lib/blobs.js";
import { ADMIN, dump, largestDocumentBytes, MiB, setup, type Backend } from "./test.setup.js";

/** Stages `value` the way the daemon does (strings as they are, other values as JSON text). */
async function stage(t: Backend, stageKey: string, field: string, value: unknown) {
  const json = typeof value !== "string";
  const parts = splitText(json ? JSON.stringify(value) : (value as string));
  for (let part = 0; part < parts.length; part += 1) {
    await t.mutation(internal.ingest.stageBlobPart, { stageKey, field, part, data: parts[part] });
  }
  return { field, json, parts: parts.length, stageKey };
}

async function apply(t: Backend, op: string, key: string, args: Record<string, unknown>) {
  const [result] = await t.mutation(internal.ingest.applyBatch, { ops: [{ op, key, args }] });
  return result;
}

async function errorData(promise: Promise<unknown>): Promise<Record<string, unknown>> {
  const error = await promise.then(
    () => {
      throw new Error("the call succeeded");
    },
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(ConvexError);
  return (error as { data: Record<string, unknown> }).data;
}

const event = { conversationId: "conv", method: "exec_command_end", receivedAt: 1 };
const command = { callId: "call", turnId: "t1", startedAt: 1 };

/** The command "call" as `history:getTurn` shows it. */
async function commandRow(t: Backend) {
  const turn = { turnId: "t1", conversationId: "conv", startedAt: 1 };
  await apply(t, "upsertTurn", "t:1", turn);
  return (await t.withIdentity(ADMIN).query(api.history.getTurn, { turnId: "t1" }))?.commands[0];
}

describe("ingest:stageBlobPart", () => {
  test("the same part twice is stored once", async () => {
    const t = setup();
    const part = { stageKey: "s:1", field: "payload", part: 0, data: "abc" };
    expect(await t.mutation(internal.ingest.stageBlobPart, part)).toEqual({ status: "inserted" });
    expect(await t.mutation(internal.ingest.stageBlobPart, part)).toEqual({ status: "duplicate" });
    await t.mutation(internal.ingest.stageBlobPart, { ...part, part: 1, data: "def" });
    const tables = await dump(t);
    expect(tables.blobs.map((blob) => [blob.ownerId, blob.part, blob.data])).toEqual([
      ["s:1", 0, "abc"],
      ["s:1", 1, "def"],
    ]);
    expect(tables.stages).toMatchObject([{ stageKey: "s:1", field: "payload", parts: [0, 1] }]);
  });

  test("parts that cannot be right are refused", async () => {
    const t = setup();
    const part = { stageKey: "s:1", field: "payload", part: 0, data: "abc" };
    for (const bad of [{ part: -1 }, { part: 0.5 }, { data: "" }, { data: "x".repeat(512 * 1024 + 1) }]) {
      expect(await errorData(t.mutation(internal.ingest.stageBlobPart, { ...part, ...bad }))).toMatchObject({
        code: "BadStagePart",
      });
    }
    expect((await dump(t)).blobs).toEqual([]);
  });
});

describe("ops with staged values", () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  test("an append stores its staged value as is, and reads back whole", async () => {
    const t = setup();
    const payload = { msg: { type: "exec_command_end", stdout: "é😀x".repeat(300_000), n: [1, 2.5, null] } };
    const ref = await stage(t, "s:e1", "payload", payload);
    expect(ref.parts).toBeGreaterThan(1);
    expect(await apply(t, "appendEvent", "e:1", { ...event, staged: [ref] })).toEqual({ status: "inserted" });
    expect(await apply(t, "appendEvent", "e:1", { ...event, staged: [ref] })).toEqual({
      status: "duplicate",
    });
    const page = await t.withIdentity(ADMIN).query(api.history.listEvents, {
      conversationId: "conv",
      paginationOpts: { numItems: 10, cursor: null },
    });
    expect(page.page).toHaveLength(1);
    expect(page.page[0].payload).toEqual(payload);
    const tables = await dump(t);
    expect(tables.events_raw[0].spilled).toEqual([
      { field: "payload", json: true, parts: ref.parts, stage: "s:e1" },
    ]);
    expect(tables.blobs).toHaveLength(ref.parts);
    expect(await largestDocumentBytes(t)).toBeLessThan(MiB);
  });

  test("a required string column can be staged", async () => {
    const t = setup();
    const content = "m".repeat(600_000);
    const ref = await stage(t, "s:m1", "content", content);
    const args = { turnId: "t1", role: "assistant", createdAt: 1, staged: [ref] };
    expect(await apply(t, "appendMessage", "m:1", args)).toEqual({ status: "inserted" });
    const turn = await t.mutation(internal.ingest.applyBatch, {
      ops: [{ op: "upsertTurn", key: "t", args: { turnId: "t1", conversationId: "conv", startedAt: 1 } }],
    });
    expect(turn).toEqual([{ status: "inserted" }]);
    expect((await t.withIdentity(ADMIN).query(api.history.getTurn, { turnId: "t1" }))?.messages[0].content).toBe(content);
  });

  test("an op whose staged parts are incomplete fails whole and writes nothing", async () => {
    const t = setup();
    const ref = await stage(t, "s:e1", "payload", "p".repeat(2 * 512 * 1024));
    const data = await errorData(
      t.mutation(internal.ingest.applyBatch, {
        ops: [{ op: "appendEvent", key: "e:1", args: { ...event, staged: [{ ...ref, parts: 3 }] } }],
      }),
    );
    expect(data).toMatchObject({ code: "StagedPartsMissing", stageKey: "s:e1", field: "payload" });
    expect((await dump(t)).events_raw).toEqual([]);
  });

  test("staged references that cannot be right are rejected", async () => {
    const t = setup();
    const ref = { field: "payload", json: true, parts: 1, stageKey: "s:x" };
    const cases: Array<[string, Record<string, unknown>, string]> = [
      ["appendEvent", { ...event, staged: [{ ...ref, field: "method" }] }, "method cannot be staged"],
      ["appendEvent", { ...event, staged: [{ ...ref, parts: 0 }] }, "positive number of parts"],
      ["appendEvent", { ...event, payload: 1, staged: [ref] }, "payload is sent twice"],
      [
        "appendEvent",
        { ...event, staged: [ref, { ...ref, field: "payloadJson", json: false }] },
        "sent twice",
      ],
      ["appendEvent", { ...event, staged: [{ ...ref, extra: 1 }] }, "extra is not a column"],
      [
        "upsertCommand",
        { ...command, staged: [{ ...ref, field: "stdout" }] },
        "staged stdout cannot be JSON",
      ],
      ["upsertCommand", { ...command, staged: [{ ...ref, field: "command" }] }, "command cannot be staged"],
    ];
    for (const [op, args, reason] of cases) {
      const result = await apply(t, op, "k:1", args);
      expect(result.status).toBe("rejected");
      expect(result.reason).toContain(reason);
    }
  });

  test("upserts: a staged value replaces the stored one, the same stage again is a duplicate", async () => {
    const t = setup();
    const inline = "i".repeat(100_000); // spilled into blobs owned by the row
    expect(await apply(t, "upsertCommand", "x:1", { ...command, aggregatedOutput: inline })).toEqual({
      status: "inserted",
    });
    const first = "a".repeat(700_000);
    const a = await stage(t, "s:a", "aggregatedOutput", first);
    const withA = { callId: "call", status: "completed", staged: [a] };
    expect(await apply(t, "upsertCommand", "x:2", withA)).toEqual({ status: "updated" });
    expect((await commandRow(t))?.aggregatedOutput).toBe(first);
    expect(
      (await dump(t)).blobs.every((blob) => blob.ownerId === "s:a"),
      "the row's old parts are gone",
    ).toBe(true);
    expect(await apply(t, "upsertCommand", "x:2", withA)).toEqual({ status: "duplicate" });

    // A staged value for a column the row already holds from the same stage writes nothing twice.
    const stdout = "o".repeat(600_000);
    const o = await stage(t, "s:o", "stdout", stdout);
    expect(await apply(t, "upsertCommand", "x:3", { callId: "call", exitCode: 0, staged: [a, o] })).toEqual({
      status: "updated",
    });
    const second = "b".repeat(900_000);
    const b = await stage(t, "s:b", "aggregatedOutput", second);
    expect(await apply(t, "upsertCommand", "x:4", { callId: "call", staged: [b] })).toEqual({
      status: "updated",
    });
    await t.finishAllScheduledFunctions(vi.runAllTimers);

    const row = await commandRow(t);
    expect(row).toMatchObject({ aggregatedOutput: second, stdout, status: "completed", exitCode: 0 });
    expect(await t.withIdentity(ADMIN).query(api.history.getCommandOutput, { callId: "call" })).toEqual({
      callId: "call",
      chunkCount: 0,
      stdout,
      stderr: "",
      call: { command: [] },
      aggregatedOutput: second,
    });
    const tables = await dump(t);
    expect(new Set(tables.blobs.map((blob) => blob.ownerId))).toEqual(new Set(["s:o", "s:b"]));
    expect(tables.stages.map((s) => s.stageKey).sort()).toEqual(["s:b", "s:o"]);
    expect(await largestDocumentBytes(t)).toBeLessThan(MiB);
  });

  test("upserts: a new value of the other form of an `any` column drops the staged one", async () => {
    const t = setup();
    const text = JSON.stringify({ $schema: "x".repeat(600_000) }); // unsafe for Convex: sent as text
    const ref = await stage(t, "s:p", "parsedCmdJson", text);
    expect(await apply(t, "upsertCommand", "x:1", { ...command, staged: [ref] })).toEqual({
      status: "inserted",
    });
    expect((await commandRow(t))?.parsedCmdJson).toBe(text);
    expect(await apply(t, "upsertCommand", "x:2", { callId: "call", parsedCmd: { type: "read" } })).toEqual({
      status: "updated",
    });
    await t.finishAllScheduledFunctions(vi.runAllTimers);
    const row = await commandRow(t);
    expect(row?.parsedCmd).toEqual({ type: "read" });
    expect(row?.parsedCmdJson).toBeUndefined();
    const tables = await dump(t);
    expect([tables.blobs, tables.stages]).toEqual([[], []]);
  });

  test("a replayed old op re-staged while its value is being dropped keeps it", async () => {
    const t = setup();
    const one = await stage(t, "s:1", "stdout", "1".repeat(600_000));
    const two = await stage(t, "s:2", "stdout", "2".repeat(600_000));
    await apply(t, "upsertCommand", "x:1", { ...command, staged: [one] });
    await apply(t, "upsertCommand", "x:2", { callId: "call", staged: [two] }); // schedules dropping s:1
    // Before the drop runs, the first op is replayed: staged again (duplicates) and applied.
    await stage(t, "s:1", "stdout", "1".repeat(600_000));
    expect(await apply(t, "upsertCommand", "x:1", { ...command, staged: [one] })).toEqual({
      status: "updated",
    });
    await t.finishAllScheduledFunctions(vi.runAllTimers);
    expect((await commandRow(t))?.stdout).toBe("1".repeat(600_000));
    expect((await dump(t)).stages.map((s) => s.stageKey)).toEqual(["s:1"]);
  });

  test("a value larger than one transaction may read is stored and replaced within the limits", async () => {
    const t = setup(); // transactionLimits: reading 16 MiB in one call would throw
    const big = "z".repeat(17 * MiB);
    const ref = await stage(t, "s:big", "aggregatedOutput", big);
    expect(await apply(t, "upsertCommand", "x:1", { ...command, staged: [ref] })).toEqual({
      status: "inserted",
    });
    const small = await stage(t, "s:small", "aggregatedOutput", "s".repeat(100_000));
    expect(await apply(t, "upsertCommand", "x:2", { callId: "call", staged: [small] })).toEqual({
      status: "updated",
    });
    await t.finishAllScheduledFunctions(vi.runAllTimers); // drops 17 MiB, 8 MiB per transaction
    const tables = await dump(t);
    expect(tables.blobs.map((blob) => blob.ownerId)).toEqual(["s:small"]);
    expect((await commandRow(t))?.aggregatedOutput).toBe("s".repeat(100_000));
  }, 120_000);
});
