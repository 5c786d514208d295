// Values too large for their document live in `blobs` as ordered parts (docs/operations.md).
//
// A row's "logical" form holds every column's real value; its stored form replaces each spilled
// column by a placeholder and lists it in `spilled` ({field, json, parts, stage?}). Strings are stored
// as they are; other values as the JSON text of `convexToJson` (lossless for every Convex value).
// The parts of an entry with a `stage` were uploaded before the op (lib/stages.ts) and are owned by
// that stage key instead of the document.
import { convexToJson, getConvexSize, jsonToConvex, type Value } from "convex/values";
import type { Doc, TableNames } from "../_generated/dataModel.js";
import type { MutationCtx, QueryCtx } from "../_generated/server.js";
import { BLOB_PART_BYTES, INLINE_VALUE_BYTES } from "./limits.js";

export type Row = Record<string, Value | undefined>;
export type SpillEntry = { field: string; json: boolean; parts: number; stage?: string };
export type Spill = { field: string; json: boolean; parts: string[] };

/**
 * Columns that may leave their document, with the placeholder the stored row keeps in their place
 * (`undefined` = absent; required columns keep an empty value of their type).
 */
const SPILLABLE: Partial<Record<TableNames, Row>> = {
  turns: { error: undefined },
  messages: { content: "", rawContent: undefined, rawContentJson: undefined },
  reasoning_sections: { summaryText: undefined, rawContent: undefined, rawContentJson: undefined },
  commands: {
    command: [],
    parsedCmd: undefined,
    parsedCmdJson: undefined,
    stdout: undefined,
    stderr: undefined,
    aggregatedOutput: undefined,
  },
  command_chunks: { chunkBase64: "" },
  events_raw: { payload: undefined, payloadJson: undefined },
};

export function isSpillable(table: TableNames, field: string): boolean {
  return Object.prototype.hasOwnProperty.call(SPILLABLE[table] ?? {}, field);
}

const encoder = new TextEncoder();

/** Splits text into parts of at most `maxBytes` UTF-8 bytes, never inside a surrogate pair. */
export function splitText(text: string, maxBytes: number = BLOB_PART_BYTES): string[] {
  const parts: string[] = [];
  let start = 0;
  while (start < text.length) {
    let end = Math.min(text.length, start + maxBytes);
    for (;;) {
      const code = text.charCodeAt(end - 1);
      if (end < text.length && code >= 0xd800 && code <= 0xdbff) end -= 1; // keep pairs whole
      const bytes = encoder.encode(text.slice(start, end)).length;
      if (bytes <= maxBytes) break;
      // Shrink in proportion to the overshoot (non-ASCII text), then re-measure.
      end = start + Math.max(1, Math.floor(((end - start) * maxBytes) / bytes));
    }
    parts.push(text.slice(start, end));
    start = end;
  }
  return parts;
}

function encode(value: Value): { json: boolean; text: string } {
  return typeof value === "string"
    ? { json: false, text: value }
    : { json: true, text: JSON.stringify(convexToJson(value)) };
}

/**
 * The stored form of a logical row: each spillable column over INLINE_VALUE_BYTES is replaced by
 * its placeholder and returned as a `Spill` to write. `keep` lists columns already in `blobs` (an
 * unchanged spilled value, or a value staged for this op): they stay where they are.
 */
export function planSpill(
  table: TableNames,
  row: Row,
  keep: SpillEntry[] = [],
): { doc: Row; spills: Spill[] } {
  const placeholders = SPILLABLE[table] ?? {};
  const doc: Row = { ...row };
  const entries: SpillEntry[] = [...keep];
  const spills: Spill[] = [];
  for (const [field, placeholder] of Object.entries(placeholders)) {
    const value = row[field];
    const kept = keep.some((entry) => entry.field === field);
    if (!kept && (value === undefined || getConvexSize(value) <= INLINE_VALUE_BYTES)) continue;
    doc[field] = placeholder;
    if (kept || value === undefined) continue;
    const { json, text } = encode(value);
    const parts = splitText(text);
    spills.push({ field, json, parts });
    entries.push({ field, json, parts: parts.length });
  }
  doc.spilled = entries.length > 0 ? entries : undefined;
  return { doc, spills };
}

export async function writeBlobs(
  ctx: MutationCtx,
  ownerTable: TableNames,
  ownerId: string,
  spills: Spill[],
): Promise<void> {
  for (const { field, parts } of spills) {
    for (let part = 0; part < parts.length; part += 1) {
      await ctx.db.insert("blobs", { ownerTable, ownerId, field, part, data: parts[part] });
    }
  }
}

/** Every blob part of one owner (or of one of its fields), ordered by (field, part). One index range. */
export async function loadBlobs(ctx: QueryCtx, ownerId: string, field?: string): Promise<Doc<"blobs">[]> {
  return await ctx.db
    .query("blobs")
    .withIndex("by_owner", (q) =>
      field === undefined ? q.eq("ownerId", ownerId) : q.eq("ownerId", ownerId).eq("field", field),
    )
    .collect();
}

/** Reassembles the spilled columns named by `entries` from their parts. */
export function assemble(entries: SpillEntry[], blobs: Doc<"blobs">[]): Row {
  const values: Row = {};
  for (const { field, json, parts } of entries) {
    const chunks = blobs.filter((blob) => blob.field === field).map((blob) => blob.data);
    if (chunks.length !== parts) {
      throw new Error(`blobs: ${field} has ${chunks.length} of ${parts} parts`);
    }
    const text = chunks.join("");
    values[field] = json ? jsonToConvex(JSON.parse(text)) : text;
  }
  return values;
}
