/** The executor-API client against a real `strategy-executor serve` on an embedded PostgreSQL. */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createServer, type Server, type Socket } from "node:net";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";

import {
  ExecutorApiError,
  ExecutorClient,
  ExecutorConnectionError,
  ExecutorTimeoutError,
  ExecutorValidationError,
  type Execution,
} from "../src/index.js";
import { compileExample, readmeExample } from "./readme.js";
import { freePort, PACKAGE_DIR, python, type Service } from "./service.js";
import { eventually, sharedService } from "./shared.js";

const COUNTER = [
  'STATE["runs"] = STATE.get("runs", 0) + 1',
  'print("run", STATE["runs"], CONFIG["greeting"])',
  'RESULT = {"runs": STATE["runs"], "greeting": CONFIG["greeting"]}',
].join("\n");

let service: Service;
let client: ExecutorClient;

before(async () => {
  service = await sharedService();
  client = new ExecutorClient({ baseUrl: service.baseUrl, token: service.token, timeoutMs: 60_000 });
});

describe("executor API", () => {
  test("deploy, run with wait, status, executions, stop, start, delete", async () => {
    const deployed = await client.deploy({
      strategy_id: "ts-counter",
      user_id: "backend-user-1",
      code: COUNTER,
      config: { greeting: "hello" },
      execution_interval: 3600,
      auto_start: false,
    });
    assert.equal(deployed.created, true);
    assert.equal(deployed.strategy.strategy_id, "ts-counter");
    assert.equal(deployed.strategy.desired_state, "stopped");
    assert.equal(deployed.strategy.generation, 1);
    assert.deepEqual(deployed.strategy.config, { greeting: "hello" });

    // A manual run of the stopped strategy, answered with the execution once it has ended.
    const ran = await client.execute("ts-counter", { wait: 60 });
    assert.ok(ran.finished, "the run should end within the wait");
    const execution: Execution = ran.execution;
    assert.equal(execution.status, "succeeded", execution.error ?? "");
    assert.equal(execution.trigger, "manual");
    assert.deepEqual(execution.result, { runs: 1, greeting: "hello" });
    assert.match(execution.output ?? "", /run 1 hello/);

    const status = await client.status("ts-counter");
    assert.equal(status.strategy_id, "ts-counter");
    assert.equal(status.desired_state, "stopped");
    assert.equal(status.stats.total_executions, 1);
    assert.equal(status.stats.successful_executions, 1);
    assert.equal(status.stats.failed_executions, 0);
    assert.equal(status.observed_generation, status.generation);

    const executions = await client.executions("ts-counter", { limit: 10 });
    assert.deepEqual(
      executions.items.map((item) => item.execution_id),
      [execution.execution_id],
    );
    assert.equal(executions.next_cursor, null);
    assert.deepEqual(await client.execution(execution.execution_id), executions.items[0]);

    // Redeploy: the spec is replaced, not created; the persisted STATE carries over.
    const redeployed = await client.deploy({
      strategy_id: "ts-counter",
      user_id: "backend-user-1",
      code: COUNTER,
      config: { greeting: "again" },
      execution_interval: 3600,
    });
    assert.equal(redeployed.created, false);
    assert.equal(redeployed.strategy.generation, 2);
    assert.equal(redeployed.strategy.desired_state, "running");
    // Running: its first tick is immediate.
    const scheduled = await eventually("the first scheduled run", async () => {
      const page = await client.executions("ts-counter", { status: "succeeded" });
      return page.items.find((item) => item.trigger === "schedule");
    });
    assert.deepEqual(scheduled.result, { runs: 2, greeting: "again" });

    const listed = await client.list({ user_id: "backend-user-1" });
    assert.deepEqual(
      listed.items.map((item) => item.strategy_id),
      ["ts-counter"],
    );

    const stopped = await client.stop("ts-counter");
    assert.equal(stopped.desired_state, "stopped");
    await eventually("status stopped", async () =>
      (await client.status("ts-counter")).status === "stopped" ? true : undefined,
    );
    // Started again, it runs at once (a new schedule is anchored now).
    const started = await client.start("ts-counter");
    assert.equal(started.desired_state, "running");
    const again = await eventually("the run after start", async () => {
      const page = await client.executions("ts-counter", { status: "succeeded" });
      return page.items.length === 3 ? page.items[0] : undefined;
    });
    assert.deepEqual(again.result, { runs: 3, greeting: "again" });
    await client.stop("ts-counter");
    await eventually("status stopped", async () =>
      (await client.status("ts-counter")).status === "stopped" ? true : undefined,
    );

    // Nothing is in flight (stopped, its last run recorded): replicas remove it on their next pass.
    const deleting = await client.delete("ts-counter");
    assert.notEqual(deleting.delete_requested_at, null);
    const gone = await eventually("the strategy to be removed", async () => {
      try {
        await client.status("ts-counter");
        return undefined;
      } catch (error) {
        return error;
      }
    });
    assert.ok(gone instanceof ExecutorApiError);
    assert.equal(gone.status, 404);
    assert.equal(gone.code, "not_found");
  });

  test("code that does not compile is a 422 ExecutorValidationError with its line", async () => {
    const refused = await client
      .deploy({ strategy_id: "ts-broken", user_id: "backend-user-1", code: "x = 1\ny = (\n", execution_interval: 60 })
      .then(
        () => assert.fail("the deploy should be refused"),
        (error: unknown) => error,
      );
    assert.ok(refused instanceof ExecutorValidationError, String(refused));
    assert.ok(refused instanceof ExecutorApiError);
    assert.equal(refused.status, 422);
    assert.equal(refused.code, "validation_error");
    assert.equal(refused.body.error, "validation_error");
    const [first] = refused.detail;
    assert.ok(first);
    assert.equal(first.field, "code");
    assert.equal(first.line, 2);
    assert.match(refused.message, /^POST \/strategies\/deploy: 422 code: /);
    assert.ok(refused.requestId, "the service's X-Request-ID is kept");

    // A policy violation names its line too; nothing was stored.
    const policy = await client
      .deploy({ strategy_id: "ts-broken", user_id: "u", code: "x = 1\nimport os\n", execution_interval: 60 })
      .catch((error: unknown) => error);
    assert.ok(policy instanceof ExecutorValidationError);
    assert.equal(policy.detail[0]?.line, 2);
    const missing = await client.status("ts-broken").catch((error: unknown) => error);
    assert.ok(missing instanceof ExecutorApiError && missing.status === 404);
  });

  test("a run of a strategy its risk guard halted is a 409 whose body holds the status's halt", async () => {
    // One failure in a row is the limit: the first scheduled tick (at once) fails and halts it.
    await client.deploy({
      strategy_id: "ts-halted",
      user_id: "backend-user-1",
      code: 'raise RuntimeError("boom")',
      execution_interval: 3600,
      risk: { max_consecutive_failures: 1 },
    });
    const status = await eventually("the halt", async () => {
      const now = await client.status("ts-halted");
      return now.status === "halted" ? now : undefined;
    });
    const refused = await client.execute("ts-halted").catch((error: unknown) => error);
    assert.ok(refused instanceof ExecutorApiError, String(refused));
    assert.equal(refused.status, 409);
    assert.equal(refused.code, "strategy_halted");
    assert.ok("halt" in refused.body, JSON.stringify(refused.body));
    assert.deepEqual(refused.body.halt, status.halt);
    assert.equal(refused.body.halt.limit, "max_consecutive_failures");
    assert.equal(refused.body.halt.resume_at, null); // on_breach "stop": until a person starts it
    assert.match(refused.body.message, /POST \/strategies\/ts-halted\/start/);
    await client.stop("ts-halted");
    await client.delete("ts-halted");
  });

  test("a query value out of range is a 422 naming the parameter", async () => {
    const refused = await client.execute("anything", { wait: 600 }).catch((error: unknown) => error);
    assert.ok(refused instanceof ExecutorValidationError, String(refused));
    assert.deepEqual(
      refused.detail.map((item) => item.field),
      ["wait"],
    );
  });

  test("a wrong token is a 401 ExecutorApiError", async () => {
    const stranger = new ExecutorClient({ baseUrl: service.baseUrl, token: "not-the-token" });
    const refused = await stranger.list().catch((error: unknown) => error);
    assert.ok(refused instanceof ExecutorApiError);
    assert.ok(!(refused instanceof ExecutorValidationError));
    assert.equal(refused.status, 401);
    assert.equal(refused.code, "unauthorized");
    // /health needs no token.
    assert.equal((await stranger.health()).status, "healthy");
  });

  test("the README's example compiles and runs", async () => {
    const { errors, module } = compileExample(readmeExample(), service.baseUrl);
    assert.deepEqual(errors, []);
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [module], {
      env: { ...process.env, EXECUTOR_API_TOKEN: service.token },
    });
    assert.equal(stderr, "");
    assert.match(stdout, /^succeeded 1 \n/);
    // The manual run, and the first scheduled tick if it has ended by then (auto_start is the default).
    assert.match(stdout, /successful_executions: [12],/);
    assert.match(stdout, /failed_executions: 0,/);

    // A policy violation takes the example's ExecutorValidationError branch.
    const broken = compileExample(
      readmeExample().replace('code: "RESULT = 1"', 'code: "import os"'),
      service.baseUrl,
      "broken",
    );
    assert.deepEqual(broken.errors, []);
    const refused = await promisify(execFile)(process.execPath, [broken.module], {
      env: { ...process.env, EXECUTOR_API_TOKEN: service.token },
    });
    assert.match(refused.stderr, /field: 'code'/);
    assert.match(refused.stderr, /line: 1/);
  });

  test("the committed types are what this service's /openapi.json generates", async () => {
    const { stdout } = await promisify(execFile)(
      process.execPath,
      ["scripts/generate.mjs", "--check", "--from", `${service.baseUrl}/openapi.json`],
      { cwd: PACKAGE_DIR, env: { ...process.env, EXECUTOR_API_TOKEN: service.token, PYTHON: python() } },
    );
    assert.match(stdout, /matches/);
  });
});

describe("timeouts and unreachable services", () => {
  let silent: Server;
  const sockets: Socket[] = [];

  before(async () => {
    // Accepts connections and never answers.
    silent = createServer((socket) => sockets.push(socket));
    await new Promise<void>((listening) => silent.listen(0, "127.0.0.1", listening));
  });

  after(async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise((closed) => silent.close(closed));
  });

  test("no answer within timeoutMs is an ExecutorTimeoutError", async () => {
    const address = silent.address();
    assert.ok(address && typeof address === "object");
    const slow = new ExecutorClient({ baseUrl: `http://127.0.0.1:${address.port}`, token: "t", timeoutMs: 300 });
    const started = Date.now();
    const error = await slow.status("s").catch((caught: unknown) => caught);
    assert.ok(error instanceof ExecutorTimeoutError, String(error));
    assert.equal(error.timeoutMs, 300);
    assert.ok(Date.now() - started >= 250, "it waited for the timeout");
  });

  test("execute's wait extends the timeout by the wait", async () => {
    const address = silent.address();
    assert.ok(address && typeof address === "object");
    const slow = new ExecutorClient({ baseUrl: `http://127.0.0.1:${address.port}`, token: "t", timeoutMs: 200 });
    const error = await slow.execute("s", { wait: 0.5 }).catch((caught: unknown) => caught);
    assert.ok(error instanceof ExecutorTimeoutError, String(error));
    assert.equal(error.timeoutMs, 700);
  });

  test("a refused connection is an ExecutorConnectionError", async () => {
    const closed = new ExecutorClient({ baseUrl: `http://127.0.0.1:${await freePort()}`, token: "t" });
    const error = await closed.status("s").catch((caught: unknown) => caught);
    assert.ok(error instanceof ExecutorConnectionError, String(error));
  });
});
