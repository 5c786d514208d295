// How the read queries hand back `any` columns (docs/operations.md, "Values Convex cannot hold").
//
// A value stored as `<column>Json` text is parsed back and returned as `<column>` when Convex can
// carry it. When it cannot (keys starting with `$` or non-ASCII, integers past 2^53, too deep or
// too wide), returning it would fail: Convex serialises return values with `convexToJson`, which
// throws on such keys, and a float64 would round the integer. Then the query returns the original
// `<column>Json` text untouched, and the client does `row.payload ?? JSON.parse(row.payloadJson)`.
import { v, type GenericValidator, type Value } from "convex/values";
import type { TableNames } from "../_generated/dataModel.js";
import schema from "../schema.js";
import type { Row } from "./blobs.js";
import { isConvexSafe } from "./convexSafe.js";
import { ANY_COLUMNS } from "./merge.js";

export function presentRow(row: Row): Record<string, Value> {
  const out: Record<string, Value> = {};
  for (const [field, value] of Object.entries(row)) if (value !== undefined) out[field] = value;
  for (const column of ANY_COLUMNS) {
    const text = out[`${column}Json`];
    if (typeof text !== "string") continue;
    const value: unknown = JSON.parse(text);
    if (isConvexSafe(value)) {
      out[column] = value as Value;
      delete out[`${column}Json`];
    }
  }
  return out;
}

/** The validator of a `table` row as the queries return it: the stored fields without `spilled`. */
export function shownDoc<T extends TableNames>(table: T) {
  const { spilled: _spilled, ...fields } = schema.tables[table].validator.fields as Record<
    string,
    GenericValidator
  >;
  return v.object({ _id: v.id(table), _creationTime: v.number(), ...fields });
}
