// An Express app with sessionStore() under node:cluster, for test/deploy/cluster.test.ts: the primary
// forks WORKERS workers sharing one port (round robin), and relays between the test (its parent, over IPC)
// and the workers. Loads the built library (dist/; npm test builds first). Loopback only.
'use strict';
const cluster = require('node:cluster');

const WORKERS = Number(process.env.CLUSTER_WORKERS || 4);
const url = process.env.CLUSTER_DATABASE_URL;

function dataSourceOptions() {
  if (url.startsWith('mysql:') || url.startsWith('mariadb:')) {
    return { type: url.startsWith('mariadb:') ? 'mariadb' : 'mysql', url: url.replace(/^mariadb:/, 'mysql:') };
  }
  return { type: 'postgres', url };
}

if (cluster.isPrimary) {
  const workers = new Map();
  let listening = 0;
  let port;
  cluster.on('listening', (worker, address) => {
    port = address.port;
    if (++listening === WORKERS) process.send({ type: 'ready', port, pids: [...workers.keys()] });
  });
  cluster.on('exit', (worker) => {
    workers.delete(worker.process.pid);
    process.send({ type: 'exit', pid: worker.process.pid });
  });
  for (let i = 0; i < WORKERS; i++) {
    const worker = cluster.fork();
    workers.set(worker.process.pid, worker);
    // Worker messages go to the test as they are.
    worker.on('message', (msg) => process.send({ ...msg, pid: worker.process.pid }));
  }
  process.on('message', (msg) => {
    if (msg.type === 'kill') workers.get(msg.pid)?.process.kill('SIGKILL');
    else if (msg.type === 'broadcast') for (const worker of workers.values()) worker.send(msg.message);
    else if (msg.type === 'stop') {
      for (const worker of workers.values()) worker.send({ type: 'stop' });
    }
  });
  cluster.on('exit', () => {
    if (workers.size === 0) process.exit(0);
  });
  // The test going away ends the cluster with it.
  process.on('disconnect', () => {
    for (const worker of workers.values()) worker.process.kill('SIGKILL');
    process.exit(0);
  });
} else {
  const express = require('express');
  const { DataSource } = require('typeorm');
  const { sessionStore } = require(process.env.CLUSTER_LIBRARY);

  /** Records when this worker sends its prune statements, for the test to check that holders never overlap. */
  const events = [];
  const logger = {
    logQuery(query) {
      if (/^DELETE FROM .sessions. WHERE .*expires_at.? <=/.test(query)) events.push(['delete', Date.now()]);
      else if (/^UPDATE .sessions_lease. SET .expires_at. = 0/.test(query)) events.push(['release', Date.now()]);
    },
    logQueryError() {},
    logQuerySlow() {},
    logSchemaBuild() {},
    logMigration() {},
    log() {},
  };

  (async () => {
    const dataSource = new DataSource({ ...dataSourceOptions(), poolSize: 4, logging: ['query'], logger });
    await dataSource.initialize();
    const middleware = sessionStore({ dataSource, secret: 'cluster test', pruneInterval: false, pruneBatchSize: 50 });
    const app = express();
    app.use(middleware);
    app.post('/login/:user', (req, res, next) =>
      req.session.regenerate((err) => {
        if (err) return next(err);
        req.session.userId = req.params.user;
        res.json({ pid: process.pid });
      }),
    );
    app.get('/me', (req, res) => res.json({ pid: process.pid, userId: req.session.userId ?? null }));
    app.post('/note/:text', async (req, res) => {
      await req.db.query(`INSERT INTO notes (text) VALUES (${/^(mysql|mariadb):/.test(url) ? '?' : '$1'})`, [req.params.text]);
      res.json({ pid: process.pid });
    });
    // Inserts, tells the test, and never answers: the test kills this worker here, inside the transaction.
    app.post('/hang/:text', async (req) => {
      await req.db.query(`INSERT INTO notes (text) VALUES (${/^(mysql|mariadb):/.test(url) ? '?' : '$1'})`, [req.params.text]);
      process.send({ type: 'hanging', text: req.params.text });
    });
    const server = app.listen(0, '127.0.0.1');
    process.on('message', async (msg) => {
      if (msg.type === 'prune') {
        events.length = 0;
        const deleted = await middleware.store.pruneExpired();
        process.send({ type: 'pruned', deleted, events: events.slice() });
      } else if (msg.type === 'stop') {
        server.close();
        await middleware.close();
        await dataSource.destroy();
        process.exit(0);
      }
    });
  })().catch((err) => {
    process.send({ type: 'error', message: String(err && err.stack ? err.stack : err) });
    process.exit(1);
  });
}
