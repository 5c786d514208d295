// Writing and reading rows in their logical form: blobs for big columns, the 1 MiB check, and
// value comparison for "did this upsert change anything".
import { compareValues, getDocumentSize, type Value } from "convex/values";
import type { Doc, Id, TableNames } from "../_generated/dataModel.js";
import type { MutationCtx, QueryCtx } from "../_generated/server.js";
import { assemble, loadBlobs, planSpill, writeBlobs, type Row, type SpillEntry } from "./blobs.js";
import { MAX_DOCUMENT_BYTES } from "./limits.js";
import { anySibling } from "./merge.js";
import { scheduleDrop } from "./stages.js";

/** What the row helpers need of a stored document of any table. */
export type StoredDoc = { _id: Id<TableNames>; spilled?: SpillEntry[] };

/** A stored document as the merge rules see it, with the blob parts read to build it. */
export type LoadedRow = {
  id: Id<TableNames>;
  spilled: SpillEntry[];
  row: Row;
  blobs: Doc<"blobs">[];
};

export function sameValue(a: Value | undefined, b: Value | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  return compareValues(a, b) === 0;
}

export function sameRow(a: Row, b: Row): boolean {
  const fields = new Set([...Object.keys(a), ...Object.keys(b)]);
  return [...fields].every((field) => sameValue(a[field], b[field]));
}

/** A rejection reason when `doc` could not be stored (Convex would refuse it), else null. */
function oversize(doc: Row): string | null {
  const bytes = getDocumentSize(doc as Record<string, Value>);
  return bytes < MAX_DOCUMENT_BYTES
    ? null
    : `row is ${bytes} bytes after moving large values to blobs; documents must stay under ${MAX_DOCUMENT_BYTES}`;
}

function withoutUndefined(row: Row): Record<string, Value> {
  const out: Record<string, Value> = {};
  for (const [field, value] of Object.entries(row)) if (value !== undefined) out[field] = value;
  return out;
}

/**
 * Inserts a logical row (and its blobs) whose `staged` columns are already in `blobs`. Returns a
 * rejection reason, or null on success.
 */
export async function insertRow(
  ctx: MutationCtx,
  table: TableNames,
  row: Row,
  staged: SpillEntry[] = [],
): Promise<string | null> {
  const { doc, spills } = planSpill(table, row, staged);
  const problem = oversize(doc);
  if (problem !== null) return problem;
  // The schema validates the document at runtime; the table-generic call needs this cast.
  const id = await ctx.db.insert(table, withoutUndefined(doc) as never);
  await writeBlobs(ctx, table, id, spills);
  return null;
}

/**
 * The logical row of `doc`. A spilled column is read back only when it is in `touched` (the
 * columns an op is about to merge); the others keep their placeholders, which the merge leaves
 * alone and `replaceRow` recognises as unchanged. Staged columns are never read back (they may be
 * larger than a transaction can read): they keep their placeholders too.
 */
export async function loadRow(
  ctx: QueryCtx,
  doc: StoredDoc,
  touched: ReadonlySet<string>,
): Promise<LoadedRow> {
  const { _id, _creationTime, spilled = [], ...row } = doc as StoredDoc & Row;
  const needed = spilled.filter((entry) => touched.has(entry.field) && entry.stage === undefined);
  const blobs = needed.length > 0 ? await loadBlobs(ctx, _id) : [];
  return { id: _id, spilled, row: { ...row, ...assemble(needed, blobs) }, blobs };
}

/**
 * Whether a spilled value of the stored row stays as it is. A staged value was not read back: its
 * placeholder stands in for it, so it stays unless a new value of the column, or of its other
 * form (`parsedCmd` for a staged `parsedCmdJson`), arrived inline or staged.
 */
function unchanged(
  loaded: LoadedRow,
  merged: Row,
  entry: SpillEntry,
  replaced: ReadonlySet<string>,
): boolean {
  const { field } = entry;
  if (replaced.has(field) || !sameValue(loaded.row[field], merged[field])) return false;
  const sibling = anySibling(field);
  return entry.stage === undefined || sibling === null || merged[sibling] === undefined;
}

/**
 * Replaces a loaded row by `merged`, whose `staged` columns are already in `blobs`, moving blobs as
 * needed. Rejection reason, or null.
 */
export async function replaceRow(
  ctx: MutationCtx,
  table: TableNames,
  loaded: LoadedRow,
  merged: Row,
  staged: SpillEntry[] = [],
): Promise<string | null> {
  const replaced = new Set(staged.flatMap(({ field }) => [field, anySibling(field) ?? field]));
  const keep = loaded.spilled.filter((entry) => unchanged(loaded, merged, entry, replaced));
  const { doc, spills } = planSpill(table, merged, [...keep, ...staged]);
  const problem = oversize(doc);
  if (problem !== null) return problem;
  const kept = new Set(keep);
  const stale = loaded.spilled.filter((entry) => !kept.has(entry));
  const staleFields = stale.filter((entry) => entry.stage === undefined).map((entry) => entry.field);
  for (const blob of loaded.blobs) if (staleFields.includes(blob.field)) await ctx.db.delete(blob._id);
  // Too big to delete here (reading it could exceed the transaction's limit): dropped later.
  for (const entry of stale) if (entry.stage !== undefined) await scheduleDrop(ctx, table, loaded.id, entry);
  await ctx.db.replace(loaded.id, withoutUndefined(doc) as never);
  await writeBlobs(ctx, table, loaded.id, spills);
  return null;
}

/** A stored document in logical form for the read queries: blobs reassembled, `spilled` dropped. */
export async function readRow(ctx: QueryCtx, doc: StoredDoc): Promise<Row> {
  const { spilled = [], ...row } = doc as StoredDoc & Row;
  if (spilled.length === 0) return row;
  const own = spilled.filter((entry) => entry.stage === undefined);
  const values = own.length > 0 ? assemble(own, await loadBlobs(ctx, doc._id)) : {};
  for (const entry of spilled) {
    if (entry.stage !== undefined)
      Object.assign(values, assemble([entry], await loadBlobs(ctx, entry.stage, entry.field)));
  }
  return { ...row, ...values };
}
