import type { components } from "./schema.js";

export type ErrorBody = components["schemas"]["ErrorResponse"];
export type ValidationErrorBody = components["schemas"]["ValidationErrorResponse"];
export type FieldError = components["schemas"]["FieldError"];
/** 409 `strategy_halted` of `execute`: `halt` is the status's halt object. */
export type StrategyHaltedBody = components["schemas"]["StrategyHaltedResponse"];
/** 409 `strategy_halted` of a bot's run: `halt` is the same object in the tenant API's camelCase. */
export type BotHaltedBody = components["schemas"]["BotHaltedResponse"];
/** Every error body the service documents; `"halt" in body` tells a refusal for a halt apart. */
export type AnyErrorBody = ErrorBody | ValidationErrorBody | StrategyHaltedBody | BotHaltedBody;

/** The service answered with an error status; `body` is its JSON error as documented in /openapi.json. */
export class ExecutorApiError extends Error {
  override name = "ExecutorApiError";
  /** HTTP status: 401, 404, 409, 413, 422, 503, ... */
  readonly status: number;
  /** The service's stable machine-readable code (`not_found`, `unauthorized`, `validation_error`, ...). */
  readonly code: string;
  readonly body: AnyErrorBody;
  /** The service's X-Request-ID, to find the request in its logs. */
  readonly requestId: string | undefined;
  readonly method: string;
  readonly path: string;

  constructor(method: string, path: string, response: Response, body: AnyErrorBody) {
    const code = body.error ?? "error";
    super(`${method} ${path}: ${response.status} ${code}: ${body.message ?? ""}`);
    this.status = response.status;
    this.code = code;
    this.body = body;
    this.requestId = response.headers.get("x-request-id") ?? undefined;
    this.method = method;
    this.path = path;
  }
}

/**
 * 422: the request was refused, field by field. For code that does not compile or breaks the
 * sandbox's language policy, `detail` carries the line and column of the error.
 */
export class ExecutorValidationError extends ExecutorApiError {
  override name = "ExecutorValidationError";
  declare readonly body: ValidationErrorBody;
  readonly detail: FieldError[];

  constructor(method: string, path: string, response: Response, body: ValidationErrorBody) {
    super(method, path, response, body);
    this.detail = body.detail;
    const fields = body.detail.map((item) => `${item.field}: ${item.reason}`).join("; ");
    this.message = `${method} ${path}: 422 ${fields || body.message}`;
  }
}

/** No complete answer within the client's timeout (the request may still have taken effect). */
export class ExecutorTimeoutError extends Error {
  override name = "ExecutorTimeoutError";
  readonly timeoutMs: number;

  constructor(method: string, path: string, timeoutMs: number) {
    super(`${method} ${path}: no answer within ${timeoutMs} ms`);
    this.timeoutMs = timeoutMs;
  }
}

/** The service could not be reached, or answered with something that is not its JSON (a proxy's page). */
export class ExecutorConnectionError extends Error {
  override name = "ExecutorConnectionError";

  constructor(method: string, path: string, cause: unknown) {
    super(`${method} ${path}: ${describe(cause)}`, { cause });
  }
}

/** fetch's own message is "fetch failed"; what happened (ECONNREFUSED, a reset) is in its cause. */
function describe(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const inner = error.cause instanceof Error ? error.cause : undefined;
  const code = (inner as { code?: unknown } | undefined)?.code;
  return inner ? `${error.message} (${typeof code === "string" ? `${code}: ` : ""}${inner.message})` : error.message;
}

/** Turns a non-2xx answer into the error class that fits its documented body. */
export function errorFromResponse(method: string, path: string, response: Response, body: unknown): Error {
  if (isErrorBody(body)) {
    if (response.status === 422 && body.error === "validation_error" && Array.isArray(body.detail)) {
      return new ExecutorValidationError(method, path, response, body as ValidationErrorBody);
    }
    return new ExecutorApiError(method, path, response, body);
  }
  return new ExecutorConnectionError(method, path, new Error(`${response.status} with a body that is not the service's`));
}

function isErrorBody(body: unknown): body is (ErrorBody | ValidationErrorBody) & { detail?: unknown } {
  return (
    typeof body === "object" &&
    body !== null &&
    typeof (body as { error?: unknown }).error === "string" &&
    typeof (body as { message?: unknown }).message === "string"
  );
}
