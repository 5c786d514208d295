// Mirror of `ingestor.ops.is_convex_safe`: can Convex hold (and return) this value exactly?
// The daemon uses the Python one to decide between `payload` and `payloadJson`; the queries use
// this one to decide whether a `<column>Json` text can be handed back as a value.

const MAX_SAFE_INT = 2 ** 53;
// A column value sits one level inside its document, and the document inside the batch arguments:
// keep the value two levels under Convex's nesting limit of 16 (same rule as the daemon).
const MAX_DEPTH = 14;
const MAX_ARRAY = 8192;
const MAX_FIELDS = 1024;
const MAX_FIELD_NAME = 1024; // convex/values rejects longer field names
const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;

function isSafeFieldName(name: string): boolean {
  if (name.length === 0 || name.length > MAX_FIELD_NAME || name.startsWith("$")) return false;
  for (let i = 0; i < name.length; i += 1) {
    const code = name.charCodeAt(i);
    if (code < 32 || code >= 127) return false; // printable ASCII only
  }
  return true;
}

// Realm-independent (test runners evaluate code in several realms), like convex/values' own check.
function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== "object" || value === null) return false;
  const proto: unknown = Object.getPrototypeOf(value);
  return proto === null || Object.getPrototypeOf(proto) === null;
}

export function isConvexSafe(value: unknown, depth = 1): boolean {
  if (value === null || typeof value === "boolean" || typeof value === "string") return true;
  if (typeof value === "number") {
    // JS cannot tell 2**60 from a float; like Python, treat integral values past 2^53 as unsafe
    // because the text they came from may have held more digits than a float64 keeps.
    return Number.isInteger(value) ? Math.abs(value) <= MAX_SAFE_INT : Number.isFinite(value);
  }
  // Only reachable through a direct JS caller (JSON never yields these): Convex int64 and bytes.
  if (typeof value === "bigint") return value >= INT64_MIN && value <= INT64_MAX;
  if (value instanceof ArrayBuffer) return true;
  if (depth > MAX_DEPTH) return false;
  if (Array.isArray(value)) {
    return value.length <= MAX_ARRAY && value.every((item) => isConvexSafe(item, depth + 1));
  }
  if (isPlainObject(value)) {
    const entries = Object.entries(value);
    return (
      entries.length <= MAX_FIELDS &&
      entries.every(([name, item]) => isSafeFieldName(name) && isConvexSafe(item, depth + 1))
    );
  }
  return false;
}
