/**
 * The relay's peers in the bench, each a real program started as a child on 127.0.0.1 with its
 * configuration generated in the bench's temp folder:
 * - nginx as a one-hop reverse proxy straight to the upstream (Debian `nginx-light`);
 * - an `ssh -R` tunnel: sshd (Debian `openssh-server`) and an ssh client that forwards a port of
 *   sshd's side back to the upstream, the classic way to reach a server behind a firewall that
 *   only dials out.
 * A missing program is reported on stderr and its column stays empty; the rest still runs.
 */
import { spawnSync } from 'node:child_process';
import { accessSync, constants, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { delimiter, join } from 'node:path';
import { type Child, freePort, spawnChild, waitFor200, waitForTcp } from './children.js';

/** One process (with what it forks) of a path, named as the table shows it. */
export interface MeasuredProcess {
  name: string;
  child: Child;
}

/** A running peer: where clients reach the upstream through it, and what runs it. */
export interface Peer {
  /** `http://127.0.0.1:<port>` */
  base: string;
  processes: MeasuredProcess[];
  /** One line for the table's note, e.g. `nginx/1.22.1`. */
  version: string;
}

const READY_TIMEOUT_MS = 20_000;
const SBIN_DIRS = ['/usr/local/sbin', '/usr/sbin', '/sbin'];

/** The absolute path of `name` on PATH or in the sbin folders (sshd needs one), or undefined. */
export function findExecutable(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(delimiter).filter((d) => d.startsWith('/')), ...SBIN_DIRS];
  for (const dir of dirs) {
    const file = join(dir, name);
    try {
      accessSync(file, constants.X_OK);
      return file;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** First line a program prints for its version flag (nginx and ssh print it on stderr). */
function versionLine(file: string, flag: string): string {
  const r = spawnSync(file, [flag], { encoding: 'utf8', timeout: 5_000 });
  return `${r.stderr ?? ''}${r.stdout ?? ''}`.trim().split('\n')[0] ?? 'unknown version';
}

function run(file: string, args: string[]): void {
  const r = spawnSync(file, args, { encoding: 'utf8', timeout: 30_000 });
  if (r.status !== 0) throw new Error(`${file} ${args.join(' ')} failed (${r.error?.message ?? r.signal ?? r.status}): ${r.stderr}`);
}

function lastLines(file: string, n: number): string {
  try {
    return readFileSync(file, 'utf8').trim().split('\n').slice(-n).join('\n');
  } catch {
    return '';
  }
}

/**
 * Starts nginx (master + 1 worker, access log on, buffered 64 KiB) proxying 127.0.0.1:<free port>
 * to the upstream over keep-alive HTTP/1.1 connections, and waits until `/hello` answers 200.
 * Request bodies are streamed (`proxy_request_buffering off`), as the relay and ssh stream them;
 * responses are buffered as nginx does by default. Undefined when nginx is not installed.
 */
export async function startNginx(tmp: string, upstreamPort: number): Promise<Peer | undefined> {
  const nginx = findExecutable('nginx');
  if (!nginx) {
    process.stderr.write('bench: nginx not found: apt-get install nginx-light (the nginx column shows —)\n');
    return undefined;
  }
  const dir = join(tmp, 'nginx');
  mkdirSync(dir, { recursive: true });
  const port = await freePort();
  const errorLog = join(dir, 'error.log');
  // Workers run as `user` only when the master is root; as root they must reach the 0700 temp folder.
  const user = process.getuid?.() === 0 ? `user ${os.userInfo().username};\n` : '';
  const conf = `${user}worker_processes 1;
error_log ${errorLog} warn;
pid ${join(dir, 'nginx.pid')};
events { worker_connections 1024; }
http {
  access_log ${join(dir, 'access.log')} combined buffer=64k;
  client_body_temp_path ${join(dir, 'client_body')};
  proxy_temp_path ${join(dir, 'proxy')};
  fastcgi_temp_path ${join(dir, 'fastcgi')};
  uwsgi_temp_path ${join(dir, 'uwsgi')};
  scgi_temp_path ${join(dir, 'scgi')};
  upstream app {
    server 127.0.0.1:${upstreamPort};
    keepalive 64;
  }
  server {
    listen 127.0.0.1:${port};
    client_max_body_size 0;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_request_buffering off;
    }
  }
}
`;
  const confFile = join(dir, 'nginx.conf');
  writeFileSync(confFile, conf);
  // SIGQUIT: graceful stop; SIGTERM: fast stop.
  const child = spawnChild('nginx', nginx, ['-p', dir, '-c', confFile, '-e', errorLog, '-g', 'daemon off; master_process on;'], {
    stopSignals: ['SIGQUIT', 'SIGTERM'],
  });
  const base = `http://127.0.0.1:${port}`;
  try {
    await waitFor200(`${base}/hello`, READY_TIMEOUT_MS, [child]);
  } catch (err) {
    throw new Error(`${(err as Error).message}\nnginx error log:\n${lastLines(errorLog, 20)}`);
  }
  return { base, processes: [{ name: 'nginx', child }], version: versionLine(nginx, '-v').replace(/^nginx version: /, '') };
}

/**
 * Starts sshd on 127.0.0.1:<free port> (own host key, one authorized client key, remote
 * forwarding only) and `ssh -N -R 127.0.0.1:<rport>:127.0.0.1:<upstreamPort>` logged in as the
 * current user, and waits until `/hello` answers 200 through the forwarded port. Undefined when
 * sshd, ssh or ssh-keygen is missing, or /run/sshd (sshd's privilege-separation folder) cannot be made.
 */
export async function startSshTunnel(tmp: string, upstreamPort: number): Promise<Peer | undefined> {
  const sshd = findExecutable('sshd');
  const ssh = findExecutable('ssh');
  const keygen = findExecutable('ssh-keygen');
  if (!sshd || !ssh || !keygen) {
    const missing = [!sshd && 'sshd', !ssh && 'ssh', !keygen && 'ssh-keygen'].filter(Boolean).join(', ');
    process.stderr.write(`bench: ${missing} not found: apt-get install openssh-server openssh-client (the ssh -R column shows —)\n`);
    return undefined;
  }
  try {
    if (!existsSync('/run/sshd')) mkdirSync('/run/sshd', { mode: 0o755 });
  } catch (err) {
    process.stderr.write(`bench: cannot create /run/sshd, which sshd needs (${(err as Error).message}); the ssh -R column shows —\n`);
    return undefined;
  }
  const dir = join(tmp, 'ssh');
  mkdirSync(dir, { recursive: true });
  const hostKey = join(dir, 'host_ed25519_key');
  const clientKey = join(dir, 'client_ed25519_key');
  run(keygen, ['-q', '-t', 'ed25519', '-N', '', '-C', 'relay-bench-host', '-f', hostKey]);
  run(keygen, ['-q', '-t', 'ed25519', '-N', '', '-C', 'relay-bench-client', '-f', clientKey]);
  const authorizedKeys = join(dir, 'authorized_keys');
  writeFileSync(authorizedKeys, readFileSync(`${clientKey}.pub`), { mode: 0o600 });
  const [sshdPort, forwardedPort] = [await freePort(), await freePort()];
  const config = join(dir, 'sshd_config');
  writeFileSync(
    config,
    [
      'ListenAddress 127.0.0.1',
      `Port ${sshdPort}`,
      `HostKey ${hostKey}`,
      `AuthorizedKeysFile ${authorizedKeys}`,
      `PidFile ${join(dir, 'sshd.pid')}`,
      'UsePAM no',
      'StrictModes no',
      'PermitRootLogin prohibit-password',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'AllowTcpForwarding remote',
      'GatewayPorts no',
      'X11Forwarding no',
      'PrintMotd no',
      'LogLevel ERROR',
      '',
    ].join('\n'),
  );
  // sshd re-executes itself for each connection, so it must be started by its absolute path.
  const daemon = spawnChild('sshd', sshd, ['-D', '-e', '-f', config]);
  await waitForTcp(sshdPort, READY_TIMEOUT_MS, daemon);
  const client = spawnChild('ssh', ssh, [
    '-N',
    '-T',
    '-F',
    'none',
    '-o',
    'BatchMode=yes',
    '-o',
    'StrictHostKeyChecking=no',
    '-o',
    'UserKnownHostsFile=/dev/null',
    '-o',
    'ExitOnForwardFailure=yes',
    '-o',
    'Compression=no',
    '-o',
    'IdentitiesOnly=yes',
    '-o',
    'LogLevel=ERROR',
    '-i',
    clientKey,
    '-p',
    String(sshdPort),
    '-R',
    `127.0.0.1:${forwardedPort}:127.0.0.1:${upstreamPort}`,
    `${os.userInfo().username}@127.0.0.1`,
  ]);
  const base = `http://127.0.0.1:${forwardedPort}`;
  await waitFor200(`${base}/hello`, READY_TIMEOUT_MS, [daemon, client]);
  return {
    base,
    processes: [
      { name: 'sshd', child: daemon },
      { name: 'ssh', child: client },
    ],
    version: versionLine(ssh, '-V'),
  };
}
