-- typeorm-session: session table for postgres (generated; do not edit)
CREATE TABLE IF NOT EXISTS "sessions" (
  "id" varchar(64) NOT NULL,
  "data" text NOT NULL,
  "expires_at" bigint NOT NULL,
  "created_at" bigint NOT NULL,
  "updated_at" bigint NOT NULL,
  "user_id" varchar(255) NULL,
  "version" integer NOT NULL DEFAULT 0,
  CONSTRAINT "PK_sessions" PRIMARY KEY ("id")
);

CREATE INDEX IF NOT EXISTS "IDX_sessions_expires_at" ON "sessions" ("expires_at");

CREATE INDEX IF NOT EXISTS "IDX_sessions_user_id" ON "sessions" ("user_id");

CREATE TABLE IF NOT EXISTS "sessions_lease" (
  "name" varchar(64) NOT NULL,
  "holder" varchar(64) NOT NULL,
  "expires_at" bigint NOT NULL,
  CONSTRAINT "PK_sessions_lease" PRIMARY KEY ("name")
);
