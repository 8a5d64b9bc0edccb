/** What every client shares: the typed openapi-fetch client, bearer auth, one timeout per request, typed errors. */
import createClient, { type Client } from "openapi-fetch";

import { ExecutorConnectionError, ExecutorTimeoutError, errorFromResponse } from "./errors.js";
import type { paths } from "./schema.js";

export interface ClientOptions {
  /** Where the service listens, e.g. `http://localhost:8003`. */
  baseUrl: string;
  /** Sent as `Authorization: Bearer <token>`. */
  token: string;
  /** Per request, in milliseconds (default 30 s). `execute` with `wait` adds the wait to it. */
  timeoutMs?: number;
  /** A fetch of your own (a proxy agent, a test double); defaults to the global fetch. */
  fetch?: (input: Request) => Promise<Response>;
}

type Answer<T> = { data?: T; error?: unknown; response: Response };

const DEFAULT_TIMEOUT_MS = 30_000;

/** Shared by the executor and tenant clients: one timeout per request, errors as typed classes. */
export class BaseClient {
  /** The underlying openapi-fetch client, typed for every route: for what the methods do not cover. */
  readonly api: Client<paths>;
  readonly timeoutMs: number;

  constructor(options: ClientOptions) {
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.api = createClient<paths>({
      baseUrl: options.baseUrl.replace(/\/+$/, ""),
      headers: { Authorization: `Bearer ${options.token}` },
      ...(options.fetch ? { fetch: options.fetch } : {}),
    });
  }

  /** Runs one request under this client's timeout (plus `extraMs`); a non-2xx answer throws. */
  protected async send<T>(
    method: string,
    path: string,
    run: (signal: AbortSignal) => Promise<Answer<T>>,
    extraMs = 0,
  ): Promise<{ data: T; response: Response }> {
    const timeoutMs = this.timeoutMs + extraMs;
    const signal = AbortSignal.timeout(timeoutMs);
    let answer: Answer<T>;
    try {
      answer = await run(signal);
    } catch (error) {
      // The timeout aborts the fetch or the body read, whichever is under way.
      if (signal.aborted) throw new ExecutorTimeoutError(method, path, timeoutMs);
      throw new ExecutorConnectionError(method, path, error);
    }
    if (!answer.response.ok) throw errorFromResponse(method, path, answer.response, answer.error);
    return { data: answer.data as T, response: answer.response };
  }
}

