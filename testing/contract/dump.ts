// Prints the facts the Python side must agree with, as the Convex code defines them (one JSON object):
// the limits (convex/lib/limits.ts), every table's fields (convex/schema.ts, as Convex's validator
// JSON), and which columns may spill to blobs (convex/lib/blobs.ts). Read by tests/e2e/test_contract.py.
import * as limits from "../../convex/lib/limits";
import { isSpillable } from "../../convex/lib/blobs";
import schema from "../../convex/schema";

type Field = { fieldType: { type: string }; optional: boolean };
const tables: Record<string, Record<string, Field>> = {};
const spillable: Record<string, string[]> = {};
for (const [name, table] of Object.entries(schema.tables)) {
  const fields = (table.validator.json as { value: Record<string, Field> }).value;
  tables[name] = fields;
  spillable[name] = Object.keys(fields).filter((field) => isSpillable(name as never, field));
}
console.log(JSON.stringify({ limits, tables, spillable }));
