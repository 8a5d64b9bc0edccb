#!/usr/bin/env node
// Regenerates src/schema.ts from the service's OpenAPI document.
//
//   npm run generate                      the document of the code in this repository (no server needed)
//   npm run generate -- --from URL        a running service's /openapi.json (EXECUTOR_API_TOKEN for auth)
//   npm run generate -- --from FILE       a dumped document (`strategy-executor openapi -o FILE`)
//   npm run generate -- --check [...]     change nothing; exit 1 when src/schema.ts differs
//
// Without --from, the document comes from `python -m api.openapi_dump` run in the repository root,
// with $PYTHON, else the repository's .venv, else python3.
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import openapiTS, { astToString } from "openapi-typescript";

const PACKAGE_DIR = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const REPO_ROOT = resolve(PACKAGE_DIR, "..", "..");
export const SCHEMA_PATH = join(PACKAGE_DIR, "src", "schema.ts");
const HEADER = `/**
 * Generated from the strategy-executor OpenAPI document by openapi-typescript: do not edit.
 * Regenerate with \`npm run generate\` in clients/typescript (see its README).
 */

`;

function usage(message) {
  console.error(`generate: ${message}\nusage: node scripts/generate.mjs [--from URL|FILE] [--check]`);
  process.exit(2);
}

function parseArgs(argv) {
  const options = { from: undefined, check: false };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--check") options.check = true;
    else if (argv[i] === "--from" && argv[i + 1]) options.from = argv[++i];
    else usage(`unknown argument ${JSON.stringify(argv[i])}`);
  }
  return options;
}

function python() {
  if (process.env.PYTHON) return process.env.PYTHON;
  const venv = join(REPO_ROOT, ".venv", "bin", "python");
  return existsSync(venv) ? venv : "python3";
}

async function loadDocument(from) {
  if (from === undefined) {
    const text = execFileSync(python(), ["-m", "api.openapi_dump"], {
      cwd: REPO_ROOT,
      encoding: "utf8",
      maxBuffer: 64 * 1024 * 1024,
      stdio: ["ignore", "pipe", "inherit"],
    });
    return JSON.parse(text);
  }
  if (/^https?:\/\//.test(from)) {
    const headers = process.env.EXECUTOR_API_TOKEN ? { Authorization: `Bearer ${process.env.EXECUTOR_API_TOKEN}` } : {};
    const response = await fetch(from, { headers, signal: AbortSignal.timeout(30_000) });
    if (!response.ok) throw new Error(`GET ${from}: ${response.status} ${await response.text()}`);
    return await response.json();
  }
  return JSON.parse(readFileSync(from, "utf8"));
}

/** The TypeScript source openapi-typescript makes of an OpenAPI document (deterministic). */
export async function generate(document) {
  // defaultNonNullable off: a request field with a default (auto_start, exchange, ...) is optional to send.
  const ast = await openapiTS(document, { silent: true, defaultNonNullable: false });
  return HEADER + astToString(ast);
}

async function main() {
  const options = parseArgs(process.argv.slice(2));
  const source = await generate(await loadDocument(options.from));
  const current = existsSync(SCHEMA_PATH) ? readFileSync(SCHEMA_PATH, "utf8") : "";
  if (options.check) {
    if (source !== current) {
      console.error(
        "src/schema.ts differs from the types the service's OpenAPI document generates:\n" +
          "run `npm run generate` in clients/typescript and commit src/schema.ts",
      );
      process.exit(1);
    }
    console.log("src/schema.ts matches the service's OpenAPI document");
    return;
  }
  writeFileSync(SCHEMA_PATH, source);
  console.log(source === current ? "src/schema.ts unchanged" : "src/schema.ts regenerated");
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((error) => {
    console.error(`generate: ${error.message ?? error}`);
    process.exit(1);
  });
}
