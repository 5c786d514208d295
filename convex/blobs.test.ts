import { getConvexSize } from "convex/values";
import { describe, expect, test } from "vitest";
import { assemble, planSpill, splitText } from "./lib/blobs.js";
import { BLOB_PART_BYTES, INLINE_VALUE_BYTES } from "./lib/limits.js";

const utf8 = (text: string) => new TextEncoder().encode(text).length;

describe("splitText", () => {
  test("ASCII splits at the byte budget and rejoins exactly", () => {
    const text = "x".repeat(2 * BLOB_PART_BYTES + 10);
    const parts = splitText(text);
    expect(parts.map((part) => part.length)).toEqual([BLOB_PART_BYTES, BLOB_PART_BYTES, 10]);
    expect(parts.join("")).toBe(text);
  });

  test("multi-byte text: every part within budget, no surrogate pair cut", () => {
    const text = "a€😀".repeat(50_000); // 1, 3 and 4 UTF-8 bytes
    const parts = splitText(text, 4096);
    expect(parts.join("")).toBe(text);
    for (const part of parts) {
      expect(utf8(part)).toBeLessThanOrEqual(4096);
      const last = part.charCodeAt(part.length - 1);
      expect(last >= 0xd800 && last <= 0xdbff).toBe(false);
    }
  });

  test("empty text has no parts", () => {
    expect(splitText("")).toEqual([]);
  });
});

describe("planSpill", () => {
  test("small values stay inline", () => {
    const row = { key: "k", turnId: "t", role: "user", content: "hi", createdAt: 1 };
    expect(planSpill("messages", row)).toEqual({ doc: { ...row, spilled: undefined }, spills: [] });
  });

  test("large values move out, leaving placeholders, and reassemble losslessly", () => {
    const content = "c".repeat(INLINE_VALUE_BYTES + 1);
    const rawContent = { items: ["r".repeat(INLINE_VALUE_BYTES)], n: 1n };
    const { doc, spills } = planSpill("messages", {
      key: "k",
      turnId: "t",
      role: "user",
      content,
      rawContent,
      createdAt: 1,
    });
    expect(doc.content).toBe("");
    expect(doc.rawContent).toBeUndefined();
    expect(doc.spilled).toEqual([
      { field: "content", json: false, parts: 1 },
      { field: "rawContent", json: true, parts: 1 },
    ]);
    expect(getConvexSize(doc as never)).toBeLessThan(1000);
    const blobs = spills.flatMap(({ field, parts }) =>
      parts.map((data, part) => ({
        _id: "" as never,
        _creationTime: 0,
        ownerTable: "messages",
        ownerId: "m",
        field,
        part,
        data,
      })),
    );
    expect(assemble(doc.spilled as never, blobs)).toEqual({ content, rawContent });
  });

  test("a column in `keep` keeps its placeholder without being spilled again", () => {
    const keep = [{ field: "stdout", json: false, parts: 3 }];
    const { doc, spills } = planSpill("commands", { callId: "c", stdout: undefined, command: [] }, keep);
    expect(doc.spilled).toEqual(keep);
    expect(spills).toEqual([]);
  });

  test("assemble refuses missing parts", () => {
    expect(() => assemble([{ field: "content", json: false, parts: 2 }], [])).toThrow(/0 of 2 parts/);
  });
});
