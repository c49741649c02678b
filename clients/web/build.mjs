// Builds the package (dist/: ES modules and .d.ts from tsc, styles.css) and the file the stream service
// serves at /api/v1/notifications/client.js (one dependency-free ES module bundled by esbuild from the
// same src/index.ts), which is committed: tests/browser/test_package.py checks it equals a fresh build.
//
//   node build.mjs                  # dist/ and ../../functions/stream/web/client.js
//   node build.mjs --package-only   # dist/ only (npm pack runs this)
//   node build.mjs --served-only --out FILE   # the served module only, to FILE

import { execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const option = (name) => (args.includes(name) ? args[args.indexOf(name) + 1] : undefined);
const served = resolve(option("--out") ?? resolve(here, "../../functions/stream/web/client.js"));

const BANNER = `// The notification client (SPEC sections 4, 5, 7) as one dependency-free ES module.
// Generated from clients/web/src by \`npm run build\` in clients/web: edit the TypeScript there, not this file.
//
//   import { NotificationClient } from "/api/v1/notifications/client.js";
//   const client = new NotificationClient({ getToken: async () => token, onChange: render });
//   await client.start();
`;

function buildPackage() {
  rmSync(resolve(here, "dist"), { recursive: true, force: true });
  const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");
  execFileSync(process.execPath, [tsc, "-p", resolve(here, "tsconfig.json")], { stdio: "inherit" });
  copyFileSync(resolve(here, "src/styles.css"), resolve(here, "dist/styles.css"));
}

async function buildServed() {
  mkdirSync(dirname(served), { recursive: true });
  await esbuild.build({
    entryPoints: [resolve(here, "src/index.ts")],
    outfile: served,
    bundle: true,
    format: "esm",
    target: "es2020",
    platform: "browser",
    charset: "utf8",
    legalComments: "none",
    banner: { js: BANNER },
    logLevel: "warning",
  });
}

if (!args.includes("--served-only")) buildPackage();
if (!args.includes("--package-only")) await buildServed();
