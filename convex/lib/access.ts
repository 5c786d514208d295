// Who may call the public functions (docs/security.md). History and work orders hold prompts, code
// and command output: every public function is built with one of the wrappers below, which refuse
// an anonymous caller (ConvexError `Unauthenticated`) and an identity that is not allowed (`Forbidden`)
// before the handler runs. The writes of history are internal functions: only the admin key calls them.
//
// A plain admin-key call has no identity (`getUserIdentity()` is null, as for an anonymous caller),
// so admin-key callers of public functions act as an identity (the `Convex <key>:<base64 identity>`
// header; ConvexHttpClient's `setAdminAuth(key, identity)`). Only the admin key can present an
// identity whose issuer is not a configured auth provider, so the reserved ADMIN_ISSUER marks it.
//
// Who is allowed, from Convex environment variables (comma-separated lists):
//   INGESTOR_READER_SUBJECTS  subjects that may read history and create and read work orders
//   INGESTOR_READER_ORGS      ...or whose INGESTOR_ORG_CLAIM claim (default `org_id`) is one of these
//   INGESTOR_WORKER_SUBJECTS  subjects of the workers that report work orders' status and results
//                             (they may also read)
import { customCtx, customMutation, customQuery } from "convex-helpers/server/customFunctions";
import type { Auth, UserIdentity } from "convex/server";
import { ConvexError } from "convex/values";
import { mutation, query } from "../_generated/server.js";

/** The issuer of identities only an admin-key caller can act as (not a URL: no provider has it). */
export const ADMIN_ISSUER = "codex-ingestor:admin-key";

export type Role = "reader" | "worker";

export interface Caller {
  /** The identity's `subject`: what `workOrders:create` records as `requestedBy`. */
  subject: string;
  /** An admin-key caller (acting as an ADMIN_ISSUER identity). */
  admin: boolean;
}

function listFromEnv(name: string): string[] {
  return (process.env[name] ?? "")
    .split(",")
    .map((item) => item.trim())
    .filter((item) => item !== "");
}

function isAllowed(identity: UserIdentity, role: Role): boolean {
  if (identity.issuer === ADMIN_ISSUER) return true;
  if (listFromEnv("INGESTOR_WORKER_SUBJECTS").includes(identity.subject)) return true;
  if (role === "worker") return false;
  if (listFromEnv("INGESTOR_READER_SUBJECTS").includes(identity.subject)) return true;
  const org = identity[process.env.INGESTOR_ORG_CLAIM ?? "org_id"];
  return typeof org === "string" && listFromEnv("INGESTOR_READER_ORGS").includes(org);
}

/** The caller, if it may act in `role`; otherwise a ConvexError, before anything is read. */
export async function authorize(ctx: { auth: Auth }, role: Role): Promise<Caller> {
  const identity = await ctx.auth.getUserIdentity();
  if (identity === null) {
    throw new ConvexError({
      code: "Unauthenticated",
      message: "this function needs an authenticated identity (sign in, or use the admin key acting as one)",
    });
  }
  if (!isAllowed(identity, role)) {
    // The subject is the caller's own: naming it helps an operator add it, and leaks nothing.
    throw new ConvexError({
      code: "Forbidden",
      message: `identity ${identity.subject} is not allowed as a ${role} (docs/security.md)`,
    });
  }
  return { subject: identity.subject, admin: identity.issuer === ADMIN_ISSUER };
}

/** A public query for readers: `ctx.caller` is the authorized caller. */
export const readerQuery = customQuery(
  query,
  customCtx(async (ctx) => ({ caller: await authorize(ctx, "reader") })),
);

/** A public mutation for readers (the UI creating work orders). */
export const readerMutation = customMutation(
  mutation,
  customCtx(async (ctx) => ({ caller: await authorize(ctx, "reader") })),
);

/** A public mutation for workers and the admin key (work orders' status and results). */
export const workerMutation = customMutation(
  mutation,
  customCtx(async (ctx) => ({ caller: await authorize(ctx, "worker") })),
);
