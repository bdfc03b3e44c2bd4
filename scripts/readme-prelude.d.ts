// The names README.md's code blocks use without declaring them: what the surrounding app would define.
// A global script (no import or export), so a block that declares one of these names itself shadows it.
// scripts/check-readme.mjs compiles every block with this file; README, "Development", lists the names.

/** The Express app of the surrounding code. */
declare const app: import('express').Express;
/** The app's initialized DataSource. */
declare const dataSource: import('typeorm').DataSource;
/** The cookie-signing secret. */
declare const secret: string;
/** The session store (`sessionStore(...).store`, or a `new TypeormSessionStore(...)`). */
declare const store: import('typeorm-session').TypeormSessionStore;
/** The app's entities. */
declare class User {
  id: number;
  email: string;
}
declare class Order {
  id: number;
  total: number;
}
declare class Item {
  id: number;
}
/** The app's own password check: the user, or a rejection. */
declare function checkPassword(db: import('typeorm').EntityManager, body: unknown): Promise<User>;
