// Builds the dashboard's scripts and styles into director/manager/dashboard/static/build/.
// `node build.mjs` once (make does this); `node build.mjs --watch` while working on them.
import * as esbuild from "esbuild";
import { rmSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const outdir = resolve(here, "../director/manager/dashboard/static/build");
const watch = process.argv.includes("--watch");

rmSync(outdir, { recursive: true, force: true });

// @replit/codemirror-emacs registers its key bindings with top-level calls it marks
// /*@__PURE__*/ (and its package says "sideEffects": false), so a bundler drops them and
// the emacs key map binds nothing. Keep those calls.
const keepEmacsBindings = {
  name: "keep-emacs-bindings",
  setup(build) {
    build.onLoad({ filter: /[\\/]@replit[\\/]codemirror-emacs[\\/]dist[\\/]index\.js$/ }, async (args) => ({
      contents: (await readFile(args.path, "utf8")).replaceAll("/*@__PURE__*/EmacsHandler.", "EmacsHandler."),
      loader: "js",
    }));
  },
};

const options = {
  // The same name for both: esbuild writes main.js and main.css.
  entryPoints: [
    { in: resolve(here, "src/main.js"), out: "main" },
    { in: resolve(here, "src/css/main.css"), out: "main" },
  ],
  outdir,
  bundle: true,
  splitting: true,
  format: "esm",
  target: ["es2022", "chrome110", "firefox115", "safari16"],
  minify: !watch,
  sourcemap: true,
  entryNames: "[name]",
  chunkNames: "chunks/[name]-[hash]",
  assetNames: "assets/[name]-[hash]",
  legalComments: "linked",
  logLevel: "info",
  plugins: [keepEmacsBindings],
};
if (watch) {
  const context = await esbuild.context(options);
  await context.watch();
} else {
  await esbuild.build(options);
}
