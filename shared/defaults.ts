/**
 * Every limit and timeout of the relay and the agent, in one table. Units are in the names.
 * CLI options and config files override these; `0` disables a timeout where noted.
 */
export const defaults = Object.freeze({
  // ---- ports (relay) ----
  httpPort: 10080,
  httpsPort: 10443,
  tunnelPort: 10900,
  host: '0.0.0.0',

  // ---- tunnel multiplexer (both sides) ----
  /** Initial per-stream receive window, fixed by the protocol (as in yamux). */
  initialStreamWindowBytes: 256 * 1024,
  /** Per-stream receive window a stream starts with; must be >= initialStreamWindowBytes. Credit is returned at half. */
  streamWindowBytes: 256 * 1024,
  /**
   * Largest a stream's receive window grows to, bytes: it doubles while it is what limits the
   * stream (its reader keeps up and credit cannot come back in time, see shared/mux/stream.ts).
   * At or below streamWindowBytes, windows never grow. 16 MiB is grpc-go's BDP limit as well.
   */
  maxStreamWindowBytes: 16 * 1024 * 1024,
  /**
   * Per tunnel connection: the most that all its streams' receive windows together may have grown
   * past streamWindowBytes, bytes; a stream that would pass it does not grow, and a closed stream
   * gives its growth back. What one connection can be made to buffer stays at most
   * maxStreamsPerConnection x streamWindowBytes + this, whatever clients do. That is a bound, not
   * an allocation: a window is credit, and costs memory only while data the reader has not
   * consumed waits in it (an idle stream buffers nothing). With the defaults the bound is
   * 8192 x 256 KiB + 64 MiB (2.06 GiB) a connection, reached only if every stream's reader stalls
   * with a full window (each mobile client at most its share, maxStreamSharePerIpPercent).
   */
  connectionWindowBudgetBytes: 64 * 1024 * 1024,
  /** Largest DATA frame payload a side sends (and accepts: the peer's cap is its own setting, see maxFramePayloadLimitBytes). */
  maxFramePayloadBytes: 256 * 1024,
  /** Largest DATA payload the decoder accepts from a peer, whatever the peer is configured to send. */
  maxFramePayloadLimitBytes: 1024 * 1024,
  /** Largest WebSocket message (a batch of frames) either side accepts (`ws` maxPayload). */
  maxMessageBytes: 4 * 1024 * 1024,
  /** A batch is flushed once it holds this many bytes, even if more frames are ready (smaller batches pipeline better: the receiver can consume one while the next is in flight). */
  batchTargetBytes: 64 * 1024,
  /** Stop framing DATA while the WebSocket's bufferedAmount is above this; resume below half. */
  connectionHighWaterMarkBytes: 1024 * 1024,
  /** Largest OPEN metadata payload (JSON). */
  maxOpenMetadataBytes: 1024,
  /**
   * Concurrent streams one tunnel connection carries; an OPEN past it is refused with RST. The
   * agent states its own in its upgrade request (X-Mux-Max-Streams) and the relay opens no more
   * than the lower of the two (an agent that states none: the relay's own); a mobile connection
   * that finds every tunnel connection full waits up to connectWaitMs, then gets 503 tunnel_busy.
   * 8192: the default 2 agent connections carry 16,384 streams, the edge's default maxConnections
   * (target: 10,000 concurrent mobile connections; one connection alone still carries 8192).
   * Bounded because each open stream costs heap at each end (about 0.9 KiB, 1.3 KiB with
   * an idle timer, measured: 10k idle streams between two sessions on loopback, after gc) and
   * because the buffering bound above grows with it.
   */
  maxStreamsPerConnection: 8192,
  /** WebSocket ping interval; a connection that missed the previous pong is terminated. 0 = off. */
  pingIntervalMs: 15_000,

  // ---- TLS (relay edge and tunnel) ----
  /** Oldest TLS version accepted. */
  tlsMinVersion: 'TLSv1.2',
  /**
   * Cipher suites: TLS 1.3's, then forward-secret AEAD suites for TLS 1.2 (Mozilla "intermediate");
   * no CBC, no RSA key exchange, no SHA-1 MACs.
   */
  tlsCiphers: [
    'TLS_AES_128_GCM_SHA256',
    'TLS_AES_256_GCM_SHA384',
    'TLS_CHACHA20_POLY1305_SHA256',
    'ECDHE-ECDSA-AES128-GCM-SHA256',
    'ECDHE-RSA-AES128-GCM-SHA256',
    'ECDHE-ECDSA-AES256-GCM-SHA384',
    'ECDHE-RSA-AES256-GCM-SHA384',
    'ECDHE-ECDSA-CHACHA20-POLY1305',
    'ECDHE-RSA-CHACHA20-POLY1305',
  ].join(':'),

  // ---- relay ----
  /** Admin listener (health, readiness, metrics, status); loopback only by default. */
  adminHost: '127.0.0.1',
  adminPort: 10901,
  /** How long a mobile request waits for an agent connection before 503. */
  connectWaitMs: 5_000,
  /** Retry-After (seconds) sent with 503 no_agent. */
  retryAfterSeconds: 5,
  /** Largest request head the edge parses (Node maxHeaderSize). */
  maxHeaderBytes: 16 * 1024,
  /** Time a mobile client has to send the whole request head (slowloris guard). */
  headersTimeoutMs: 20_000,
  /** Time a mobile client has to send the whole request, body included. 0 = none. */
  requestTimeoutMs: 300_000,
  /** Idle time after a response before the edge closes a keep-alive connection. */
  keepAliveTimeoutMs: 5_000,
  /** Idle time on an open tunnel stream before it is closed (covers stuck upstreams). 0 = none. */
  streamIdleTimeoutMs: 120_000,
  /** Time in-flight requests get to finish on SIGTERM/SIGINT before connections are cut. */
  drainTimeoutMs: 30_000,
  /**
   * Largest request body the edge forwards, bytes; 413 past it (by Content-Length before the body
   * is read, by counting a chunked body as it streams). 0 = no limit: the platform sets its own.
   */
  maxBodyBytes: 0,
  /**
   * A request body up to this size is read whole before the request gets a tunnel stream (as
   * nginx's proxy_request_buffering does); past it the body streams once this much is in. A slow
   * client so holds relay memory, bounded, never a tunnel stream.
   */
  requestBufferBytes: 64 * 1024,
  /**
   * A request body that arrives slower than this (bytes a second, averaged since it started, or
   * since the relay last paused reading it) after `bodyRateGraceMs` is cut with 408 body_too_slow
   * (Kestrel's MinRequestBodyDataRate). 0 = no minimum.
   */
  minBodyBytesPerSecond: 240,
  /** Time a request body gets before its rate is checked. */
  bodyRateGraceMs: 5_000,
  /**
   * Forward request header names that hold `_` (nginx's `underscores_in_headers`). Off: they are
   * dropped, since CGI-style backends (and frameworks that map headers to `HTTP_*` variables)
   * read `X_Forwarded_For` and `X-Forwarded-For` as one, so a client could forge a field the
   * relay strips by spelling it with underscores.
   */
  allowUnderscoreHeaders: false,
  /**
   * Concurrent mobile connections from one client (an IPv4 address or an IPv6 /64, see
   * relay/edge/client-limits.ts); past it a new connection is refused
   * (HTTP: a canned 503 too_many_connections; HTTPS: reset before TLS). 0 = no limit.
   * Whitelisted addresses are exempt. Generous because many devices can share an address (a
   * site's NAT, carrier NAT), yet one address cannot hold the relay's connections alone.
   */
  maxConnectionsPerIp: 1024,
  /**
   * Mobile connections the relay holds at once, all clients together; past it a new connection
   * is reset at accept, before TLS (whitelisted addresses are exempt). Bounds the native memory
   * a flood from many addresses can take: an open TLS connection holds ~30 KiB of OpenSSL state,
   * and what floods leave in the heap levels off at a multiple of the most held at once
   * (README "Memory under floods"). 0 = no limit.
   */
  maxConnections: 16_384,
  /**
   * Share of its platform's tunnel stream capacity (the platform's live agent connections times
   * maxStreamsPerConnection) one client may hold at once, percent; past it the client's request
   * waits for one of its streams to close (up to connectWaitMs), then gets 503 tunnel_busy, while
   * other clients are served. 0 = no limit. Whitelisted addresses are exempt. With the defaults
   * (2 agent connections of 8192 streams) one address holds at most 4096 streams.
   */
  maxStreamSharePerIpPercent: 25,
  /**
   * Requests (and WebSocket upgrades) per second from one client, a token bucket; past it
   * 429 rate_limited with Retry-After. 0 = no limit (the default: the right value depends on how
   * many devices share an address). Whitelisted addresses are exempt.
   */
  maxRequestsPerSecondPerIp: 0,
  /** Size of that token bucket (requests one address may send at once); 0 = twice the rate. */
  requestBurstPerIp: 0,
  /**
   * Clients the per-IP limits track at once (~150 bytes each, measured). A client is forgotten
   * when it has no connection and a full bucket; when the table is full, connections from new
   * addresses are refused as per_ip_connections (whitelisted ones are never tracked).
   */
  maxTrackedIps: 100_000,
  /** How often addresses with no connection and a full bucket are forgotten. */
  perIpSweepIntervalMs: 10_000,
  /**
   * A plain-HTTP connection refused for the per-IP limit gets its 503, then is read and discarded
   * for up to this long before it is closed (closing with unread data would send a TCP RST,
   * which can destroy the 503 before the client reads it).
   */
  refusalLingerMs: 2_000,
  /** Refused connections from one address lingering at once; past it they are reset at once. */
  maxLingeringRefusalsPerIp: 8,

  // ---- IP rule files (relay --whitelist/--blacklist, platform whitelist.dat/blacklist.dat) ----
  /** How often the rule files are checked for changes. */
  ipRulesPollMs: 2_000,
  /** Largest IP rule file read; a bigger one is refused and the previous rules stay. */
  ipRulesMaxFileBytes: 16 * 1024 * 1024,

  // ---- platform agent ----
  connectionsPerRelay: 2,
  reconnectMinMs: 250,
  /** Ceiling of the long backoff: the relay answered and refused (HTTP 401/429/5xx, certificate check). */
  reconnectMaxMs: 30_000,
  /** Ceiling while the relay does not answer (refused, reset, timeout): a refused SYN costs nothing, a restarted relay gets its agents back within a second. */
  reconnectUnreachableMaxMs: 500,
  /**
   * A connection that ends unplanned sooner than this after its upgrade counts as a failure (one
   * such in a row after another doubles the delay): a relay that accepts and drops at once is not
   * retried in a hot loop. Longer ones, and every planned close (GOAWAY, 1001), reset the backoff.
   */
  reconnectStableMs: 500,
  /** Time allowed for the TLS handshake and upgrade to the relay. */
  connectTimeoutMs: 10_000,
  /** Keep-alive timeout of servers run inside the agent; above the relay's keepAliveTimeoutMs. */
  platformKeepAliveTimeoutMs: 65_000,

  // ---- platform server (security rules have their own defaults: platform-agent/security/settings.ts) ----
  /** Internal listener of the built-in platform server (`--listen`). */
  platformListen: '127.0.0.1:8080',
  /** Data folder: platform.db, whitelist.dat, blacklist.dat (`--data`). */
  platformDataDir: './data',
  /** Connections each platform server instance keeps to a shared PostgreSQL store (`--store-pool-size`). */
  storePoolSize: 10,
  /** Longest a statement on the shared store may run, and a connection to it take (`--store-statement-timeout-ms`); 503 past it. */
  storeStatementTimeoutMs: 5000,
  /** Largest JSON body the platform API reads (413 past it). */
  platformMaxJsonBodyBytes: 64 * 1024,
  /** Time a backend request (`--backend`) may take before 502. */
  backendTimeoutMs: 60_000,

  // ---- administrators' logins: growing waits, never a lock (Keycloak's brute-force detection) ----
  // Counted per address and per account name. After `adminLoginFreeFailures` failures in a row a
  // login must wait `adminLoginFirstWaitMs`, doubled with each further failure up to
  // `adminLoginMaxWaitMs`; `adminLoginFailureResetMs` without a failure forgets the count.
  /** Failed administrator logins allowed before the first wait. */
  adminLoginFreeFailures: 3,
  /** The first wait, after `adminLoginFreeFailures` failures. */
  adminLoginFirstWaitMs: 1_000,
  /** The longest wait, however many failures. */
  adminLoginMaxWaitMs: 15 * 60_000,
  /** A failure count is forgotten this long after its last failure. */
  adminLoginFailureResetMs: 12 * 3_600_000,
});

export type Defaults = typeof defaults;
