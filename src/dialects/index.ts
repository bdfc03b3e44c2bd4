import type { DialectName } from '../store/sql.js';
import type { DriverDialect } from './driver.js';
import { mysql } from './mysql.js';
import { postgres } from './postgres.js';
import { sqlite } from './sqlite.js';

export type { DriverDialect, Executor, QueryOutcome } from './driver.js';

const dialects: Record<DialectName, DriverDialect> = { postgres, mysql, sqlite };

/** How the driver of `name` is used (the SQL for it is in store/sql.ts). */
export function driverDialect(name: DialectName): DriverDialect {
  return dialects[name];
}
