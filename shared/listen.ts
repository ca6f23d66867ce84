/** `server.listen` as a promise, for every listener of both processes. */
import type { AddressInfo, Server } from 'node:net';

/**
 * Starts `server` listening on `host:port` and resolves with the bound address (its port when
 * `port` was 0). A listen error (EADDRINUSE, EACCES…) rejects the promise; the one-shot error
 * listener added for it is removed either way, so later errors reach the server's own handlers.
 */
export function listen(server: Server, port: number, host: string): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      resolve(server.address() as AddressInfo);
    });
  });
}
