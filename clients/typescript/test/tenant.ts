/** The tenant-API client (one user's bots, a JWT per user) against a real `strategy-executor serve`. */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { before, describe, test } from "node:test";
import { promisify } from "node:util";

import {
  ExecutorApiError,
  ExecutorClient,
  ExecutorValidationError,
  signTenantToken,
  TenantClient,
} from "../src/index.js";
import { compileExample, readmeExample } from "./readme.js";
import { python, REPO_ROOT, type Service } from "./service.js";
import { eventually, sharedService } from "./shared.js";

const COUNTER = 'STATE["runs"] = STATE.get("runs", 0) + 1\nRESULT = {"runs": STATE["runs"], "pair": CONFIG["pair"]}';

let service: Service;
let alice: TenantClient;
let bob: TenantClient;

before(async () => {
  service = await sharedService();
  const client = (userId: string) =>
    new TenantClient({
      baseUrl: service.baseUrl,
      token: signTenantToken({ secret: service.jwtSecret, userId }),
      timeoutMs: 60_000,
    });
  alice = client("alice");
  bob = client("bob");
});

describe("tenant API", () => {
  test("start a bot, run it, read it, stop it, delete it; another user sees none of it", async () => {
    const started = await alice.start({
      name: "ts-bot",
      code: COUNTER,
      config: { pair: "B-BTC_USDT" },
      executionInterval: 3600,
    });
    assert.equal(started.created, true);
    const id = started.deployment.deploymentId;
    assert.equal(started.deployment.name, "ts-bot");
    assert.equal(started.deployment.desiredState, "running");
    assert.equal(started.deployment.executionInterval, 3600);

    // Started: its first tick runs at once; a manual run follows it.
    const detail = await eventually("the first run", async () => {
      const bot = await alice.deployment(id);
      return bot.successfulExecutions >= 1 ? bot : undefined;
    });
    assert.equal(detail.code, COUNTER);
    assert.deepEqual(detail.config, { pair: "B-BTC_USDT" });
    assert.deepEqual(detail.state, { runs: 1 });
    assert.equal(detail.recentExecutions?.[0]?.status, "succeeded");
    assert.deepEqual(detail.recentExecutions?.[0]?.result, { runs: 1, pair: "B-BTC_USDT" });
    assert.ok(detail.wallet, "a paper bot has a wallet");

    const run = await alice.run(id);
    assert.equal(run.deploymentId, id);
    assert.equal(run.alreadyPending, false);
    const ran = await eventually("the manual run", async () => {
      const bot = await alice.deployment(id);
      return bot.executionCount === 2 && bot.successfulExecutions === 2 ? bot : undefined;
    });
    assert.deepEqual(ran.state, { runs: 2 });
    assert.ok((ran.avgExecutionTime ?? 0) > 0);

    const mine = await alice.deployments();
    assert.deepEqual(
      mine.items.map((bot) => bot.deploymentId),
      [id],
    );
    assert.deepEqual((await bob.deployments()).items, []);
    for (const attempt of [() => bob.deployment(id), () => bob.stop(id), () => bob.delete(id), () => bob.run(id)]) {
      const refused = await attempt().catch((error: unknown) => error);
      assert.ok(refused instanceof ExecutorApiError, String(refused));
      assert.equal(refused.status, 404, "another user's bot is not found, not forbidden");
    }

    const stopped = await alice.stop(id);
    assert.equal(stopped.desiredState, "stopped");
    await eventually("status stopped", async () => ((await alice.deployment(id)).status === "stopped" ? true : undefined));

    const deleting = await alice.delete(id);
    assert.equal(deleting.deploymentId, id);
    const gone = await eventually("the bot to be removed", async () =>
      alice.deployment(id).then(
        () => undefined,
        (error: unknown) => error,
      ),
    );
    assert.ok(gone instanceof ExecutorApiError);
    assert.equal(gone.status, 404);
  });

  test("a run of a bot its risk limits halted is a 409 whose body holds the halt in camelCase", async () => {
    const { deployment } = await alice.start({
      name: "ts-halted-bot",
      code: 'raise RuntimeError("boom")',
      executionInterval: 3600,
      risk: { max_consecutive_failures: 1 },
    });
    const id = deployment.deploymentId;
    const bot = await eventually("the halt", async () => {
      const now = await alice.deployment(id);
      return now.status === "halted" ? now : undefined;
    });
    const refused = await alice.run(id).catch((error: unknown) => error);
    assert.ok(refused instanceof ExecutorApiError, String(refused));
    assert.equal(refused.status, 409);
    assert.equal(refused.code, "strategy_halted");
    assert.ok("halt" in refused.body, JSON.stringify(refused.body));
    const halt = refused.body.halt;
    assert.ok("haltedAt" in halt, JSON.stringify(halt));
    assert.equal(halt.limit, "max_consecutive_failures");
    assert.equal(halt.value, "1");
    assert.equal(halt.threshold, "1");
    assert.equal(halt.haltedAt, bot.haltedAt);
    assert.equal(halt.resumeAt, null);
    await alice.delete(id);
  });

  test("code that does not compile is a 422 ExecutorValidationError at its line", async () => {
    const refused = await alice
      .start({ name: "broken", code: "x = 1\nimport os\n", executionInterval: 60 })
      .catch((error: unknown) => error);
    assert.ok(refused instanceof ExecutorValidationError, String(refused));
    assert.equal(refused.status, 422);
    assert.equal(refused.detail[0]?.field, "code");
    assert.equal(refused.detail[0]?.line, 2);
  });

  test("the executor token is no tenant token, and a JWT under another secret is refused", async () => {
    const withExecutorToken = new TenantClient({ baseUrl: service.baseUrl, token: service.token });
    const forged = new TenantClient({
      baseUrl: service.baseUrl,
      token: signTenantToken({ secret: "x".repeat(40), userId: "alice" }),
    });
    const expired = new TenantClient({
      baseUrl: service.baseUrl,
      token: signTenantToken({ secret: service.jwtSecret, userId: "alice", now: 1_000_000, ttlSeconds: 60 }),
    });
    for (const client of [withExecutorToken, forged, expired]) {
      const refused = await client.deployments().catch((error: unknown) => error);
      assert.ok(refused instanceof ExecutorApiError, String(refused));
      assert.equal(refused.status, 401);
    }
    // Nor does a tenant JWT open the executor API.
    const jwtAsExecutor = new ExecutorClient({
      baseUrl: service.baseUrl,
      token: signTenantToken({ secret: service.jwtSecret, userId: "alice" }),
    });
    const refused = await jwtAsExecutor.list().catch((error: unknown) => error);
    assert.ok(refused instanceof ExecutorApiError && refused.status === 401);
  });

  test("the README's tenant example compiles and runs", async () => {
    const { errors, module } = compileExample(readmeExample(1), service.baseUrl, "tenant");
    assert.deepEqual(errors, []);
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [module], {
      env: { ...process.env, JWT_SECRET: service.jwtSecret },
    });
    assert.equal(stderr, "");
    const [deploymentId, desiredState] = stdout.trim().split(" ");
    assert.equal(desiredState, "running");
    const u1 = new TenantClient({
      baseUrl: service.baseUrl,
      token: signTenantToken({ secret: service.jwtSecret, userId: "u1" }),
    });
    assert.equal((await u1.deployment(deploymentId ?? "")).name, "hello");
  });

  test("signTenantToken makes the token `strategy-executor token --user` prints", async () => {
    const { stdout } = await promisify(execFile)(python(), ["-m", "reconciler.cli", "token", "--user", "carol"], {
      cwd: REPO_ROOT,
      env: { ...process.env, JWT_SECRET: service.jwtSecret, DATABASE_URL: "", PYTHONPATH: REPO_ROOT },
    });
    const minted = stdout.trim();
    const ours = signTenantToken({ secret: service.jwtSecret, userId: "carol", ttlSeconds: 30 * 86_400 });
    const parts = (token: string) =>
      token
        .split(".")
        .slice(0, 2)
        .map((part) => JSON.parse(Buffer.from(part, "base64url").toString()) as Record<string, unknown>);
    const [theirHeader, theirClaims] = parts(minted);
    const [ourHeader, ourClaims] = parts(ours);
    assert.deepEqual(ourHeader, theirHeader);
    assert.deepEqual(Object.keys(ourClaims ?? {}).sort(), Object.keys(theirClaims ?? {}).sort());
    assert.equal(ourClaims?.sub, theirClaims?.sub);
    for (const token of [minted, ours]) {
      const carol = new TenantClient({ baseUrl: service.baseUrl, token });
      assert.deepEqual((await carol.deployments()).items, []);
    }
  });
});
