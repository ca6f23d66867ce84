#!/usr/bin/env node
/**
 * `platform-agent` CLI: parses and validates options, builds the agent (agent.ts), starts it.
 */
import { hostname } from 'node:os';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { parseAllowedHosts } from '../shared/allowed-hosts.js';
import { checkCertificatePair, normalizeFingerprint, type PemPair } from '../shared/certs.js';
import { configError, RelayError } from '../shared/errors.js';
import { muxOptions, withTunnelOptions } from '../shared/cli-options.js';
import { exitWithConfigError, onShutdownSignals, readOptionFile, resolveSecret } from '../shared/config.js';
import { defaults } from '../shared/defaults.js';
import { limitDoc, limitOption, limitValue } from '../shared/limits.js';
import { systemClock } from '../shared/clock.js';
import { createLogger, type Logger } from '../shared/logger.js';
import { registerAdminCommands } from './server/admin-cli.js';
import { PlatformAgent, agentConfig, type StreamTarget } from './agent/agent.js';
import { PlatformServer } from './server/platform-server.js';
import { RelayConnection } from './agent/relay-connection.js';
import { MIN_TOKEN_CHARS, relayUrlProblem, type RelayFlags } from './server/relay-settings.js';
import { sampleAppTarget } from './agent/sample-app.js';
import type { RelayTrust } from './agent/tls-connect.js';
import { upstreamTarget } from './agent/upstream-pipe.js';
import { isSharedStore, openStore, withStoreOptions } from './server/store/open-store.js';

type Args = Record<string, unknown>;

function relayUrls(value: unknown): string[] {
  const list = (Array.isArray(value) ? value : [value]).filter((v) => v !== undefined).map(String);
  if (list.length === 0)
    throw new RelayError('RELAY_ERR_CONFIG', '--relay: give at least one relay, e.g. --relay wss://relay.dmz.example:10900');
  for (const raw of list) {
    const problem = relayUrlProblem(raw);
    if (problem) throw configError('relay', raw, problem);
  }
  return list;
}

function trustOptions(argv: Args, logger: Logger): RelayTrust {
  const trust: RelayTrust = {};
  if (argv.relayCa) trust.ca = readOptionFile('relay-ca', String(argv.relayCa));
  if (argv.relayFingerprint) {
    const fp = normalizeFingerprint(String(argv.relayFingerprint));
    if (!fp)
      throw configError(
        'relay-fingerprint',
        argv.relayFingerprint,
        "expected a SHA-256 fingerprint: 64 hex digits, colons optional (see the relay's start-up log)",
      );
    trust.fingerprint = fp;
  }
  if (argv.clientCert !== undefined || argv.clientKey !== undefined) {
    if (argv.clientCert === undefined || argv.clientKey === undefined)
      throw new RelayError(
        'RELAY_ERR_CONFIG',
        '--client-cert and --client-key go together (the certificate relay cert issue-agent made, and its key)',
      );
    trust.clientCert = {
      cert: readOptionFile('client-cert', String(argv.clientCert)),
      key: readOptionFile('client-key', String(argv.clientKey)),
    };
  }
  if (argv.insecure) {
    if (trust.ca || trust.fingerprint)
      throw new RelayError('RELAY_ERR_CONFIG', '--insecure cannot be combined with --relay-ca or --relay-fingerprint');
    trust.insecure = true;
    logger.warn(
      { event: 'tls_insecure' },
      "--insecure: the relay's certificate is NOT verified; anyone in the path can read the agent token and the traffic",
    );
  }
  return trust;
}

function httpUrl(option: string, value: unknown): URL {
  let url: URL;
  try {
    url = new URL(String(value));
  } catch {
    throw configError(option, value, 'expected http://host:port or https://host:port');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    throw configError(option, value, 'expected http://host:port or https://host:port');
  return url;
}

/** `--listen host:port` (IPv6 as [::1]:8080), or `off`. */
export function listenAddress(value: unknown): { host: string; port: number } | null {
  const raw = String(value);
  if (raw === 'off' || raw === '') return null;
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s]+)):(\d{1,5})$/.exec(raw);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw configError('listen', value, 'expected host:port (e.g. 127.0.0.1:8080, [::1]:8080, 0.0.0.0:8080) or off');
  return { host: (m[1] ?? m[2])!, port };
}

/** `--listen-cert`/`--listen-key`: the internal listener's HTTPS certificate, checked now; undefined for the self-signed one. */
function listenTls(argv: Args): PemPair | undefined {
  if (argv.listenCert === undefined && argv.listenKey === undefined) return undefined;
  if (argv.listenCert === undefined || argv.listenKey === undefined)
    throw new RelayError(
      'RELAY_ERR_CONFIG',
      '--listen-cert and --listen-key go together: give both PEM files, or neither for a self-signed certificate in <data>/tls',
    );
  const pair = { cert: readOptionFile('listen-cert', String(argv.listenCert)), key: readOptionFile('listen-key', String(argv.listenKey)) };
  try {
    checkCertificatePair(pair.cert, pair.key);
  } catch (err) {
    throw configError('listen-cert', argv.listenCert, `not usable with --listen-key: ${(err as Error).message}`);
  }
  return pair;
}

/**
 * `--admin-through-relay`, or its old name `--console-through-relay` (deprecated: it always
 * covered the admin API too, so the name said less than the option does; still accepted, with a
 * warning).
 */
function adminThroughRelay(argv: Args, logger: Logger): boolean {
  if (argv.consoleThroughRelay === true)
    logger.warn(
      { event: 'deprecated_option', option: '--console-through-relay', use: '--admin-through-relay' },
      '--console-through-relay is deprecated: use --admin-through-relay (it serves the control panel and the admin API through the relay)',
    );
  return argv.adminThroughRelay === true || argv.consoleThroughRelay === true;
}

/** How often an instance on a shared store reads the relay connection settings again. */
const RELAY_SETTINGS_FOLLOW_MS = 2000;

/** Opens the built-in platform server and its internal listener. */
async function openPlatform(argv: Args, logger: Logger): Promise<PlatformServer> {
  const listen = listenAddress(argv.listen);
  const internalTls = listenTls(argv);
  const backend = argv.backend === undefined ? undefined : httpUrl('backend', argv.backend);
  const backendCa = argv.backendCa ? readOptionFile('backend-ca', String(argv.backendCa)) : undefined;
  if (process.argv.some((arg) => /postgres(ql)?:\/\/[^/@]*:[^/@]*@/i.test(arg)))
    logger.warn(
      { event: 'store_password_in_argv' },
      'the --store URL holds a password on the command line, where other users of this host can read it: use PGPASSWORD or a --config file',
    );
  const store = await openStore(argv, logger, { create: true });
  const platform = new PlatformServer({
    dataDir: String(argv.data),
    store,
    logger,
    ...(backend ? { backend } : {}),
    ...(backendCa ? { backendCa } : {}),
    adminThroughRelay: adminThroughRelay(argv, logger),
    listenAllowedHosts: parseAllowedHosts('listen-allowed-hosts', argv.listenAllowedHosts),
    ...(internalTls ? { internalTls } : {}),
  });
  try {
    // With a shared store, the IP lists are loaded from it before anything is served.
    await platform.ready();
  } catch (err) {
    await platform.close();
    throw err;
  }
  if (listen) {
    let address;
    try {
      address = await platform.listen(listen.host, listen.port);
    } catch (err) {
      await platform.close();
      throw configError('listen', argv.listen, `cannot listen there (${(err as Error).message}); choose another address or --listen off`);
    }
    logger.info(
      { event: 'platform_listening', address: address.address, port: address.port },
      `platform server listening on ${listen.host}:${address.port}`,
    );
  }
  return platform;
}

/** On an empty store, creates `admin` and shows its generated password once (last, when every check has passed). */
async function firstAdmin(platform: PlatformServer, argv: Args): Promise<void> {
  const admin = await platform.ensureAdmin();
  if (!admin) return;
  // Shown once, on the terminal (stderr), never through the logger: it is a password.
  process.stderr.write(
    `\n  First administrator created: username "${admin.username}", password: ${admin.password}\n` +
      `  It is shown only now. Change it with: platform-agent user set ${admin.username} --password --data ${String(argv.data)}${isSharedStore(argv) ? ' --store <the same --store URL>' : ''}\n\n`,
  );
}

/** The agent token from --token, --token-file or PLATFORM_AGENT_TOKEN; undefined when none of them is given and `required` is false. */
function agentToken(argv: Args, required: boolean): string | undefined {
  const given = argv.token !== undefined || argv.tokenFile !== undefined || Boolean(process.env.PLATFORM_AGENT_TOKEN);
  if (!given && !required) return undefined;
  return resolveSecret({
    option: 'token',
    value: argv.token as string | undefined,
    file: argv.tokenFile as string | undefined,
    env: 'PLATFORM_AGENT_TOKEN',
    minLength: MIN_TOKEN_CHARS,
  });
}

async function start(argv: Args): Promise<void> {
  const logger = createLogger({ name: 'platform-agent', level: argv.logLevel as never });
  let agent: PlatformAgent | undefined;
  let relay: RelayConnection | undefined;
  let platform: PlatformServer | undefined;
  const drainMs = (): number => limitValue('drain-timeout-ms', argv);
  try {
    const upstream = argv.upstream === undefined ? undefined : httpUrl('upstream', argv.upstream);
    if (upstream && argv.sampleApp) throw new RelayError('RELAY_ERR_CONFIG', '--upstream and --sample-app exclude each other');
    for (const option of ['backend', 'admin-through-relay', 'console-through-relay'] as const) {
      const given =
        option === 'backend'
          ? argv.backend !== undefined
          : option === 'admin-through-relay'
            ? argv.adminThroughRelay === true
            : argv.consoleThroughRelay === true;
      if ((upstream || argv.sampleApp) && given)
        throw new RelayError(
          'RELAY_ERR_CONFIG',
          `--${option} belongs to the built-in platform server; it cannot be combined with --upstream or --sample-app`,
        );
    }
    if ((upstream || argv.sampleApp) && (argv.store !== 'sqlite' || argv.storeCa !== undefined))
      throw new RelayError(
        'RELAY_ERR_CONFIG',
        '--store belongs to the built-in platform server; it cannot be combined with --upstream or --sample-app',
      );
    const builtIn = !upstream && !argv.sampleApp;
    // The built-in platform server keeps its relay settings in its store: flags are optional there.
    const token = agentToken(argv, !builtIn);
    const relays = builtIn && argv.relay === undefined ? undefined : relayUrls(argv.relay);
    const connections = argv.connections === undefined ? undefined : limitValue('connections', argv);
    const trust = trustOptions(argv, logger);
    const upstreamCa = argv.upstreamCa ? readOptionFile('upstream-ca', String(argv.upstreamCa)) : undefined;
    const config = agentConfig({
      relays: relays ?? [],
      token: token ?? '',
      trust,
      agentId: String(argv.agentId),
      connections: connections ?? defaults.connectionsPerRelay,
      reconnectMinMs: limitValue('reconnect-min-ms', argv),
      reconnectMaxMs: limitValue('reconnect-max-ms', argv),
      reconnectUnreachableMaxMs: limitValue('reconnect-unreachable-max-ms', argv),
      reconnectStableMs: limitValue('reconnect-stable-ms', argv),
      drainTimeoutMs: drainMs(),
      mux: {
        ...muxOptions(argv),
        maxStreamsPerConnection: limitValue('max-streams-per-connection', argv),
      },
    });
    if (config.reconnectMaxMs < config.reconnectMinMs)
      throw configError('reconnect-max-ms', config.reconnectMaxMs, `must be at least --reconnect-min-ms (${config.reconnectMinMs})`);
    if (config.reconnectUnreachableMaxMs < config.reconnectMinMs)
      throw configError(
        'reconnect-unreachable-max-ms',
        config.reconnectUnreachableMaxMs,
        `must be at least --reconnect-min-ms (${config.reconnectMinMs})`,
      );
    if (!trust.ca && !trust.fingerprint && !trust.insecure && relays) {
      logger.info(
        { event: 'tls_system_ca' },
        'verifying the relay against the system CAs (use --relay-ca or --relay-fingerprint for a private or self-signed relay certificate)',
      );
    }
    if (builtIn) {
      // Last, once every other option is known to be good: it creates the data folder; the first administrator comes after the last check.
      platform = await openPlatform(argv, logger);
      const flags: RelayFlags = {
        ...(relays ? { relays } : {}),
        ...(token !== undefined ? { token } : {}),
        ...(trust.ca ? { relay_ca: trust.ca } : {}),
        ...(trust.fingerprint ? { relay_fingerprint: trust.fingerprint } : {}),
        ...(connections !== undefined ? { connections } : {}),
      };
      relay = new RelayConnection({
        target: platform.streamTarget,
        store: platform.store,
        logger,
        clock: systemClock,
        flags,
        flagTrust: { ...(trust.insecure ? { insecure: true } : {}), ...(trust.clientCert ? { clientCert: trust.clientCert } : {}) },
        agent: config,
      });
      platform.attachRelayControl(relay);
      await relay.load();
      // One platform, one relay setting: what an administrator saves through one instance, the others apply.
      if (isSharedStore(argv)) relay.follow(RELAY_SETTINGS_FOLLOW_MS);
      if (listenAddress(argv.listen) === null && !relay.effective().enabled)
        throw new RelayError(
          'RELAY_ERR_CONFIG',
          '--listen off and no relay connection in use: nothing could reach the platform server. Give --listen host:port (and set the relay up in the control panel), or --relay with a token; a connection turned off in the control panel is turned on there',
        );
      await firstAdmin(platform, argv);
      relay.start();
    } else {
      const target: StreamTarget = upstream
        ? upstreamTarget({ url: upstream, ...(upstreamCa ? { ca: upstreamCa } : {}), logger })
        : sampleAppTarget();
      agent = new PlatformAgent({ ...config, target }, logger);
    }
  } catch (err) {
    await platform?.close();
    exitWithConfigError(err);
  }
  agent?.start();
  onShutdownSignals(logger, async () => {
    await agent?.stop(drainMs());
    await relay?.close(drainMs());
    await platform?.close();
  });
  logger.info({ event: 'agent_ready' }, 'platform agent started');
}

const cli = yargs(hideBin(process.argv))
  .scriptName('platform-agent')
  .usage('$0 <command> [options]')
  .command(
    'start',
    'dial out to one or more relays and serve the platform through them',
    (y) =>
      withStoreOptions(withTunnelOptions(y, 'agent'))
        .option('relay', {
          type: 'string',
          array: true,
          describe: 'relay tunnel URL, wss://host:port (repeat to connect to several relays)',
        })
        .option('token', {
          type: 'string',
          describe: 'agent token (prefer --token-file or PLATFORM_AGENT_TOKEN: argv is visible to other users)',
        })
        .option('token-file', { type: 'string', describe: 'file holding the agent token' })
        .option('relay-ca', { type: 'string', describe: 'PEM CA that signed the relay certificate' })
        .option('relay-fingerprint', { type: 'string', describe: 'pin the relay certificate by its SHA-256 fingerprint' })
        .option('client-cert', {
          type: 'string',
          describe: 'PEM client certificate for a relay that requires one (relay cert issue-agent)',
        })
        .option('client-key', { type: 'string', describe: 'PEM key of --client-cert' })
        .option('insecure', {
          type: 'boolean',
          default: false,
          describe: 'do not verify the relay certificate (testing only; logged as a warning)',
        })
        .option('max-streams-per-connection', limitOption('max-streams-per-connection', 'agent'))
        // No default: without the flag, the value saved in the control panel is used.
        .option('connections', { type: 'number', describe: limitDoc('connections', 'agent') })
        .option('data', {
          type: 'string',
          default: defaults.platformDataDir,
          describe: 'data folder of the built-in platform server (SQLite store, IP rule files, lookup.key, internal TLS certificate)',
        })
        .option('listen', {
          type: 'string',
          default: defaults.platformListen,
          describe: 'internal address of the built-in platform server, host:port, or off',
        })
        .option('listen-cert', {
          type: 'string',
          describe: 'PEM certificate (and chain) for HTTPS on --listen (default: a self-signed one made in <data>/tls)',
        })
        .option('listen-key', { type: 'string', describe: 'PEM key of --listen-cert' })
        .option('listen-allowed-hosts', {
          type: 'string',
          describe:
            'host names the internal listener answers besides its address (comma-separated); any other Host gets 421 (DNS rebinding)',
        })
        .option('admin-through-relay', {
          type: 'boolean',
          default: false,
          describe: 'also serve the control panel and the admin API to clients through the relay (default: the internal listener only)',
        })
        .option('console-through-relay', {
          type: 'boolean',
          default: false,
          deprecated: 'use --admin-through-relay',
          describe: 'old name of --admin-through-relay',
        })
        .option('backend', { type: 'string', describe: 'backend app for authenticated /api/ requests, http(s)://host:port' })
        .option('backend-ca', { type: 'string', describe: 'PEM CA for an https backend' })
        .option('upstream', {
          type: 'string',
          describe: 'an external platform server to pipe each stream to, http(s)://host:port (instead of the built-in one)',
        })
        .option('upstream-ca', { type: 'string', describe: 'PEM CA for an https upstream' })
        .option('sample-app', {
          type: 'boolean',
          default: false,
          describe: 'serve the built-in sample app (a demo, not the platform server)',
        })
        .option('agent-id', { type: 'string', default: hostname(), describe: 'name the relay shows for this agent' })
        .option('reconnect-min-ms', limitOption('reconnect-min-ms', 'agent'))
        .option('reconnect-max-ms', limitOption('reconnect-max-ms', 'agent'))
        .option('reconnect-unreachable-max-ms', limitOption('reconnect-unreachable-max-ms', 'agent'))
        .option('reconnect-stable-ms', limitOption('reconnect-stable-ms', 'agent'))
        .option('drain-timeout-ms', limitOption('drain-timeout-ms', 'agent')),
    (argv) => start(argv as Args),
  );
await registerAdminCommands(cli)
  .demandCommand(1, 'give a command: platform-agent start | user | group | operation | device | settings | ip-rules')
  .strict()
  .fail((msg, err) => {
    exitWithConfigError(err ?? new Error(`${msg}\nRun "platform-agent --help" for the options.`));
  })
  .help()
  .parseAsync();
