/**
 * CLI options both executables share: the tunnel's multiplexer settings, the log level and the
 * JSON `--config` file, declared once and validated once (their defaults, ranges and help lines:
 * the limits table, limits.ts).
 */
import type { Argv } from 'yargs';
import { readJsonConfig } from './config.js';
import { limitOption, limitValue } from './limits.js';
import { logLevels } from './logger.js';
import type { SessionOptions } from './mux/session.js';

/** Adds --stream-window-bytes, --max-stream-window-bytes, --max-frame-bytes, --ping-interval-ms, --log-level and --config. */
export function withTunnelOptions<T>(y: Argv<T>, side: 'relay' | 'agent') {
  return y
    .option('stream-window-bytes', limitOption('stream-window-bytes', side))
    .option('max-stream-window-bytes', limitOption('max-stream-window-bytes', side))
    .option('max-frame-bytes', limitOption('max-frame-bytes', side))
    .option('ping-interval-ms', limitOption('ping-interval-ms', side))
    .option('log-level', { choices: logLevels, default: 'info' as const, describe: 'log level' })
    .config('config', 'JSON file of options (camelCase or kebab-case keys); command-line options win', readJsonConfig);
}

/** Validates the options added by withTunnelOptions. */
export function muxOptions(argv: Record<string, unknown>): Omit<SessionOptions, 'role' | 'onStream'> {
  return {
    streamWindowBytes: limitValue('stream-window-bytes', argv),
    maxStreamWindowBytes: limitValue('max-stream-window-bytes', argv),
    maxFramePayloadBytes: limitValue('max-frame-bytes', argv),
    pingIntervalMs: limitValue('ping-interval-ms', argv),
  };
}
