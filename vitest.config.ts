import { defineConfig } from "vitest/config";

// convex-test runs our Convex functions in the edge runtime, as the Convex docs recommend;
// it must be inlined so that vite resolves the `convex/*` modules it imports.
export default defineConfig({
  test: {
    environment: "edge-runtime",
    server: { deps: { inline: ["convex-test"] } },
    exclude: ["**/node_modules/**", "**/.venv/**", "**/_generated/**"],
  },
});
