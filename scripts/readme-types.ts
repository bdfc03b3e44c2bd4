// Compiled by scripts/check-readme.mjs with README.md's code blocks: the README's blocks would also compile
// if req.db, ctx.db or req.session were `any`, so this file fails the check when one of them is.
import express from 'express';
import Koa from 'koa';
import type { Session, SessionData } from 'express-session';
import type { EntityManager } from 'typeorm';
import 'typeorm-session';
import 'typeorm-session/koa';

/** `true` only for `any`: `any` is the one type that makes `1 & T` accept 0. */
type IsAny<T> = 0 extends 1 & T ? true : false;
/** `true` only when A and B are the same type. */
type Same<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;

express().get('/', (req, res) => {
  const db: [IsAny<typeof req.db>, Same<typeof req.db, EntityManager>] = [false, true];
  const session: [IsAny<typeof req.session>, Same<typeof req.session, Session & Partial<SessionData>>] = [false, true];
  // The README declares `userId: number` in SessionData.
  const userId: Same<typeof req.session.userId, number | undefined> = true;
  const commit: Same<typeof req.commit, () => Promise<void>> = true;
  res.json({ db, session, userId, commit });
});

new Koa().use(async (ctx) => {
  const db: [IsAny<typeof ctx.db>, Same<typeof ctx.db, EntityManager>] = [false, true];
  ctx.body = db;
});
