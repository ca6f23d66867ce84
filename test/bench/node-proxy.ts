/**
 * Benchmark reference: the plainest reverse proxy the relay's own stack allows — one Node process,
 * `http-proxy` with a keep-alive `http.Agent` straight to the upstream, no tunnel, no agent, no
 * logging. It shows the ceiling of Node's HTTP machinery on this machine, measured in the same run
 * as the relay. Usage: node node-proxy.js <upstream-url>. Prints `{"port":N}` once listening on
 * 127.0.0.1 (port 0). Stops on SIGTERM/SIGINT.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import httpProxy from 'http-proxy';

const target = process.argv[2];
if (!target) {
  process.stderr.write('usage: node node-proxy.js <upstream-url>\n');
  process.exit(2);
}
const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
const proxy = httpProxy.createProxyServer({ target, agent });
proxy.on('error', (_err, _req, res) => {
  if (res instanceof http.ServerResponse && !res.headersSent) res.writeHead(502).end();
  else res.destroy();
});
const server = http.createServer((req, res) => proxy.web(req, res));
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address() as AddressInfo;
  process.stdout.write(`${JSON.stringify({ port })}\n`);
});
const stop = (): void => {
  server.close();
  server.closeAllConnections();
  agent.destroy();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
