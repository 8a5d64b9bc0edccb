/**
 * The README's example, type-checked against the built package and compiled to a runnable module,
 * so the lines a backend developer copies are known to compile and to work.
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import ts from "typescript";

import { PACKAGE_DIR } from "./service.js";

export const README_BASE_URL = "http://localhost:8003";

/** The n-th ```ts block of the package's README (0: the executor API's, 1: the tenant API's). */
export function readmeExample(index = 0): string {
  const readme = readFileSync(join(PACKAGE_DIR, "README.md"), "utf8");
  const blocks = [...readme.matchAll(/```ts\n([\s\S]*?)```/g)].map((match) => match[1] ?? "");
  const block = blocks[index];
  if (!block) throw new Error(`README.md has no ts example number ${index}`);
  return block;
}

/**
 * Writes the example under dist/ (inside the package, so `@strategy-executor/client` resolves to
 * the package itself), pointed at `baseUrl`; returns its diagnostics and the emitted module's path.
 */
export function compileExample(
  source: string,
  baseUrl: string,
  name = "example",
): { errors: string[]; module: string } {
  if (!source.includes(README_BASE_URL)) throw new Error(`the example does not use ${README_BASE_URL}`);
  const dir = join(PACKAGE_DIR, "dist", "readme", name);
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `${name}.mts`);
  writeFileSync(file, source.replace(README_BASE_URL, baseUrl));
  const program = ts.createProgram([file], {
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    types: ["node"],
    strict: true,
    skipLibCheck: true,
    noEmitOnError: true,
    rootDir: dir,
    outDir: dir,
  });
  const emitted = program.emit();
  const errors = [...ts.getPreEmitDiagnostics(program), ...emitted.diagnostics].map((diagnostic) =>
    ts.flattenDiagnosticMessageText(diagnostic.messageText, "\n"),
  );
  return { errors, module: join(dir, `${name}.mjs`) };
}
