#!/usr/bin/env node
/**
 * `npm start`: the whole system on this machine. Starts the relay (self-signed certificate made
 * on first start under certs/) and a platform agent that pins it and runs the built-in platform
 * server (SQLite store under data/; on first start it creates the administrator `admin` and
 * prints its generated password once), with a fresh random agent token, then prints how to
 * reach it. Ctrl-C stops both.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { fingerprintSha256 } from '../shared/certs.js';
import { defaults } from '../shared/defaults.js';
import { canConnect } from '../shared/net-probe.js';

const dist = join(dirname(fileURLToPath(import.meta.url)), '..');
const argv = await yargs(hideBin(process.argv))
  .scriptName('npm start --')
  .option('http-port', { type: 'number', default: defaults.httpPort })
  .option('https-port', { type: 'number', default: defaults.httpsPort })
  .option('tunnel-port', { type: 'number', default: defaults.tunnelPort })
  .option('certs-dir', { type: 'string', default: 'certs' })
  .option('data', { type: 'string', default: 'data', describe: 'data folder of the platform server' })
  .option('listen', { type: 'string', default: '127.0.0.1:8080', describe: 'internal address of the platform server, or off' })
  .strict()
  .help()
  .parseAsync();

const token = process.env.RELAY_AGENT_TOKEN ?? randomBytes(24).toString('base64url');
const children: ChildProcess[] = [];

function run(script: string, args: string[], env: NodeJS.ProcessEnv): ChildProcess {
  const child = spawn(process.execPath, [join(dist, script), ...args], { stdio: 'inherit', env: { ...process.env, ...env } });
  children.push(child);
  child.on('exit', (code, signal) => {
    if (!stopping) {
      process.stderr.write(`${script} exited (${signal ?? code}); stopping the demo\n`);
      stop(code ?? 1);
    }
  });
  return child;
}

let stopping = false;
function stop(code: number): void {
  if (stopping) return;
  stopping = true;
  for (const child of children) if (child.exitCode === null) child.kill('SIGTERM');
  Promise.all(children.map((c) => (c.exitCode === null ? new Promise((r) => c.once('exit', r)) : null))).then(() => process.exit(code));
}
process.on('SIGINT', () => stop(0));
process.on('SIGTERM', () => stop(0));

async function waitForPort(port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await canConnect(port)) return;
    if (Date.now() > deadline) throw new Error(`the relay did not open port ${port} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

run(
  'relay/cli.js',
  [
    'start',
    '--host',
    '127.0.0.1',
    '--http-port',
    String(argv.httpPort),
    '--https-port',
    String(argv.httpsPort),
    '--tunnel-port',
    String(argv.tunnelPort),
    '--certs-dir',
    argv.certsDir,
  ],
  {
    RELAY_AGENT_TOKEN: token,
  },
);
await waitForPort(argv.tunnelPort, 30_000);
const certFile = join(argv.certsDir, 'relay.crt');
if (!existsSync(certFile)) throw new Error(`${certFile} is missing`);
const fingerprint = fingerprintSha256(readFileSync(certFile, 'utf8'));
run(
  'platform-agent/cli.js',
  [
    'start',
    '--relay',
    `wss://localhost:${argv.tunnelPort}`,
    '--relay-fingerprint',
    fingerprint,
    '--data',
    argv.data,
    '--listen',
    argv.listen,
    '--agent-id',
    'demo-agent',
  ],
  {
    PLATFORM_AGENT_TOKEN: token,
  },
);

process.stdout.write(
  [
    '',
    'Running: relay (DMZ side) + platform agent with the platform server (data in ' + argv.data + ').',
    argv.listen === 'off'
      ? 'The admin API and the control panel are served on the internal listener only: start without --listen off to use them.'
      : 'Log in as the administrator (password printed above on first start) on the internal listener, create a mobile user:',
    ...(argv.listen === 'off'
      ? []
      : [
          `  curl http://${argv.listen}/admin/api/v1/auth/login -H 'content-type: application/json' -d '{"username":"admin","password":"<password>"}'`,
          `  curl http://${argv.listen}/admin/api/v1/users -H 'authorization: Bearer <admin access_token>' -H 'content-type: application/json' -d '{"username":"alice","password":"<8+ characters>","role":"mobile"}'`,
        ]),
    'Log in as the mobile user through the relay, and call the API:',
    `  curl -k https://localhost:${argv.httpsPort}/api/v1/auth/login -H 'x-device-id: phone-1' -H 'content-type: application/json' -d '{"username":"alice","password":"<password>"}'`,
    `  curl -k https://localhost:${argv.httpsPort}/api/v1/me -H 'authorization: Bearer <access_token>'`,
    argv.listen === 'off' ? '' : `Inside the network the platform server also answers on http://${argv.listen}/`,
    'Relay health and agents: npm run relay -- status   (admin listener http://127.0.0.1:10901: /healthz /readyz /metrics /status)',
    `Agents pin the relay certificate with --relay-fingerprint ${fingerprint}`,
    'Ctrl-C stops both.',
    '',
  ].join('\n'),
);
