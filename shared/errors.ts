/**
 * The error catalog. Every error the relay or the agent raises on purpose has a stable `code`
 * (never reused once retired), a default message, and where it applies an HTTP status or a
 * WebSocket close code. Tests assert on `code`, never on message text. `RELAY_ERR_*` are the
 * relay's, the tunnel's and those both processes raise; `PLATFORM_ERR_*` are the platform
 * server's own. A client sees either without its prefix (`no_agent`, `invalid_credentials`).
 */

/** WebSocket close codes used on the tunnel (RFC 6455 §7.4; 4000-4999 are ours). */
export const CloseCode = Object.freeze({
  normal: 1000,
  goingAway: 1001,
  protocolError: 1002,
  messageTooBig: 1009,
  internalError: 1011,
  /** The agent missed pongs (half-open); the peer rarely sees this. */
  pingTimeout: 4000,
});

/** RST codes carried on the tunnel (u32). */
export const ResetCode = Object.freeze({
  cancel: 0,
  refused: 1,
  /** the agent could not reach its upstream */
  upstreamUnreachable: 2,
  /** the stream's idle timer fired */
  timeout: 3,
  /** the session is closing */
  sessionClosed: 4,
  internal: 5,
});

interface ErrorSpec {
  message: string;
  httpStatus?: number;
  closeCode?: number;
}

const catalog = {
  // tunnel protocol (decoder): the tunnel is closed with closeCode
  RELAY_ERR_FRAME_TRUNCATED: { message: 'frame header or payload runs past the end of the message', closeCode: CloseCode.protocolError },
  RELAY_ERR_FRAME_VERSION: { message: 'unsupported frame version', closeCode: CloseCode.protocolError },
  RELAY_ERR_FRAME_TYPE: { message: 'unknown frame type', closeCode: CloseCode.protocolError },
  RELAY_ERR_FRAME_FLAGS: { message: 'reserved frame flags are set', closeCode: CloseCode.protocolError },
  RELAY_ERR_FRAME_TOO_LARGE: { message: 'frame payload exceeds the limit', closeCode: CloseCode.protocolError },
  RELAY_ERR_FRAME_INVALID: { message: 'frame fields are invalid for its type', closeCode: CloseCode.protocolError },
  RELAY_ERR_FRAME_TEXT: { message: 'text WebSocket message on the tunnel', closeCode: CloseCode.protocolError },
  RELAY_ERR_STREAM_UNKNOWN: { message: 'frame for a stream that was never opened', closeCode: CloseCode.protocolError },
  RELAY_ERR_STREAM_DUPLICATE: { message: 'OPEN for a stream id already used', closeCode: CloseCode.protocolError },
  RELAY_ERR_WINDOW_EXCEEDED: { message: 'peer sent more data than the stream window allows', closeCode: CloseCode.protocolError },
  RELAY_ERR_WINDOW_OVERFLOW: { message: 'window update overflows the send window', closeCode: CloseCode.protocolError },
  RELAY_ERR_DATA_AFTER_FIN: { message: 'DATA after FIN on a stream', closeCode: CloseCode.protocolError },
  RELAY_ERR_PING_TIMEOUT: { message: 'tunnel peer missed a pong', closeCode: CloseCode.pingTimeout },

  // streams
  RELAY_ERR_STREAM_RESET: { message: 'stream reset by peer' },
  RELAY_ERR_SESSION_CLOSED: { message: 'tunnel connection closed' },
  RELAY_ERR_STREAM_REFUSED: { message: 'peer refused the stream', httpStatus: 502 },
  RELAY_ERR_GOAWAY: { message: 'tunnel connection is going away; no new streams' },

  // relay edge
  RELAY_ERR_NO_AGENT: { message: 'no platform agent is connected; try again later', httpStatus: 503 },
  RELAY_ERR_AGENT_LOST: { message: 'the platform agent connection was lost', httpStatus: 502 },
  RELAY_ERR_UPSTREAM: { message: 'the platform could not be reached', httpStatus: 502 },
  RELAY_ERR_UPSTREAM_TIMEOUT: { message: 'the platform did not answer in time', httpStatus: 504 },
  RELAY_ERR_DRAINING: { message: 'the relay is shutting down', httpStatus: 503 },
  RELAY_ERR_TOO_MANY_CONNECTIONS: { message: 'too many connections from this address; try again later', httpStatus: 503 },
  RELAY_ERR_RATE_LIMITED: { message: 'too many requests from this address; try again later', httpStatus: 429 },
  RELAY_ERR_TUNNEL_BUSY: { message: 'the relay is at capacity; try again later', httpStatus: 503 },
  RELAY_ERR_BAD_REQUEST: { message: 'the request is not valid HTTP/1.1', httpStatus: 400 },
  // local listeners (relay admin, platform internal): a Host they are not bound to nor configured for (DNS rebinding)
  RELAY_ERR_MISDIRECTED: { message: 'this listener does not serve that host name', httpStatus: 421 },
  RELAY_ERR_HEADER_TOO_LARGE: { message: 'the request head is too large', httpStatus: 431 },
  RELAY_ERR_REQUEST_TIMEOUT: { message: 'the request did not arrive in time', httpStatus: 408 },
  RELAY_ERR_BODY_TOO_SLOW: { message: 'the request body arrived too slowly', httpStatus: 408 },
  RELAY_ERR_VERSION_NOT_SUPPORTED: { message: 'only HTTP/1.0 and HTTP/1.1 are served', httpStatus: 505 },
  RELAY_ERR_NOT_IMPLEMENTED: { message: 'only the chunked transfer coding is accepted', httpStatus: 501 },
  RELAY_ERR_EXPECTATION_FAILED: { message: 'only Expect: 100-continue is supported', httpStatus: 417 },
  RELAY_ERR_BAD_RESPONSE: { message: 'the platform sent a response the relay cannot read', httpStatus: 502 },

  // tunnel authentication
  RELAY_ERR_TUNNEL_AUTH: { message: 'agent token rejected', httpStatus: 401 },
  RELAY_ERR_TLS_PIN: { message: 'relay certificate does not match the pinned SHA-256 fingerprint' },

  // configuration
  RELAY_ERR_CONFIG: { message: 'invalid configuration' },

  // raised by code both processes use (the admin listener and the platform server's routes, the request body limit, shared/ip-rule-files.ts)
  RELAY_ERR_NOT_FOUND: { message: 'no such resource', httpStatus: 404 },
  RELAY_ERR_METHOD_NOT_ALLOWED: { message: 'method not allowed on this resource', httpStatus: 405 },
  RELAY_ERR_BODY_TOO_LARGE: { message: 'the request body is too large', httpStatus: 413 },
  // IP rules saved through the admin API or the control panel (details say which list and why)
  RELAY_ERR_INVALID_IP_RULES: { message: 'the IP rules have lines that are not valid entries; nothing was saved', httpStatus: 400 },
  RELAY_ERR_IP_RULES_TOO_LARGE: { message: 'the IP rules are larger than the file size limit; nothing was saved', httpStatus: 413 },
  RELAY_ERR_IP_RULES_SELF_BLOCK: {
    message: 'the new IP rules would block the address this request comes from; confirm to save them anyway',
    httpStatus: 409,
  },
  RELAY_ERR_IP_RULES_WRITE: { message: 'the IP rules file could not be written; nothing was changed', httpStatus: 500 },

  // platform server (platform-agent/server/): clients see the code without the prefix (`invalid_credentials`)
  PLATFORM_ERR_DEVICE_ID_REQUIRED: { message: 'the X-Device-Id header is required', httpStatus: 400 },
  PLATFORM_ERR_DEVICE_ID_RESERVED: {
    message: 'this X-Device-Id is a name the server gives its own devices (admin-console@…, mobile@…); choose another',
    httpStatus: 400,
  },
  PLATFORM_ERR_INVALID_CREDENTIALS: { message: 'invalid username or password', httpStatus: 401 },
  PLATFORM_ERR_DEVICE_LOCKED: { message: 'this device is locked after too many failed logins; try again later', httpStatus: 429 },
  PLATFORM_ERR_TOO_MANY_ATTEMPTS: { message: 'too many login attempts from this address; try again later', httpStatus: 429 },
  PLATFORM_ERR_IP_BLOCKED: { message: 'requests from this address are not allowed', httpStatus: 403 },
  PLATFORM_ERR_INVALID_TOKEN: { message: 'the token is missing, invalid, expired or revoked', httpStatus: 401 },
  PLATFORM_ERR_SESSION_EXPIRED: { message: 'the session was idle too long; log in again', httpStatus: 401 },
  PLATFORM_ERR_AUTHENTICATOR_OFF: { message: 'this authenticator is switched off', httpStatus: 401 },
  PLATFORM_ERR_FORBIDDEN: { message: 'this account may not do that', httpStatus: 403 },
  PLATFORM_ERR_INVALID_JSON: { message: 'the request body is not valid JSON', httpStatus: 400 },
  PLATFORM_ERR_INVALID_REQUEST: { message: 'the request is not valid', httpStatus: 400 },
  PLATFORM_ERR_INVALID_SETTING: { message: 'a setting is not valid', httpStatus: 400 },
  PLATFORM_ERR_USER_EXISTS: { message: 'a user with that name already exists', httpStatus: 409 },
  PLATFORM_ERR_USER_NOT_FOUND: { message: 'no such user', httpStatus: 404 },
  PLATFORM_ERR_DEVICE_NOT_FOUND: { message: 'no such device', httpStatus: 404 },
  PLATFORM_ERR_LAST_ADMIN: {
    message: 'the last administrator who can manage users cannot be removed, demoted, locked, expired or lose admin.users',
    httpStatus: 409,
  },
  PLATFORM_ERR_PASSWORD_IN_USE: {
    message: 'another user has this password; with password-only device login every password must be unique',
    httpStatus: 409,
  },
  PLATFORM_ERR_BARCODE_IN_USE: { message: 'another user has this barcode; every user barcode must be unique', httpStatus: 409 },
  PLATFORM_ERR_OPERATION_EXISTS: { message: 'an operation with that name already exists', httpStatus: 409 },
  PLATFORM_ERR_OPERATION_NOT_FOUND: { message: 'no such operation', httpStatus: 404 },
  PLATFORM_ERR_OPERATION_IN_USE: { message: 'user groups still hold the operation', httpStatus: 409 },
  PLATFORM_ERR_GROUP_EXISTS: { message: 'a user group with that name already exists', httpStatus: 409 },
  PLATFORM_ERR_GROUP_NOT_FOUND: { message: 'no such user group', httpStatus: 404 },
  PLATFORM_ERR_GROUP_IN_USE: { message: 'the user group still has users', httpStatus: 409 },
  PLATFORM_ERR_HTTPS_REQUIRED: { message: 'this API is served over HTTPS only; use https://', httpStatus: 403 },
  PLATFORM_ERR_BACKEND: { message: 'the backend application could not be reached', httpStatus: 502 },
  PLATFORM_ERR_STORE: { message: 'the data folder cannot be used' },
  PLATFORM_ERR_STORE_UNAVAILABLE: { message: 'the platform database cannot be reached; try again later', httpStatus: 503 },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof catalog;

/** Every code in the catalog. */
export const errorCodes: readonly ErrorCode[] = Object.freeze(Object.keys(catalog) as ErrorCode[]);

/** An error with a stable code from the catalog. */
export class RelayError extends Error {
  readonly code: ErrorCode;
  readonly httpStatus: number | undefined;
  readonly closeCode: number | undefined;
  /** Extra JSON fields for an API error body (e.g. `field` for a validation error); never secrets. */
  readonly details: Readonly<Record<string, unknown>> | undefined;
  /** Seconds for a Retry-After header (429, 503). */
  readonly retryAfterSeconds: number | undefined;

  constructor(
    code: ErrorCode,
    message?: string,
    options?: { cause?: unknown; details?: Record<string, unknown>; retryAfterSeconds?: number },
  ) {
    const spec: ErrorSpec = catalog[code];
    super(message ?? spec.message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'RelayError';
    this.code = code;
    this.httpStatus = spec.httpStatus;
    this.closeCode = spec.closeCode;
    this.details = options?.details;
    this.retryAfterSeconds = options?.retryAfterSeconds;
  }
}

/** The code a client sees in a JSON error body: `RELAY_ERR_NO_AGENT` -> `no_agent`, `PLATFORM_ERR_USER_EXISTS` -> `user_exists`. */
export function publicCode(code: ErrorCode): string {
  return code.replace(/^(RELAY|PLATFORM)_ERR_/, '').toLowerCase();
}

/** A configuration error that names the option, the bad value and what would be right. */
export function configError(option: string, value: unknown, expected: string): RelayError {
  return new RelayError('RELAY_ERR_CONFIG', `--${option}: ${JSON.stringify(value)} is not valid; ${expected}`);
}

/**
 * An error as an HTTP answer: its status, the headers the error itself calls for (`retry-after`
 * from {@link RelayError.retryAfterSeconds}, `www-authenticate: Bearer` with a 401) and the JSON
 * body text `{"error":"<public code>","message":"…",…details}`. The caller adds the framing
 * headers (content type, length, caching) its listener uses.
 */
export interface ErrorBody {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/**
 * The answer for `err`: a {@link RelayError} with an HTTP status, or a catalog code (its default
 * message, no details). Anything else, and a code or RelayError without an HTTP status, is a 500
 * `{"error":"internal","message":internalMessage}` that says nothing of the error itself.
 */
export function errorBody(err: unknown, internalMessage = 'internal error'): ErrorBody {
  if (typeof err === 'string' && Object.hasOwn(catalog, err)) {
    const spec: ErrorSpec = catalog[err as ErrorCode];
    if (spec.httpStatus !== undefined) return answer(spec.httpStatus, err as ErrorCode, spec.message, undefined, undefined);
  } else if (err instanceof RelayError && err.httpStatus !== undefined) {
    return answer(err.httpStatus, err.code, err.message, err.details, err.retryAfterSeconds);
  }
  return { status: 500, headers: {}, body: JSON.stringify({ error: 'internal', message: internalMessage }) };
}

function answer(
  status: number,
  code: ErrorCode,
  message: string,
  details: Readonly<Record<string, unknown>> | undefined,
  retryAfterSeconds: number | undefined,
): ErrorBody {
  const headers: Record<string, string> = {};
  if (retryAfterSeconds !== undefined) headers['retry-after'] = String(retryAfterSeconds);
  if (status === 401) headers['www-authenticate'] = 'Bearer';
  return { status, headers, body: JSON.stringify({ error: publicCode(code), message, ...details }) };
}
