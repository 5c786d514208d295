// Runtime check of a value against a Convex validator. `ingest:applyBatch` receives each op's args
// as `v.any()` so that one malformed op is `rejected` on its own instead of failing the batch; this
// applies the same validators the `app:*` functions declare. Covers the kinds those use.
import type { GenericValidator, PropertyValidators } from "convex/values";

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  return typeof value;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** null when `value` matches, else a message naming the first mismatch. */
export function checkValue(validator: GenericValidator, value: unknown, path: string): string | null {
  switch (validator.kind) {
    case "any":
      return null;
    case "string":
      return typeof value === "string" ? null : `${path} must be a string, got ${describe(value)}`;
    case "float64":
      return typeof value === "number" ? null : `${path} must be a number, got ${describe(value)}`;
    case "boolean":
      return typeof value === "boolean" ? null : `${path} must be a boolean, got ${describe(value)}`;
    case "null":
      return value === null ? null : `${path} must be null, got ${describe(value)}`;
    case "literal":
      return value === validator.value ? null : `${path} must be ${JSON.stringify(validator.value)}`;
    case "array": {
      if (!Array.isArray(value)) return `${path} must be an array, got ${describe(value)}`;
      for (let i = 0; i < value.length; i += 1) {
        const problem = checkValue(validator.element, value[i], `${path}[${i}]`);
        if (problem !== null) return problem;
      }
      return null;
    }
    case "union": {
      const problems = validator.members.map((member) => checkValue(member, value, path));
      return problems.includes(null) ? null : problems.join("; or ");
    }
    case "object":
      return checkFields(validator.fields, value, path);
    default:
      // Not used by the op validators; fail loudly rather than accept unchecked.
      throw new Error(`checkValue: unsupported validator kind ${validator.kind}`);
  }
}

/** Checks an object against a map of field validators (as in `args: {...}`); no extra fields. */
export function checkFields(fields: PropertyValidators, value: unknown, path: string): string | null {
  if (!isRecord(value)) return `${path} must be an object, got ${describe(value)}`;
  for (const [name, fieldValidator] of Object.entries(fields)) {
    const item = value[name];
    if (item === undefined) {
      if (fieldValidator.isOptional === "required") return `${path}.${name} is required`;
      continue;
    }
    const problem = checkValue(fieldValidator, item, `${path}.${name}`);
    if (problem !== null) return problem;
  }
  for (const name of Object.keys(value)) {
    if (!(name in fields)) return `${path}.${name} is not a column of this op`;
  }
  return null;
}
