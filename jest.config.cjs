// One suite, run once per configuration. The environment picks the variant under test:
//   TYPEORM_VERSION=0.3  -> the typeorm-03 alias (typeorm 0.3.x) instead of typeorm 1.x
//   EXPRESS_VERSION=4    -> the express4 alias instead of express 5
//   KOA_VERSION=2        -> the koa2 alias instead of koa 3
//   TEST_DB=mysql|sqlite -> the database the suite runs on (default postgres; see test/helpers/dialect.ts)
const typeorm = process.env.TYPEORM_VERSION === '0.3' ? 'typeorm-03' : 'typeorm';
const express = process.env.EXPRESS_VERSION === '4' ? 'express4' : 'express';
const koa = process.env.KOA_VERSION === '2' ? 'koa2' : 'koa';
const postgres = !process.env.TEST_DB || process.env.TEST_DB === 'postgres';
const { findChromium, isCI } = require('./scripts/chromium.cjs');

module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  // The examples and the benchmark apps are PostgreSQL apps: they run in the postgres configurations only.
  // The fault suite runs the built package in a process of its own (typeorm 1.x, Express 5) and kills server
  // connections: it runs in the typeorm 1.x configurations of PostgreSQL and MySQL.
  // The browser suite needs a Chromium; without one it is left out, except in CI, where it fails instead.
  // npm test runs it in one configuration (TEST_BROWSER=0 in the others): it exercises the examples, not a
  // database or a major of a peer.
  testPathIgnorePatterns: [
    '/node_modules/',
    ...(postgres ? [] : ['/test/example\\.test\\.ts$', '/test/browser\\.test\\.ts$', '/test/bench-smoke\\.test\\.ts$']),
    ...(postgres && ((!findChromium() && !isCI()) || process.env.TEST_BROWSER === '0') ? ['/test/browser\\.test\\.ts$'] : []),
    ...(process.env.TEST_DB === 'sqlite' || process.env.TYPEORM_VERSION === '0.3' ? ['/test/faults\\.test\\.ts$'] : []),
    // Several processes on one database: a server's (PostgreSQL, MySQL).
    ...(process.env.TEST_DB === 'sqlite' ? ['/test/deploy/cluster\\.test\\.ts$'] : []),
    // PgBouncer's own tests run in the configuration that starts one (TEST_PGBOUNCER; scripts/test.mjs).
    ...(process.env.TEST_PGBOUNCER ? [] : ['/test/deploy/pgbouncer\\.test\\.ts$']),
    // The read replica's test makes its own primary and replica from PostgreSQL's programs in TEST_REPLICA_BIN,
    // which npm test sets in one configuration (scripts/test.mjs).
    ...(process.env.TEST_REPLICA_BIN ? [] : ['/test/deploy/replica\\.test\\.ts$']),
  ],
  transform: {
    '^.+\\.ts$': ['@swc/jest', { jsc: { parser: { syntax: 'typescript' }, target: 'es2022' }, module: { type: 'commonjs' } }],
  },
  moduleNameMapper: {
    '^(\\.{1,2}/.*)\\.js$': '$1',
    '^typeorm$': typeorm,
    '^typeorm/(.*)$': `${typeorm}/$1`,
    '^express$': express,
    '^koa$': koa,
    // On a Node major other than the one `npm install` built better-sqlite3 for: that major's own build of
    // the addon (scripts/node-versions.mjs); the package's JavaScript stays the installed one.
    ...(process.env.TEST_BETTER_SQLITE3_BINARY
      ? { '/better-sqlite3/build/Release/better_sqlite3\\.node$': process.env.TEST_BETTER_SQLITE3_BINARY }
      : {}),
  },
  globalSetup: '<rootDir>/test/helpers/global-setup.ts',
  globalTeardown: '<rootDir>/test/helpers/global-teardown.ts',
  testTimeout: 60000,
};
