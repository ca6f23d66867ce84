/**
 * RFC 9112 conformance of what the relay passes back: an upstream (pipe mode, a raw TCP server)
 * writes exact response bytes per test, and the client must get exactly the framing the relay
 * promises — the upstream's end-to-end fields, the relay's own hop-by-hop fields, bodies by
 * their framing, a cut connection where a response cannot be completed, and a 502 where its head
 * cannot be read.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { errorReply, startPipeRig, type PipeRig, type RawConn } from './raw-peers.js';

const KEEP_ALIVE = 'Connection: keep-alive\r\nKeep-Alive: timeout=7\r\n';
const LIMITS = { keepAliveTimeoutMs: 7_000 };

let rig: PipeRig;

beforeAll(async () => {
  rig = await startPipeRig(LIMITS);
});
afterEach(() => rig.dropClients());
afterAll(async () => {
  await rig.stop();
});

/** What the upstream receives for `GET <path>` with `Host: x` from a plain-HTTP client. */
function forwardedGet(r: PipeRig, path: string, method = 'GET'): string {
  return (
    `${method} ${path} HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\n` +
    `X-Forwarded-Port: ${r.relay.ports!.httpPort}\r\nX-Forwarded-Host: x\r\n\r\n`
  );
}

/** A new client sends `GET <path>`; resolves once the (new) upstream connection has it whole. */
async function exchange(path: string, method = 'GET', r: PipeRig = rig): Promise<{ client: RawConn; up: RawConn }> {
  const index = r.upstream.conns.length;
  const client = await r.client();
  client.write(`${method} ${path} HTTP/1.1\r\nHost: x\r\n\r\n`);
  const up = await r.upstream.nth(index);
  const expected = forwardedGet(r, path, method);
  expect(await up.receive(expected.length)).toBe(expected);
  return { client, up };
}

/** The client sends `GET <path>` on its open connection; the same upstream connection must get it. */
async function again(client: RawConn, up: RawConn, path: string, method = 'GET'): Promise<void> {
  const before = up.text.length;
  client.write(`${method} ${path} HTTP/1.1\r\nHost: x\r\n\r\n`);
  const expected = forwardedGet(rig, path, method);
  await up.receive(before + expected.length);
  expect(up.text.slice(before)).toBe(expected);
}

/** Waits until the client has `expected.length` bytes and checks they are exactly `expected`. */
async function gets(client: RawConn, expected: string): Promise<void> {
  expect(await client.receive(expected.length)).toBe(expected);
}

describe('response framing (RFC 9112 § 6.3)', () => {
  it('passes a Content-Length body, with the relay hop-by-hop fields, and serves the next request on the same stream', async () => {
    const { client, up } = await exchange('/cl');
    up.write('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n');
    up.write('hello');
    const first = `HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n${KEEP_ALIVE}\r\nhello`;
    await gets(client, first);
    await again(client, up, '/second');
    up.write('HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n');
    await gets(client, `${first}HTTP/1.1 201 Created\r\nContent-Length: 0\r\n${KEEP_ALIVE}\r\n`);
  });

  it('writes a status line without a reason phrase with its SP (§4)', async () => {
    const { client, up } = await exchange('/no-reason');
    up.write('HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok');
    await gets(client, `HTTP/1.1 200 \r\nContent-Length: 2\r\n${KEEP_ALIVE}\r\nok`);
  });

  it('passes a chunked body with its extensions and trailers as sent, its Transfer-Encoding field where it was', async () => {
    const { client, up } = await exchange('/chunked');
    up.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n');
    up.write('5;ext=1\r\nhello\r\n');
    up.write('6\r\n world\r\n0\r\nX-Sum: 42\r\n\r\n');
    const first =
      `HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n${KEEP_ALIVE}\r\n` +
      '5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 42\r\n\r\n';
    await gets(client, first);
    await again(client, up, '/after-chunked');
    up.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
    await gets(client, `${first}HTTP/1.1 200 OK\r\nContent-Length: 2\r\n${KEEP_ALIVE}\r\nok`);
  });

  it('keeps codings under chunked (gzip, chunked) in the field as sent, for the client to undo', async () => {
    const { client, up } = await exchange('/gzip-chunked');
    up.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\n\x1f\x8b\r\n0\r\n\r\n');
    await gets(client, `HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n${KEEP_ALIVE}\r\n2\r\n\x1f\x8b\r\n0\r\n\r\n`);
  });

  it('sends no body for HEAD even with a Content-Length, and the next request on the connection works', async () => {
    const { client, up } = await exchange('/head', 'HEAD');
    up.write('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n');
    const first = `HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n${KEEP_ALIVE}\r\n`;
    await gets(client, first);
    await again(client, up, '/after-head');
    up.write('HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody');
    await gets(client, `${first}HTTP/1.1 200 OK\r\nContent-Length: 4\r\n${KEEP_ALIVE}\r\nbody`);
  });

  it.each([
    ['204', 'HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n', `HTTP/1.1 204 No Content\r\nX-A: 1\r\n${KEEP_ALIVE}\r\n`],
    [
      '304 with a Content-Length',
      'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\nContent-Length: 50\r\n\r\n',
      `HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\nContent-Length: 50\r\n${KEEP_ALIVE}\r\n`,
    ],
  ])('sends no body after a %s, and the next request on the connection works', async (_name, response, relayed) => {
    const { client, up } = await exchange('/nobody');
    up.write(response);
    await gets(client, relayed);
    await again(client, up, '/after-nobody');
    up.write('HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext');
    await gets(client, `${relayed}HTTP/1.1 200 OK\r\nContent-Length: 4\r\n${KEEP_ALIVE}\r\nnext`);
  });

  it('passes 1xx interim responses (103 Early Hints) on as they came, then the final response', async () => {
    const { client, up } = await exchange('/hints');
    const hints = 'HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n';
    up.write(hints);
    await gets(client, hints);
    up.write('HTTP/1.1 103 Early Hints\r\nLink: </b.js>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
    await gets(
      client,
      `${hints}HTTP/1.1 103 Early Hints\r\nLink: </b.js>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n${KEEP_ALIVE}\r\nok`,
    );
  });

  it('passes no 1xx to an HTTP/1.0 client (RFC 9110 §15.2)', async () => {
    const index = rig.upstream.conns.length;
    const client = await rig.client();
    client.write('GET /old HTTP/1.0\r\n\r\n');
    const up = await rig.upstream.nth(index);
    const expected = `GET /old HTTP/1.0\r\nX-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Port: ${rig.relay.ports!.httpPort}\r\n\r\n`;
    expect(await up.receive(expected.length)).toBe(expected);
    up.write('HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
    await client.waitClosed();
    expect(client.text).toBe('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok');
  });

  it.each([
    ['HTTP/1.1', 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n', 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n'],
    ['HTTP/1.0', 'HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n', 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n'],
    [
      'a coding other than chunked',
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n',
      // the body ends at close (§6.3 rule 4), and the client must still learn its coding
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n',
    ],
  ])(
    'passes a close-delimited body (%s) until the upstream closes, says Connection: close, then closes',
    async (_name, head, relayedHead) => {
      const { client, up } = await exchange('/close-delimited');
      up.write(head);
      up.write('first ');
      const relayed = `${relayedHead}Connection: close\r\n\r\nfirst `;
      await gets(client, relayed);
      up.end('second');
      await client.waitClosed();
      expect(client.text).toBe(`${relayed}second`);
      expect(client.error).toBeNull();
    },
  );
});

describe('responses the upstream does not finish', () => {
  it.each([
    ['ends (FIN)', (up: RawConn) => up.end()],
    ['resets', (up: RawConn) => up.socket.resetAndDestroy()],
  ])('cuts the client mid-body when the upstream %s before Content-Length is reached', async (_name, stop) => {
    const { client, up } = await exchange('/short');
    up.write('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc');
    const partial = `HTTP/1.1 200 OK\r\nContent-Length: 10\r\n${KEEP_ALIVE}\r\nabc`;
    await gets(client, partial);
    stop(up);
    await client.waitClosed();
    // 3 of the 10 bytes promised, then the connection is gone: never a complete-looking response
    expect(client.text).toBe(partial);
  });

  it('cuts the client mid-chunk when a chunked body stops: no last chunk is ever made up', async () => {
    const { client, up } = await exchange('/short-chunked');
    up.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel');
    const partial = `HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n${KEEP_ALIVE}\r\n5\r\nhel`;
    await gets(client, partial);
    up.end();
    await client.waitClosed();
    expect(client.text).toBe(partial);
  });

  it('cuts the client when a chunked body turns malformed after its head went out', async () => {
    const { client, up } = await exchange('/bad-chunk');
    up.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n');
    const head = `HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n${KEEP_ALIVE}\r\n`;
    await gets(client, head);
    up.write('zz\r\nhello\r\n0\r\n\r\n');
    await client.waitClosed();
    expect(client.text).toBe(head);
  });

  it('answers 502 upstream when the upstream closes before any response', async () => {
    const { client, up } = await exchange('/nothing');
    up.end();
    await client.waitClosed();
    const reply = errorReply(client.text);
    expect({ status: reply.status, error: reply.error }).toEqual({ status: 502, error: 'upstream' });
  });
});

describe('malformed response heads', () => {
  it.each([
    ['bare LF line endings', 'HTTP/1.1 200 OK\nContent-Length: 2\n\nok'],
    ['a bare CR', 'HTTP/1.1 200 OK\r\nX-A: 1\rX-B: 2\r\nContent-Length: 2\r\n\r\nok'],
    ['a two-digit status', 'HTTP/1.1 20 OK\r\nContent-Length: 2\r\n\r\nok'],
    ['a four-digit status', 'HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok'],
    ['a status below 100', 'HTTP/1.1 099 Odd\r\nContent-Length: 2\r\n\r\nok'],
    ['HTTP/2 in the status line', 'HTTP/2 200 OK\r\nContent-Length: 2\r\n\r\nok'],
    ['no HTTP version', 'ICY 200 OK\r\nContent-Length: 2\r\n\r\nok'],
    ['two spaces after the version', 'HTTP/1.1  200 OK\r\nContent-Length: 2\r\n\r\nok'],
    ['two Content-Length fields, equal', 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok'],
    ['Content-Length with Transfer-Encoding', 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n'],
    ['a Content-Length that is not a number', 'HTTP/1.1 200 OK\r\nContent-Length: 2a\r\n\r\nok'],
    ['obs-fold', 'HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\nContent-Length: 2\r\n\r\nok'],
    ['a space before a colon', 'HTTP/1.1 200 OK\r\nX-A : 1\r\nContent-Length: 2\r\n\r\nok'],
    ['NUL in a value', 'HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nok'],
    ['a 101 to a request that asked for no upgrade', 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n'],
  ])('answers 502 bad_response to a response head with %s, and closes', async (_name, response) => {
    const { client, up } = await exchange('/malformed');
    up.write(response);
    await client.waitClosed();
    const reply = errorReply(client.text);
    expect({ status: reply.status, error: reply.error }).toEqual({ status: 502, error: 'bad_response' });
    expect(reply.head).toContain('\r\nconnection: close');
    // the upstream connection is not kept for anything else
    await up.waitEnded();
  });
});

describe('transfer codings to an HTTP/1.0 client', () => {
  it.each([
    ['chunked', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n'],
    ['gzip, close-delimited', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n\x1f\x8b'],
  ])(
    'answers 502 bad_response to a %s response to an HTTP/1.0 request, which may carry no Transfer-Encoding (§6.1)',
    async (_name, response) => {
      const index = rig.upstream.conns.length;
      const client = await rig.client();
      client.write('GET /old HTTP/1.0\r\n\r\n');
      const up = await rig.upstream.nth(index);
      const expected = `GET /old HTTP/1.0\r\nX-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Port: ${rig.relay.ports!.httpPort}\r\n\r\n`;
      expect(await up.receive(expected.length)).toBe(expected);
      up.write(response);
      await client.waitClosed();
      const reply = errorReply(client.text);
      expect({ status: reply.status, error: reply.error }).toEqual({ status: 502, error: 'bad_response' });
    },
  );
});

describe('hop-by-hop response fields are the relay own (RFC 9110 §7.6.1)', () => {
  it("replaces the upstream Connection and Keep-Alive with the relay's own, and drops Proxy-Connection and Upgrade", async () => {
    const { client, up } = await exchange('/hop');
    up.write(
      'HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=600, max=1000\r\nProxy-Connection: keep-alive\r\n' +
        'Upgrade: h2c\r\nContent-Length: 2\r\nX-Kept: 1\r\n\r\nok',
    );
    await gets(client, `HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Kept: 1\r\n${KEEP_ALIVE}\r\nok`);
  });

  it('drops the fields an upstream Connection header lists (Connection: close, X-Secret)', async () => {
    const { client, up } = await exchange('/secret');
    up.write('HTTP/1.1 200 OK\r\nConnection: close, X-Secret\r\nX-Secret: s3cr3t\r\nX-Public: p\r\nContent-Length: 2\r\n\r\nok');
    await gets(client, `HTTP/1.1 200 OK\r\nX-Public: p\r\nContent-Length: 2\r\n${KEEP_ALIVE}\r\nok`);
  });

  it.each([
    ['HTTP/1.1 with Connection: close', 'HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok'],
    ['HTTP/1.0 without keep-alive', 'HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok'],
  ])(
    'sends no further request on an upstream connection whose response said it closes (%s), even while it is still open (RFC 9112 §9.6)',
    async (_name, response) => {
      const index = rig.upstream.conns.length;
      const { client, up } = await exchange('/closing');
      // the upstream says it closes but does not (yet): the relay must not send on it again
      up.write(response);
      const first = `HTTP/1.1 200 OK\r\nContent-Length: 2\r\n${KEEP_ALIVE}\r\nok`;
      await gets(client, first);
      client.write('GET /next HTTP/1.1\r\nHost: x\r\n\r\n');
      const next = await rig.upstream.nth(index + 1);
      const expected = forwardedGet(rig, '/next');
      expect(await next.receive(expected.length)).toBe(expected);
      expect(up.text).toBe(forwardedGet(rig, '/closing'));
      next.write('HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext');
      await gets(client, `${first}HTTP/1.1 200 OK\r\nContent-Length: 4\r\n${KEEP_ALIVE}\r\nnext`);
    },
  );

  it('keeps an HTTP/1.0 upstream connection that said keep-alive for the next request', async () => {
    const { client, up } = await exchange('/ka10');
    up.write('HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok');
    const first = `HTTP/1.1 200 OK\r\nContent-Length: 2\r\n${KEEP_ALIVE}\r\nok`;
    await gets(client, first);
    await again(client, up, '/ka10-again');
    up.write('HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok');
    await gets(client, first + first);
  });
});

describe('bytes the upstream sends beyond its response', () => {
  it.each([
    [
      'a Content-Length body',
      'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok',
      `HTTP/1.1 200 OK\r\nContent-Length: 2\r\n${KEEP_ALIVE}\r\nok`,
    ],
    ['a 204', 'HTTP/1.1 204 No Content\r\n\r\n', `HTTP/1.1 204 No Content\r\n${KEEP_ALIVE}\r\n`],
    [
      'a chunked body',
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n',
      `HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n${KEEP_ALIVE}\r\n2\r\nok\r\n0\r\n\r\n`,
    ],
  ])(
    'never passes bytes after %s as a second response; the next request gets its own answer from a new upstream connection',
    async (_name, response, relayed) => {
      const index = rig.upstream.conns.length;
      const { client, up } = await exchange('/extra');
      // one write: the response and a forged second one behind it
      up.write(`${response}HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil`);
      await gets(client, relayed);
      // the stream that carried them is not trusted again
      await up.waitEnded();
      client.write('GET /next HTTP/1.1\r\nHost: x\r\n\r\n');
      const next = await rig.upstream.nth(index + 1);
      const expected = forwardedGet(rig, '/next');
      expect(await next.receive(expected.length)).toBe(expected);
      next.write('HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood');
      await gets(client, `${relayed}HTTP/1.1 200 OK\r\nContent-Length: 4\r\n${KEEP_ALIVE}\r\ngood`);
      expect(client.text).not.toContain('evil');
    },
  );
});

describe('WebSocket upgrade (RFC 9110 §7.8)', () => {
  let ws: PipeRig;
  beforeEach(async () => {
    ws = await startPipeRig(LIMITS);
  });
  afterEach(async () => {
    await ws.stop();
  });

  const request =
    'GET /ws HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n' +
    'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n';
  const switching =
    'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n';
  // a server text frame "hello", a masked client text frame "Hello", a server binary frame "abc"
  const serverHello = '\x81\x05hello';
  const clientHello = '\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58';
  const serverBinary = '\x82\x03abc';

  /** Upgrades a client and checks bytes pass both ways; returns the peers and what the client has. */
  async function upgraded(): Promise<{ client: RawConn; up: RawConn; seen: string; upSeen: string }> {
    const client = await ws.client();
    client.write(request);
    const up = await ws.upstream.nth(0);
    const forwarded =
      'GET /ws HTTP/1.1\r\nHost: x\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n' +
      `X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Port: ${ws.relay.ports!.httpPort}\r\nX-Forwarded-Host: x\r\n` +
      'Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n';
    expect(await up.receive(forwarded.length)).toBe(forwarded);
    // the 101 and the first frame in one write: the relay passes the 101 head as it came
    up.write(switching + serverHello);
    await gets(client, switching + serverHello);
    client.write(clientHello);
    expect(await up.receive((forwarded + clientHello).length)).toBe(forwarded + clientHello);
    up.write(serverBinary);
    const seen = switching + serverHello + serverBinary;
    await gets(client, seen);
    return { client, up, seen, upSeen: forwarded + clientHello };
  }

  it('splices bytes both ways after a 101, and the upstream ending its side ends the client connection', async () => {
    const { client, up, seen, upSeen } = await upgraded();
    up.end();
    await client.waitClosed();
    expect(client.text).toBe(seen);
    expect(client.error).toBeNull();
    expect(up.text).toBe(upSeen);
  });

  it('passes the client ending its side on to the upstream', async () => {
    const { client, up, upSeen } = await upgraded();
    client.end();
    await up.waitEnded();
    expect(up.text).toBe(upSeen);
  });

  it('closes the client connection without writing any HTTP bytes into it when the agent stops after the 101', async () => {
    const { client, seen } = await upgraded();
    await ws.agent.stop(100);
    await client.waitClosed();
    expect(client.text).toBe(seen);
  });

  it('closes the client connection without writing any HTTP bytes into it when the tunnel is cut after the 101', async () => {
    const { client, seen } = await upgraded();
    const tunnels = ws.relay.registry.list();
    expect(tunnels).toHaveLength(1);
    tunnels[0]!.session.terminate();
    await client.waitClosed();
    expect(client.text).toBe(seen);
  });
});
