// Work orders (spec/work-orders.md). Public functions for allowed callers only (lib/access.ts): the
// Jangar UI creates and follows work orders as a signed-in reader, and the workers that run them
// report status and results as worker identities (or with the admin key).
// (The ingest writes, by contrast, are internal: only the daemon, holding the admin key, writes history.)
import { paginationOptsValidator, paginationResultValidator } from "convex/server";
import { ConvexError, getDocumentSize, v } from "convex/values";
import type { Doc, Id } from "./_generated/dataModel.js";
import type { MutationCtx } from "./_generated/server.js";
import { readerMutation, readerQuery, workerMutation } from "./lib/access.js";
import { MAX_DOCUMENT_BYTES } from "./lib/limits.js";
import { presentRow, shownDoc } from "./lib/present.js";
import { canTransition, WORK_ORDER_STATUSES, type WorkOrderStatus } from "./lib/workOrderStatus.js";

const status = v.union(...WORK_ORDER_STATUSES.map((name) => v.literal(name)));
const shownOrder = shownDoc("work_orders");

async function load(ctx: MutationCtx, id: Id<"work_orders">): Promise<Doc<"work_orders">> {
  const order = await ctx.db.get(id);
  if (order === null) throw new ConvexError({ code: "NotFound", id, message: `no work order ${id}` });
  return order;
}

/** Strictly later than the last change, even within one millisecond. */
function nextUpdatedAt(order: Doc<"work_orders">): number {
  return Math.max(Date.now(), order.updatedAt + 1);
}

function show(order: Doc<"work_orders">) {
  return presentRow(order) as Doc<"work_orders">;
}

/**
 * A new order in `draft` (default) or straight in `submitted`. Returns its id. `requestedBy` is the
 * caller's subject; an admin-key caller (a server-side app ordering for a user) may name another.
 */
export const create = readerMutation({
  args: {
    sessionId: v.string(),
    workflowType: v.string(),
    // JSON args for the workflow; `workflowArgsJson` is the text form for values Convex cannot hold.
    workflowArgs: v.optional(v.any()),
    workflowArgsJson: v.optional(v.string()),
    githubIssueUrl: v.optional(v.string()),
    prompt: v.string(),
    title: v.string(),
    requestedBy: v.optional(v.string()),
    targetRepo: v.string(),
    targetBranch: v.string(),
    status: v.optional(v.union(v.literal("draft"), v.literal("submitted"))),
  },
  returns: v.id("work_orders"),
  handler: async (ctx, args) => {
    const { caller } = ctx;
    if (args.requestedBy !== undefined && args.requestedBy !== caller.subject && !caller.admin) {
      throw new ConvexError({
        code: "Forbidden",
        message: `requestedBy must be the caller (${caller.subject}) or left out`,
      });
    }
    if (args.workflowArgs !== undefined && args.workflowArgsJson !== undefined) {
      throw new ConvexError({
        code: "InvalidArgs",
        message: "send workflowArgs or workflowArgsJson, not both",
      });
    }
    if (args.workflowArgsJson !== undefined) {
      try {
        JSON.parse(args.workflowArgsJson);
      } catch {
        throw new ConvexError({ code: "InvalidArgs", message: "workflowArgsJson is not valid JSON" });
      }
    }
    const now = Date.now();
    const order = {
      ...args,
      requestedBy: args.requestedBy ?? caller.subject,
      status: args.status ?? "draft",
      createdAt: now,
      updatedAt: now,
    };
    // Work orders are not split into blobs: an order too large for a document is refused.
    const bytes = getDocumentSize(order);
    if (bytes >= MAX_DOCUMENT_BYTES) {
      throw new ConvexError({
        code: "TooLarge",
        bytes,
        max: MAX_DOCUMENT_BYTES,
        message: `work order is ${bytes} bytes`,
      });
    }
    return await ctx.db.insert("work_orders", order);
  },
});

/** Moves an order along its lifecycle; any other move is a ConvexError naming both states. */
export const updateStatus = workerMutation({
  args: { id: v.id("work_orders"), status },
  returns: shownOrder,
  handler: async (ctx, { id, status: to }) => {
    const order = await load(ctx, id);
    const from = order.status as WorkOrderStatus;
    if (!canTransition(from, to)) {
      throw new ConvexError({
        code: "InvalidTransition",
        from,
        to,
        message: `work order ${id} cannot move from ${from} to ${to}`,
      });
    }
    await ctx.db.patch(id, { status: to, updatedAt: nextUpdatedAt(order) });
    return show(await load(ctx, id));
  },
});

/** Records what the work produced. Values already stored leave the order (and updatedAt) as is. */
export const updateResult = workerMutation({
  args: { id: v.id("work_orders"), commitSha: v.optional(v.string()), prUrl: v.optional(v.string()) },
  returns: shownOrder,
  handler: async (ctx, { id, commitSha, prUrl }) => {
    const order = await load(ctx, id);
    const changed =
      (commitSha !== undefined && commitSha !== order.commitSha) ||
      (prUrl !== undefined && prUrl !== order.prUrl);
    if (changed) {
      await ctx.db.patch(id, {
        ...(commitSha !== undefined && { commitSha }),
        ...(prUrl !== undefined && { prUrl }),
        updatedAt: nextUpdatedAt(order),
      });
    }
    return show(await load(ctx, id));
  },
});

/** A session's orders, newest first, paginated the standard Convex way. */
export const listBySession = readerQuery({
  args: { sessionId: v.string(), paginationOpts: paginationOptsValidator },
  returns: paginationResultValidator(shownOrder),
  handler: async (ctx, { sessionId, paginationOpts }) => {
    const result = await ctx.db
      .query("work_orders")
      .withIndex("by_sessionId_createdAt", (q) => q.eq("sessionId", sessionId))
      .order("desc")
      .paginate(paginationOpts);
    return { ...result, page: result.page.map(show) };
  },
});

/** One order, or null when the id is unknown. */
export const get = readerQuery({
  args: { id: v.id("work_orders") },
  returns: v.union(v.null(), shownOrder),
  handler: async (ctx, { id }) => {
    const order = await ctx.db.get(id);
    return order && show(order);
  },
});
