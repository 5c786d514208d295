/* eslint-disable */
/**
 * Generated `api` utility.
 *
 * THIS CODE IS AUTOMATICALLY GENERATED.
 *
 * To regenerate, run `npx convex dev`.
 * @module
 */

import type * as app from "../app.js";
import type * as history from "../history.js";
import type * as ingest from "../ingest.js";
import type * as lib_blobs from "../lib/blobs.js";
import type * as lib_check from "../lib/check.js";
import type * as lib_convexSafe from "../lib/convexSafe.js";
import type * as lib_limits from "../lib/limits.js";
import type * as lib_merge from "../lib/merge.js";
import type * as lib_ops from "../lib/ops.js";
import type * as lib_present from "../lib/present.js";
import type * as lib_rows from "../lib/rows.js";
import type * as lib_stages from "../lib/stages.js";
import type * as lib_validators from "../lib/validators.js";
import type * as lib_workOrderStatus from "../lib/workOrderStatus.js";
import type * as summaries from "../summaries.js";
import type * as workOrders from "../workOrders.js";

import type {
  ApiFromModules,
  FilterApi,
  FunctionReference,
} from "convex/server";

declare const fullApi: ApiFromModules<{
  app: typeof app;
  history: typeof history;
  ingest: typeof ingest;
  "lib/blobs": typeof lib_blobs;
  "lib/check": typeof lib_check;
  "lib/convexSafe": typeof lib_convexSafe;
  "lib/limits": typeof lib_limits;
  "lib/merge": typeof lib_merge;
  "lib/ops": typeof lib_ops;
  "lib/present": typeof lib_present;
  "lib/rows": typeof lib_rows;
  "lib/stages": typeof lib_stages;
  "lib/validators": typeof lib_validators;
  "lib/workOrderStatus": typeof lib_workOrderStatus;
  summaries: typeof summaries;
  workOrders: typeof workOrders;
}>;

/**
 * A utility for referencing Convex functions in your app's public API.
 *
 * Usage:
 * ```js
 * const myFunctionReference = api.myModule.myFunction;
 * ```
 */
export declare const api: FilterApi<
  typeof fullApi,
  FunctionReference<any, "public">
>;

/**
 * A utility for referencing Convex functions in your app's internal API.
 *
 * Usage:
 * ```js
 * const myFunctionReference = internal.myModule.myFunction;
 * ```
 */
export declare const internal: FilterApi<
  typeof fullApi,
  FunctionReference<any, "internal">
>;

export declare const components: {};
