/**
 * CLI options both executables share: the tunnel's multiplexer settings, the log level and the
 * JSON `--config` file, declared once and validated once.
 */
import type { Argv } from 'yargs';
import { intOption, readJsonConfig } from './config.js';
import { defaults } from './defaults.js';
import { logLevels } from './logger.js';
import type { SessionOptions } from './mux/session.js';

/** Adds --stream-window-bytes, --max-stream-window-bytes, --max-frame-bytes, --ping-interval-ms, --log-level and --config. */
export function withTunnelOptions<T>(y: Argv<T>, side: 'relay' | 'agent') {
  return y
    .option('stream-window-bytes', {
      type: 'number',
      default: defaults.streamWindowBytes,
      describe: `per-stream flow-control window a stream starts with (>= ${defaults.initialStreamWindowBytes})`,
    })
    .option('max-stream-window-bytes', {
      type: 'number',
      default: defaults.maxStreamWindowBytes,
      describe: 'largest a stream window grows to while it limits a bulk transfer (<= --stream-window-bytes: no growth)',
    })
    .option('max-frame-bytes', { type: 'number', default: defaults.maxFramePayloadBytes, describe: `largest DATA frame the ${side} sends` })
    .option('ping-interval-ms', {
      type: 'number',
      default: defaults.pingIntervalMs,
      describe: 'tunnel ping interval; a missed pong drops the connection; 0 = off',
    })
    .option('log-level', { choices: logLevels, default: 'info' as const, describe: 'log level' })
    .config('config', 'JSON file of options (camelCase or kebab-case keys); command-line options win', readJsonConfig);
}

/** Validates the options added by withTunnelOptions. */
export function muxOptions(argv: Record<string, unknown>): Omit<SessionOptions, 'role' | 'onStream'> {
  return {
    streamWindowBytes: intOption('stream-window-bytes', argv.streamWindowBytes, defaults.initialStreamWindowBytes, 64 * 1024 * 1024),
    maxStreamWindowBytes: intOption(
      'max-stream-window-bytes',
      argv.maxStreamWindowBytes,
      defaults.initialStreamWindowBytes,
      256 * 1024 * 1024,
    ),
    maxFramePayloadBytes: intOption('max-frame-bytes', argv.maxFrameBytes, 1024, defaults.maxFramePayloadLimitBytes),
    pingIntervalMs: intOption('ping-interval-ms', argv.pingIntervalMs, 0, 3_600_000),
  };
}
