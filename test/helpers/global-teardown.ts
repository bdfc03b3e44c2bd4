export default async function globalTeardown(): Promise<void> {
  const bouncer = (globalThis as { __pgbouncer?: { stop(): Promise<void> } }).__pgbouncer;
  if (bouncer) await bouncer.stop();
  const server = (globalThis as { __embeddedPostgres?: { stop(): Promise<void> } }).__embeddedPostgres;
  if (server) await server.stop();
}
