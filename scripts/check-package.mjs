// Packs the package as npm would publish it, then checks the tarball: @arethetypeswrong/cli for the exports
// map and types, and a real require() and import() of the unpacked package that must expose the same names.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, symlinkSync, rmSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const root = resolve('.');
const work = mkdtempSync(join(tmpdir(), 'typeorm-session-pack-'));
try {
  const tarball = execFileSync('npm', ['pack', '--ignore-scripts', '--silent', '--pack-destination', work], {
    encoding: 'utf8',
  }).trim().split('\n').pop();
  const tgz = join(work, tarball);

  // attw's JSON, summed up here: its table marks the node10 column (TypeScript's legacy moduleResolution
  // "node", which ignores "exports" and so cannot reach ./koa) with skulls even though the node16 profile
  // ignores it, which reads as a failure in a passing run.
  const attw = spawnSync(process.execPath, [join(root, 'node_modules/@arethetypeswrong/cli/dist/index.js'), '--pack', tgz,
    '--profile', 'node16', '--format', 'json'], { encoding: 'utf8', maxBuffer: 1 << 28 });
  let analysis;
  try {
    analysis = JSON.parse(attw.stdout).analysis;
  } catch {
    process.stderr.write(attw.stdout + attw.stderr);
    throw new Error(`@arethetypeswrong/cli printed no analysis (exit ${attw.status})`);
  }
  const ignored = new Set(['node10']);
  const problems = analysis.problems.filter((p) => !ignored.has(p.resolutionKind));
  const entrypoints = Object.keys(analysis.entrypoints);
  if (attw.status !== 0 || problems.length) {
    for (const p of problems) process.stderr.write(`attw: ${p.kind} at ${p.entrypoint ?? '?'} (${p.resolutionKind ?? 'all resolutions'})\n`);
    throw new Error(`@arethetypeswrong/cli found ${problems.length} problem(s) (exit ${attw.status})`);
  }
  process.stdout.write(
    `types ok (@arethetypeswrong/cli, node16 profile): ${entrypoints.join(', ')} resolve to typed CJS and ESM under ` +
      `node16 and to types under bundler resolution; node10 resolution, which ignores "exports", is not supported\n`,
  );

  const app = join(work, 'app');
  const installed = join(app, 'node_modules', 'typeorm-session');
  mkdirSync(installed, { recursive: true });
  execFileSync('tar', ['-xzf', tgz, '-C', installed, '--strip-components=1']);
  const files = readdirSync(installed).sort();
  for (const needed of ['dist', 'sql', 'package.json', 'README.md']) {
    if (!files.includes(needed)) throw new Error(`packed package lacks ${needed}: has ${files.join(', ')}`);
  }
  // Peer dependencies come from this checkout, as an app's own node_modules would provide them.
  symlinkSync(join(root, 'node_modules'), join(installed, 'node_modules'), 'dir');

  const names = (code, flags) =>
    execFileSync(process.execPath, [...flags, '-e', code], { cwd: app, encoding: 'utf8' }).trim();
  const cjs = names("console.log(Object.keys(require('typeorm-session')).sort().join(','))", []);
  const esm = names(
    "import('typeorm-session').then(m => console.log(Object.keys(m).filter(k => k !== 'default').sort().join(',')))",
    ['--input-type=module'],
  );
  if (cjs !== esm) throw new Error(`CommonJS and ESM exports differ:\n  cjs: ${cjs}\n  esm: ${esm}`);
  for (const name of ['TypeormSessionStore', 'sessionEntity', 'SessionTableMigration', 'TypeormSessionError']) {
    if (!cjs.split(',').includes(name)) throw new Error(`export ${name} missing: ${cjs}`);
  }
  const sql = execFileSync(join(installed, 'dist/cjs/cli.js'), ['print-sql'], { cwd: app, encoding: 'utf8' });
  if (!/CREATE TABLE IF NOT EXISTS "sessions"/.test(sql)) throw new Error(`print-sql printed: ${sql}`);
  console.log(`package ok: ${cjs.split(',').length} exports, identical from require() and import()`);
} finally {
  rmSync(work, { recursive: true, force: true });
}
