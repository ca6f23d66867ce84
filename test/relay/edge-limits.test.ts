import http from 'node:http';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { PlatformAgent } from '../../platform-agent/agent/agent.js';
import { defaultEdgeLimits } from '../../relay/edge/edge-limits.js';
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
      limits: { ...defaultEdgeLimits(), maxHeaderBytes: 4096, headersTimeoutMs: 300, requestTimeoutMs: 1_000, keepAliveTimeoutMs: 500 },
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

  it('answers 408 to a client that sends its body too slowly (request timeout), and counts it', async () => {
    const before = relay.edgeStats.rejected.request_timeout;
    const started = Date.now();
    // a complete head, then 3 of the 100 body bytes announced, then nothing
    const text = await raw(relay.ports!.httpPort, 'POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc');
    expect(text).toMatch(/^HTTP\/1\.1 408 /);
    expect(text).toContain('"error":"request_timeout"');
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(relay.edgeStats.rejected.request_timeout).toBeGreaterThan(before);
    expect((await request(`http://127.0.0.1:${relay.ports!.httpPort}/hello`)).status).toBe(200);
  });

  it('closes a keep-alive connection idle past the keep-alive timeout', async () => {
    const socket = net.connect(relay.ports!.httpPort, '127.0.0.1');
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    const closed = new Promise<number>((resolve) => socket.on('close', () => resolve(Date.now())));
    socket.write('GET /hello HTTP/1.1\r\nHost: x\r\n\r\n');
    await vi.waitFor(() => expect(Buffer.concat(chunks).toString()).toContain('hello through the relay'), { timeout: 5_000 });
    const answeredAt = Date.now();
    const closedAt = await closed;
    expect(Buffer.concat(chunks).toString()).toMatch(/^HTTP\/1\.1 200 /);
    // keepAliveTimeoutMs is 500; Node adds up to 1 s of its own slack to the timer
    expect(closedAt - answeredAt).toBeGreaterThanOrEqual(400);
    expect(closedAt - answeredAt).toBeLessThan(3_000);
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

describe('max request body', () => {
  const max = 1024;
  let relay: Relay;
  let agent: PlatformAgent;
  beforeAll(async () => {
    relay = await startRelay({ limits: { ...defaultEdgeLimits(), maxBodyBytes: max } });
    agent = await startAgent(relay);
  });
  afterAll(async () => {
    await agent.stop(100);
    await relay.stop(100);
  });

  const upload = (): string => `http://127.0.0.1:${relay.ports!.httpPort}/upload`;
  const openStreams = (): number => relay.registry.list().reduce((n, c) => n + c.session.streamCount, 0);

  it('answers 413 body_too_large with Connection: close to a Content-Length past the limit, before reading the body', async () => {
    const before = relay.edgeStats.rejected.body_too_large;
    const reply = await request(upload(), { method: 'POST', body: Buffer.alloc(max + 1, 1), agent: false });
    expect(reply.status).toBe(413);
    expect(reply.headers.connection).toBe('close');
    expect(json(reply).error).toBe('body_too_large');
    expect(relay.edgeStats.rejected.body_too_large).toBe(before + 1);
    // exactly the limit passes
    const ok = await request(upload(), { method: 'POST', body: Buffer.alloc(max, 1), agent: false });
    expect(ok.status).toBe(200);
    expect(json(ok).bytes).toBe(max);
  });

  it('answers Expect: 100-continue past the limit with 413 and no 100, so the client never sends the body', async () => {
    const head = (length: number): string =>
      `POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: ${length}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n`;
    const refused = await raw(relay.ports!.httpPort, head(max + 1));
    expect(refused).toMatch(/^HTTP\/1\.1 413 /);
    expect(refused).not.toContain('100 Continue');
    expect(refused).toContain('"error":"body_too_large"');

    // within the limit: 100 Continue from the edge, then the platform's answer (the platform
    // never sees the Expect header)
    const accepted = await new Promise<string>((resolve, reject) => {
      let text = '';
      const socket = net.connect(relay.ports!.httpPort, '127.0.0.1', () => socket.write(head(10)));
      socket.on('data', (c: Buffer) => {
        text += c.toString();
        // write, not end: a half-closed client aborts its request (Node's httpAllowHalfOpen is off)
        if (text === 'HTTP/1.1 100 Continue\r\n\r\n') socket.write('0123456789');
      });
      socket.on('close', () => resolve(text));
      socket.on('error', reject);
    });
    expect(accepted).toMatch(/^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 /);
    expect(accepted).toContain('"bytes":10');
  });

  it('cuts a chunked body once it streams past the limit: 413, the platform request aborted, and others still served', async () => {
    const before = relay.edgeStats.rejected.body_too_large;
    const chunk = (n: number): string => `${n.toString(16)}\r\n${'a'.repeat(n)}\r\n`;
    const reply = await rawExchangeSlow(relay.ports!.httpPort, [
      'POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n',
      chunk(600),
      chunk(600),
    ]);
    expect(reply).toMatch(/^HTTP\/1\.1 413 /);
    expect(reply.toLowerCase()).toContain('connection: close');
    expect(reply).toContain('"error":"body_too_large"');
    expect(relay.edgeStats.rejected.body_too_large).toBe(before + 1);
    // the tunnel stream of that request is gone
    await vi.waitFor(() => expect(openStreams()).toBe(0), { timeout: 5_000 });

    // a chunked body within the limit goes through whole
    const ok = await new Promise<Record<string, unknown>>((resolve, reject) => {
      const req = http.request(upload(), { method: 'POST', agent: false }, (res) => {
        let text = '';
        res.on('data', (c: Buffer) => (text += c.toString()));
        res.on('end', () => resolve(JSON.parse(text) as Record<string, unknown>));
      });
      req.on('error', reject);
      for (let i = 0; i < 4; i++) req.write(Buffer.alloc(256, i));
      req.end();
    });
    expect(ok.bytes).toBe(max);
  });
});

/** Like raw(), but each part is a separate write 50 ms apart (so chunks arrive one by one). */
function rawExchangeSlow(port: number, parts: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const socket = net.connect(port, '127.0.0.1', async () => {
      for (const part of parts) {
        if (socket.destroyed || chunks.length > 0) break;
        socket.write(part);
        await new Promise((r) => setTimeout(r, 50));
      }
    });
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('close', () => resolve(Buffer.concat(chunks).toString()));
    socket.on('error', reject);
    socket.setTimeout(10_000, () => socket.destroy(new Error('server never closed the connection')));
  });
}
