// Applies convex/lib/merge.ts to cases read as JSON from stdin ([table, stored | null, incoming][])
// and prints the merged rows, in order: the Convex side of tests/e2e/test_contract.py's merge-rule check.
import { mergeRow, type UpsertTable } from "../../convex/lib/merge";
import type { Row } from "../../convex/lib/blobs";

const chunks: Buffer[] = [];
process.stdin.on("data", (chunk: Buffer) => chunks.push(chunk));
process.stdin.on("end", () => {
  const cases = JSON.parse(Buffer.concat(chunks).toString()) as [UpsertTable, Row | null, Row][];
  console.log(JSON.stringify(cases.map(([table, stored, incoming]) => mergeRow(table, stored, incoming))));
});
