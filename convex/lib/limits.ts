// Sizes and counts our functions keep to. Convex's own ceilings (docs.convex.dev/production/state/limits,
// docs/notes/convex.md) are quoted beside the margin we take from them.

const KiB = 1024;
const MiB = 1024 * KiB;

/** Convex rejects a document over 1 MiB (system fields included). */
export const MAX_DOCUMENT_BYTES = 1 * MiB;

/**
 * A string or JSON value bigger than this leaves its document for `blobs`. Small enough that a
 * document with every spillable column at the threshold stays far under 1 MiB, and that re-writing
 * a row on each upsert stays cheap.
 */
export const INLINE_VALUE_BYTES = 64 * KiB;

/** UTF-8 bytes per `blobs` row: half the document limit, leaving room for the row's other fields. */
export const BLOB_PART_BYTES = 512 * KiB;

/**
 * Ops per `ingest:applyBatch`. Each op runs at most two index queries (identity lookup, plus the
 * (callId, stream, seq) check or the owner's blobs), so 2,000 ops stay under Convex's 4,096 index
 * ranges per transaction; also far under 8,192 array items. An op with staged values (lib/stages.ts)
 * adds one range per staged column: the daemon sends such ops alone.
 */
export const MAX_BATCH_OPS = 2000;

/**
 * Convex size of a batch's `ops`. Convex allows 16 MiB of arguments and 16 MiB written per
 * transaction; half of it leaves room for re-written upsert rows and per-row overhead, so a batch
 * within this bound cannot fail on the write limits. The daemon's default (4 MiB) fits twice.
 */
export const MAX_BATCH_BYTES = 8 * MiB;

/**
 * Parts of one staged value (lib/stages.ts): its manifest lists them in one array, and Convex
 * arrays hold at most 8,192 items. 8,192 parts of 512 KiB is 4 GiB, far past the daemon's 16 MiB
 * input lines.
 */
export const MAX_STAGE_PARTS = 8192;

/**
 * Staged parts `ingest:dropStage` deletes per transaction. A deleted document counts as read, so
 * each part is read twice (found, then deleted): 8 MiB in all, half the 16 MiB read limit.
 */
export const DROP_STAGE_PARTS = 8;
