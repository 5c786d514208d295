import { describe, expect, test } from "vitest";
import { mergeRow, missingColumns } from "./lib/merge.js";

describe("merge rules (docs/operations.md)", () => {
  test("rule 1: absent and null never erase", () => {
    const stored = { turnId: "t", conversationId: "c", model: "gpt", status: "running", startedAt: 5 };
    expect(mergeRow("turns", stored, { turnId: "t", model: null })).toEqual(stored);
    expect(mergeRow("turns", stored, { turnId: "t" })).toEqual(stored);
  });

  test("rule 2: startedAt earliest, lastSeenAt and endedAt latest", () => {
    const conversation = { conversationId: "c", startedAt: 10, lastSeenAt: 20 };
    expect(mergeRow("conversations", conversation, { startedAt: 15, lastSeenAt: 12 })).toEqual(conversation);
    expect(mergeRow("conversations", conversation, { startedAt: 5, lastSeenAt: 30 })).toEqual({
      conversationId: "c",
      startedAt: 5,
      lastSeenAt: 30,
    });
    const turn = { turnId: "t", startedAt: 10, endedAt: 50, status: "succeeded" };
    expect(mergeRow("turns", turn, { endedAt: 40 }).endedAt).toBe(50);
    expect(mergeRow("turns", turn, { endedAt: 60 }).endedAt).toBe(60);
    const command = { callId: "x", startedAt: 10, endedAt: 50, command: [], chunked: false };
    expect(mergeRow("commands", command, { startedAt: 3, endedAt: 40 })).toMatchObject({
      startedAt: 3,
      endedAt: 50,
    });
  });

  test("rule 3: turn terminal status is not moved back; failed/canceled still win", () => {
    const at = (status: string) => ({ turnId: "t", startedAt: 1, status });
    expect(mergeRow("turns", at("running"), { status: "succeeded" }).status).toBe("succeeded");
    expect(mergeRow("turns", at("succeeded"), { status: "running" }).status).toBe("succeeded");
    expect(mergeRow("turns", at("succeeded"), { status: "failed" }).status).toBe("failed");
    expect(mergeRow("turns", at("succeeded"), { status: "canceled" }).status).toBe("canceled");
    expect(mergeRow("turns", at("failed"), { status: "succeeded" }).status).toBe("failed");
    expect(mergeRow("turns", at("canceled"), { status: "running" }).status).toBe("canceled");
  });

  test("rule 3: command terminal status is final", () => {
    const at = (status: string) => ({ callId: "c", startedAt: 1, command: [], chunked: false, status });
    expect(mergeRow("commands", at("running"), { status: "completed" }).status).toBe("completed");
    expect(mergeRow("commands", at("started"), { status: "running" }).status).toBe("running");
    for (const terminal of ["completed", "failed", "declined"]) {
      for (const next of ["running", "completed", "failed", "declined"]) {
        expect(mergeRow("commands", at(terminal), { status: next }).status).toBe(terminal);
      }
    }
  });

  test("rule 4: a captured argv stays; chunked is sticky", () => {
    const stored = { callId: "c", startedAt: 1, command: ["ls", "-l"], chunked: true };
    expect(mergeRow("commands", stored, { command: ["bash", "-lc", "ls -l"], chunked: false })).toMatchObject(
      {
        command: ["ls", "-l"],
        chunked: true,
      },
    );
    const empty = { callId: "c", startedAt: 1, command: [], chunked: false };
    expect(mergeRow("commands", empty, { command: ["ls"], chunked: true })).toMatchObject({
      command: ["ls"],
      chunked: true,
    });
  });

  test("rule 5: otherwise a present value replaces; an any column replaces its Json form", () => {
    const stored = {
      callId: "c",
      startedAt: 1,
      command: [],
      chunked: false,
      cwd: "/a",
      parsedCmdJson: '{"$x":1}',
    };
    const merged = mergeRow("commands", stored, { cwd: "/b", parsedCmd: { type: "ls" } });
    expect(merged.cwd).toBe("/b");
    expect(merged.parsedCmd).toEqual({ type: "ls" });
    expect(merged).not.toHaveProperty("parsedCmdJson");
  });

  test("rule 7: a fork's inherited usage stays as first told; its link is any column", () => {
    const fork = {
      conversationId: "f",
      startedAt: 1,
      lastSeenAt: 1,
      forkedFromThreadId: "p",
      forkedFromUsage: { totalTokens: 2355 },
    };
    const later = { forkedFromUsage: { totalTokens: 3690 }, forkedFromThreadId: "q" };
    expect(mergeRow("conversations", fork, later)).toMatchObject({
      forkedFromUsage: { totalTokens: 2355 },
      forkedFromThreadId: "q",
    });
    expect(mergeRow("conversations", { conversationId: "f", startedAt: 1 }, later).forkedFromUsage).toEqual({
      totalTokens: 3690,
    });
  });

  test("insert fallbacks and required columns", () => {
    expect(mergeRow("conversations", null, { conversationId: "c", lastSeenAt: 7 })).toEqual({
      conversationId: "c",
      startedAt: 7,
      lastSeenAt: 7,
    });
    expect(mergeRow("turns", null, { turnId: "t", conversationId: "c", endedAt: 9 })).toEqual({
      turnId: "t",
      conversationId: "c",
      endedAt: 9,
      startedAt: 9,
      status: "running",
    });
    const command = mergeRow("commands", null, { callId: "x", turnId: "t", startedAt: 1 });
    expect(command).toMatchObject({ command: [], chunked: false });
    expect(missingColumns("commands", command)).toEqual([]);
    expect(missingColumns("turns", mergeRow("turns", null, { turnId: "t" }))).toEqual([
      "conversationId",
      "startedAt",
    ]);
  });
});
