/**
 * A real `strategy-executor serve` for the tests: its own embedded PostgreSQL in a temporary data
 * directory (DATABASE_URL unset), a free port, a fixed API token, encryption key and JWT secret.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

// dist/test/service.js -> the package, then the repository.
export const PACKAGE_DIR = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const REPO_ROOT = resolve(PACKAGE_DIR, "..", "..");

export function python(): string {
  if (process.env.PYTHON) return process.env.PYTHON;
  const venv = join(REPO_ROOT, ".venv", "bin", "python");
  return existsSync(venv) ? venv : "python3";
}

export async function freePort(): Promise<number> {
  return await new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolvePort(port));
    });
  });
}

export class Service {
  readonly token = `ts-client-${randomBytes(12).toString("hex")}`;
  readonly jwtSecret = randomBytes(32).toString("hex");
  readonly baseUrl: string;
  private readonly root: string;
  private readonly logPath: string;
  private readonly process: ChildProcess;
  private exited: Promise<number | null>;

  private constructor(port: number) {
    this.baseUrl = `http://127.0.0.1:${port}`;
    this.root = mkdtempSync(join(tmpdir(), "se-ts-client-"));
    // Under root the embedded server runs as an unprivileged user, which must reach its data dir.
    chmodSync(this.root, 0o711);
    this.logPath = join(this.root, "service.log");
    const log = openSync(this.logPath, "w");
    const env: NodeJS.ProcessEnv = { ...process.env };
    delete env.DATABASE_URL;
    delete env.TEST_DATABASE_URL;
    Object.assign(env, {
      PYTHONPATH: REPO_ROOT,
      DATA_DIR: join(this.root, "data"),
      HOST: "127.0.0.1",
      PORT: String(port),
      EXECUTOR_API_TOKEN: this.token,
      ENCRYPTION_KEY: `ts:${randomBytes(32).toString("base64url")}`,
      JWT_SECRET: this.jwtSecret,
      LOG_LEVEL: "INFO",
      SHUTDOWN_GRACE_SECONDS: "5",
      MAX_WALL_TIME_SECONDS: "20",
    });
    this.process = spawn(python(), ["-m", "reconciler.cli", "serve"], {
      cwd: REPO_ROOT,
      env,
      stdio: ["ignore", log, log],
    });
    closeSync(log);
    // Should the test process end without stop() (an uncaught error), the service still gets its
    // SIGTERM, on which it stops its embedded PostgreSQL by itself.
    const orphaned = () => this.process.kill("SIGTERM");
    process.once("exit", orphaned);
    this.exited = new Promise((resolveExit) =>
      this.process.once("exit", (code) => {
        process.off("exit", orphaned);
        resolveExit(code);
      }),
    );
  }

  /** Starts the service and waits until /health says it is healthy (a bound, not a speed assumption). */
  static async start(readyWithinMs = 180_000): Promise<Service> {
    const service = new Service(await freePort());
    const deadline = Date.now() + readyWithinMs;
    let exitCode: number | null | undefined;
    void service.exited.then((code) => {
      exitCode = code;
    });
    while (Date.now() < deadline) {
      if (exitCode !== undefined) {
        const log = service.log();
        await service.stop();
        throw new Error(`strategy-executor serve exited (${exitCode}):\n${log.slice(-3000)}`);
      }
      try {
        const response = await fetch(`${service.baseUrl}/health`, { signal: AbortSignal.timeout(2000) });
        if (response.status === 200) return service;
      } catch {
        // not listening yet
      }
      await new Promise((wake) => setTimeout(wake, 250));
    }
    const log = service.log();
    await service.stop();
    throw new Error(`the service was not healthy within ${readyWithinMs} ms:\n${log.slice(-3000)}`);
  }

  log(): string {
    return existsSync(this.logPath) ? readFileSync(this.logPath, "utf8") : "";
  }

  /**
   * A service that stopped cleanly has stopped its embedded PostgreSQL; one that crashed or was
   * killed may have left it running in our data directory: shut that server down (SIGQUIT, its
   * immediate shutdown), bounded in time.
   */
  private async stopOrphanedPostgres(): Promise<void> {
    const pidFile = join(this.root, "data", "pgdata", "postmaster.pid");
    if (!existsSync(pidFile)) return;
    const pid = Number.parseInt(readFileSync(pidFile, "utf8").split("\n")[0] ?? "", 10);
    if (!Number.isInteger(pid) || pid <= 0) return;
    // Only that very server: a stale pid file's number may belong to another process by now.
    const cmdline = `/proc/${pid}/cmdline`;
    if (!existsSync(cmdline) || !readFileSync(cmdline, "utf8").includes(this.root)) return;
    try {
      process.kill(pid, "SIGQUIT");
    } catch {
      return; // not running
    }
    const deadline = Date.now() + 15_000;
    while (existsSync(pidFile) && Date.now() < deadline) await new Promise((wake) => setTimeout(wake, 100));
  }

  /** SIGTERM (the service drains and stops its embedded PostgreSQL), SIGKILL if it does not end. */
  async stop(): Promise<void> {
    if (this.process.exitCode === null && this.process.signalCode === null) {
      this.process.kill("SIGTERM");
      const timer = setTimeout(() => this.process.kill("SIGKILL"), 30_000);
      await this.exited;
      clearTimeout(timer);
    }
    await this.stopOrphanedPostgres();
    if (!process.env.KEEP_SERVICE_DIR) rmSync(this.root, { recursive: true, force: true });
  }
}
