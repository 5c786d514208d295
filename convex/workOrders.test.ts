import { ConvexError } from "convex/values";
import { describe, expect, test } from "vitest";
import { api } from "./_generated/api.js";
import type { Id } from "./_generated/dataModel.js";
import { WORK_ORDER_STATUSES, type WorkOrderStatus } from "./lib/workOrderStatus.js";
import { MiB, setupAsAdmin, type Accessor } from "./test.setup.js";

const order = {
  sessionId: "s1",
  workflowType: "codexTask",
  workflowArgs: { depth: 2, paths: ["a", "b"] },
  prompt: "fix the bug",
  title: "Fix",
  requestedBy: "user-1",
  targetRepo: "https://github.com/o/r",
  targetBranch: "fix/bug",
};

/** Every move the lifecycle allows; all others must be refused. */
const ALLOWED: Array<[WorkOrderStatus, WorkOrderStatus]> = [
  ["draft", "submitted"],
  ["submitted", "accepted"],
  ["accepted", "running"],
  ["running", "succeeded"],
  ["running", "failed"],
  ["draft", "canceled"],
  ["submitted", "canceled"],
  ["accepted", "canceled"],
  ["running", "canceled"],
];
const PATH: WorkOrderStatus[] = ["draft", "submitted", "accepted", "running"];

/** A new order walked along the happy path up to `status`. */
async function orderAt(t: Accessor, status: WorkOrderStatus): Promise<Id<"work_orders">> {
  const id = await t.mutation(api.workOrders.create, order);
  const target = PATH.includes(status) ? PATH.indexOf(status) : PATH.length - 1;
  for (const next of PATH.slice(1, target + 1))
    await t.mutation(api.workOrders.updateStatus, { id, status: next });
  if (!PATH.includes(status)) await t.mutation(api.workOrders.updateStatus, { id, status });
  return id;
}

async function errorData(promise: Promise<unknown>): Promise<Record<string, unknown>> {
  const error = await promise.then(
    () => {
      throw new Error("accepted");
    },
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(ConvexError);
  return (error as { data: Record<string, unknown> }).data;
}

describe("workOrders", () => {
  test("create starts in draft with createdAt = updatedAt; get returns it; unknown ids give null", async () => {
    const t = setupAsAdmin();
    const id = await t.mutation(api.workOrders.create, order);
    const stored = await t.query(api.workOrders.get, { id });
    expect(stored).toMatchObject({ ...order, status: "draft" });
    expect(stored?.updatedAt).toBe(stored?.createdAt);
    await t.run(async (ctx) => ctx.db.delete(id));
    expect(await t.query(api.workOrders.get, { id })).toBeNull();
  });

  test("create may start in submitted, not further", async () => {
    const t = setupAsAdmin();
    const id = await t.mutation(api.workOrders.create, { ...order, status: "submitted" });
    expect((await t.query(api.workOrders.get, { id }))?.status).toBe("submitted");
    await expect(
      t.mutation(api.workOrders.create, { ...order, status: "running" } as never),
    ).rejects.toThrow();
  });

  test("workflowArgs Convex cannot hold travel as workflowArgsJson", async () => {
    const t = setupAsAdmin();
    const text = '{"$ref":"#/defs/x"}';
    const id = await t.mutation(api.workOrders.create, {
      ...order,
      workflowArgs: undefined,
      workflowArgsJson: text,
    });
    const stored = await t.query(api.workOrders.get, { id });
    expect(stored?.workflowArgsJson).toBe(text);
    expect(stored).not.toHaveProperty("workflowArgs");
    const data = await errorData(t.mutation(api.workOrders.create, { ...order, workflowArgsJson: "{}" }));
    expect(data.code).toBe("InvalidArgs");
    expect(
      (
        await errorData(
          t.mutation(api.workOrders.create, { ...order, workflowArgs: undefined, workflowArgsJson: "{" }),
        )
      ).code,
    ).toBe("InvalidArgs");
  });

  test("an order too large for one document is refused", async () => {
    const t = setupAsAdmin();
    const data = await errorData(t.mutation(api.workOrders.create, { ...order, prompt: "p".repeat(MiB) }));
    expect(data.code).toBe("TooLarge");
  });

  for (const [from, to] of ALLOWED) {
    test(`allowed: ${from} -> ${to}, updatedAt moves`, async () => {
      const t = setupAsAdmin();
      const id = await orderAt(t, from);
      const before = await t.query(api.workOrders.get, { id });
      const after = await t.mutation(api.workOrders.updateStatus, { id, status: to });
      expect(after.status).toBe(to);
      expect(after.updatedAt).toBeGreaterThan(before!.updatedAt);
      expect(after.createdAt).toBe(before!.createdAt);
    });
  }

  const refused = WORK_ORDER_STATUSES.flatMap((from) =>
    WORK_ORDER_STATUSES.filter((to) => !ALLOWED.some(([f, t]) => f === from && t === to)).map(
      (to) => [from, to] as const,
    ),
  );
  test(`refused: all ${refused.length} other moves, naming both states`, async () => {
    const t = setupAsAdmin();
    for (const [from, to] of refused) {
      const id = await orderAt(t, from);
      const data = await errorData(t.mutation(api.workOrders.updateStatus, { id, status: to }));
      expect(data).toMatchObject({ code: "InvalidTransition", from, to });
      expect(data.message).toContain(`from ${from} to ${to}`);
      expect((await t.query(api.workOrders.get, { id }))?.status).toBe(from);
    }
  });

  test("updateStatus on an unknown id is NotFound", async () => {
    const t = setupAsAdmin();
    const id = await t.mutation(api.workOrders.create, order);
    await t.run(async (ctx) => ctx.db.delete(id));
    expect((await errorData(t.mutation(api.workOrders.updateStatus, { id, status: "submitted" }))).code).toBe(
      "NotFound",
    );
  });

  test("updateResult records commitSha and prUrl; a repeat changes nothing", async () => {
    const t = setupAsAdmin();
    const id = await orderAt(t, "succeeded");
    const withSha = await t.mutation(api.workOrders.updateResult, { id, commitSha: "abc123" });
    expect(withSha).toMatchObject({ commitSha: "abc123" });
    expect(withSha).not.toHaveProperty("prUrl");
    const both = await t.mutation(api.workOrders.updateResult, {
      id,
      prUrl: "https://github.com/o/r/pull/1",
    });
    expect(both).toMatchObject({ commitSha: "abc123", prUrl: "https://github.com/o/r/pull/1" });
    expect(both.updatedAt).toBeGreaterThan(withSha.updatedAt);
    const again = await t.mutation(api.workOrders.updateResult, { id, commitSha: "abc123" });
    expect(again.updatedAt).toBe(both.updatedAt);
  });

  test("listBySession: newest first, only that session, paginated", async () => {
    const t = setupAsAdmin();
    const ids: Array<Id<"work_orders">> = [];
    for (let i = 0; i < 3; i += 1) {
      ids.push(await t.mutation(api.workOrders.create, { ...order, title: `#${i}` }));
      // createdAt comes from the clock: make each order strictly later.
      await new Promise((resolve) => setTimeout(resolve, 3));
    }
    await t.mutation(api.workOrders.create, { ...order, sessionId: "s2" });
    const first = await t.query(api.workOrders.listBySession, {
      sessionId: "s1",
      paginationOpts: { numItems: 2, cursor: null },
    });
    expect(first.page.map((o) => o.title)).toEqual(["#2", "#1"]);
    const rest = await t.query(api.workOrders.listBySession, {
      sessionId: "s1",
      paginationOpts: { numItems: 2, cursor: first.continueCursor },
    });
    expect(rest.page.map((o) => o._id)).toEqual([ids[0]]);
    expect(rest.isDone).toBe(true);
  });
});
