// The identity provider whose JWTs the UI and the workers sign in with (docs/security.md). Set the
// Convex environment variables INGESTOR_AUTH_ISSUER (the provider's OIDC issuer URL) and, if the
// provider's audience is not "convex", INGESTOR_AUTH_AUDIENCE, then `npx convex deploy`. Without an
// issuer no JWT is accepted: only the admin key (acting as an identity) can call public functions.
import type { AuthConfig } from "convex/server";

const issuer = process.env.INGESTOR_AUTH_ISSUER;

export default {
  providers:
    issuer === undefined || issuer === ""
      ? []
      : [{ domain: issuer, applicationID: process.env.INGESTOR_AUTH_AUDIENCE ?? "convex" }],
} satisfies AuthConfig;
