/**
 * Configuration helpers shared by both CLIs: secrets from a flag, an environment variable or a
 * file; numeric options checked once at start-up with an error that names the option and the
 * fix; a JSON `--config` file; and signal handling for a graceful stop.
 */
import { readFileSync } from 'node:fs';
import type { Logger } from './logger.js';
import { configError, RelayError } from './errors.js';

/** Reads a file named by an option; failure is a config error naming the option. */
export function readOptionFile(option: string, file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new RelayError('RELAY_ERR_CONFIG', `--${option}: cannot read ${JSON.stringify(file)} (${(err as Error).message})`);
  }
}

export interface SecretSource {
  /** Option name without dashes, for messages (e.g. `agent-token`). */
  option: string;
  value: string | undefined;
  file: string | undefined;
  env: string;
  minLength: number;
}

/** The secret from `--x`, `--x-file` or `$ENV` (first one set, in that order). */
export function resolveSecret(src: SecretSource): string {
  let secret = src.value;
  if (!secret && src.file) secret = readOptionFile(`${src.option}-file`, src.file).trim();
  if (!secret) secret = process.env[src.env];
  if (!secret) {
    throw new RelayError(
      'RELAY_ERR_CONFIG',
      `no ${src.option} given: pass --${src.option}-file <file>, set ${src.env}, or --${src.option} <value>`,
    );
  }
  if (secret.length < src.minLength) {
    throw new RelayError(
      'RELAY_ERR_CONFIG',
      `--${src.option}: too short (${secret.length} characters); use at least ${src.minLength}, e.g. \`openssl rand -base64 32\``,
    );
  }
  if (/\s/.test(secret)) throw new RelayError('RELAY_ERR_CONFIG', `--${src.option}: must not contain whitespace`);
  return secret;
}

/** An integer option within [min, max]. */
export function intOption(option: string, value: unknown, min: number, max: number): number {
  const n = typeof value === 'string' && value.trim() !== '' ? Number(value) : value;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < min || n > max) {
    throw configError(option, value, `expected an integer from ${min} to ${max}`);
  }
  return n;
}

export function portOption(option: string, value: unknown): number {
  return intOption(option, value, 0, 65535);
}

/** Reads a JSON config file for yargs' `.config()`; a bad file is a clear error, not a stack. */
export function readJsonConfig(path: string): Record<string, unknown> {
  const text = readOptionFile('config', path);
  try {
    const parsed: unknown = JSON.parse(text);
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error('not a JSON object');
    return parsed as Record<string, unknown>;
  } catch (err) {
    throw new RelayError(
      'RELAY_ERR_CONFIG',
      `--config: ${JSON.stringify(path)} is not a JSON object of options (${(err as Error).message})`,
    );
  }
}

/**
 * SIGTERM/SIGINT: run `stop` once (a graceful drain), then exit 0. A second signal exits at
 * once with status 1.
 */
export function onShutdownSignals(logger: Logger, stop: () => Promise<void>): void {
  let stopping = false;
  const handler = (signal: NodeJS.Signals): void => {
    if (stopping) {
      logger.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    stopping = true;
    logger.info({ event: 'signal', signal }, `${signal}: shutting down gracefully`);
    stop().then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error({ err }, 'error while shutting down');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', handler);
  process.on('SIGINT', handler);
}

/** Prints a configuration error for a CLI user and exits 2. */
export function exitWithConfigError(err: unknown): never {
  const message = err instanceof RelayError || err instanceof Error ? err.message : String(err);
  process.stderr.write(`error: ${message}\n`);
  process.exit(2);
}
