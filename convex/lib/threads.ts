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
  codexTurns?: number;
  execTurns?: number;
};

/** What `place` reads of an op besides its columns. */
type PlaceHints = { run?: boolean; call?: string };

/** An id under an exec run (`<run>/<item id>`) as the same id under the run's stored turn. */
function underRun(
  value: string,
  turn: string,
  placed: string,
  run: boolean,
): string {
  return run && value.startsWith(`${turn}/`)
    ? placed + value.slice(turn.length)
    : value;
}

/** The threads one transaction has touched: each row is read (or created) once. */
export class Threads {
  private readonly rows = new Map<string, ThreadRow>();
  /** Turn ids (Codex's, an exec run's) -> the turn stored for them, as looked up or filed. */
  private readonly turns = new Map<string, string>();
  /** Call ids -> the call stored for them, as looked up or filed. */
  private readonly calls = new Map<string, string>();

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
              codexTurns: doc.codexTurns,
              execTurns: doc.execTurns,
            };
      this.rows.set(thread, row);
    }
    return row;
  }

  /**
   * Sets the turn and call the store files the op's fact in (in `row`): an exec run is the thread's
   * turn of the same ordinal whichever channel stored it first, and a call told by two channels
   * under two ids is the call of its turn with the same identity (`hints.call`).
   */
  async place(
    ctx: MutationCtx,
    thread: string,
    op: string,
    row: Record<string, unknown>,
    hints: PlaceHints,
  ) {
    const turn = row.turnId;
    if (typeof turn !== "string") return;
    const run = hints.run === true;
    // Without an exec run in the thread, every turn and call is stored under its own id.
    const aliased = run || ((await this.row(ctx, thread)).execTurns ?? 0) > 0;
    let placed = turn;
    if (op === "upsertTurn") {
      const filed = await this.fileTurn(ctx, thread, turn, run);
      placed = filed.turnId;
      row.turnNumber = filed.turnNumber;
    } else if (aliased) {
      placed = await this.storedTurn(ctx, turn);
    }
    row.turnId = placed;
    if (op === "upsertCommand" && typeof row.callId === "string") {
      const own = underRun(row.callId, turn, placed, run);
      row.callId = await this.fileCall(
        ctx,
        row.callId,
        placed,
        own,
        hints.call,
        aliased,
      );
    } else if (
      run &&
      op === "appendReasoningSection" &&
      typeof row.itemId === "string"
    ) {
      row.itemId = underRun(row.itemId, turn, placed, run);
    }
  }

  private async storedTurn(ctx: MutationCtx, turn: string): Promise<string> {
    let placed = this.turns.get(turn);
    if (placed === undefined) {
      const found = await ctx.db
        .query("thread_turns")
        .withIndex("by_alias", (q) => q.eq("alias", turn))
        .first();
      placed = found?.turnId ?? turn;
      this.turns.set(turn, placed);
    }
    return placed;
  }

  /**
   * The turn stored for `turn` and its ordinal in the thread. A turn id met for the first time is
   * the thread's next turn of its kind (Codex's turns and exec runs are counted apart): the turn
   * stored at that ordinal by the other kind, if any, else a new one (an exec run's is named
   * `<thread>/turn-<n>`).
   */
  private async fileTurn(
    ctx: MutationCtx,
    thread: string,
    turn: string,
    run: boolean,
  ): Promise<{ turnId: string; turnNumber: number }> {
    const found = await ctx.db
      .query("thread_turns")
      .withIndex("by_alias", (q) => q.eq("alias", turn))
      .first();
    if (found !== null) {
      this.turns.set(turn, found.turnId);
      return { turnId: found.turnId, turnNumber: found.turnNumber };
    }
    const known = await this.row(ctx, thread);
    const turnNumber = ((run ? known.execTurns : known.codexTurns) ?? 0) + 1;
    if (run) known.execTurns = turnNumber;
    else known.codexTurns = turnNumber;
    await ctx.db.patch(
      known.id,
      run ? { execTurns: turnNumber } : { codexTurns: turnNumber },
    );
    const samePlace = await ctx.db
      .query("thread_turns")
      .withIndex("by_threadId_turnNumber", (q) =>
        q.eq("threadId", thread).eq("turnNumber", turnNumber),
      )
      .first();
    const turnId =
      samePlace?.turnId ?? (run ? `${thread}/turn-${turnNumber}` : turn);
    await ctx.db.insert("thread_turns", {
      alias: turn,
      threadId: thread,
      turnNumber,
      turnId,
    });
    this.turns.set(turn, turnId);
    return { turnId, turnNumber };
  }

  /**
   * The call stored for call id `call` of `turn`: the one it was filed as, else the turn's call with
   * the same identity (told by another channel), else `own`. `aliased`: the thread has exec runs
   * (else a call is itself, and only its identity is filed, for a later run to meet).
   */
  private async fileCall(
    ctx: MutationCtx,
    call: string,
    turn: string,
    own: string,
    identity: string | undefined,
    aliased: boolean,
  ): Promise<string> {
    const cached = this.calls.get(call);
    if (cached !== undefined) return cached;
    const found = await ctx.db
      .query("thread_calls")
      .withIndex("by_alias", (q) => q.eq("alias", call))
      .first();
    let stored = own;
    if (found !== null) {
      stored = aliased ? found.callId : call;
    } else if (identity !== undefined) {
      if (aliased) {
        const same = await ctx.db
          .query("thread_calls")
          .withIndex("by_turnId_identity", (q) =>
            q.eq("turnId", turn).eq("identity", identity),
          )
          .first();
        stored = same?.callId ?? own;
      }
      await ctx.db.insert("thread_calls", {
        alias: call,
        turnId: turn,
        identity,
        callId: stored,
      });
    }
    this.calls.set(call, stored);
    return stored;
  }

  /** The conversation `thread` is filed under; `proposed` when the thread is new. */
  async resolve(
    ctx: MutationCtx,
    thread: string,
    proposed: string,
  ): Promise<string> {
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
  async turn(
    ctx: MutationCtx,
    thread: string,
    row: Record<string, unknown>,
    isNew: boolean,
  ): Promise<void> {
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

  async rememberModel(
    ctx: MutationCtx,
    thread: string,
    model: string,
  ): Promise<void> {
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
  async runningTurn(
    ctx: MutationCtx,
    thread: string,
  ): Promise<string | undefined> {
    const latest = (await this.row(ctx, thread)).lastTurnId;
    if (latest === undefined) return undefined;
    const turn = await ctx.db
      .query("turns")
      .withIndex("by_turnId", (q) => q.eq("turnId", latest))
      .first();
    return turn?.status === "running" ? latest : undefined;
  }

  /** The thread's latest turn: where a usage snapshot or rate limit told without a turn goes. */
  async latestTurn(
    ctx: MutationCtx,
    thread: string,
  ): Promise<string | undefined> {
    return (await this.row(ctx, thread)).lastTurnId;
  }

  /** Whether `thread` keeps rate-limit reports from `channel` (the first channel to report). */
  async keepsRateLimits(
    ctx: MutationCtx,
    thread: string,
    channel: string,
  ): Promise<boolean> {
    const row = await this.row(ctx, thread);
    if (row.rateLimitSource === undefined) {
      row.rateLimitSource = channel;
      await ctx.db.patch(row.id, { rateLimitSource: channel });
    }
    return row.rateLimitSource === channel;
  }
}
