/**
 * Every numeric limit and timeout the relay's and the agent's command lines expose, in one table beside their values (`defaults.ts`): the option, its default,
 * the range accepted, its unit, what 0 means, and the help line. The CLIs build their numeric
 * options and range checks from it ({@link limitOption}, {@link limitValue}), values from a
 * `--config` file are checked by the same ranges (yargs merges them into the options before the
 * check), and constructors that refuse a value out of range read their bound here. A limit is
 * added in one place, and documented from it.
 */
import { intOption } from './config.js';
import { defaults } from './defaults.js';

/** What a limit counts. */
export type LimitUnit =
  'port' | 'ms' | 's' | 'bytes' | 'bytes/s' | 'requests/s' | 'requests' | 'connections' | 'streams' | 'addresses' | 'percent';

/** Which command line offers the option. */
export type LimitSide = 'relay' | 'agent';

export interface LimitSpec {
  /** Default value (from `defaults.ts`). */
  readonly default: number;
  /** Smallest value accepted, inclusive. */
  readonly min: number;
  /** Largest value accepted, inclusive. */
  readonly max: number;
  readonly unit: LimitUnit;
  /** What 0 means when it is not just the smallest value (`'no limit'`, `'none'`, …), else null. */
  readonly zero: string | null;
  /** The help line of the option (`relay start --help`), or one line a side when they differ. */
  readonly doc: string | Readonly<Partial<Record<LimitSide, string>>>;
  /** The command lines that offer it. */
  readonly sides: readonly LimitSide[];
}

const relay = ['relay'] as const;
const both = ['relay', 'agent'] as const;
const agent = ['agent'] as const;

/** The table, by option name (kebab-case, as given on the command line or in a `--config` file). */
export const limits = Object.freeze({
  // ---- listeners (relay) ----
  'http-port': {
    default: defaults.httpPort,
    min: 0,
    max: 65535,
    unit: 'port',
    zero: 'any free port',
    doc: 'HTTP port for mobile clients',
    sides: relay,
  },
  'https-port': {
    default: defaults.httpsPort,
    min: 0,
    max: 65535,
    unit: 'port',
    zero: 'any free port',
    doc: 'HTTPS port for mobile clients',
    sides: relay,
  },
  'tunnel-port': {
    default: defaults.tunnelPort,
    min: 0,
    max: 65535,
    unit: 'port',
    zero: 'any free port',
    doc: 'WSS port where platform agents connect',
    sides: relay,
  },

  // ---- tunnel multiplexer (both sides: shared/cli-options.ts) ----
  'stream-window-bytes': {
    default: defaults.streamWindowBytes,
    min: defaults.initialStreamWindowBytes,
    max: 64 * 1024 * 1024,
    unit: 'bytes',
    zero: null,
    doc: `per-stream flow-control window a stream starts with (>= ${defaults.initialStreamWindowBytes})`,
    sides: both,
  },
  'max-stream-window-bytes': {
    default: defaults.maxStreamWindowBytes,
    min: defaults.initialStreamWindowBytes,
    max: 256 * 1024 * 1024,
    unit: 'bytes',
    zero: null,
    doc: 'largest a stream window grows to while it limits a bulk transfer (<= --stream-window-bytes: no growth)',
    sides: both,
  },
  'max-frame-bytes': {
    default: defaults.maxFramePayloadBytes,
    min: 1024,
    max: defaults.maxFramePayloadLimitBytes,
    unit: 'bytes',
    zero: null,
    doc: { relay: 'largest DATA frame the relay sends', agent: 'largest DATA frame the agent sends' },
    sides: both,
  },
  'ping-interval-ms': {
    default: defaults.pingIntervalMs,
    min: 0,
    max: 3_600_000,
    unit: 'ms',
    zero: 'off',
    doc: 'tunnel ping interval; a missed pong drops the connection; 0 = off',
    sides: both,
  },

  // ---- relay: waiting for agents, streams, stopping ----
  'connect-wait-ms': {
    default: defaults.connectWaitMs,
    min: 0,
    max: 600_000,
    unit: 'ms',
    zero: null,
    doc: 'how long a request waits for an agent before 503',
    sides: relay,
  },
  'retry-after-seconds': {
    default: defaults.retryAfterSeconds,
    min: 0,
    max: 86_400,
    unit: 's',
    zero: null,
    doc: 'Retry-After sent with 503 no_agent',
    sides: relay,
  },
  'stream-idle-timeout-ms': {
    default: defaults.streamIdleTimeoutMs,
    min: 0,
    max: 86_400_000,
    unit: 'ms',
    zero: 'none',
    doc: 'idle time before a tunnel stream is closed (504 if a response was awaited); 0 = none',
    sides: relay,
  },
  'drain-timeout-ms': {
    default: defaults.drainTimeoutMs,
    min: 0,
    max: 3_600_000,
    unit: 'ms',
    zero: null,
    doc: { relay: 'time in-flight requests get on SIGTERM/SIGINT', agent: 'time in-flight streams get on SIGTERM/SIGINT' },
    sides: both,
  },

  // ---- relay edge: one request ----
  'max-header-bytes': {
    default: defaults.maxHeaderBytes,
    min: 1024,
    max: 1024 * 1024,
    unit: 'bytes',
    zero: null,
    doc: 'largest request head (431 past it)',
    sides: relay,
  },
  'headers-timeout-ms': {
    default: defaults.headersTimeoutMs,
    min: 100,
    max: 600_000,
    unit: 'ms',
    zero: null,
    doc: 'time to receive a request head (408 past it)',
    sides: relay,
  },
  'request-timeout-ms': {
    default: defaults.requestTimeoutMs,
    min: 0,
    max: 86_400_000,
    unit: 'ms',
    zero: 'none',
    doc: 'time to receive a whole request (408 past it); 0 = none',
    sides: relay,
  },
  'keep-alive-timeout-ms': {
    default: defaults.keepAliveTimeoutMs,
    min: 0,
    max: 600_000,
    unit: 'ms',
    zero: null,
    doc: 'idle keep-alive time on mobile connections',
    sides: relay,
  },
  'max-body-bytes': {
    default: defaults.maxBodyBytes,
    min: 0,
    max: Number.MAX_SAFE_INTEGER,
    unit: 'bytes',
    zero: 'no limit',
    doc: 'largest request body (413 past it); 0 = no limit',
    sides: relay,
  },
  'request-buffer-bytes': {
    default: defaults.requestBufferBytes,
    min: 0,
    max: 16 * 1024 * 1024,
    unit: 'bytes',
    zero: null,
    doc: 'a request body up to this size is read whole before the request takes a tunnel stream; larger ones stream past it',
    sides: relay,
  },
  'min-body-bytes-per-second': {
    default: defaults.minBodyBytesPerSecond,
    min: 0,
    max: 1024 * 1024 * 1024,
    unit: 'bytes/s',
    zero: 'no minimum',
    doc: 'a request body slower than this after --body-rate-grace-ms is cut with 408; 0 = no minimum',
    sides: relay,
  },
  'body-rate-grace-ms': {
    default: defaults.bodyRateGraceMs,
    min: 0,
    max: 600_000,
    unit: 'ms',
    zero: null,
    doc: 'time a request body gets before its rate is checked',
    sides: relay,
  },

  // ---- relay edge: clients ----
  'max-connections': {
    default: defaults.maxConnections,
    min: 0,
    max: 10_000_000,
    unit: 'connections',
    zero: 'no limit',
    doc: 'mobile connections the relay holds at once, all clients together (reset past it, before TLS); 0 = no limit; whitelisted exempt',
    sides: relay,
  },
  'max-connections-per-ip': {
    default: defaults.maxConnectionsPerIp,
    min: 0,
    max: 1_000_000,
    unit: 'connections',
    zero: 'no limit',
    doc: 'concurrent connections per client address (HTTP: 503, HTTPS: reset past it); 0 = no limit; whitelisted exempt',
    sides: relay,
  },
  'max-stream-share-per-ip': {
    default: defaults.maxStreamSharePerIpPercent,
    min: 0,
    max: 100,
    unit: 'percent',
    zero: 'no limit',
    doc: "percent of its platform's tunnel streams one client may hold (past it: waits, then 503 tunnel_busy); 0 = no limit; whitelisted exempt",
    sides: relay,
  },
  'max-requests-per-second-per-ip': {
    default: defaults.maxRequestsPerSecondPerIp,
    min: 0,
    max: 1_000_000,
    unit: 'requests/s',
    zero: 'no limit',
    doc: 'requests per second per client address (429 past it); 0 = no limit; whitelisted exempt',
    sides: relay,
  },
  'requests-burst-per-ip': {
    default: defaults.requestBurstPerIp,
    min: 0,
    max: 10_000_000,
    unit: 'requests',
    zero: 'twice the rate',
    doc: 'requests one address may send at once before the rate applies; 0 = twice the rate',
    sides: relay,
  },
  'max-tracked-ips': {
    default: defaults.maxTrackedIps,
    min: 1,
    max: 10_000_000,
    unit: 'addresses',
    zero: null,
    doc: 'client addresses the per-IP limits track at once; past it new addresses are refused',
    sides: relay,
  },
  'max-streams-per-connection': {
    default: defaults.maxStreamsPerConnection,
    min: 1,
    max: 1_000_000,
    unit: 'streams',
    zero: null,
    doc: {
      relay: "concurrent streams per agent connection, or the agent's own limit if lower (503 tunnel_busy when every one is full)",
      agent:
        'concurrent streams per tunnel connection this agent accepts; told to the relay, which opens no more than the lower of its own and this',
    },
    sides: both,
  },

  // ---- the agent's tunnel client ----
  connections: {
    default: defaults.connectionsPerRelay,
    min: 1,
    max: 64,
    unit: 'connections',
    zero: null,
    doc: `tunnel connections per relay (default ${defaults.connectionsPerRelay}, or the value saved in the control panel)`,
    sides: agent,
  },
  'reconnect-min-ms': {
    default: defaults.reconnectMinMs,
    min: 10,
    max: 600_000,
    unit: 'ms',
    zero: null,
    doc: 'first reconnect delay ceiling',
    sides: agent,
  },
  'reconnect-max-ms': {
    default: defaults.reconnectMaxMs,
    min: 10,
    max: 3_600_000,
    unit: 'ms',
    zero: null,
    doc: 'largest reconnect delay when the relay answers and refuses (HTTP 401/429/5xx, certificate)',
    sides: agent,
  },
  'reconnect-unreachable-max-ms': {
    default: defaults.reconnectUnreachableMaxMs,
    min: 10,
    max: 3_600_000,
    unit: 'ms',
    zero: null,
    doc: 'largest reconnect delay while the relay does not answer (refused, reset, timeout)',
    sides: agent,
  },
  'reconnect-stable-ms': {
    default: defaults.reconnectStableMs,
    min: 0,
    max: 3_600_000,
    unit: 'ms',
    zero: 'every drop after the upgrade counts as a success',
    doc: 'a connection dropped sooner than this after its upgrade counts as a failure',
    sides: agent,
  },

  // ---- the built-in platform server's shared store (--store postgres://…) ----
  'store-pool-size': {
    default: defaults.storePoolSize,
    min: 2,
    max: 200,
    unit: 'connections',
    zero: null,
    doc: 'connections to a PostgreSQL --store per instance (one may wait on a lock for a rule that spans several changes)',
    sides: agent,
  },
  'store-statement-timeout-ms': {
    default: defaults.storeStatementTimeoutMs,
    min: 100,
    max: 600_000,
    unit: 'ms',
    zero: null,
    doc: 'longest a statement on a PostgreSQL --store, or a connection to it, may take; a request that needs it gets 503 past that',
    sides: agent,
  },
} satisfies Record<string, LimitSpec>);

export type LimitName = keyof typeof limits;

/** The spec of one option (typed as {@link LimitSpec}, whatever the entry's literal types). */
export function limitSpec(name: LimitName): LimitSpec {
  return limits[name];
}

/** The help line of `name` on `side`'s command line. */
export function limitDoc(name: LimitName, side: LimitSide): string {
  const { doc } = limitSpec(name);
  if (typeof doc === 'string') return doc;
  const line = doc[side];
  if (line === undefined) throw new Error(`limits: ${name} has no help line for the ${side}`);
  return line;
}

/** `max-body-bytes` -> `maxBodyBytes`: the key yargs gives the parsed value under. */
export function argvKey(name: string): string {
  return name.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
}

/** The yargs definition of one numeric option: its type, default and help line from the table. */
export function limitOption(name: LimitName, side: LimitSide): { type: 'number'; default: number; describe: string } {
  return { type: 'number', default: limitSpec(name).default, describe: limitDoc(name, side) };
}

/**
 * The value of option `name` in parsed options (`argv`, the command line merged with a
 * `--config` file), checked against the table: an integer from `min` to `max`, else a
 * `RELAY_ERR_CONFIG` error naming the option and the range (`--max-body-bytes: -1 is not valid;
 * expected an integer from 0 to 9007199254740991`).
 */
export function limitValue(name: LimitName, argv: Record<string, unknown>): number {
  return checkLimit(name, argv[argvKey(name)]);
}

/** `value` as option `name`, checked against the table's range (see {@link limitValue}). */
export function checkLimit(name: LimitName, value: unknown): number {
  const { min, max } = limitSpec(name);
  return intOption(name, value, min, max);
}
