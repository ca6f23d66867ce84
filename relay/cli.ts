#!/usr/bin/env node
/**
 * `relay` CLI: parses and validates options, builds the relay, starts it. Everything it calls is
 * importable (relay.ts) and tested without the CLI.
 */
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { parseAllowedHosts } from '../shared/allowed-hosts.js';
import { fingerprintSha256, readPemPairFiles } from '../shared/certs.js';
import { muxOptions, withTunnelOptions } from '../shared/cli-options.js';
import { exitWithConfigError, onShutdownSignals, portOption, readJsonConfig, readOptionFile, resolveSecret } from '../shared/config.js';
import { defaults } from '../shared/defaults.js';
import { configError, RelayError } from '../shared/errors.js';
import { limitOption, limitValue } from '../shared/limits.js';
import { createLogger } from '../shared/logger.js';
import { registerCertCommands } from './cert-cli.js';
import type { EdgeLimits } from './edge/edge-limits.js';
import { parseProxyProtocolFrom } from './edge/proxy-protocol-from.js';
import type { PlatformPort, Relay, RelayIpRules } from './relay.js';
import { registerStatusCommand } from './status-cli.js';
import type { CertReloader } from './tls/cert-reloader.js';
import { registerTokenCommands } from './token-cli.js';
import { DEFAULT_PLATFORM, hashToken, ID_RULE, isValidId, parseCredentials, type AgentCredential } from './tunnel/agent-credentials.js';

type Args = Record<string, unknown>;

async function start(argv: Args): Promise<void> {
  // The relay itself (ws, prom-client, the edge, the tunnel) is loaded only by `start`: `relay
  // token`, `relay cert` and `relay status` start in less time and memory without it.
  const [{ Relay, relayConfig }, { CertReloader }] = await Promise.all([import('./relay.js'), import('./tls/cert-reloader.js')]);
  const logger = createLogger({ name: 'relay', level: argv.logLevel as never });
  let relay: Relay | undefined;
  let certs: CertReloader;
  try {
    const credentialsFile = argv.agentCredentials as string | undefined;
    const credentials = credentialsFile ? readCredentials(credentialsFile) : [];
    const tokenGiven = argv.agentToken !== undefined || argv.agentTokenFile !== undefined || process.env.RELAY_AGENT_TOKEN !== undefined;
    // With a credentials file the single token is optional; without one it is required (resolveSecret says how to give it).
    const token =
      credentialsFile && !tokenGiven
        ? undefined
        : resolveSecret({
            option: 'agent-token',
            value: argv.agentToken as string | undefined,
            file: argv.agentTokenFile as string | undefined,
            env: 'RELAY_AGENT_TOKEN',
            minLength: 16,
          });
    const tls = await tlsFiles(argv, logger);
    certs = new CertReloader({ ...tls, logger, onReload: (cert, key) => relay?.setCertificate(cert, key) });
    const limits = edgeLimits(argv);
    const config = relayConfig({
      tls: { cert: certs.cert, key: certs.key },
      ...(token !== undefined ? { tokenHash: hashToken(token) } : {}),
      credentials,
      ...(argv.agentCa ? { agentCa: readOptionFile('agent-ca', String(argv.agentCa)) } : {}),
      defaultPlatform: platformId('default-platform', argv.defaultPlatform),
      platformPorts: platformPorts(argv.platformPort),
      admin: adminAddress(argv),
      host: String(argv.host),
      httpPort: limitValue('http-port', argv),
      httpsPort: limitValue('https-port', argv),
      tunnelPort: limitValue('tunnel-port', argv),
      connectWaitMs: limitValue('connect-wait-ms', argv),
      retryAfterSeconds: limitValue('retry-after-seconds', argv),
      streamIdleTimeoutMs: limitValue('stream-idle-timeout-ms', argv),
      drainTimeoutMs: limitValue('drain-timeout-ms', argv),
      limits,
      ipRules: ipRules(argv),
      proxyProtocolFrom: proxyProtocolFrom(argv.proxyProtocolFrom),
      mux: {
        ...muxOptions(argv),
        maxStreamsPerConnection: limitValue('max-streams-per-connection', argv),
      },
    });
    relay = new Relay(config, logger);
  } catch (err) {
    exitWithConfigError(err);
  }
  const running = relay;
  // a platform port given twice or in use is a config error (exit 2), as a bad option is
  const ports = await running.start().catch((err: unknown) => {
    if (err instanceof RelayError && err.code === 'RELAY_ERR_CONFIG') exitWithConfigError(err);
    throw err;
  });
  logger.info(
    // execArgv: whether the Node flags of node-flags.ts are in force (the relay bin runs without them)
    { event: 'relay_ready', execArgv: process.execArgv },
    `mobile clients: http://<host>:${ports.httpPort}/  https://<host>:${ports.httpsPort}/ ; agents: wss://<host>:${ports.tunnelPort}` +
      (ports.adminPort !== null ? ` ; admin: http://127.0.0.1:${ports.adminPort}/status` : ''),
  );
  // SIGHUP: certificates, IP rules, agent credentials and (from the --config file) the platform
  // ports and the PROXY protocol balancers are read again; tunnels and mobile connections stay (those of a removed platform port drain).
  process.on('SIGHUP', () => {
    logger.info(
      { event: 'reload' },
      'SIGHUP: reloading certificates, IP rules, agent credentials, platform ports and PROXY protocol balancers',
    );
    certs.reload();
    running.reloadIpRules();
    const file = argv.agentCredentials as string | undefined;
    if (file) {
      try {
        running.setCredentials(readCredentials(file));
      } catch (err) {
        logger.error(
          { event: 'credentials_reload_failed', err: (err as Error).message },
          'agent credentials not reloaded; the previous ones stay',
        );
      }
    }
    reloadFromConfigFile(running, argv, logger);
  });
  onShutdownSignals(logger, async () => {
    certs.close();
    await running.stop();
  });
}

/**
 * The platform ports and the PROXY protocol balancers from the `--config` file again (SIGHUP).
 * One given on the command line wins over the file, as at start, and stays; without a config
 * file there is nothing to read. A value the file gets wrong keeps the previous one (logged).
 */
function reloadFromConfigFile(relay: Relay, argv: Args, logger: ReturnType<typeof createLogger>): void {
  const file = argv.config as string | undefined;
  if (file === undefined) return;
  let options: Record<string, unknown>;
  try {
    options = readJsonConfig(file);
  } catch (err) {
    logger.error({ event: 'config_reload_failed', err: (err as Error).message }, 'config file not read again; the previous values stay');
    return;
  }
  const cli = hideBin(process.argv);
  if (onCommandLine(cli, 'platform-port', 'platformPort')) {
    logger.info({ event: 'platform_ports_kept' }, 'platform ports given on the command line: the config file does not change them');
  } else {
    let list: PlatformPort[] | undefined;
    try {
      list = platformPorts(options['platform-port'] ?? options.platformPort);
    } catch (err) {
      logger.error(
        { event: 'platform_ports_reload_failed', err: (err as Error).message },
        'platform ports not reloaded; the previous ones stay',
      );
    }
    // a refusal is logged by the relay (platform_ports_reload_failed)
    if (list) relay.setPlatformPorts(list).catch(() => {});
  }
  if (onCommandLine(cli, 'proxy-protocol-from', 'proxyProtocolFrom')) {
    logger.info(
      { event: 'proxy_protocol_from_kept' },
      '--proxy-protocol-from given on the command line: the config file does not change it',
    );
  } else {
    try {
      relay.setProxyProtocolFrom(proxyProtocolFrom(options['proxy-protocol-from'] ?? options.proxyProtocolFrom));
    } catch (err) {
      logger.error(
        { event: 'proxy_protocol_from_reload_failed', err: (err as Error).message },
        '--proxy-protocol-from not reloaded; the previous list stays',
      );
    }
  }
}

/** Whether the option (kebab-case or camelCase) is among the command-line arguments. */
function onCommandLine(args: readonly string[], kebab: string, camel: string): boolean {
  return args.some((a) => a === `--${kebab}` || a === `--${camel}` || a.startsWith(`--${kebab}=`) || a.startsWith(`--${camel}=`));
}

function readCredentials(file: string): AgentCredential[] {
  const text = readOptionFile('agent-credentials', file);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw configError(
      'agent-credentials',
      file,
      `not JSON (${(err as Error).message}); expected an array of lines from relay token create`,
    );
  }
  return parseCredentials(json, file);
}

function platformId(option: string, value: unknown): string {
  const id = String(value ?? DEFAULT_PLATFORM);
  if (!isValidId(id)) throw configError(option, value, ID_RULE);
  return id;
}

/** `--platform-port courier=https:10561` (repeatable). */
function platformPorts(value: unknown): PlatformPort[] {
  const list = (Array.isArray(value) ? value : value === undefined ? [] : [value]).map(String);
  return list.map((raw) => {
    const m = /^([^=]+)=(http|https):(\d{1,5})$/.exec(raw);
    if (!m) throw configError('platform-port', raw, 'expected <platform>=<http|https>:<port>, e.g. courier=https:10561');
    return { platform: platformId('platform-port', m[1]), tls: m[2] === 'https', port: portOption('platform-port', Number(m[3])) };
  });
}

/** `--proxy-protocol-from 10.0.0.0/24` (repeatable): addresses or CIDR blocks of TCP load balancers. */
function proxyProtocolFrom(value: unknown): string[] {
  const list = (Array.isArray(value) ? value : value === undefined ? [] : [value]).map(String);
  for (const entry of list) {
    let count: number;
    try {
      count = parseProxyProtocolFrom([entry]).size;
    } catch (err) {
      throw configError('proxy-protocol-from', entry, `expected an address or CIDR block, e.g. 10.0.0.0/24 (${(err as Error).message})`);
    }
    if (count !== 1) throw configError('proxy-protocol-from', entry, 'expected one address or CIDR block, e.g. 10.0.0.0/24');
  }
  return list;
}

function adminAddress(argv: Args): { host: string; port: number; allowedHosts: string[] } | null {
  if (String(argv.adminPort) === 'off') return null;
  return {
    host: String(argv.adminHost),
    port: portOption('admin-port', Number(argv.adminPort)),
    allowedHosts: parseAllowedHosts('admin-allowed-hosts', argv.adminAllowedHosts),
  };
}

function edgeLimits(argv: Args): EdgeLimits {
  const limits: EdgeLimits = {
    maxHeaderBytes: limitValue('max-header-bytes', argv),
    headersTimeoutMs: limitValue('headers-timeout-ms', argv),
    requestTimeoutMs: limitValue('request-timeout-ms', argv),
    keepAliveTimeoutMs: limitValue('keep-alive-timeout-ms', argv),
    maxBodyBytes: limitValue('max-body-bytes', argv),
    requestBufferBytes: limitValue('request-buffer-bytes', argv),
    minBodyBytesPerSecond: limitValue('min-body-bytes-per-second', argv),
    bodyRateGraceMs: limitValue('body-rate-grace-ms', argv),
    allowUnderscoreHeaders: argv.allowUnderscoreHeaders === true,
    maxConnections: limitValue('max-connections', argv),
    maxConnectionsPerIp: limitValue('max-connections-per-ip', argv),
    maxStreamSharePerIpPercent: limitValue('max-stream-share-per-ip', argv),
    maxRequestsPerSecondPerIp: limitValue('max-requests-per-second-per-ip', argv),
    requestBurstPerIp: limitValue('requests-burst-per-ip', argv),
    maxTrackedIps: limitValue('max-tracked-ips', argv),
  };
  // the head is part of the request: its time cannot be longer than the whole request's
  if (limits.requestTimeoutMs > 0 && limits.headersTimeoutMs > limits.requestTimeoutMs) {
    throw configError(
      'headers-timeout-ms',
      limits.headersTimeoutMs,
      `expected at most --request-timeout-ms (${limits.requestTimeoutMs}), or --request-timeout-ms 0`,
    );
  }
  return limits;
}

function ipRules(argv: Args): RelayIpRules {
  const whitelistFile = argv.whitelist as string | undefined;
  const blacklistFile = argv.blacklist as string | undefined;
  // A file named on the command line must exist at start: a typo would otherwise leave the
  // relay open (an empty blacklist) or shut (an empty whitelist with --whitelist-only). Later
  // removal empties the list, as on the platform.
  if (whitelistFile !== undefined) readOptionFile('whitelist', whitelistFile);
  if (blacklistFile !== undefined) readOptionFile('blacklist', blacklistFile);
  const whitelistOnly = argv.whitelistOnly === true;
  if (whitelistOnly && whitelistFile === undefined) {
    throw configError('whitelist-only', true, 'give --whitelist <file> too: without one every client would be dropped');
  }
  return {
    ...(whitelistFile !== undefined ? { whitelistFile } : {}),
    ...(blacklistFile !== undefined ? { blacklistFile } : {}),
    whitelistOnly,
    pollIntervalMs: defaults.ipRulesPollMs,
    maxFileBytes: defaults.ipRulesMaxFileBytes,
  };
}

/** The certificate and key files (watched for changes by CertReloader). */
async function tlsFiles(argv: Args, logger: ReturnType<typeof createLogger>): Promise<{ certFile: string; keyFile: string }> {
  const certFile = argv.cert as string | undefined;
  const keyFile = argv.key as string | undefined;
  if (certFile || keyFile) {
    if (!certFile || !keyFile)
      throw new RelayError('RELAY_ERR_CONFIG', '--cert and --key go together: give both PEM files, or neither for a self-signed pair');
    const cert = readOptionFile('cert', certFile);
    readOptionFile('key', keyFile);
    logger.info({ event: 'tls_loaded', cert: certFile, fingerprint: fingerprintSha256(cert) }, 'TLS certificate loaded');
    return { certFile, keyFile };
  }
  const dir = String(argv.certsDir);
  // node-forge (~4 MiB of RSS) is loaded only to make a pair: a relay whose files exist never loads it.
  const existing = readPemPairFiles(dir);
  const pair = existing
    ? { ...existing, generated: false }
    : (await import('../shared/cert-making.js')).loadOrCreateSelfSigned(dir, {
        commonName: 'dmz-relay',
        dnsNames: ['localhost'],
        ipAddresses: ['127.0.0.1', '::1'],
      });
  const fingerprint = fingerprintSha256(pair.cert);
  if (pair.generated) {
    logger.warn(
      { event: 'tls_self_signed', cert: pair.certFile, fingerprint },
      `no --cert/--key: generated a self-signed certificate in ${dir}/. Mobile devices on the internet need a certificate from a trusted authority; agents can pin this one with --relay-fingerprint ${fingerprint}`,
    );
  } else {
    logger.warn(
      { event: 'tls_self_signed', cert: pair.certFile, fingerprint },
      `using the self-signed certificate in ${dir}/ (agents: --relay-fingerprint ${fingerprint})`,
    );
  }
  return { certFile: pair.certFile, keyFile: pair.keyFile };
}

const cli = yargs(hideBin(process.argv))
  .scriptName('relay')
  .usage('$0 <command> [options]')
  .command(
    'start',
    'start the relay: mobile listeners (HTTP, HTTPS) and the tunnel endpoint for platform agents',
    (y) =>
      withTunnelOptions(y, 'relay')
        .option('host', { type: 'string', default: defaults.host, describe: 'address to listen on' })
        .option('http-port', limitOption('http-port', 'relay'))
        .option('https-port', limitOption('https-port', 'relay'))
        .option('tunnel-port', limitOption('tunnel-port', 'relay'))
        .option('cert', { type: 'string', describe: 'PEM certificate (with chain) for HTTPS and the tunnel' })
        .option('key', { type: 'string', describe: 'PEM private key of --cert' })
        .option('certs-dir', {
          type: 'string',
          default: 'certs',
          describe: 'where a self-signed pair is made when --cert/--key are absent',
        })
        .option('agent-token', {
          type: 'string',
          describe: 'token agents must present (prefer --agent-token-file or RELAY_AGENT_TOKEN: argv is visible to other users)',
        })
        .option('agent-token-file', { type: 'string', describe: 'file holding the agent token' })
        .option('agent-credentials', {
          type: 'string',
          describe: 'JSON file of agent credentials, each bound to a platform (relay token create prints the lines); reloaded on SIGHUP',
        })
        .option('agent-ca', { type: 'string', describe: 'PEM CA: agents must present a client certificate it signed (mTLS)' })
        .option('default-platform', { type: 'string', default: DEFAULT_PLATFORM, describe: 'platform served on --http-port/--https-port' })
        .option('platform-port', {
          type: 'string',
          array: true,
          describe:
            'another mobile port for one platform, <platform>=<http|https>:<port> (repeatable); in the --config file, reloaded on SIGHUP',
        })
        .option('admin-host', {
          type: 'string',
          default: defaults.adminHost,
          describe: 'address of the admin listener (keep it on loopback)',
        })
        .option('admin-port', {
          type: 'string',
          default: String(defaults.adminPort),
          describe: 'admin listener port (/healthz /readyz /metrics /status), or off',
        })
        .option('admin-allowed-hosts', {
          type: 'string',
          describe: 'host names the admin listener answers besides its address (comma-separated); any other Host gets 421 (DNS rebinding)',
        })
        .option('connect-wait-ms', limitOption('connect-wait-ms', 'relay'))
        .option('retry-after-seconds', limitOption('retry-after-seconds', 'relay'))
        .option('stream-idle-timeout-ms', limitOption('stream-idle-timeout-ms', 'relay'))
        .option('drain-timeout-ms', limitOption('drain-timeout-ms', 'relay'))
        .option('max-header-bytes', limitOption('max-header-bytes', 'relay'))
        .option('headers-timeout-ms', limitOption('headers-timeout-ms', 'relay'))
        .option('request-timeout-ms', limitOption('request-timeout-ms', 'relay'))
        .option('keep-alive-timeout-ms', limitOption('keep-alive-timeout-ms', 'relay'))
        .option('max-body-bytes', limitOption('max-body-bytes', 'relay'))
        .option('request-buffer-bytes', limitOption('request-buffer-bytes', 'relay'))
        .option('min-body-bytes-per-second', limitOption('min-body-bytes-per-second', 'relay'))
        .option('body-rate-grace-ms', limitOption('body-rate-grace-ms', 'relay'))
        .option('allow-underscore-headers', {
          type: 'boolean',
          default: defaults.allowUnderscoreHeaders,
          describe: "forward request header names holding '_' (nginx's underscores_in_headers); off: they are dropped",
        })
        .option('max-connections', limitOption('max-connections', 'relay'))
        .option('max-connections-per-ip', limitOption('max-connections-per-ip', 'relay'))
        .option('max-stream-share-per-ip', limitOption('max-stream-share-per-ip', 'relay'))
        .option('max-requests-per-second-per-ip', limitOption('max-requests-per-second-per-ip', 'relay'))
        .option('requests-burst-per-ip', limitOption('requests-burst-per-ip', 'relay'))
        .option('max-tracked-ips', limitOption('max-tracked-ips', 'relay'))
        .option('max-streams-per-connection', limitOption('max-streams-per-connection', 'relay'))
        .option('whitelist', {
          type: 'string',
          describe: 'IP whitelist file (address, CIDR or range a line): admitted whatever the blacklist says, exempt from per-IP limits',
        })
        .option('blacklist', {
          type: 'string',
          describe:
            'IP blacklist file: connections reset before TLS or HTTP (unless whitelisted); both files are reloaded when they change',
        })
        .option('whitelist-only', {
          type: 'boolean',
          default: false,
          describe: 'drop every client not on --whitelist',
        })
        .option('proxy-protocol-from', {
          type: 'string',
          array: true,
          describe:
            'address or CIDR block of a TCP load balancer that sends a PROXY protocol v1/v2 header (repeatable): its connections must start with one, and the client it names is the client; from other addresses a header is refused; in the --config file, reloaded on SIGHUP',
        }),
    (argv) => start(argv as Args),
  );
await registerStatusCommand(registerTokenCommands(registerCertCommands(cli)))
  .demandCommand(1, 'give a command: relay start | cert | token | status')
  .strict()
  .fail((msg, err) => {
    exitWithConfigError(err ?? new Error(`${msg}\nRun "relay --help" for the options.`));
  })
  .help()
  .parseAsync();
