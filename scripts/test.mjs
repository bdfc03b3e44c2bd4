// `npm test`: build, type-check, run the suite once per configuration, check the packed package, and end
// with the plain line "N passed, N failed" that CI reads. Exits non-zero on any failure.
//
// Configurations: the same suite each time, on another database or with other majors of its peers.
//   postgres  typeorm 1.x  express 5  koa 3    parallel workers
//   postgres  typeorm 0.3  express 4  koa 2    in band, --detectOpenHandles (an open handle fails the run)
//   sqlite    typeorm 1.x  express 5  koa 3
//   sqlite    typeorm 0.3  express 4  koa 2
//   mysql     typeorm 1.x  express 5  koa 3    when MYSQL_URL is set (CI sets it; unreachable = failure)
//   mysql     typeorm 0.3  express 4  koa 2    when MYSQL_URL is set
//   embedded PostgreSQL 18, typeorm 1.x        when DATABASE_URL is set too (CI), so both servers are covered
//   the Express suite through PgBouncer        when TEST_PGBOUNCER names pgbouncer's binary (CI sets it)
// The first configuration also runs the read replica's test (a primary and a pg_basebackup replica it makes
// itself) when PostgreSQL's server programs are found (scripts/postgres-programs.mjs); in CI their absence fails.
// PostgreSQL is DATABASE_URL, or an embedded PostgreSQL 18 the test setup starts when it is unset.
// TEST_MATRIX=quick runs only the first configuration. The browser suite (test/browser.test.ts) runs in the
// first configuration only (TEST_BROWSER=0 leaves it out of the others).
//
// Node: the configurations run on the Node running this script, or on the majors TEST_NODE names
// (TEST_NODE=24, TEST_NODE=22,26), installed on first use (scripts/node-versions.mjs). TEST_EXTRA_NODES
// (CI: 22,24,26) adds, for each major it names, the first configuration after the whole matrix on this
// Node, with the suites whose behaviour can differ by Node (EXTRA_NODE_SUITES): the Express, Koa and Fastify
// suites, the :memory: SQLite test (better-sqlite3 built for that major) and the fault suite.
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import chromium from './chromium.cjs';
import { findReplicaPrograms, missingReplicaProgramsMessage } from './postgres-programs.mjs';
import { currentMajor, nodeBinary, sqliteAddonFor, versionOf } from './node-versions.mjs';

const { findChromium, isCI, missingChromiumMessage } = chromium;

let passed = 0;
let failed = 0;
const failures = [];
const modern = { TYPEORM_VERSION: '1', EXPRESS_VERSION: '5', KOA_VERSION: '3' };
const older = { TYPEORM_VERSION: '0.3', EXPRESS_VERSION: '4', KOA_VERSION: '2' };
const inBand = ['--runInBand', '--detectOpenHandles'];

// The adapters' request scopes (AsyncLocalStorage), not express-session's cookie rules (compat, cookie), which
// are plain JavaScript.
// A configuration still running after this is stopped and fails: jest waits for every handle a test left
// open, and a leaked connection would otherwise hold CI until its own limit.
const CONFIGURATION_TIMEOUT_MS = 25 * 60_000;

const EXTRA_NODE_SUITES = [
  'test/express/transaction.test.ts', 'test/express/scope.test.ts', 'test/express/streaming.test.ts',
  'test/express/failures.test.ts', 'test/express/setup.test.ts', 'test/express/request-registry.test.ts',
  'test/koa.test.ts', 'test/fastify.test.ts', 'test/sqlite-memory.test.ts', 'test/faults.test.ts',
];

const replicaPrograms = findReplicaPrograms();
const baseConfigurations = [
  {
    label: 'postgres, typeorm 1.x, express 5, koa 3',
    env: { TEST_DB: 'postgres', ...modern, ...(replicaPrograms ? { TEST_REPLICA_BIN: replicaPrograms } : {}) },
    args: [],
  },
  { label: 'postgres, typeorm 0.3, express 4, koa 2 (--detectOpenHandles)', env: { TEST_DB: 'postgres', ...older, TEST_BROWSER: '0' }, args: inBand },
  { label: 'sqlite, typeorm 1.x, express 5, koa 3', env: { TEST_DB: 'sqlite', ...modern }, args: [] },
  { label: 'sqlite, typeorm 0.3, express 4, koa 2', env: { TEST_DB: 'sqlite', ...older }, args: [] },
  ...(process.env.MYSQL_URL
    ? [
        { label: `mysql (${process.env.MYSQL_URL}), typeorm 1.x, express 5, koa 3`, env: { TEST_DB: 'mysql', ...modern }, args: [] },
        { label: 'mysql, typeorm 0.3, express 4, koa 2', env: { TEST_DB: 'mysql', ...older }, args: [] },
      ]
    : []),
  ...(process.env.DATABASE_URL
    ? [{ label: 'embedded postgres 18, typeorm 1.x, express 5, koa 3', env: { TEST_DB: 'postgres', ...modern, DATABASE_URL: '', TEST_BROWSER: '0' }, args: [] }]
    : []),
  ...(process.env.TEST_PGBOUNCER
    ? [
        {
          label: 'postgres through PgBouncer (transaction mode), express suite, typeorm 1.x, express 5',
          env: { TEST_DB: 'postgres', ...modern, TEST_PGBOUNCER: process.env.TEST_PGBOUNCER },
          args: ['test/express', 'test/deploy/pgbouncer'],
        },
      ]
    : []),
];

const majors = (value) =>
  String(value ?? '')
    .split(',')
    .map((v) => v.trim())
    .filter(Boolean)
    .map((v) => {
      const major = Number(v);
      if (!Number.isInteger(major) || major < 20) throw new Error(`TEST_NODE / TEST_EXTRA_NODES: "${v}" is not a Node major >= 20`);
      return major;
    });
const mainNodes = process.env.TEST_NODE ? majors(process.env.TEST_NODE) : [currentMajor()];
const quick = process.env.TEST_MATRIX === 'quick';
const configurations = mainNodes.flatMap((node) => (quick ? baseConfigurations.slice(0, 1) : baseConfigurations).map((c) => ({ ...c, node })));
if (!quick) {
  for (const node of majors(process.env.TEST_EXTRA_NODES)) {
    if (mainNodes.includes(node)) continue;
    // What can differ by Node: the async context (the adapters' suites), the addon (:memory: SQLite) and the
    // driver's socket handling (the fault suite). The rest of the matrix is the same code on every Node, and
    // CI's time is better spent once.
    configurations.push({ ...baseConfigurations[0], label: `${baseConfigurations[0].label}: adapters, faults, SQLite addon`, args: EXTRA_NODE_SUITES, node });
  }
}

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

function jest({ label: name, env, args, node }) {
  const out = join(tmpdir(), `typeorm-session-jest-${process.pid}-${passed + failed}.json`);
  const childEnv = { ...process.env, ...env };
  if (childEnv.DATABASE_URL === '') delete childEnv.DATABASE_URL;
  // TEST_PGBOUNCER turns on the PgBouncer configuration only: set in the jest run of any other, it would put
  // PgBouncer in front of that configuration's database too.
  if (!env.TEST_PGBOUNCER) delete childEnv.TEST_PGBOUNCER;
  // Likewise the replica test runs in one configuration only.
  if (!env.TEST_REPLICA_BIN) delete childEnv.TEST_REPLICA_BIN;
  let binary;
  try {
    binary = nodeBinary(node);
    const addon = sqliteAddonFor(node, process.cwd());
    if (addon) childEnv.TEST_BETTER_SQLITE3_BINARY = addon;
  } catch (err) {
    failed++;
    failures.push(`node ${node}, ${name}: ${err.message}`);
    return;
  }
  const label = `node ${versionOf(binary)}, ${name}`;
  const result = run(`jest: ${label}`, binary, [
    'node_modules/jest/bin/jest.js', '--json', `--outputFile=${out}`, ...args, ...process.argv.slice(2),
  ], { env: childEnv, capture: true, maxBuffer: 1 << 30, timeout: CONFIGURATION_TIMEOUT_MS, killSignal: 'SIGKILL' });
  if (result.error?.code === 'ETIMEDOUT') {
    failed++;
    failures.push(`${label}: still running after ${CONFIGURATION_TIMEOUT_MS / 60_000} minutes (a test left a handle open?)`);
  }
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
  if (report.numFailedTests) failures.push(`${label}: ${report.numFailedTests} failed`);
  if (report.numTotalTests === 0) {
    failed++;
    failures.push(`${label}: no test ran`);
  }
  // Failures outside tests (a suite that did not load, global setup) count too.
  if (!report.success && report.numFailedTests === 0) {
    failed++;
    failures.push(`${label}: jest failed outside a test (see above)`);
  }
  if (args.includes('--detectOpenHandles') && /open handle/i.test(String(result.stderr ?? ''))) {
    failed++;
    failures.push(`${label}: jest reported open handles`);
  }
}

step('build', process.execPath, ['scripts/build.mjs']);
if (!replicaPrograms && isCI()) {
  failed++;
  failures.push(`CI: ${missingReplicaProgramsMessage()}`);
}
step('no import cycle in src', process.execPath, ['scripts/check-cycles.mjs']);
step('type-check src, tests and examples', process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'test/tsconfig.json', '--noEmit']);
for (const configuration of configurations) jest(configuration);
if (existsSync('dist/cjs/index.js')) {
  step('packed package: exports, types, ESM and CommonJS', process.execPath, ['scripts/check-package.mjs']);
  step('README code blocks compile after README\'s install lines (strict, ESM and CommonJS)', process.execPath, ['scripts/check-readme.mjs']);
}

// jest.config.cjs leaves the browser suite out when there is no Chromium (outside CI); say so plainly.
if (!findChromium() && !isCI()) process.stdout.write(`\n${missingChromiumMessage()}\n`);
if (!replicaPrograms && !isCI()) process.stdout.write(`\n${missingReplicaProgramsMessage()}\n`);
if (failures.length) process.stdout.write(`\nFailed:\n- ${failures.join('\n- ')}\n`);
process.stdout.write(`\n${passed} passed, ${failed} failed\n`);
process.exitCode = failed === 0 && passed > 0 ? 0 : 1;
