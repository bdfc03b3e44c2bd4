// The Redis the connect-redis anchor uses: REDIS_URL, or 127.0.0.1:6379. The bench leaves that anchor out
// (and says so) when nothing answers there, rather than failing a run that needs only PostgreSQL.
import { connect } from 'node:net';

export const redisUrl = () => process.env.REDIS_URL || 'redis://127.0.0.1:6379';

/** True when a Redis server at `url` answers PING within `timeoutMs` (no client library, one socket). */
export function redisAnswers(url = redisUrl(), timeoutMs = 1000) {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = connect(Number(port || 6379), hostname || '127.0.0.1');
    const done = (answer) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(answer);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    let reply = '';
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.setEncoding('utf8').on('data', (chunk) => {
      reply += chunk;
      // +PONG, or -NOAUTH from a server that wants a password (REDIS_URL carries it; the client will log in).
      if (reply.includes('\r\n')) done(reply.startsWith('+PONG') || reply.startsWith('-NOAUTH'));
    });
    socket.once('error', () => done(false));
  });
}
