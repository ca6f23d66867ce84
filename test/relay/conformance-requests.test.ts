/**
 * RFC 9112 conformance of what the relay forwards: raw request bytes from a client, and exactly
 * the bytes the upstream (pipe mode, a raw TCP server) receives — or that it receives nothing
 * and the client gets the relay's status and JSON error code.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { errorReply, startPipeRig, type PipeRig, type RawConn } from './raw-peers.js';

const KEEP_ALIVE_MS = 7_000;
const MAX_HEADER_BYTES = 4096;

/** The one response the upstream gives in this suite, and what the client gets of it. */
const OK = 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok';
const OK_RELAYED = 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\nKeep-Alive: timeout=7\r\n\r\nok';
const OK_RELAYED_CLOSE = 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok';

let rig: PipeRig;

beforeAll(async () => {
  rig = await startPipeRig({ maxHeaderBytes: MAX_HEADER_BYTES, keepAliveTimeoutMs: KEEP_ALIVE_MS });
});
afterEach(() => rig.dropClients());
afterAll(async () => {
  await rig.stop();
});

/** The relay's own forwarding fields, as it appends them after the client's. */
function xf(host: string | null, tls = false): string {
  const port = tls ? rig.relay.ports!.httpsPort : rig.relay.ports!.httpPort;
  return (
    `X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: ${tls ? 'https' : 'http'}\r\nX-Forwarded-Port: ${port}\r\n` +
    (host === null ? '' : `X-Forwarded-Host: ${host}\r\n`)
  );
}

/**
 * Sends `request` (each string one write) on a new connection, checks that the next upstream
 * connection receives exactly `expected`, answers {@link OK}, and checks the client gets
 * `relayed` exactly.
 */
async function forwards(
  request: string | string[],
  expected: string,
  options: { tls?: boolean; relayed?: string; pauseMs?: number } = {},
): Promise<{ client: RawConn; up: RawConn }> {
  const index = rig.upstream.conns.length;
  const client = await rig.client({ tls: options.tls ?? false });
  for (const part of Array.isArray(request) ? request : [request]) {
    client.write(part);
    if (options.pauseMs) await new Promise((r) => setTimeout(r, options.pauseMs));
  }
  const up = await rig.upstream.nth(index);
  expect(await up.receive(expected.length)).toBe(expected);
  up.write(OK);
  const relayed = options.relayed ?? OK_RELAYED;
  expect(await client.receive(relayed.length)).toBe(relayed);
  return { client, up };
}

const PROBE = 'GET /probe HTTP/1.1\r\nHost: probe\r\n\r\n';

/**
 * Sends `request` in one write, expects the relay's JSON error `status`/`code` and a closed
 * connection, then proves the upstream saw nothing of it: a probe request on a new connection
 * must be the one and only upstream connection opened since (one tunnel connection keeps the
 * order in which streams were opened).
 */
async function refuses(request: string | string[], status: number, code: string, options: { tls?: boolean } = {}): Promise<void> {
  const index = rig.upstream.conns.length;
  const client = await rig.client({ tls: options.tls ?? false });
  for (const part of Array.isArray(request) ? request : [request]) client.write(part);
  await client.waitClosed();
  const reply = errorReply(client.text);
  expect({ status: reply.status, error: reply.error }).toEqual({ status, error: code });
  expect(reply.head).toContain('\r\nconnection: close');

  const probe = await rig.client();
  probe.write(PROBE);
  const up = await rig.upstream.nth(index);
  const expected = `GET /probe HTTP/1.1\r\nHost: probe\r\n${xf('probe')}\r\n`;
  expect(await up.receive(expected.length)).toBe(expected);
  up.write(OK);
  expect(await probe.receive(OK_RELAYED.length)).toBe(OK_RELAYED);
  expect(rig.upstream.conns.length).toBe(index + 1);
}

describe('request heads the relay forwards (RFC 9112 §§ 2, 3, 5)', () => {
  it('forwards a GET as a canonical head: request line, the fields in order with names as sent, then the relay X-Forwarded-*', async () => {
    const request =
      'GET /path/a?b=1&c=%20 HTTP/1.1\r\nhost: Example.TEST:8080\r\nUser-Agent: raw/1\r\nACCEPT: */*\r\nX-Custom:   spaced  value \t\r\n' +
      'Cookie: a=1\r\nCookie: b=2\r\nX-Empty:\r\n\r\n';
    const { client, up } = await forwards(
      request,
      'GET /path/a?b=1&c=%20 HTTP/1.1\r\nhost: Example.TEST:8080\r\nUser-Agent: raw/1\r\nACCEPT: */*\r\nX-Custom: spaced  value\r\n' +
        `Cookie: a=1\r\nCookie: b=2\r\nX-Empty: \r\n${xf('Example.TEST:8080')}\r\n`,
    );
    // the next request on the connection goes on the same stream, so to the same upstream connection
    const index = rig.upstream.conns.length;
    const before = up.text.length;
    client.write('get /two HTTP/1.1\r\nHost: x\r\n\r\n');
    const expected = `get /two HTTP/1.1\r\nHost: x\r\n${xf('x')}\r\n`;
    await up.receive(before + expected.length);
    expect(up.text.slice(before)).toBe(expected);
    up.write(OK);
    expect(await client.receive(2 * OK_RELAYED.length)).toBe(OK_RELAYED + OK_RELAYED);
    expect(rig.upstream.conns.length).toBe(index);
  });

  it('forwards over HTTPS with X-Forwarded-Proto https and the HTTPS port', async () => {
    await forwards(
      'GET /secure HTTP/1.1\r\nHost: m.example\r\n\r\n',
      `GET /secure HTTP/1.1\r\nHost: m.example\r\n${xf('m.example', true)}\r\n`,
      {
        tls: true,
      },
    );
  });

  it('strips client-sent X-Forwarded-*, Forwarded and X-Real-IP, whatever their case', async () => {
    await forwards(
      'GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 6.6.6.6\r\nx-forwarded-proto: https\r\nX-FORWARDED-HOST: evil\r\nX-Forwarded-Port: 1\r\n' +
        'X-Forwarded-Prefix: /evil\r\nX-Forwarded-Server: evil\r\nForwarded: for=6.6.6.6;proto=https\r\nX-Real-IP: 6.6.6.6\r\nX-Kept: 1\r\n\r\n',
      `GET / HTTP/1.1\r\nHost: x\r\nX-Kept: 1\r\n${xf('x')}\r\n`,
    );
  });

  it('drops header names with an underscore', async () => {
    await forwards(
      'GET / HTTP/1.1\r\nX_Forwarded_For: 6.6.6.6\r\nHost: x\r\nCustom_Header: v\r\n_: v\r\nX-Ok: 1\r\n\r\n',
      `GET / HTTP/1.1\r\nHost: x\r\nX-Ok: 1\r\n${xf('x')}\r\n`,
    );
  });

  // both spellings of each field a platform trusts: the relay's forwarding fields, and the
  // identity the platform's gateway adds for backends
  const TRUSTED_BOTH_SPELLINGS =
    'X-Forwarded-For: 6.6.6.6\r\nX_Forwarded_For: 6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nX_Real_IP: 6.6.6.6\r\n' +
    'X-Platform-User: admin\r\nX_Platform_User: admin\r\n';

  it('drops the underscore spelling of every trusted field, and the relay strips the forwarding ones', async () => {
    await forwards(
      `GET / HTTP/1.1\r\nHost: x\r\n${TRUSTED_BOTH_SPELLINGS}\r\n`,
      // X-Platform-User crosses the relay: the platform's gateway replaces it (test/platform-agent)
      `GET / HTTP/1.1\r\nHost: x\r\nX-Platform-User: admin\r\n${xf('x')}\r\n`,
    );
  });

  it('with allowUnderscoreHeaders forwards names with an underscore, and still strips the forgeable dashed ones', async () => {
    const open = await startPipeRig({ allowUnderscoreHeaders: true });
    try {
      const client = await open.client();
      client.write(`GET / HTTP/1.1\r\nHost: x\r\n${TRUSTED_BOTH_SPELLINGS}Custom_Header: v\r\n\r\n`);
      const up = await open.upstream.nth(0);
      const port = open.relay.ports!.httpPort;
      const expected =
        'GET / HTTP/1.1\r\nHost: x\r\nX_Forwarded_For: 6.6.6.6\r\nX_Real_IP: 6.6.6.6\r\nX-Platform-User: admin\r\n' +
        'X_Platform_User: admin\r\nCustom_Header: v\r\n' +
        `X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Port: ${port}\r\nX-Forwarded-Host: x\r\n\r\n`;
      expect(await up.receive(expected.length)).toBe(expected);
    } finally {
      await open.stop();
    }
  });

  it('drops the fields a Connection header lists, but never Host or Content-Length', async () => {
    await forwards(
      'POST /c HTTP/1.1\r\nConnection: foo, Host, content-length, BAR\r\nHost: x\r\nFoo: 1\r\nbar: 2\r\nBaz: 3\r\nContent-Length: 3\r\n\r\nabc',
      `POST /c HTTP/1.1\r\nHost: x\r\nBaz: 3\r\nContent-Length: 3\r\n${xf('x')}\r\nabc`,
    );
  });

  it('forwards no hop-by-hop field: Connection, Keep-Alive, TE, Trailer, Proxy-Connection, and Upgrade without Connection: upgrade', async () => {
    await forwards(
      'GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\nKeep-Alive: timeout=99\r\nTE: trailers\r\nTrailer: X-T\r\n' +
        'Proxy-Connection: keep-alive\r\nUpgrade: websocket\r\nX-Kept: 1\r\n\r\n',
      `GET / HTTP/1.1\r\nHost: x\r\nX-Kept: 1\r\n${xf('x')}\r\n`,
    );
  });

  it('ignores an Upgrade in an HTTP/1.0 request (RFC 9110 §7.8): forwarded as a plain request', async () => {
    await forwards(
      'GET /ws HTTP/1.0\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nX-Kept: 1\r\n\r\n',
      `GET /ws HTTP/1.0\r\nX-Kept: 1\r\n${xf(null)}\r\n`,
      { relayed: OK_RELAYED_CLOSE },
    );
  });

  it('forwards an HTTP/1.0 request without Host (no X-Forwarded-Host), and closes after the answer', async () => {
    const { client } = await forwards(
      'GET /old HTTP/1.0\r\nUser-Agent: old\r\n\r\n',
      `GET /old HTTP/1.0\r\nUser-Agent: old\r\n${xf(null)}\r\n`,
      { relayed: OK_RELAYED_CLOSE },
    );
    await client.waitClosed();
  });

  it('tolerates empty lines before the request line (§2.2)', async () => {
    await forwards('\r\n\r\nGET /after-crlf HTTP/1.1\r\nHost: x\r\n\r\n', `GET /after-crlf HTTP/1.1\r\nHost: x\r\n${xf('x')}\r\n`);
  });

  it('takes CRLFs between two requests on a kept connection as nothing: the next request is forwarded as it is', async () => {
    const { client, up } = await forwards('GET /a HTTP/1.1\r\nHost: x\r\n\r\n', `GET /a HTTP/1.1\r\nHost: x\r\n${xf('x')}\r\n`);
    client.write('\r\n');
    await new Promise((r) => setTimeout(r, 50));
    client.write('\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n');
    const both = `GET /a HTTP/1.1\r\nHost: x\r\n${xf('x')}\r\nGET /b HTTP/1.1\r\nHost: x\r\n${xf('x')}\r\n`;
    expect(await up.receive(both.length)).toBe(both);
    up.write(OK);
    expect(await client.receive(2 * OK_RELAYED.length)).toBe(OK_RELAYED + OK_RELAYED);
  });

  it('forwards a head that came in many small writes as if it came in one', async () => {
    const request = 'GET /split?q=1 HTTP/1.1\r\nHost: split.example\r\nX-A: 1\r\nX-B: two\r\n\r\n';
    const parts: string[] = [];
    for (let i = 0; i < request.length; i += 1 + (i % 3)) parts.push(request.slice(i, i + 1 + (i % 3)));
    expect(parts.join('')).toBe(request);
    await forwards(parts, `GET /split?q=1 HTTP/1.1\r\nHost: split.example\r\nX-A: 1\r\nX-B: two\r\n${xf('split.example')}\r\n`, {
      pauseMs: 2,
    });
  });

  it('takes a head of exactly maxHeaderBytes, and answers 431 to one byte more', async () => {
    const base = 'GET / HTTP/1.1\r\nHost: x\r\nX-Pad: \r\n\r\n';
    const pad = 'p'.repeat(MAX_HEADER_BYTES - base.length);
    const request = `GET / HTTP/1.1\r\nHost: x\r\nX-Pad: ${pad}\r\n\r\n`;
    expect(request.length).toBe(MAX_HEADER_BYTES);
    await forwards(request, `GET / HTTP/1.1\r\nHost: x\r\nX-Pad: ${pad}\r\n${xf('x')}\r\n`);
    await refuses(`GET / HTTP/1.1\r\nHost: x\r\nX-Pad: ${pad}p\r\n\r\n`, 431, 'header_too_large');
  });
});

describe('request bodies (RFC 9112 §§ 6, 7)', () => {
  it('re-chunks a chunked body: its own lower-case sizes, no extensions, trailers dropped, and its own last chunk', async () => {
    const data31 = 'abcdefghijklmnopqrstuvwxyz01234';
    await forwards(
      'POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nX-After: 1\r\n\r\n' +
        `A;name=value;flag\r\n0123456789\r\n1F\r\n${data31}\r\n0;last=1\r\nX-Trailer: t\r\nX-Other: o\r\n\r\n`,
      `POST /up HTTP/1.1\r\nHost: x\r\nX-After: 1\r\n${xf('x')}Transfer-Encoding: chunked\r\n\r\n` +
        `a\r\n0123456789\r\n1f\r\n${data31}\r\n0\r\n\r\n`,
    );
  });

  it('re-chunks a chunked body over HTTPS the same way', async () => {
    await forwards(
      'POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nX-T: 1\r\n\r\n',
      `POST /up HTTP/1.1\r\nHost: x\r\n${xf('x', true)}Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n`,
      { tls: true },
    );
  });

  it('forwards an empty chunked body as the last chunk alone', async () => {
    await forwards(
      'POST /empty HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n',
      `POST /empty HTTP/1.1\r\nHost: x\r\n${xf('x')}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
    );
  });

  it('forwards a Content-Length body with optional whitespace around the value', async () => {
    await forwards(
      'PUT /cl HTTP/1.1\r\nHost: x\r\nContent-Length: \t 5 \r\n\r\nhello',
      `PUT /cl HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n${xf('x')}\r\nhello`,
    );
  });

  it('answers Expect: 100-continue itself: the client gets 100 Continue, the upstream never sees Expect', async () => {
    const index = rig.upstream.conns.length;
    const client = await rig.client();
    client.write('POST /e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n');
    const cont = 'HTTP/1.1 100 Continue\r\n\r\n';
    expect(await client.receive(cont.length)).toBe(cont);
    // the stream opens only once the (small) body is in
    expect(rig.upstream.conns.length).toBe(index);
    client.write('hello');
    const up = await rig.upstream.nth(index);
    const expected = `POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n${xf('x')}\r\nhello`;
    expect(await up.receive(expected.length)).toBe(expected);
    up.write(OK);
    expect(await client.receive(cont.length + OK_RELAYED.length)).toBe(cont + OK_RELAYED);
  });

  it('answers 417 to an Expect other than 100-continue', async () => {
    await refuses('POST /e HTTP/1.1\r\nHost: x\r\nExpect: something-else\r\nContent-Length: 5\r\n\r\nhello', 417, 'expectation_failed');
  });
});

describe('requests the relay refuses, with nothing reaching the upstream', () => {
  const get = (fields: string): string => `GET / HTTP/1.1\r\n${fields}\r\n`;
  const post = (fields: string, body: string): string => `POST / HTTP/1.1\r\nHost: x\r\n${fields}\r\n${body}`;

  it.each([
    ['two Host fields (§3.2)', get('Host: a\r\nHost: a\r\n')],
    ['two Host fields of different case', get('Host: a\r\nhost: b\r\n')],
    ['no Host in HTTP/1.1 (§3.2)', get('X-A: 1\r\n')],
    ['a malformed Host', get('Host: a b\r\n')],
    ['Content-Length with Transfer-Encoding (§6.1)', post('Content-Length: 5\r\nTransfer-Encoding: chunked\r\n', '0\r\n\r\n')],
    ['Transfer-Encoding with Content-Length', post('Transfer-Encoding: chunked\r\nContent-Length: 5\r\n', '0\r\n\r\n')],
    ['two equal Content-Length fields (§6.3)', post('Content-Length: 5\r\nContent-Length: 5\r\n', 'hello')],
    ['Content-Length +5', post('Content-Length: +5\r\n', 'hello')],
    ['Content-Length with a space inside', post('Content-Length: 1 0\r\n', 'helloworld')],
    ['Content-Length 5,5', post('Content-Length: 5,5\r\n', 'hello')],
    ['Content-Length in hex', post('Content-Length: 0x5\r\n', 'hello')],
    ['Content-Length -1', post('Content-Length: -1\r\n', '')],
    ['Content-Length of 16 digits', post('Content-Length: 1000000000000000\r\n', '')],
    ['Transfer-Encoding in HTTP/1.0 (§6.1)', 'POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n'],
    ['obs-fold (§5.2)', get('Host: x\r\nX-A: 1\r\n  folded\r\n')],
    ['obs-fold with a tab', get('Host: x\r\nX-A: 1\r\n\tfolded\r\n')],
    ['a space before the colon (§5.1)', get('Host: x\r\nX-A : 1\r\n')],
    ['a tab before the colon', get('Host: x\r\nX-A\t: 1\r\n')],
    ['a field line without a colon', get('Host: x\r\nX-A 1\r\n')],
    ['an empty field name', get('Host: x\r\n: 1\r\n')],
    ['bare LF line endings (§2.2)', 'GET / HTTP/1.1\nHost: x\n\n'],
    ['one bare LF among CRLFs', 'GET / HTTP/1.1\r\nHost: x\nX-A: 1\r\n\r\n'],
    ['a bare CR inside a line', get('Host: x\r\nX-A: 1\rX-B: 2\r\n')],
    ['a bare CR in the request line', 'GET /\r HTTP/1.1\r\nHost: x\r\n\r\n'],
    ['NUL in a value (§5.5)', get('Host: x\r\nX-A: a\x00b\r\n')],
    ['a control character in a value', get('Host: x\r\nX-A: a\x01b\r\n')],
    ['DEL in a value', get('Host: x\r\nX-A: a\x7fb\r\n')],
    ['an invalid method token (§3.1)', 'G(T / HTTP/1.1\r\nHost: x\r\n\r\n'],
    ['a method with a non-ASCII byte', 'G\xc9T / HTTP/1.1\r\nHost: x\r\n\r\n'],
    ['two spaces in the request line', 'GET  / HTTP/1.1\r\nHost: x\r\n\r\n'],
    ['a lower-case protocol name', 'GET / http/1.1\r\nHost: x\r\n\r\n'],
    ['an absolute-form target (§3.2.2)', 'GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n'],
    ['CONNECT with an authority-form target (§3.2.3)', 'CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n'],
    ['asterisk-form other than OPTIONS (§3.2.4)', 'GET * HTTP/1.1\r\nHost: x\r\n\r\n'],
    ['a control character in the target', 'GET /a\x01b HTTP/1.1\r\nHost: x\r\n\r\n'],
  ])('answers 400 bad_request to %s', async (_name, request) => {
    await refuses(request, 400, 'bad_request');
  });

  it.each([
    ['gzip, chunked', 'gzip, chunked'],
    ['chunked, gzip', 'chunked, gzip'],
    ['identity', 'identity'],
    ['chunked given twice', 'chunked\r\nTransfer-Encoding: chunked'],
  ])('answers 501 not_implemented to Transfer-Encoding: %s (§6.1)', async (_name, value) => {
    await refuses(`POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: ${value}\r\n\r\n0\r\n\r\n`, 501, 'not_implemented');
  });

  it.each(['HTTP/2.0', 'HTTP/1.2', 'HTTP/0.9', 'HTTP/3.0'])('answers 505 version_not_supported to %s', async (version) => {
    await refuses(`GET / ${version}\r\nHost: x\r\n\r\n`, 505, 'version_not_supported');
  });

  it('answers 431 header_too_large to a head over maxHeaderBytes, even before its end arrives', async () => {
    await refuses(`GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(MAX_HEADER_BYTES)}`, 431, 'header_too_large');
  });

  it('refuses over HTTPS too (two Host fields)', async () => {
    await refuses('GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n', 400, 'bad_request', { tls: true });
  });

  const chunked = (body: string): string => `POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n${body}`;
  it.each([
    ['a space after the size', '1 \r\nx\r\n0\r\n\r\n'],
    ['a negative size', '-1\r\nx\r\n0\r\n\r\n'],
    ['a size with a 0x prefix', '0x1\r\nx\r\n0\r\n\r\n'],
    ['no size at all', '\r\nx\r\n0\r\n\r\n'],
    ['data not followed by CRLF', '3\r\nabcX\r\n0\r\n\r\n'],
    ['data followed by a bare LF', '3\r\nabc\n0\r\n\r\n'],
    ['16 hex digits in the size', '0000000000000001\r\nx\r\n0\r\n\r\n'],
    ['a size line ended by a bare LF', '3\nabc\r\n0\r\n\r\n'],
    ['a control character in an extension', '3;a\x01b\r\nabc\r\n0\r\n\r\n'],
    ['obs-fold in a trailer', '0\r\nX-T: 1\r\n folded\r\n\r\n'],
    ['a bare LF in a trailer', '0\r\nX-T: 1\n\r\n'],
  ])('answers 400 to a chunked body with %s, and the upstream sees nothing of it (the body was still buffered)', async (_name, body) => {
    await refuses(chunked(body), 400, 'bad_request');
  });
});

describe('bad chunk syntax once the body streams (requestBufferBytes 16)', () => {
  let small: PipeRig;
  beforeAll(async () => {
    small = await startPipeRig({ requestBufferBytes: 16, keepAliveTimeoutMs: KEEP_ALIVE_MS });
  });
  afterAll(async () => {
    await small.stop();
  });

  const head = 'POST /stream HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n';
  const sixteen = '0123456789abcdef';
  const forwardedHead = (): string =>
    `POST /stream HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\n` +
    `X-Forwarded-Port: ${small.relay.ports!.httpPort}\r\nX-Forwarded-Host: x\r\nTransfer-Encoding: chunked\r\n\r\n`;

  it('a bad size line after a streamed chunk: the upstream has the relay head and that chunk only, then its connection is ended', async () => {
    const index = small.upstream.conns.length;
    const client = await small.client();
    // the head and one 16-byte chunk: past requestBufferBytes, so the stream opens and they go out
    client.write(`${head}10\r\n${sixteen}\r\n`);
    const up = await small.upstream.nth(index);
    const first = `${forwardedHead()}10\r\n${sixteen}\r\n`;
    expect(await up.receive(first.length)).toBe(first);
    client.write('1 \r\nx\r\n0\r\n\r\n');
    await client.waitClosed();
    await up.waitEnded();
    expect(up.text).toBe(first); // no last chunk: the upstream never sees a complete body
    const reply = errorReply(client.text);
    expect({ status: reply.status, error: reply.error }).toEqual({ status: 400, error: 'bad_request' });
  });

  it('chunk data not followed by CRLF, once that data went out: the upstream has it, but never a last chunk', async () => {
    const index = small.upstream.conns.length;
    const client = await small.client();
    client.write(`${head}10\r\n${sixteen}\r\n`);
    const up = await small.upstream.nth(index);
    // the relay re-chunks data as it reads it, its own CRLF included: `abc` goes out as a chunk
    const streamed = `${forwardedHead()}10\r\n${sixteen}\r\n3\r\nabc\r\n`;
    client.write('3\r\nabc');
    expect(await up.receive(streamed.length)).toBe(streamed);
    // the client's own CRLF is missing: the stream is cut, with no 0-size chunk (an incomplete body)
    client.write('X\r\n0\r\n\r\n');
    await client.waitClosed();
    await up.waitEnded();
    expect(up.text).toBe(streamed);
    const reply = errorReply(client.text);
    expect({ status: reply.status, error: reply.error }).toEqual({ status: 400, error: 'bad_request' });
  });
});

describe('pipelining (RFC 9112 §9.3)', () => {
  /** Waits a little, then checks the upstream got nothing more: time for a wrong relay to forward early. */
  async function nothingMoreAfter(up: RawConn, text: string): Promise<void> {
    await new Promise((r) => setTimeout(r, 150));
    expect(up.text).toBe(text);
  }

  it('forwards three GETs of one write one at a time, each after the previous answer, and answers them in order', async () => {
    const index = rig.upstream.conns.length;
    const client = await rig.client();
    client.write(
      'GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\nX-N: 2\r\n\r\nGET /3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
    );
    const up = await rig.upstream.nth(index);
    const r1 = `GET /1 HTTP/1.1\r\nHost: x\r\n${xf('x')}\r\n`;
    const r2 = `GET /2 HTTP/1.1\r\nHost: x\r\nX-N: 2\r\n${xf('x')}\r\n`;
    const r3 = `GET /3 HTTP/1.1\r\nHost: x\r\n${xf('x')}\r\n`;
    expect(await up.receive(r1.length)).toBe(r1);
    await nothingMoreAfter(up, r1);
    expect(client.text).toBe('');
    up.write('HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none');
    expect(await up.receive((r1 + r2).length)).toBe(r1 + r2);
    await nothingMoreAfter(up, r1 + r2);
    up.write('HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntwo');
    expect(await up.receive((r1 + r2 + r3).length)).toBe(r1 + r2 + r3);
    up.write('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nthree');
    await client.waitClosed();
    const ka = 'Connection: keep-alive\r\nKeep-Alive: timeout=7\r\n\r\n';
    expect(client.text).toBe(
      `HTTP/1.1 200 OK\r\nContent-Length: 3\r\n${ka}one` +
        `HTTP/1.1 200 OK\r\nContent-Length: 3\r\n${ka}two` +
        'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nthree',
    );
    expect(rig.upstream.conns.length).toBe(index + 1);
  });

  it('forwards a POST with its body and the GET behind it in the same write, one after the other', async () => {
    const index = rig.upstream.conns.length;
    const client = await rig.client();
    client.write('POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello worldGET /g HTTP/1.1\r\nHost: x\r\n\r\n');
    const up = await rig.upstream.nth(index);
    const r1 = `POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n${xf('x')}\r\nhello world`;
    const r2 = `GET /g HTTP/1.1\r\nHost: x\r\n${xf('x')}\r\n`;
    expect(await up.receive(r1.length)).toBe(r1);
    await nothingMoreAfter(up, r1);
    up.write(OK);
    expect(await up.receive((r1 + r2).length)).toBe(r1 + r2);
    up.write(OK);
    expect(await client.receive(2 * OK_RELAYED.length)).toBe(OK_RELAYED + OK_RELAYED);
  });

  it.each([
    [
      '426 without a body',
      'HTTP/1.1 426 Upgrade Required\r\nUpgrade: websocket\r\nContent-Length: 0\r\n\r\n',
      'HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\n',
    ],
    ['400 with a body', 'HTTP/1.1 400 Bad Request\r\nContent-Length: 4\r\n\r\nnope', 'HTTP/1.1 400 Bad Request\r\nContent-Length: 4\r\n'],
  ])('serves a GET on the same connection after an upgrade the upstream refused (%s)', async (_name, refusal, relayedHead) => {
    const index = rig.upstream.conns.length;
    const client = await rig.client();
    client.write('GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n');
    const up = await rig.upstream.nth(index);
    const r1 = `GET /ws HTTP/1.1\r\nHost: x\r\nSec-WebSocket-Version: 13\r\n${xf('x')}Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n`;
    expect(await up.receive(r1.length)).toBe(r1);
    up.write(refusal);
    const body = refusal.slice(refusal.indexOf('\r\n\r\n') + 4);
    const relayed = `${relayedHead}Connection: keep-alive\r\nKeep-Alive: timeout=7\r\n\r\n${body}`;
    expect(await client.receive(relayed.length)).toBe(relayed);
    client.write('GET /after HTTP/1.1\r\nHost: x\r\n\r\n');
    const r2 = `GET /after HTTP/1.1\r\nHost: x\r\n${xf('x')}\r\n`;
    expect(await up.receive((r1 + r2).length)).toBe(r1 + r2);
    up.write(OK);
    expect(await client.receive((relayed + OK_RELAYED).length)).toBe(relayed + OK_RELAYED);
  });
});
