/** See postgres-user-access.mjs. */
export function letPostgresUserReach(label: string): void;
