/**
 * Benchmark upstream: the sample app in its own process on 127.0.0.1, port 0. Prints
 * `{"port":N}` on one stdout line once listening. Stops on SIGTERM/SIGINT.
 */
import type { AddressInfo } from 'node:net';
import { createSampleApp } from '../../platform-agent/agent/sample-app.js';

const server = createSampleApp();
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address() as AddressInfo;
  process.stdout.write(`${JSON.stringify({ port })}\n`);
});
const stop = (): void => {
  server.close();
  server.closeAllConnections();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
