// Who may call each public function (lib/access.ts): anonymous callers, identities that are not
// allowed, allowed readers and workers, and the admin key (acting as its identity).
import { ConvexError } from "convex/values";
import { afterEach, beforeEach, describe, expect, test, vi } from "vitest";
import { api } from "./_generated/api.js";
import type { Id } from "./_generated/dataModel.js";
import { ADMIN, setup, type Accessor, type Backend } from "./test.setup.js";

const READER = { subject: "alice", issuer: "https://auth.example" };
const ORG_MEMBER = { subject: "bob", issuer: "https://auth.example", org_id: "acme" };
const WORKER = { subject: "worker-1", issuer: "https://auth.example" };
const STRANGER = { subject: "mallory", issuer: "https://auth.example", org_id: "evil" };

const order = {
  sessionId: "s1",
  workflowType: "codexTask",
  prompt: "fix the bug",
  title: "Fix",
  targetRepo: "https://github.com/o/r",
  targetBranch: "fix/bug",
};
const page = { numItems: 10, cursor: null };

type Role = "reader" | "worker";

/** One call to every public function, by the role it needs. A public function missing here fails
 *  the "every public function is listed" test. */
const CALLS: Record<string, { role: Role; call: (t: Accessor, id: Id<"work_orders">) => Promise<unknown> }> = {
  "history:getConversation": {
    role: "reader",
    call: (t) => t.query(api.history.getConversation, { conversationId: "c" }),
  },
  "history:getTurn": { role: "reader", call: (t) => t.query(api.history.getTurn, { turnId: "t" }) },
  "history:getCommandOutput": {
    role: "reader",
    call: (t) => t.query(api.history.getCommandOutput, { callId: "x" }),
  },
  "history:listEvents": {
    role: "reader",
    call: (t) => t.query(api.history.listEvents, { conversationId: "c", paginationOpts: page }),
  },
  "workOrders:create": { role: "reader", call: (t) => t.mutation(api.workOrders.create, order) },
  "workOrders:get": { role: "reader", call: (t, id) => t.query(api.workOrders.get, { id }) },
  "workOrders:listBySession": {
    role: "reader",
    call: (t) => t.query(api.workOrders.listBySession, { sessionId: "s1", paginationOpts: page }),
  },
  "workOrders:updateStatus": {
    role: "worker",
    call: (t, id) => t.mutation(api.workOrders.updateStatus, { id, status: "submitted" }),
  },
  "workOrders:updateResult": {
    role: "worker",
    call: (t, id) => t.mutation(api.workOrders.updateResult, { id, commitSha: "abc" }),
  },
};

async function refusal(promise: Promise<unknown>): Promise<string> {
  const error = await promise.then(
    () => {
      throw new Error("accepted");
    },
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(ConvexError);
  return (error as { data: { code: string } }).data.code;
}

/** A backend holding one work order (created with the admin key), and its id. */
async function withOrder(): Promise<[Backend, Id<"work_orders">]> {
  const t = setup();
  return [t, await t.withIdentity(ADMIN).mutation(api.workOrders.create, order)];
}

beforeEach(() => {
  vi.stubEnv("INGESTOR_READER_SUBJECTS", "alice, carol");
  vi.stubEnv("INGESTOR_READER_ORGS", "acme");
  vi.stubEnv("INGESTOR_WORKER_SUBJECTS", "worker-1");
});
afterEach(() => {
  vi.unstubAllEnvs();
});

describe("access", () => {
  test("every public function is listed here", async () => {
    const modules = { history: await import("./history.js"), workOrders: await import("./workOrders.js") };
    const publicPaths = Object.entries(modules).flatMap(([module, exports]) =>
      Object.entries(exports)
        .filter(([, fn]) => (fn as { isPublic?: boolean }).isPublic === true)
        .map(([name]) => `${module}:${name}`),
    );
    const others = await Promise.all(
      ["app", "ingest"].map(async (module) => Object.values(await import(`./${module}.js`))),
    );
    // The write side has no public function at all.
    expect(others.flat().filter((fn) => (fn as { isPublic?: boolean }).isPublic === true)).toEqual([]);
    expect(publicPaths.sort()).toEqual(Object.keys(CALLS).sort());
  });

  for (const [path, { role, call }] of Object.entries(CALLS)) {
    test(`${path}: anonymous callers are refused as Unauthenticated`, async () => {
      const [t, id] = await withOrder();
      expect(await refusal(call(t, id))).toBe("Unauthenticated");
    });

    test(`${path}: an identity that is not allowed is Forbidden`, async () => {
      const [t, id] = await withOrder();
      expect(await refusal(call(t.withIdentity(STRANGER), id))).toBe("Forbidden");
    });

    test(`${path}: the admin key and a worker are allowed`, async () => {
      const [t, id] = await withOrder();
      await call(t.withIdentity(ADMIN), id);
      const [t2, id2] = await withOrder();
      await call(t2.withIdentity(WORKER), id2);
    });

    if (role === "reader") {
      test(`${path}: a listed subject and an organisation member are allowed`, async () => {
        const [t, id] = await withOrder();
        await call(t.withIdentity(READER), id);
        await call(t.withIdentity(ORG_MEMBER), id);
      });
    } else {
      test(`${path}: a reader is not a worker`, async () => {
        const [t, id] = await withOrder();
        expect(await refusal(call(t.withIdentity(READER), id))).toBe("Forbidden");
      });
    }
  }

  test("the organisation claim's name comes from INGESTOR_ORG_CLAIM", async () => {
    vi.stubEnv("INGESTOR_ORG_CLAIM", "tenant");
    const [t, id] = await withOrder();
    expect(await refusal(t.withIdentity(ORG_MEMBER).query(api.workOrders.get, { id }))).toBe("Forbidden");
    await t.withIdentity({ ...READER, subject: "dave", tenant: "acme" }).query(api.workOrders.get, { id });
  });

  test("with no allow-list set, only the admin key gets in", async () => {
    vi.unstubAllEnvs();
    const [t, id] = await withOrder();
    expect(await refusal(t.withIdentity(READER).query(api.workOrders.get, { id }))).toBe("Forbidden");
    expect(await t.withIdentity(ADMIN).query(api.workOrders.get, { id })).toMatchObject({ _id: id });
  });
});

describe("workOrders:create records the caller", () => {
  test("requestedBy is the caller's subject", async () => {
    const t = setup();
    const id = await t.withIdentity(READER).mutation(api.workOrders.create, order);
    expect(await t.withIdentity(ADMIN).query(api.workOrders.get, { id })).toMatchObject({ requestedBy: "alice" });
  });

  test("a reader cannot order in someone else's name; naming itself is accepted", async () => {
    const t = setup().withIdentity(READER);
    expect(await refusal(t.mutation(api.workOrders.create, { ...order, requestedBy: "carol" }))).toBe(
      "Forbidden",
    );
    const id = await t.mutation(api.workOrders.create, { ...order, requestedBy: "alice" });
    expect(await t.query(api.workOrders.get, { id })).toMatchObject({ requestedBy: "alice" });
  });

  test("the admin key may order for a user", async () => {
    const t = setup().withIdentity(ADMIN);
    const id = await t.mutation(api.workOrders.create, { ...order, requestedBy: "carol" });
    expect(await t.query(api.workOrders.get, { id })).toMatchObject({ requestedBy: "carol" });
  });
});
