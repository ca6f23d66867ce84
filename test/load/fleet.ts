/**
 * A fleet of mobile devices for the load tests: many plain HTTP/1.1 keep-alive connections to
 * the relay, from several loopback addresses (127.0.0.11, .12, … as devices behind different
 * addresses are; one address is capped by the relay's --max-connections-per-ip), each sending
 * requests one at a time and reading the responses with a minimal strict reader. Every loop is
 * bounded; every socket is closed by `close()`.
 */
import net from 'node:net';
import { readFileSync } from 'node:fs';

export interface Device {
  socket: net.Socket;
  /** Bytes of the response being read. */
  buf: Buffer;
  waiting: ((status: number) => void) | null;
  failed: ((err: Error) => void) | null;
  closed: boolean;
}

export interface Outcome {
  /** Responses by status code. */
  status: Record<number, number>;
  /** Requests that got no response: the error's code (ECONNRESET, EPIPE, closed…). */
  errors: Record<string, number>;
}

/** Loopback addresses 127.0.0.11 … for `n` devices, `perAddress` devices on each. */
export function fleetAddress(i: number, perAddress: number): string {
  return `127.0.0.${11 + Math.floor(i / perAddress)}`;
}

/** Opens `n` connections to `port`, `batch` connects in flight at a time. */
export async function openFleet(port: number, n: number, perAddress = 1000, batch = 256): Promise<Device[]> {
  const devices: Device[] = [];
  for (let start = 0; start < n; start += batch) {
    const opened = await Promise.all(
      Array.from({ length: Math.min(batch, n - start) }, (_, k) => connectDevice(port, fleetAddress(start + k, perAddress))),
    );
    devices.push(...opened);
  }
  return devices;
}

function connectDevice(port: number, localAddress: string): Promise<Device> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port, localAddress }, () => {
      socket.off('error', reject);
      resolve(device);
    });
    const device: Device = { socket, buf: Buffer.alloc(0), waiting: null, failed: null, closed: false };
    socket.setNoDelay(true);
    socket.once('error', reject);
    socket.on('data', (chunk: Buffer) => {
      device.buf = device.buf.length === 0 ? chunk : Buffer.concat([device.buf, chunk]);
      const status = complete(device.buf);
      if (status !== null && device.waiting) {
        const done = device.waiting;
        device.waiting = null;
        device.failed = null;
        device.buf = Buffer.alloc(0);
        done(status);
      }
    });
    const lost = (err: Error & { code?: string }): void => {
      device.closed = true;
      const fail = device.failed;
      device.waiting = null;
      device.failed = null;
      fail?.(err);
    };
    socket.on('error', (err) => lost(err));
    socket.on('close', () => lost(Object.assign(new Error('closed'), { code: 'closed' })));
  });
}

/** The status of a complete response in `buf` (Content-Length framed), or null while incomplete. */
function complete(buf: Buffer): number | null {
  const end = buf.indexOf('\r\n\r\n');
  if (end === -1) return null;
  const head = buf.subarray(0, end).toString('latin1');
  const m = /\r\ncontent-length: *(\d+)/i.exec(head);
  const length = m ? Number(m[1]) : 0;
  if (buf.length < end + 4 + length) return null;
  return Number(head.slice(9, 12));
}

/** One request on the device's connection: its status, or the error that ended the connection. */
export function send(device: Device, path: string, timeoutMs = 30_000): Promise<number> {
  if (device.closed) return Promise.reject(Object.assign(new Error('closed'), { code: 'closed' }));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      device.waiting = null;
      device.failed = null;
      reject(Object.assign(new Error('timeout'), { code: 'timeout' }));
    }, timeoutMs);
    device.waiting = (status) => {
      clearTimeout(timer);
      resolve(status);
    };
    device.failed = (err) => {
      clearTimeout(timer);
      reject(err);
    };
    device.socket.write(`GET ${path} HTTP/1.1\r\nHost: relay.test\r\n\r\n`);
  });
}

/** Every device sends one request, `concurrency` at a time; what came back. */
export async function round(devices: Device[], path: string, concurrency = 1000): Promise<Outcome> {
  const outcome: Outcome = { status: {}, errors: {} };
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < devices.length) {
      const device = devices[next++]!;
      try {
        const status = await send(device, path);
        outcome.status[status] = (outcome.status[status] ?? 0) + 1;
      } catch (err) {
        const code = (err as { code?: string }).code ?? 'error';
        outcome.errors[code] = (outcome.errors[code] ?? 0) + 1;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, devices.length) }, worker));
  return outcome;
}

/** Closes every device's connection and waits until all are closed. */
export async function closeFleet(devices: Device[]): Promise<void> {
  await Promise.all(
    devices.map(
      (d) =>
        new Promise<void>((resolve) => {
          if (d.socket.destroyed) return resolve();
          d.socket.once('close', () => resolve());
          d.socket.end();
          setTimeout(() => d.socket.destroy(), 2_000).unref();
        }),
    ),
  );
}

/** A process's resident set now and its peak (VmRSS, VmHWM), MiB. */
export function rssOf(pid: number): { rssMiB: number; peakMiB: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name: string): number => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0) / 1024;
  return { rssMiB: field('VmRSS'), peakMiB: field('VmHWM') };
}
