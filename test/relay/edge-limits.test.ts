import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PlatformAgent } from '../../platform-agent/agent.js';
import type { Relay } from '../../relay/relay.js';
import { json, request, startAgent, startRelay } from '../fixtures/harness.js';

/** Sends raw bytes and collects whatever comes back until the server closes. */
function raw(port: number, data: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const socket = net.connect(port, '127.0.0.1', () => socket.write(data));
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('close', () => resolve(Buffer.concat(chunks).toString()));
    socket.on('error', reject);
    socket.setTimeout(10_000, () => socket.destroy(new Error('server never closed the connection')));
  });
}

describe('edge limits', () => {
  let relay: Relay;
  let agent: PlatformAgent;
  beforeAll(async () => {
    relay = await startRelay({
      limits: { maxHeaderBytes: 4096, headersTimeoutMs: 300, requestTimeoutMs: 1_000, keepAliveTimeoutMs: 5_000 },
    });
    agent = await startAgent(relay);
  });
  afterAll(async () => {
    await agent.stop(100);
    await relay.stop(100);
  });

  it('answers 431 with a JSON error to a request head over the limit', async () => {
    const reply = await request(`http://127.0.0.1:${relay.ports!.httpPort}/hello`, { headers: { 'x-big': 'a'.repeat(8192) } });
    expect(reply.status).toBe(431);
    expect(json(reply).error).toBe('header_too_large');
  });

  it('answers 408 to a client that sends its head too slowly (slowloris)', async () => {
    const started = Date.now();
    const text = await raw(relay.ports!.httpPort, 'GET /hello HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n');
    expect(text).toMatch(/^HTTP\/1\.1 408 /);
    expect(text).toContain('"error":"request_timeout"');
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it('answers 400 to a malformed request and keeps serving others', async () => {
    const text = await raw(relay.ports!.httpPort, 'NOT A REQUEST\r\n\r\n');
    expect(text).toMatch(/^HTTP\/1\.1 400 /);
    expect((await request(`http://127.0.0.1:${relay.ports!.httpPort}/hello`)).status).toBe(200);
  });

  it('refuses a request with both Content-Length and Transfer-Encoding (smuggling)', async () => {
    const text = await raw(
      relay.ports!.httpPort,
      'POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\n\r\n',
    );
    expect(text).toMatch(/^HTTP\/1\.1 400 /);
  });
});
