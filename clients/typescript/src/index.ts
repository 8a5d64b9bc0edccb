/**
 * A typed client for the strategy-executor service. Every type comes from src/schema.ts, which is
 * generated from the service's OpenAPI document; the clients only add auth, timeouts and errors.
 */
export { BaseClient, type ClientOptions } from "./base.js";
export * from "./errors.js";
export * from "./executor.js";
export type { components, operations, paths } from "./schema.js";
export * from "./tenant.js";
export * from "./tenant-token.js";
