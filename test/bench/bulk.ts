/**
 * 64 MiB transfers with Node's http/https clients: a download whose length is checked, and an
 * upload whose length and SHA-256 the upstream (the sample app's /upload) reports back.
 */
import http from 'node:http';
import https from 'node:https';
import { performance } from 'node:perf_hooks';

/** Bytes of one bulk transfer. */
export const BULK_BYTES = 64 * 1024 * 1024;
const SLICE_BYTES = 1024 * 1024;
/** A transfer fails when its socket has been idle this long. */
const BULK_IDLE_TIMEOUT_MS = 120_000;

function requestModule(url: string): typeof http | typeof https {
  return url.startsWith('https:') ? https : http;
}

/** Streams a {@link BULK_BYTES} download from `<base>/bytes`, counting bytes. Resolves with the seconds it took. */
export function download(base: string): Promise<number> {
  const url = `${base}/bytes?n=${BULK_BYTES}`;
  return new Promise((resolve, reject) => {
    const start = performance.now();
    // rejectUnauthorized:false only for this loopback benchmark against the relay's self-signed certificate.
    const req = requestModule(url).get(url, { agent: false, rejectUnauthorized: false }, (res) => {
      let bytes = 0;
      res.on('data', (c: Buffer) => (bytes += c.length));
      res.on('end', () => {
        const seconds = (performance.now() - start) / 1000;
        if (res.statusCode !== 200) return reject(new Error(`GET ${url}: HTTP ${res.statusCode}`));
        if (bytes !== BULK_BYTES) return reject(new Error(`GET ${url}: got ${bytes} bytes, expected ${BULK_BYTES}`));
        resolve(seconds);
      });
      res.on('error', reject);
      res.on('aborted', () => reject(new Error(`GET ${url}: response aborted after ${bytes} bytes`)));
    });
    req.setTimeout(BULK_IDLE_TIMEOUT_MS, () => req.destroy(new Error(`GET ${url}: no progress for ${BULK_IDLE_TIMEOUT_MS} ms`)));
    req.on('error', reject);
  });
}

/**
 * Streams `body` ({@link BULK_BYTES} long) to `<base>/upload` in 1 MiB slices with backpressure and
 * checks the byte count and digest the upstream answers. Resolves with the seconds it took.
 */
export function upload(base: string, body: Buffer, sha256: string): Promise<number> {
  const url = `${base}/upload`;
  return new Promise((resolve, reject) => {
    const start = performance.now();
    const req = requestModule(url).request(
      url,
      {
        method: 'POST',
        agent: false,
        rejectUnauthorized: false,
        headers: { 'content-type': 'application/octet-stream', 'content-length': body.length },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const seconds = (performance.now() - start) / 1000;
          const text = Buffer.concat(chunks).toString('utf8');
          if (res.statusCode !== 200) return reject(new Error(`POST ${url}: HTTP ${res.statusCode} ${text.slice(0, 300)}`));
          let reply: { bytes?: unknown; sha256?: unknown };
          try {
            reply = JSON.parse(text) as typeof reply;
          } catch {
            return reject(new Error(`POST ${url}: not JSON: ${text.slice(0, 300)}`));
          }
          if (reply.bytes !== BULK_BYTES)
            return reject(new Error(`POST ${url}: upstream counted ${String(reply.bytes)} bytes, expected ${BULK_BYTES}`));
          if (reply.sha256 !== sha256) return reject(new Error(`POST ${url}: sha256 mismatch (${String(reply.sha256)} vs ${sha256})`));
          resolve(seconds);
        });
        res.on('error', reject);
      },
    );
    req.setTimeout(BULK_IDLE_TIMEOUT_MS, () => req.destroy(new Error(`POST ${url}: no progress for ${BULK_IDLE_TIMEOUT_MS} ms`)));
    req.on('error', reject);
    let offset = 0;
    const pump = (): void => {
      while (offset < body.length) {
        const slice = body.subarray(offset, offset + SLICE_BYTES);
        offset += slice.length;
        if (!req.write(slice)) {
          req.once('drain', pump);
          return;
        }
      }
      req.end();
    };
    pump();
  });
}

/** MiB/s of one {@link BULK_BYTES} transfer that took `seconds`. */
export function mibPerSecond(seconds: number): number {
  return BULK_BYTES / (1024 * 1024) / seconds;
}
