// Bundles the app the way a project would: esbuild, React's automatic JSX runtime, the package's CSS.
import { copyFileSync, mkdirSync } from "node:fs";
import * as esbuild from "esbuild";

mkdirSync("dist", { recursive: true });
await esbuild.build({
  entryPoints: ["src/main.jsx"],
  outfile: "dist/app.js",
  bundle: true,
  format: "esm",
  target: "es2020",
  jsx: "automatic",
  define: { "process.env.NODE_ENV": '"production"' },
  logLevel: "warning",
});
copyFileSync("index.html", "dist/index.html");
