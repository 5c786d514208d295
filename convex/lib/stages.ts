// Staged values (docs/operations.md, "Values larger than one call"). A value too big for one
// `ingest:applyBatch` call is uploaded first, part by part, each part its own transaction
// (`ingest:stageBlobPart`); the op then carries a reference in `args.staged` instead of the value.
// Applying the op lists the parts as the row's spilled value without reading them: a transaction
// may read 16 MiB, and a staged value may be larger.
//
// Parts are `blobs` rows owned by the stage key. The `stages` manifest row of (stageKey, field)
// lists which parts exist; every writer updates it in the same transaction as the parts, so it can
// be trusted to tell whether a staged value is complete.
import { ConvexError, v, type Infer, type ObjectType } from "convex/values";
import { internal } from "../_generated/api.js";
import type { TableNames } from "../_generated/dataModel.js";
import type { MutationCtx, QueryCtx } from "../_generated/server.js";
import type { SpillEntry } from "./blobs.js";
import { BLOB_PART_BYTES, DROP_STAGE_PARTS, MAX_STAGE_PARTS } from "./limits.js";

/** The `blobs` owner table of staged parts. */
const STAGE_OWNER = "stages";

export const stagePartArgs = { stageKey: v.string(), field: v.string(), part: v.number(), data: v.string() };
export const dropStageArgs = {
  stageKey: v.string(),
  field: v.string(),
  ownerTable: v.string(),
  ownerId: v.string(),
};

/** One entry of `args.staged`: `parts` parts of `field` were staged under `stageKey`. */
export const stagedRef = v.object({
  field: v.string(),
  json: v.boolean(),
  parts: v.number(),
  stageKey: v.string(),
});
export type StagedRef = Infer<typeof stagedRef>;

const encoder = new TextEncoder();

async function manifest(ctx: QueryCtx, stageKey: string, field: string) {
  return await ctx.db
    .query("stages")
    .withIndex("by_stageKey_field", (q) => q.eq("stageKey", stageKey).eq("field", field))
    .first();
}

function refuse(message: string): never {
  // Deterministic: the same arguments would fail again, so the daemon must not retry them as is.
  throw new ConvexError({ code: "BadStagePart", message });
}

/** Stores one part. The same (stageKey, field, part) again is a `duplicate` and writes nothing. */
export async function stagePart(
  ctx: MutationCtx,
  { stageKey, field, part, data }: ObjectType<typeof stagePartArgs>,
): Promise<"inserted" | "duplicate"> {
  if (stageKey.length === 0 || field.length === 0) refuse("stageKey and field must not be empty");
  if (!Number.isInteger(part) || part < 0 || part >= MAX_STAGE_PARTS) {
    refuse(`part must be an integer in [0, ${MAX_STAGE_PARTS}), got ${part}`);
  }
  const bytes = encoder.encode(data).length;
  if (bytes === 0 || bytes > BLOB_PART_BYTES)
    refuse(`a part holds 1 to ${BLOB_PART_BYTES} bytes, got ${bytes}`);
  const stage = await manifest(ctx, stageKey, field);
  if (stage?.parts.includes(part)) return "duplicate";
  await ctx.db.insert("blobs", { ownerTable: STAGE_OWNER, ownerId: stageKey, field, part, data });
  if (stage === null) await ctx.db.insert("stages", { stageKey, field, parts: [part] });
  else await ctx.db.patch(stage._id, { parts: [...stage.parts, part].sort((a, b) => a - b) });
  return "inserted";
}

/**
 * Throws when a staged value an op refers to is not complete. Not a rejection: the daemon stages
 * before it applies, so this only happens when a part went missing in between (a replayed old op
 * meeting `dropStage`), and staging again then applying again succeeds.
 */
export async function requireStaged(ctx: QueryCtx, entries: SpillEntry[]): Promise<void> {
  for (const { field, parts, stage } of entries) {
    const have = (await manifest(ctx, stage as string, field))?.parts ?? [];
    if (have.length !== parts || have.some((part) => part >= parts)) {
      throw new ConvexError({
        code: "StagedPartsMissing",
        stageKey: stage as string,
        field,
        message: `staged ${field} has ${have.length} of ${parts} parts: stage them, then apply again`,
      });
    }
  }
}

/** Deletes, later and page by page, the staged value `field` of a row no longer uses. */
export async function scheduleDrop(
  ctx: MutationCtx,
  ownerTable: TableNames,
  ownerId: string,
  { field, stage }: SpillEntry,
): Promise<void> {
  const args = { stageKey: stage as string, field, ownerTable, ownerId };
  await ctx.scheduler.runAfter(0, internal.ingest.dropStage, args);
}

/**
 * One page of `dropStage`: deletes up to DROP_STAGE_PARTS parts; true when some are left. Stops
 * at once if the owner refers to the stage again (its op was replayed and re-applied meanwhile):
 * a stage key belongs to one op, and an op to one row, so no other row can refer to it.
 */
export async function dropStagePage(
  ctx: MutationCtx,
  { stageKey, field, ownerTable, ownerId }: ObjectType<typeof dropStageArgs>,
): Promise<boolean> {
  const id = ctx.db.normalizeId(ownerTable as TableNames, ownerId);
  const owner = id === null ? null : ((await ctx.db.get(id)) as { spilled?: SpillEntry[] } | null);
  if (owner?.spilled?.some((entry) => entry.stage === stageKey && entry.field === field)) return false;
  const page = await ctx.db
    .query("blobs")
    .withIndex("by_owner", (q) => q.eq("ownerId", stageKey).eq("field", field))
    .take(DROP_STAGE_PARTS);
  for (const blob of page) await ctx.db.delete(blob._id);
  const stage = await manifest(ctx, stageKey, field);
  if (stage === null) return false;
  const dropped = new Set(page.map((blob) => blob.part));
  const left = stage.parts.filter((part) => !dropped.has(part));
  if (left.length === 0) await ctx.db.delete(stage._id);
  else await ctx.db.patch(stage._id, { parts: left });
  return left.length > 0;
}
