// Builds the console: bundles src/main.jsx and src/style.css (minified) into
// ../assets/console/ as app-<hash>.js, app-<hash>.css and an index.html that references them,
// with a brotli (.br) and gzip (.gz) copy of each. The output is byte-for-byte reproducible,
// so CI can rebuild and check `git diff --exit-code assets/console`.
import { build } from "esbuild";
import { createHash } from "node:crypto";
import { mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { brotliCompressSync, constants, gzipSync } from "node:zlib";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "assets", "console");

async function bundle(entry, loaderOptions) {
  const result = await build({
    entryPoints: [join(here, "src", entry)],
    bundle: true,
    minify: true,
    write: false,
    legalComments: "none",
    charset: "utf8",
    target: ["es2020", "chrome100", "firefox100", "safari15"],
    outdir: out,
    ...loaderOptions,
  });
  return result.outputFiles[0].contents;
}

const js = await bundle("main.jsx", {
  format: "iife",
  jsx: "automatic",
  jsxImportSource: "preact",
});
const css = await bundle("style.css", {});

const hash = (bytes) => createHash("sha256").update(bytes).digest("hex").slice(0, 12);
const jsName = `app-${hash(js)}.js`;
const cssName = `app-${hash(css)}.css`;
const html = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>sparkbrain console</title>
<link rel="stylesheet" href="/console/${cssName}">
<script defer src="/console/${jsName}"></script>
</head>
<body>
<div id="app"><noscript>The sparkbrain console needs JavaScript.</noscript></div>
</body>
</html>
`;

const files = {
  [jsName]: js,
  [cssName]: css,
  "index.html": new TextEncoder().encode(html),
};

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
for (const [name, bytes] of Object.entries(files)) {
  writeFileSync(join(out, name), bytes);
  writeFileSync(
    join(out, `${name}.br`),
    brotliCompressSync(bytes, {
      params: {
        [constants.BROTLI_PARAM_QUALITY]: 11,
        [constants.BROTLI_PARAM_SIZE_HINT]: bytes.length,
      },
    }),
  );
  // Node's gzip header carries mtime 0 and no file name, so the output is deterministic.
  writeFileSync(join(out, `${name}.gz`), gzipSync(bytes, { level: 9 }));
}

for (const name of readdirSync(out).sort()) {
  const size = statSync(join(out, name)).size;
  console.log(`${String(size).padStart(8)}  assets/console/${name}`);
}
