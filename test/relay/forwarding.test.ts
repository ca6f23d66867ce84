import { createHash } from 'node:crypto';
import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { patternChunks, patternSha256 } from '../../platform-agent/agent/sample-app.js';
import type { PlatformAgent } from '../../platform-agent/agent/agent.js';
import type { Relay } from '../../relay/relay.js';
import { json, request, startAgent, startRelay } from '../fixtures/harness.js';

const MiB = 1024 * 1024;

describe('relay forwarding to the sample app through the tunnel', () => {
  let relay: Relay;
  let agent: PlatformAgent;
  let httpBase: string;
  let httpsBase: string;

  beforeAll(async () => {
    relay = await startRelay();
    agent = await startAgent(relay, {}, 2);
    httpBase = `http://127.0.0.1:${relay.ports!.httpPort}`;
    httpsBase = `https://localhost:${relay.ports!.httpsPort}`;
  });
  afterAll(async () => {
    await agent.stop(100);
    await relay.stop(100);
  });

  for (const scheme of ['http', 'https'] as const) {
    it(`GET over ${scheme} reaches the platform with the relay's forwarding headers`, async () => {
      const base = scheme === 'http' ? httpBase : httpsBase;
      const reply = await request(`${base}/hello?token=secret`, { headers: { 'x-forwarded-for': '6.6.6.6', forwarded: 'for=6.6.6.6' } });
      expect(reply.status).toBe(200);
      const body = json(reply);
      expect(body.forwardedFor).toBe('127.0.0.1'); // the forged header is gone
      expect(body.forwarded).toBeNull();
      expect(body.forwardedProto).toBe(scheme);
      expect(body.socketAddress).toBe('127.0.0.1'); // from the OPEN metadata
    });

    it(`POST over ${scheme} echoes the body`, async () => {
      const base = scheme === 'http' ? httpBase : httpsBase;
      const payload = Buffer.from(JSON.stringify({ hello: 'world', n: 42 }));
      const reply = await request(`${base}/echo`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: payload });
      expect(reply.status).toBe(200);
      expect(reply.body.equals(payload)).toBe(true);
    });
  }

  it('carries a 32 MiB download byte-identical over HTTPS', async () => {
    const n = 32 * MiB;
    const reply = await request(`${httpsBase}/bytes?n=${n}`);
    expect(reply.status).toBe(200);
    expect(reply.body.length).toBe(n);
    expect(createHash('sha256').update(reply.body).digest('hex')).toBe(patternSha256(n));
  });

  it('carries a 32 MiB upload byte-identical over HTTPS', async () => {
    const n = 32 * MiB;
    const body = Buffer.concat([...patternChunks(n, 'upload')]);
    const reply = await request(`${httpsBase}/upload`, { method: 'POST', body });
    expect(json(reply)).toEqual({ bytes: n, sha256: patternSha256(n, 'upload') });
  });

  it('carries chunked request and response bodies', async () => {
    // chunked download
    const down = await request(`${httpBase}/bytes?n=300000&chunked=1`);
    expect(down.headers['transfer-encoding']).toBe('chunked');
    expect(createHash('sha256').update(down.body).digest('hex')).toBe(patternSha256(300000));
    // chunked upload: several writes, no content-length
    const hash = createHash('sha256');
    let total = 0;
    const reply = await new Promise<Record<string, unknown>>((resolve, reject) => {
      const req = http.request(`${httpBase}/upload`, { method: 'POST' }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve(JSON.parse(Buffer.concat(chunks).toString()) as Record<string, unknown>));
      });
      req.on('error', reject);
      for (let i = 0; i < 50; i++) {
        const chunk = Buffer.alloc(1000 + i, i);
        hash.update(chunk);
        total += chunk.length;
        req.write(chunk);
      }
      expect(req.getHeader('content-length')).toBeUndefined();
      req.end();
    });
    expect(reply).toEqual({ bytes: total, sha256: hash.digest('hex') });
  });

  it('answers 500 concurrent requests, each correctly', async () => {
    const keepAlive = new http.Agent({ keepAlive: true, maxSockets: 500 });
    const replies = await Promise.all(
      Array.from({ length: 500 }, (_, i) =>
        request(`${httpBase}/echo`, { method: 'POST', agent: keepAlive, body: `request-${i}` }).then((r) => ({ i, r })),
      ),
    );
    keepAlive.destroy();
    for (const { i, r } of replies) {
      expect(r.status).toBe(200);
      expect(r.body.toString()).toBe(`request-${i}`);
    }
  });

  it('echoes WebSocket messages through the relay (wss)', async () => {
    const ws = new WebSocket(`wss://localhost:${relay.ports!.httpsPort}/ws`, { rejectUnauthorized: false });
    await new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    const big = Buffer.alloc(3 * MiB, 7);
    const answers: Buffer[] = [];
    const done = new Promise<void>((resolve) =>
      ws.on('message', (data: Buffer) => {
        answers.push(data);
        if (answers.length === 3) resolve();
      }),
    );
    ws.send('ping-1');
    ws.send(big);
    ws.send('ping-2');
    await done;
    expect(answers[0]!.toString()).toBe('ping-1');
    expect(answers[1]!.equals(big)).toBe(true);
    expect(answers[2]!.toString()).toBe('ping-2');
    ws.close();
  });

  it('keeps streaming to other clients while one client stops reading', async () => {
    const stalled = await new Promise<http.IncomingMessage>((resolve, reject) => {
      const req = http.get(`${httpBase}/bytes?n=${64 * MiB}`, resolve);
      req.on('error', reject);
    });
    stalled.pause();
    // the other clients complete while the stalled one holds its stream
    const others = await Promise.all(Array.from({ length: 8 }, () => request(`${httpBase}/bytes?n=${2 * MiB}`)));
    for (const r of others) expect(r.body.length).toBe(2 * MiB);
    // the stalled response resumes and completes intact
    const hash = createHash('sha256');
    let bytes = 0;
    stalled.on('data', (c: Buffer) => {
      hash.update(c);
      bytes += c.length;
    });
    stalled.resume();
    await new Promise((resolve) => stalled.on('end', resolve));
    expect(bytes).toBe(64 * MiB);
    expect(hash.digest('hex')).toBe(patternSha256(64 * MiB));
  });
});
