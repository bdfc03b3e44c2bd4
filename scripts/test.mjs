// `npm test`: build, type-check, run the suite once per configuration, check the packed package, and end
// with the plain line "N passed, N failed" that CI reads. Exits non-zero on any failure.
//
// Configurations (each a full run of the same suite against the same database):
//   typeorm 1.x + express 5, in parallel workers
//   typeorm 0.3 + express 4, in band with --detectOpenHandles (any open handle fails the run)
// TEST_MATRIX=quick runs only the first one.
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

let passed = 0;
let failed = 0;
const failures = [];

function run(label, command, args, options = {}) {
  process.stdout.write(`\n== ${label}\n`);
  const result = spawnSync(command, args, { stdio: options.capture ? ['inherit', 'inherit', 'pipe'] : 'inherit', ...options });
  if (options.capture && result.stderr) process.stderr.write(result.stderr);
  return result;
}

function step(label, command, args, options) {
  const result = run(label, command, args, options);
  if (result.status === 0) passed++;
  else {
    failed++;
    failures.push(label);
  }
  return result;
}

function jest(label, env, extraArgs) {
  const out = join(tmpdir(), `typeorm-session-jest-${process.pid}-${passed + failed}.json`);
  const result = run(label, process.execPath, [
    'node_modules/jest/bin/jest.js', '--json', `--outputFile=${out}`, ...extraArgs, ...process.argv.slice(2),
  ], { env: { ...process.env, ...env }, capture: true });
  let report;
  try {
    report = JSON.parse(readFileSync(out, 'utf8'));
    rmSync(out, { force: true });
  } catch {
    failed++;
    failures.push(`${label}: jest produced no report`);
    return;
  }
  passed += report.numPassedTests;
  failed += report.numFailedTests;
  if (report.numTotalTests === 0) {
    failed++;
    failures.push(`${label}: no test ran`);
  }
  // Failures outside tests (a suite that did not load, global setup) count too.
  if (!report.success && report.numFailedTests === 0) {
    failed++;
    failures.push(`${label}: jest failed outside a test (see above)`);
  }
  const stderr = String(result.stderr ?? '');
  if (/open handle/i.test(stderr) && extraArgs.includes('--detectOpenHandles')) {
    failed++;
    failures.push(`${label}: jest reported open handles`);
  }
}

step('build', process.execPath, ['scripts/build.mjs']);
step('type-check src, tests and examples', process.execPath, [
  'node_modules/typescript/bin/tsc', '-p', 'test/tsconfig.json', '--noEmit',
]);
jest('jest: typeorm 1.x, express 5', { TYPEORM_VERSION: '1', EXPRESS_VERSION: '5' }, []);
if (process.env.TEST_MATRIX !== 'quick') {
  jest('jest: typeorm 0.3, express 4 (--detectOpenHandles)', { TYPEORM_VERSION: '0.3', EXPRESS_VERSION: '4' }, [
    '--runInBand', '--detectOpenHandles',
  ]);
}
if (existsSync('dist/cjs/index.js')) step('packed package: exports, types, ESM and CommonJS', process.execPath, ['scripts/check-package.mjs']);

if (failures.length) process.stdout.write(`\nFailed: \n- ${failures.join('\n- ')}\n`);
process.stdout.write(`\n${passed} passed, ${failed} failed\n`);
process.exitCode = failed === 0 && passed > 0 ? 0 : 1;
