import { describe, expect, test } from "vitest";
import { isConvexSafe } from "./lib/convexSafe.js";

function nested(depth: number): unknown {
  let value: unknown = "leaf";
  for (let i = 0; i < depth; i += 1) value = { a: value };
  return value;
}

describe("isConvexSafe (mirror of ingestor.ops.is_convex_safe)", () => {
  test("scalars", () => {
    for (const value of [null, true, false, "", "text", 0, -1.5, 2 ** 53, -(2 ** 53)]) {
      expect(isConvexSafe(value), String(value)).toBe(true);
    }
    for (const value of [2 ** 53 + 2, -(2 ** 60), NaN, Infinity, -Infinity, undefined]) {
      expect(isConvexSafe(value), String(value)).toBe(false);
    }
  });

  test("field names: no $, no empty, printable ASCII only", () => {
    expect(isConvexSafe({ schema: 1, "with space": 2, "a-b.c": 3 })).toBe(true);
    expect(isConvexSafe({ $schema: "x" })).toBe(false);
    expect(isConvexSafe({ "": 1 })).toBe(false);
    expect(isConvexSafe({ é: 1 })).toBe(false);
    expect(isConvexSafe({ "tab\there": 1 })).toBe(false);
    expect(isConvexSafe({ ok: [{ deep: { $ref: "#" } }] })).toBe(false);
    expect(isConvexSafe({ ["k".repeat(1025)]: 1 })).toBe(false);
  });

  test("nesting depth 14 is the limit (two levels under Convex's 16: document and batch args)", () => {
    expect(isConvexSafe(nested(14))).toBe(true);
    expect(isConvexSafe(nested(15))).toBe(false);
  });

  test("array and object sizes", () => {
    expect(isConvexSafe(new Array(8192).fill(1))).toBe(true);
    expect(isConvexSafe(new Array(8193).fill(1))).toBe(false);
    const fields = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`f${i}`, i]));
    expect(isConvexSafe(fields(1024))).toBe(true);
    expect(isConvexSafe(fields(1025))).toBe(false);
  });

  test("non-JSON values", () => {
    expect(isConvexSafe(5n)).toBe(true);
    expect(isConvexSafe(2n ** 64n)).toBe(false);
    expect(isConvexSafe(new ArrayBuffer(2))).toBe(true);
    expect(isConvexSafe(new Date())).toBe(false);
    expect(isConvexSafe(() => 1)).toBe(false);
  });
});
