/**
 * The built relay reloads its platform ports from the --config file on SIGHUP: a port added to
 * the file answers, a removed one stops, a refused list (a port given twice) keeps the previous
 * set and says why; the start-up check refuses the same file with exit 2.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { request } from '../fixtures/harness.js';
import { relayProcess, startAgentProcess, startRelayProcess } from '../fixtures/processes.js';
import { freePort } from '../fixtures/ports.js';

const dir = mkdtempSync(join(tmpdir(), 'relay-platform-ports-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function refused(port: number): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    s.on('connect', () => {
      s.destroy();
      resolve('connected');
    });
    s.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
}

describe('platform ports on SIGHUP', () => {
  it('opens a port added to the config file, closes a removed one, and refuses a port given twice', async () => {
    const [first, second] = [await freePort(), await freePort()];
    const file = join(dir, 'relay.json');
    writeFileSync(file, JSON.stringify({ 'platform-port': [`default=http:${first}`] }));
    const { relay, ports } = await startRelayProcess(['--config', file]);
    await startAgentProcess(ports.tunnelPort, ['--sample-app']);
    expect((await request(`http://127.0.0.1:${first}/`)).status).toBe(200);
    expect(await refused(second)).toBe('ECONNREFUSED');

    // camelCase key, as at start
    writeFileSync(file, JSON.stringify({ platformPort: [`default=https:${second}`] }));
    relay.child.kill('SIGHUP');
    const reloaded = await relay.waitFor((l) => l.event === 'platform_ports_reloaded');
    expect(reloaded).toMatchObject({ added: [`default=https:${second}`], removed: [`default=http:${first}`] });
    expect((await request(`https://127.0.0.1:${second}/`)).status).toBe(200);
    expect(await refused(first)).toBe('ECONNREFUSED');
    // the main listener is untouched
    expect((await request(`https://127.0.0.1:${ports.httpsPort}/`)).status).toBe(200);

    writeFileSync(file, JSON.stringify({ platformPort: [`default=http:${first}`, `other=https:${first}`] }));
    relay.child.kill('SIGHUP');
    const failed = await relay.waitFor((l) => l.event === 'platform_ports_reload_failed');
    expect(failed.err).toBe(`--platform-port: port ${first} is given twice`);
    expect((await request(`https://127.0.0.1:${second}/`)).status).toBe(200);
    expect(await refused(first)).toBe('ECONNREFUSED');
  });

  it('refuses at start a config file giving a port twice (exit 2, naming the option and the port)', async () => {
    const port = await freePort();
    const file = join(dir, 'twice.json');
    writeFileSync(file, JSON.stringify({ platformPort: [`a=http:${port}`, `b=https:${port}`] }));
    const relay = relayProcess(['--config', file]);
    expect(await relay.exited).toBe(2);
    expect(relay.stderr.join('\n')).toContain(`--platform-port: port ${port} is given twice`);
  });
});
