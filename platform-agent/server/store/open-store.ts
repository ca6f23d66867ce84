/**
 * `--store`: which store a platform server instance (or an administrator's CLI command) uses.
 * `sqlite` (the default) is `platform.db` in the data folder, for one instance; a
 * `postgres://…` URL is one PostgreSQL database shared by any number of instances. The data
 * folder stays in use either way: the internal TLS certificate, the lookup tags' key (the same
 * file on every instance of a shared store) and, with SQLite, the IP rule files.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Argv } from 'yargs';
import { RelayError } from '../../../shared/errors.js';
import { limitOption, limitValue } from '../../../shared/limits.js';
import type { Logger } from '../../../shared/logger.js';
import { readOptionFile } from '../../../shared/config.js';
import { LOOKUP_KEY_FILE } from './rows.js';
import { DB_FILE, SqliteStore } from './sqlite-store.js';
import { PgStore } from './pg-store.js';
import type { PlatformStore } from './store.js';

export interface StoreArgs {
  store?: unknown;
  storeCa?: unknown;
  storePoolSize?: unknown;
  storeStatementTimeoutMs?: unknown;
  data?: unknown;
}

/** The options of `--store` for a yargs command (start, and the administrators' commands). */
export function withStoreOptions<T>(y: Argv<T>) {
  return y
    .option('store', {
      type: 'string',
      default: 'sqlite',
      describe:
        'where the platform keeps its state: sqlite (platform.db in --data, one instance) or postgres://user:password@host:port/database (shared by every instance; ?sslmode=verify-full|disable)',
    })
    .option('store-ca', { type: 'string', describe: 'PEM CA bundle the PostgreSQL server certificate must chain to (sslmode=verify-full)' })
    .option('store-pool-size', limitOption('store-pool-size', 'agent'))
    .option('store-statement-timeout-ms', limitOption('store-statement-timeout-ms', 'agent'));
}

/** True for `--store postgres://…`. */
export const isSharedStore = (argv: StoreArgs): boolean => /^postgres(ql)?:/i.test(String(argv.store ?? 'sqlite'));

/**
 * Opens the store `--store` names. `create: false` (administrators' commands that only read or
 * change) refuses a data folder without platform.db: a typo in --data is not a new platform.
 */
export async function openStore(argv: StoreArgs, logger: Logger, opts: { create: boolean }): Promise<PlatformStore> {
  const dir = String(argv.data);
  const store = String(argv.store ?? 'sqlite');
  // Checked whichever store is used: a bad value is refused before it is needed.
  const poolSize = limitValue('store-pool-size', argv as Record<string, unknown>);
  const statementTimeoutMs = limitValue('store-statement-timeout-ms', argv as Record<string, unknown>);
  if (store === 'sqlite') {
    if (argv.storeCa !== undefined) throw new RelayError('RELAY_ERR_CONFIG', '--store-ca applies to a postgres:// --store only');
    if (!opts.create && !existsSync(join(dir, DB_FILE)))
      throw new RelayError(
        'PLATFORM_ERR_STORE',
        `--data ${dir}: no ${DB_FILE} there; give the platform's data folder (created by "platform-agent start" or "platform-agent user add"), or --store postgres://… for a shared store`,
      );
    return new SqliteStore(dir);
  }
  if (!isSharedStore(argv))
    throw new RelayError('RELAY_ERR_CONFIG', `--store: expected sqlite or postgres://user:password@host:port/database`);
  // The lookup key lives here (the same file on every instance).
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  return PgStore.open({
    url: store,
    poolSize,
    statementTimeoutMs,
    ...(argv.storeCa !== undefined ? { ca: readOptionFile('store-ca', String(argv.storeCa)) } : {}),
    lookupKeyFile: join(dir, LOOKUP_KEY_FILE),
    logger,
  });
}
