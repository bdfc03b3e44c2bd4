// Builds CommonJS and ESM copies of src/ with plain tsc, each folder marked with its module type,
// then regenerates the shipped sql/*.sql from the same dialect code the store runs.
import { execFileSync } from 'node:child_process';
import { rmSync, writeFileSync, mkdirSync, chmodSync } from 'node:fs';
import { createRequire } from 'node:module';

const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
rmSync('dist', { recursive: true, force: true });
for (const [config, type] of [['tsconfig.json', 'commonjs'], ['tsconfig.esm.json', 'module']]) {
  execFileSync(process.execPath, [tsc, '-p', config], { stdio: 'inherit' });
  const dir = type === 'commonjs' ? 'dist/cjs' : 'dist/esm';
  mkdirSync(dir, { recursive: true });
  writeFileSync(`${dir}/package.json`, JSON.stringify({ type }) + '\n');
}
chmodSync('dist/cjs/cli.js', 0o755);

const { dialectNames, tableSql } = createRequire(import.meta.url)('../dist/cjs/index.js');
mkdirSync('sql', { recursive: true });
for (const name of dialectNames) writeFileSync(`sql/${name}.sql`, tableSql(name, 'sessions'));
