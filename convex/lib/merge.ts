// Merge rules for the three upsert tables (docs/operations.md, "Merge rules for upserts"). Pure:
// (stored logical row or null, incoming columns without nulls) -> the row to store.
import type { Value } from "convex/values";
import type { Row } from "./blobs.js";

type Rule = (stored: Value, incoming: Value) => Value;

export const TURN_TERMINAL: ReadonlySet<string> = new Set(["succeeded", "failed", "canceled"]);
const COMMAND_TERMINAL = new Set(["completed", "failed", "declined", "canceled"]);

/** `any` columns and their `<column>Json` text form: a new value in either form replaces both. */
export const ANY_COLUMNS = ["payload", "rawContent", "parsedCmd", "workflowArgs"] as const;

const earliest: Rule = (stored, incoming) => Math.min(stored as number, incoming as number);
const latest: Rule = (stored, incoming) => Math.max(stored as number, incoming as number);

/** Rule 3: a terminal status is never moved back; for turns a later failed/canceled still wins. */
function terminalStatus(terminal: ReadonlySet<string>, errorWins: boolean): Rule {
  return (stored, incoming) => {
    if (!terminal.has(stored as string)) return incoming;
    if (errorWins && (incoming === "failed" || incoming === "canceled")) return incoming;
    return stored;
  };
}

/** Rule 4: a captured argv stays; `chunked` once true stays true. */
const keepArgv: Rule = (stored, incoming) => ((stored as string[]).length > 0 ? stored : incoming);
const sticky: Rule = (stored, incoming) => stored === true || incoming;

/** Rule 7: a fork's inherited usage, told by the first stream that saw the fork begin, stays. */
const keepFirst: Rule = (stored) => stored;

type Table = {
  rules: Record<string, Rule>;
  /** Fills required columns of a row being inserted (the contract's fallbacks). */
  defaults: (row: Row) => void;
  /** Columns a new row cannot do without, even after the defaults. */
  required: string[];
};

export const UPSERT_TABLES = {
  conversations: {
    rules: { startedAt: earliest, lastSeenAt: latest, forkedFromUsage: keepFirst },
    defaults: (row) => {
      row.startedAt ??= row.lastSeenAt;
      row.lastSeenAt ??= row.startedAt;
    },
    required: ["startedAt"],
  },
  turns: {
    rules: {
      startedAt: earliest,
      endedAt: latest,
      status: terminalStatus(TURN_TERMINAL, true),
    },
    defaults: (row) => {
      row.startedAt ??= row.endedAt;
      row.status ??= "running";
    },
    required: ["conversationId", "startedAt"],
  },
  commands: {
    rules: {
      startedAt: earliest,
      endedAt: latest,
      status: terminalStatus(COMMAND_TERMINAL, false),
      command: keepArgv,
      chunked: sticky,
    },
    defaults: (row) => {
      row.startedAt ??= row.endedAt;
      row.command ??= [];
      row.chunked ??= false;
    },
    required: ["turnId", "startedAt"],
  },
} satisfies Record<string, Table>;

export type UpsertTable = keyof typeof UPSERT_TABLES;

/** The other form of an `any` column (`parsedCmd` <-> `parsedCmdJson`), if `field` is one. */
export function anySibling(field: string): string | null {
  for (const column of ANY_COLUMNS) {
    if (field === column) return `${column}Json`;
    if (field === `${column}Json`) return column;
  }
  return null;
}

/** Rules 1, 2, 3, 4, 5 applied to one row; `stored` null means the row is new. */
export function mergeRow(table: UpsertTable, stored: Row | null, incoming: Row): Row {
  const { rules, defaults }: Table = UPSERT_TABLES[table];
  const merged: Row = { ...(stored ?? {}) };
  for (const [field, value] of Object.entries(incoming)) {
    if (value === undefined || value === null) continue; // rule 1
    const current = merged[field];
    const rule = rules[field];
    merged[field] = current !== undefined && rule !== undefined ? rule(current, value) : value;
    const sibling = anySibling(field);
    if (sibling !== null) delete merged[sibling];
  }
  if (stored === null) defaults(merged);
  return merged;
}

/** Required columns still missing from a row about to be inserted. */
export function missingColumns(table: UpsertTable, row: Row): string[] {
  return UPSERT_TABLES[table].required.filter((field) => row[field] === undefined);
}
