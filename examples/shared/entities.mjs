// The example's own tables, for the DataSource's `entities` (the session table registers itself).
import { LoginAttempt } from './login-limits.mjs';
import { User } from './users.mjs';

export const entities = [User, LoginAttempt];
