// Bundles the dashboard (and three.js) into dashboard/dist/app.js. Run by scripts/browser-setup.
import { build } from 'esbuild';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const here = dirname(fileURLToPath(import.meta.url));
await build({
  entryPoints: [join(here, 'src', 'main.js')],
  outfile: join(here, 'dist', 'app.js'),
  bundle: true,
  format: 'esm',
  minify: true,
  sourcemap: true,
  target: ['chrome110', 'safari16', 'firefox115'],
  logLevel: 'warning',
});
