/** The executor API: what the platform's backend uses for any user's strategies (EXECUTOR_API_TOKEN). */
import { BaseClient } from "./base.js";
import { ExecutorConnectionError, ExecutorTimeoutError } from "./errors.js";
import type { components, paths } from "./schema.js";

type Schemas = components["schemas"];
export type DeployRequest = Schemas["DeployRequest"];
export type Strategy = Schemas["Strategy"];
export type StrategySummary = Schemas["StrategySummary"];
export type StrategyList = Schemas["StrategyList"];
export type StrategyStatus = Schemas["StrategyStatus"];
export type StrategyStats = Schemas["StrategyStats"];
export type Execution = Schemas["Execution"];
export type ExecutionList = Schemas["ExecutionList"];
export type RunRequest = Schemas["RunRequest"];
export type OrderList = Schemas["OrderList"];
export type PaperWallet = Schemas["PaperWallet"];
export type HealthResponse = Schemas["HealthResponse"];
export type ListStrategiesQuery = NonNullable<paths["/strategies"]["get"]["parameters"]["query"]>;
export type ListExecutionsQuery = NonNullable<paths["/strategies/{strategy_id}/executions"]["get"]["parameters"]["query"]>;
export type ListOrdersQuery = NonNullable<paths["/strategies/{strategy_id}/orders"]["get"]["parameters"]["query"]>;

/** `deploy`'s answer: the stored spec, and whether it was created (201) or replaced (200). */
export interface Deployed {
  strategy: Strategy;
  created: boolean;
}

/** `execute`'s answer: the finished execution (within `wait`), or the recorded run request (202). */
export type ExecuteResult = { finished: true; execution: Execution } | { finished: false; request: RunRequest };

/** The executor API (`EXECUTOR_API_TOKEN`): what the platform's backend uses for any user's strategies. */
export class ExecutorClient extends BaseClient {
  async health(): Promise<HealthResponse> {
    const path = "/health";
    // 503 carries a HealthResponse too: an unhealthy service is an answer, not an error.
    const signal = AbortSignal.timeout(this.timeoutMs);
    try {
      const { data, error } = await this.api.GET(path, { signal });
      return (data ?? error) as HealthResponse;
    } catch (error) {
      if (signal.aborted) throw new ExecutorTimeoutError("GET", path, this.timeoutMs);
      throw new ExecutorConnectionError("GET", path, error);
    }
  }

  /** Create a strategy, or replace its spec (its generation is bumped). A 422 says where the code is wrong. */
  async deploy(spec: DeployRequest): Promise<Deployed> {
    const { data, response } = await this.send("POST", "/strategies/deploy", (signal) =>
      this.api.POST("/strategies/deploy", { body: spec, signal }),
    );
    return { strategy: data, created: response.status === 201 };
  }

  async start(strategyId: string): Promise<StrategyStatus> {
    const path = `/strategies/${strategyId}/start`;
    const { data } = await this.send("POST", path, (signal) =>
      this.api.POST("/strategies/{strategy_id}/start", { params: { path: { strategy_id: strategyId } }, signal }),
    );
    return data;
  }

  async stop(strategyId: string): Promise<StrategyStatus> {
    const path = `/strategies/${strategyId}/stop`;
    const { data } = await this.send("POST", path, (signal) =>
      this.api.POST("/strategies/{strategy_id}/stop", { params: { path: { strategy_id: strategyId } }, signal }),
    );
    return data;
  }

  /** Requests deletion (202); replicas remove the strategy once nothing of it is in flight. */
  async delete(strategyId: string): Promise<StrategyStatus> {
    const path = `/strategies/${strategyId}`;
    const { data } = await this.send("DELETE", path, (signal) =>
      this.api.DELETE("/strategies/{strategy_id}", { params: { path: { strategy_id: strategyId } }, signal }),
    );
    return data;
  }

  /** The spec: code, config, interval (never the credentials). */
  async get(strategyId: string): Promise<Strategy> {
    const path = `/strategies/${strategyId}`;
    const { data } = await this.send("GET", path, (signal) =>
      this.api.GET("/strategies/{strategy_id}", { params: { path: { strategy_id: strategyId } }, signal }),
    );
    return data;
  }

  async status(strategyId: string): Promise<StrategyStatus> {
    const path = `/strategies/${strategyId}/status`;
    const { data } = await this.send("GET", path, (signal) =>
      this.api.GET("/strategies/{strategy_id}/status", { params: { path: { strategy_id: strategyId } }, signal }),
    );
    return data;
  }

  /** One page, newest first; pass `next_cursor` back as `cursor` for the next. */
  async list(query: ListStrategiesQuery = {}): Promise<StrategyList> {
    const { data } = await this.send("GET", "/strategies", (signal) =>
      this.api.GET("/strategies", { params: { query }, signal }),
    );
    return data;
  }

  /**
   * Requests a manual run. While the strategy already has one pending, the service answers with that
   * one (`request.already_pending`) instead of recording another. With `wait` (seconds, at most 60) the
   * service answers once the run ends, if it ends in time; the client's timeout is extended by the wait.
   * A strategy halted by its risk guard is refused: `ExecutorApiError` with status 409, code `strategy_halted`,
   * and the status's halt object as `body.halt` (`StrategyHaltedBody`).
   */
  async execute(strategyId: string, options: { wait?: number } = {}): Promise<ExecuteResult> {
    const path = `/strategies/${strategyId}/execute`;
    const query = options.wait === undefined ? {} : { wait: options.wait };
    const { data, response } = await this.send(
      "POST",
      path,
      (signal) =>
        this.api.POST("/strategies/{strategy_id}/execute", {
          params: { path: { strategy_id: strategyId }, query },
          signal,
        }),
      (options.wait ?? 0) * 1000,
    );
    return response.status === 200
      ? { finished: true, execution: data as Execution }
      : { finished: false, request: data as RunRequest };
  }

  /** One page of a strategy's executions, newest first. */
  async executions(strategyId: string, query: ListExecutionsQuery = {}): Promise<ExecutionList> {
    const path = `/strategies/${strategyId}/executions`;
    const { data } = await this.send("GET", path, (signal) =>
      this.api.GET("/strategies/{strategy_id}/executions", {
        params: { path: { strategy_id: strategyId }, query },
        signal,
      }),
    );
    return data;
  }

  async execution(executionId: string): Promise<Execution> {
    const path = `/executions/${executionId}`;
    const { data } = await this.send("GET", path, (signal) =>
      this.api.GET("/executions/{execution_id}", { params: { path: { execution_id: executionId } }, signal }),
    );
    return data;
  }

  /** Every order request the strategy made and its answer, refused ones too. */
  async orders(strategyId: string, query: ListOrdersQuery = {}): Promise<OrderList> {
    const path = `/strategies/${strategyId}/orders`;
    const { data } = await this.send("GET", path, (signal) =>
      this.api.GET("/strategies/{strategy_id}/orders", {
        params: { path: { strategy_id: strategyId }, query },
        signal,
      }),
    );
    return data;
  }

  /** A paper strategy's wallet. */
  async balances(strategyId: string): Promise<PaperWallet> {
    const path = `/strategies/${strategyId}/balances`;
    const { data } = await this.send("GET", path, (signal) =>
      this.api.GET("/strategies/{strategy_id}/balances", { params: { path: { strategy_id: strategyId } }, signal }),
    );
    return data;
  }
}
