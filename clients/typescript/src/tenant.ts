import { BaseClient } from "./base.js";
import type { components, paths } from "./schema.js";

type Schemas = components["schemas"];
export type BotStartRequest = Schemas["BotStartRequest"];
export type Deployment = Schemas["Deployment"];
export type DeploymentDetail = Schemas["DeploymentDetail"];
export type DeploymentList = Schemas["DeploymentList"];
export type BotRunRequest = Schemas["BotRunRequest"];
export type DeploymentsQuery = NonNullable<paths["/api/bot/deployments"]["get"]["parameters"]["query"]>;

/** `start`'s answer: the bot, and whether it was created (201) or an existing one was (re)started (200). */
export interface Started {
  deployment: Deployment;
  created: boolean;
}

/**
 * The tenant API (`/api/bot/...`): one user's bots, with that user's JWT as the token (see
 * signTenantToken). Another user's bot answers 404, as an unknown one does.
 */
export class TenantClient extends BaseClient {
  /**
   * Deploy and start a bot (`{name, code, executionInterval, ...}`), redeploy one, or restart one
   * (`{deploymentId}`). A `deploymentId` of a bot being deleted is refused (409 `conflict`).
   */
  async start(request: BotStartRequest): Promise<Started> {
    const { data, response } = await this.send("POST", "/api/bot/start", (signal) =>
      this.api.POST("/api/bot/start", { body: request, signal }),
    );
    return { deployment: data, created: response.status === 201 };
  }

  /** Stop the bot (a run in progress finishes); a bot being deleted is refused (409 `conflict`). */
  async stop(deploymentId: string): Promise<Deployment> {
    const { data } = await this.send("POST", "/api/bot/stop", (signal) =>
      this.api.POST("/api/bot/stop", { body: { deploymentId }, signal }),
    );
    return data;
  }

  /** One page of the user's bots, newest first; pass `nextCursor` back as `cursor` for the next. */
  async deployments(query: DeploymentsQuery = {}): Promise<DeploymentList> {
    const { data } = await this.send("GET", "/api/bot/deployments", (signal) =>
      this.api.GET("/api/bot/deployments", { params: { query }, signal }),
    );
    return data;
  }

  /** One bot: code, config, STATE, recent executions and orders, a paper bot's wallet. */
  async deployment(deploymentId: string): Promise<DeploymentDetail> {
    const path = `/api/bot/deployments/${deploymentId}`;
    const { data } = await this.send("GET", path, (signal) =>
      this.api.GET("/api/bot/deployments/{deployment_id}", {
        params: { path: { deployment_id: deploymentId } },
        signal,
      }),
    );
    return data;
  }

  /** Requests deletion (202); the bot's rows go once nothing of it is in flight. */
  async delete(deploymentId: string): Promise<Deployment> {
    const path = `/api/bot/deployments/${deploymentId}`;
    const { data } = await this.send("DELETE", path, (signal) =>
      this.api.DELETE("/api/bot/deployments/{deployment_id}", {
        params: { path: { deployment_id: deploymentId } },
        signal,
      }),
    );
    return data;
  }

  /**
   * Run the bot now (also a stopped one); the run request is recorded (202), the run follows. While one
   * is still waiting to start, the answer is that one (`alreadyPending`). A bot being deleted is refused
   * (409 `conflict`), and so is a halted one (409 `strategy_halted`, with `body.halt`: `BotHaltedBody`).
   */
  async run(deploymentId: string): Promise<BotRunRequest> {
    const path = `/api/bot/deployments/${deploymentId}/run`;
    const { data } = await this.send("POST", path, (signal) =>
      this.api.POST("/api/bot/deployments/{deployment_id}/run", {
        params: { path: { deployment_id: deploymentId } },
        signal,
      }),
    );
    return data;
  }
}
