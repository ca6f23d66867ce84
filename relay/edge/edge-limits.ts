/**
 * Every limit of the relay's edge, in one shape: the CLI fills it (relay/cli.ts), the listeners
 * apply the per-connection ones at accept, and the forwarder the per-request ones
 * ({@link ForwardLimits}). Values are in shared/defaults.ts; the range, unit and what 0 means of
 * each, and its CLI option, in the limits table (shared/limits.ts).
 */
import { defaults } from '../../shared/defaults.js';

export interface EdgeLimits {
  /** Largest request head, bytes (431 past it). */
  maxHeaderBytes: number;
  /** Time to receive a request head, ms (408 past it). */
  headersTimeoutMs: number;
  /** Time to receive a whole request, ms (408 past it); 0 = none. */
  requestTimeoutMs: number;
  /** Idle time of a keep-alive connection between requests, ms. */
  keepAliveTimeoutMs: number;
  /** Largest request body, bytes (413 past it); 0 = no limit. */
  maxBodyBytes: number;
  /** A request body up to this size is read whole before a tunnel stream is opened. */
  requestBufferBytes: number;
  /** A request body slower than this after the grace is cut with 408; 0 = no minimum. */
  minBodyBytesPerSecond: number;
  /** Time a body gets before its rate is checked, ms. */
  bodyRateGraceMs: number;
  /** Forward request header names holding `_` (nginx's `underscores_in_headers`); else they are dropped. */
  allowUnderscoreHeaders: boolean;
  /** Concurrent mobile connections of the whole relay (whitelisted exempt); 0 = no limit. */
  maxConnections: number;
  /** Concurrent connections per client address; 0 = no limit. */
  maxConnectionsPerIp: number;
  /** Share of the platform's tunnel streams one client may hold, percent; 0 = no limit. */
  maxStreamSharePerIpPercent: number;
  /** Requests per second per client address (token bucket); 0 = no limit. */
  maxRequestsPerSecondPerIp: number;
  /** Bucket size of that rate; 0 = twice the rate. */
  requestBurstPerIp: number;
  /** Client addresses tracked at once by the per-IP limits. */
  maxTrackedIps: number;
  /**
   * An idle keep-alive connection lets go of its tunnel stream (FIN, gracefully) after this long,
   * ms, so that idle devices hold no stream; the next request opens a new one. Default
   * {@link STREAM_RELEASE_MS}; 0 = keep the stream for the whole keep-alive.
   */
  streamReleaseMs?: number;
  /** While the relay drains, a connection idle this long is closed, ms. Default {@link DRAIN_IDLE_MS}. */
  drainIdleMs?: number;
}

/** Idle time after which a kept-alive mobile connection releases its tunnel stream, ms. */
export const STREAM_RELEASE_MS = 1_000;
/**
 * While draining, a kept-alive connection is closed once idle this long, ms: long enough for a
 * client's next request, sent just after a response, to arrive and be answered (with
 * `Connection: close`) rather than race a FIN.
 */
export const DRAIN_IDLE_MS = 300;

/** Every edge limit at its default (shared/defaults.ts). */
export function defaultEdgeLimits(): EdgeLimits {
  return {
    maxHeaderBytes: defaults.maxHeaderBytes,
    headersTimeoutMs: defaults.headersTimeoutMs,
    requestTimeoutMs: defaults.requestTimeoutMs,
    keepAliveTimeoutMs: defaults.keepAliveTimeoutMs,
    maxBodyBytes: defaults.maxBodyBytes,
    requestBufferBytes: defaults.requestBufferBytes,
    minBodyBytesPerSecond: defaults.minBodyBytesPerSecond,
    bodyRateGraceMs: defaults.bodyRateGraceMs,
    allowUnderscoreHeaders: defaults.allowUnderscoreHeaders,
    maxConnections: defaults.maxConnections,
    maxConnectionsPerIp: defaults.maxConnectionsPerIp,
    maxStreamSharePerIpPercent: defaults.maxStreamSharePerIpPercent,
    maxRequestsPerSecondPerIp: defaults.maxRequestsPerSecondPerIp,
    requestBurstPerIp: defaults.requestBurstPerIp,
    maxTrackedIps: defaults.maxTrackedIps,
  };
}

/** The limits the forwarder enforces per request (the rest are the listeners' at accept). */
export type ForwardLimits = Pick<
  EdgeLimits,
  | 'maxHeaderBytes'
  | 'headersTimeoutMs'
  | 'requestTimeoutMs'
  | 'keepAliveTimeoutMs'
  | 'maxBodyBytes'
  | 'requestBufferBytes'
  | 'minBodyBytesPerSecond'
  | 'bodyRateGraceMs'
  | 'allowUnderscoreHeaders'
  | 'streamReleaseMs'
  | 'drainIdleMs'
>;
