// The key of an append sent without one (`app:append*` as the spec shapes them, with no `key`): the
// same logical record sent twice gets the same key, so it is stored once (docs/operations.md).
// A command chunk is its (callId, stream, seq) and a reasoning section its (turnId, itemId); the
// other appends have no narrower identity than all their columns. Keys the daemon computes look
// like `m:<hex>`, so a `natural:` key never collides with one.
import { convexToJson, type JSONValue, type Value } from "convex/values";
import type { Row } from "./blobs.js";
import type { OpName } from "./validators.js";

const IDENTITY_COLUMNS: Partial<Record<OpName, string[]>> = {
  appendCommandChunk: ["callId", "stream", "seq"],
  appendReasoningSection: ["turnId", "itemId"],
};

/** JSON with object keys sorted: one text per value, whatever order the caller sent fields in. */
function canonical(value: JSONValue): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const fields = Object.keys(value)
      .sort()
      .map((name) => `${JSON.stringify(name)}:${canonical(value[name])}`);
    return `{${fields.join(",")}}`;
  }
  return JSON.stringify(value);
}

export async function naturalKey(op: OpName, columns: Row): Promise<string> {
  // A record without one of its identity columns has no narrower identity than all its columns.
  const identityColumns = IDENTITY_COLUMNS[op];
  const complete = identityColumns?.every((name) => columns[name] != null) === true;
  const names = complete ? identityColumns : Object.keys(columns);
  // null and absent both mean "unknown" for a column: they must not make two keys.
  const identity: Record<string, Value> = {};
  for (const name of names) if (columns[name] != null) identity[name] = columns[name] as Value;
  const text = canonical(convexToJson(identity));
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  const hex = [...new Uint8Array(digest)].map((byte) => byte.toString(16).padStart(2, "0")).join("");
  return `natural:${op}:${hex}`;
}
