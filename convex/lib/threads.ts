// "One thread, many channels" (docs/operations.md): a Codex thread reaches the store through several
// channels (a live app-server or `exec --json` stream, its session file, a restarted daemon), each
// proposing a conversation for it. The thread is filed under the first conversation proposed, and
// every later op of that thread lands there; it keeps the rate-limit reports of the first channel
// that reported them (channels round the same window differently). `ingestor/sinks/sqlite/threads.py`
// (`_Threads`) applies the same rules.
import type { Id } from "../_generated/dataModel.js";
import type { MutationCtx } from "../_generated/server.js";

type ThreadRow = {
  id: Id<"threads">;
  conversationId?: string;
  rateLimitSource?: string;
  model?: string;
  lastTurnId?: string;
};

/** The threads one transaction has touched: each row is read (or created) once. */
export class Threads {
  private readonly rows = new Map<string, ThreadRow>();

  private async row(ctx: MutationCtx, thread: string): Promise<ThreadRow> {
    let row = this.rows.get(thread);
    if (row === undefined) {
      const doc = await ctx.db
        .query("threads")
        .withIndex("by_threadId", (q) => q.eq("threadId", thread))
        .first();
      row =
        doc === null
          ? { id: await ctx.db.insert("threads", { threadId: thread }) }
          : {
              id: doc._id,
              conversationId: doc.conversationId,
              rateLimitSource: doc.rateLimitSource,
              model: doc.model,
              lastTurnId: doc.lastTurnId,
            };
      this.rows.set(thread, row);
    }
    return row;
  }

  /** The conversation `thread` is filed under; `proposed` when the thread is new. */
  async resolve(ctx: MutationCtx, thread: string, proposed: string): Promise<string> {
    const row = await this.row(ctx, thread);
    if (row.conversationId === undefined) {
      row.conversationId = proposed;
      await ctx.db.patch(row.id, { conversationId: proposed });
    }
    return row.conversationId;
  }

  /**
   * A turn's model is remembered as the thread's when its stream says it (`row.model`); a new turn
   * whose stream did not say (it began in the middle of the thread) gets the thread's. A new turn is
   * the thread's latest.
   */
  async turn(ctx: MutationCtx, thread: string, row: Record<string, unknown>, isNew: boolean): Promise<void> {
    const known = await this.row(ctx, thread);
    if (typeof row.model === "string") {
      await this.rememberModel(ctx, thread, row.model);
    } else if (isNew && known.model !== undefined) {
      row.model = known.model;
    }
    if (isNew) {
      known.lastTurnId = row.turnId as string;
      await ctx.db.patch(known.id, { lastTurnId: known.lastTurnId });
    }
  }

  async rememberModel(ctx: MutationCtx, thread: string, model: string): Promise<void> {
    const known = await this.row(ctx, thread);
    if (known.model !== model) {
      known.model = model;
      await ctx.db.patch(known.id, { model });
    }
  }

  /**
   * The thread's latest turn while it is still running: where a raw event goes whose stream knew no
   * turn of the thread yet (a stream that began in the middle of a turn).
   */
  async runningTurn(ctx: MutationCtx, thread: string): Promise<string | undefined> {
    const latest = (await this.row(ctx, thread)).lastTurnId;
    if (latest === undefined) return undefined;
    const turn = await ctx.db
      .query("turns")
      .withIndex("by_turnId", (q) => q.eq("turnId", latest))
      .first();
    return turn?.status === "running" ? latest : undefined;
  }

  /** The thread's latest turn: where a usage snapshot or rate limit told without a turn goes. */
  async latestTurn(ctx: MutationCtx, thread: string): Promise<string | undefined> {
    return (await this.row(ctx, thread)).lastTurnId;
  }

  /** Whether `thread` keeps rate-limit reports from `channel` (the first channel to report). */
  async keepsRateLimits(ctx: MutationCtx, thread: string, channel: string): Promise<boolean> {
    const row = await this.row(ctx, thread);
    if (row.rateLimitSource === undefined) {
      row.rateLimitSource = channel;
      await ctx.db.patch(row.id, { rateLimitSource: channel });
    }
    return row.rateLimitSource === channel;
  }
}
