/**
 * README, "Tracing and metrics": the recipe block itself, run with the real @opentelemetry/api and
 * prom-client, subscribed to the library's channels while an app serves requests. It fails when a channel
 * is renamed, an event stops firing, or a context loses the fields the recipe reads.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import ts from 'typescript';
import request from 'supertest';
import { trace } from '@opentelemetry/api';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { register } from 'prom-client';
import { startApp, type RunningApp } from './helpers/adapters.js';
import { sql } from './helpers/dialect.js';
import { namedTable, useDatabase } from './express/harness.js';

const ctx = useDatabase([namedTable('items')], ['items']);

/** The README's ```ts block that subscribes to the transaction channel. */
function recipeSource(): string {
  const readme = readFileSync(join(__dirname, '..', 'README.md'), 'utf8');
  const blocks = [...readme.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]!);
  const recipe = blocks.filter((b) => b.includes("'typeorm-session:transaction'") && b.includes('prom-client'));
  expect(recipe).toHaveLength(1);
  return recipe[0]!;
}

test('the README recipe turns the channels into OpenTelemetry spans and Prometheus histograms', async () => {
  const exporter = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
  trace.setGlobalTracerProvider(provider);
  const { outputText } = ts.transpileModule(recipeSource(), {
    compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true },
  });
  const recipe: { stopTracing?: () => void } = {};
  new Function('require', 'exports', 'module', outputText)(require, recipe, { exports: recipe });
  let app: RunningApp | undefined;
  try {
    app = await startApp('express', ctx.ds, {
      '/ok': async ({ db, session }) => {
        await db.query(sql("INSERT INTO items (name) VALUES ('traced')"));
        session.n = 1;
      },
      '/no': async ({ db }) => {
        await db.query(sql("INSERT INTO items (name) VALUES ('rejected')"));
        return { status: 422 };
      },
    });
    await app.store.ready();
    await request(app.url).post('/ok').expect(200);
    await request(app.url).post('/no').expect(422);

    const names = exporter.getFinishedSpans().map((span) => span.name);
    expect(names).toEqual(expect.arrayContaining(['typeorm-session acquire', 'typeorm-session begin', 'typeorm-session commit', 'typeorm-session rollback', 'typeorm-session store set']));
    type Sample = { metricName?: string; labels: Record<string, unknown>; value: number };
    const transactions = (await register.getSingleMetric('typeorm_session_transaction_seconds')!.get()).values as Sample[];
    const count = (phase: string, outcome: string) =>
      transactions.find((v) => v.metricName === 'typeorm_session_transaction_seconds_count' && v.labels.phase === phase && v.labels.outcome === outcome)?.value;
    expect(count('commit', 'committed')).toBe(1);
    expect(count('rollback', 'rolled back')).toBe(1);
    expect(count('begin', 'ok')).toBe(2);
    const store = (await register.getSingleMetric('typeorm_session_store_seconds')!.get()).values as Sample[];
    expect(store.some((v) => v.metricName === 'typeorm_session_store_seconds_count' && v.labels.operation === 'set' && v.value >= 1)).toBe(true);
  } finally {
    recipe.stopTracing?.();
    await app?.close();
    trace.disable();
    register.clear();
  }
  // The recipe's stopTracing() leaves nobody listening (the channels are process-wide).
  const { tracingChannel } = await import('node:diagnostics_channel');
  expect(tracingChannel('typeorm-session:transaction').asyncEnd.hasSubscribers).toBe(false);
});
