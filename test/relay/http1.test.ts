import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  ChunkedReader,
  HeadReader,
  HttpParseError,
  parseRequestHead,
  parseRequestLines,
  parseResponseHead,
} from '../../relay/edge/http1.js';

const MAX = 16 * 1024;
const b = (s: string): Buffer => Buffer.from(s, 'latin1');

/** Reads a head fed in the given pieces, as a connection does: nothing until the head is whole. */
function feedHead(pieces: Buffer[]): (ReturnType<typeof parseRequestLines> & { length: number }) | null {
  const reader = new HeadReader(MAX, 'RELAY_ERR_BAD_REQUEST', 'RELAY_ERR_HEADER_TOO_LARGE');
  let length = 0;
  for (const piece of pieces) {
    const end = reader.feed(piece, 0, piece.length);
    if (end === -1) {
      length += piece.length;
      continue;
    }
    return { ...parseRequestLines(reader.take()), length: length + end };
  }
  return null;
}

function splitAt(buf: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => c % (buf.length + 1)))].sort((x, y) => x - y);
  const out: Buffer[] = [];
  let last = 0;
  for (const p of points) {
    out.push(buf.subarray(last, p));
    last = p;
  }
  out.push(buf.subarray(last));
  return out;
}

function decodeChunked(pieces: Buffer[]): { data: Buffer; consumed: number } {
  const reader = new ChunkedReader('RELAY_ERR_BAD_REQUEST', 4096);
  const parts: Buffer[] = [];
  let consumed = 0;
  for (const piece of pieces) {
    if (reader.done) break;
    consumed += reader.feed(piece, 0, piece.length, (buf, s, e) => parts.push(Buffer.from(buf.subarray(s, e))));
  }
  expect(reader.done).toBe(true);
  return { data: Buffer.concat(parts), consumed };
}

const token = fc.stringMatching(/^[A-Za-z0-9!#$%&'*+.^`|~-]{1,20}$/);
const fieldValue = fc.stringMatching(/^[\x21-\x7e](?:[\x20-\x7e]{0,30}[\x21-\x7e])?$/);

describe('HTTP/1.1 request heads', () => {
  it('reads method, target, version and fields in order, names as sent, values without surrounding OWS', () => {
    const head = parseRequestHead(b('GET /a?b=c HTTP/1.1\r\nHost: x.example:80\r\nX-A:  one two \t\r\nx-b:\r\n\r\nrest'), 0, MAX)!;
    expect(head).toMatchObject({ method: 'GET', target: '/a?b=c', minor: 1, host: 'x.example:80', contentLength: -1, chunked: false });
    expect(head.fields).toEqual(['Host', 'x.example:80', 'X-A', 'one two', 'x-b', '']);
    expect(head.length).toBe(b('GET /a?b=c HTTP/1.1\r\nHost: x.example:80\r\nX-A:  one two \t\r\nx-b:\r\n\r\n').length);
  });

  it('is incomplete, not wrong, at every cut of a valid head, and gives the same head once whole', () => {
    fc.assert(
      fc.property(
        token,
        fc.array(fc.tuple(token, fieldValue), { maxLength: 8 }),
        fc.array(fc.nat(), { maxLength: 6 }),
        (method, fields, cuts) => {
          const named = fields.filter(([n]) => !['host', 'content-length', 'transfer-encoding'].includes(n.toLowerCase()));
          const text = `${method} /p HTTP/1.1\r\nHost: h\r\n${named.map(([n, v]) => `${n}: ${v}\r\n`).join('')}\r\n`;
          const whole = parseRequestHead(b(text), 0, MAX)!;
          expect(whole.fields).toEqual(['Host', 'h', ...named.flat()]);
          const pieces = splitAt(b(text), cuts);
          expect(feedHead(pieces)).toEqual(whole);
        },
      ),
    );
  });

  it('reads a head fed one byte at a time, and refuses one over the limit as it grows', () => {
    const text = b(`GET /x HTTP/1.1\r\nHost: h\r\nX-Long: ${'v'.repeat(4000)}\r\n\r\n`);
    expect(feedHead([...text].map((c) => Buffer.from([c])))).toEqual(parseRequestHead(text, 0, MAX));
    const reader = new HeadReader(1000, 'RELAY_ERR_BAD_REQUEST', 'RELAY_ERR_HEADER_TOO_LARGE');
    let fed = 0;
    expect(() => {
      for (; fed < text.length; fed++) reader.feed(text, fed, fed + 1);
    }).toThrow(expect.objectContaining({ code: 'RELAY_ERR_HEADER_TOO_LARGE' }));
    expect(fed).toBe(1000);
  });

  it('throws only HttpParseError on random bytes, and never reads past the limit', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), fc.integer({ min: 16, max: 400 }), (bytes, max) => {
        const buf = Buffer.from(bytes);
        try {
          const head = parseRequestHead(buf, 0, max);
          if (head) expect(head.length).toBeLessThanOrEqual(Math.min(buf.length, max + 2));
        } catch (err) {
          expect(err).toBeInstanceOf(HttpParseError);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('refuses a head over the limit while it is still incomplete', () => {
    expect(() => parseRequestHead(b(`GET / HTTP/1.1\r\nX: ${'a'.repeat(200)}`), 0, 100)).toThrow(
      expect.objectContaining({ code: 'RELAY_ERR_HEADER_TOO_LARGE' }),
    );
  });

  it.each([
    ['bare LF', 'GET / HTTP/1.1\nHost: x\n\n', 'RELAY_ERR_BAD_REQUEST'],
    ['bare CR', 'GET / HTTP/1.1\r\nHost: x\rX: y\r\n\r\n', 'RELAY_ERR_BAD_REQUEST'],
    ['obs-fold', 'GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n', 'RELAY_ERR_BAD_REQUEST'],
    ['space before colon', 'GET / HTTP/1.1\r\nHost : x\r\n\r\n', 'RELAY_ERR_BAD_REQUEST'],
    ['NUL in a value', 'GET / HTTP/1.1\r\nHost: x\r\nX: a\0b\r\n\r\n', 'RELAY_ERR_BAD_REQUEST'],
    ['two Hosts', 'GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n', 'RELAY_ERR_BAD_REQUEST'],
    ['no Host in 1.1', 'GET / HTTP/1.1\r\n\r\n', 'RELAY_ERR_BAD_REQUEST'],
    ['a Host with a path', 'GET / HTTP/1.1\r\nHost: x/y\r\n\r\n', 'RELAY_ERR_BAD_REQUEST'],
    ['CL and TE', 'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n', 'RELAY_ERR_BAD_REQUEST'],
    ['two equal CLs', 'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n', 'RELAY_ERR_BAD_REQUEST'],
    ['CL list', 'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 1\r\n\r\n', 'RELAY_ERR_BAD_REQUEST'],
    ['signed CL', 'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\n', 'RELAY_ERR_BAD_REQUEST'],
    ['TE gzip, chunked', 'POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n', 'RELAY_ERR_NOT_IMPLEMENTED'],
    [
      'two TE fields',
      'POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n',
      'RELAY_ERR_NOT_IMPLEMENTED',
    ],
    ['TE in 1.0', 'POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n', 'RELAY_ERR_BAD_REQUEST'],
    ['absolute form', 'GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n', 'RELAY_ERR_BAD_REQUEST'],
    ['CONNECT', 'CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n', 'RELAY_ERR_BAD_REQUEST'],
    ['HTTP/2.0', 'GET / HTTP/2.0\r\nHost: x\r\n\r\n', 'RELAY_ERR_VERSION_NOT_SUPPORTED'],
    ['HTTP/1.2', 'GET / HTTP/1.2\r\nHost: x\r\n\r\n', 'RELAY_ERR_VERSION_NOT_SUPPORTED'],
    ['lower-case version', 'GET / http/1.1\r\nHost: x\r\n\r\n', 'RELAY_ERR_BAD_REQUEST'],
    ['two spaces', 'GET  / HTTP/1.1\r\nHost: x\r\n\r\n', 'RELAY_ERR_BAD_REQUEST'],
  ])('refuses %s', (_name, text, code) => {
    expect(() => parseRequestHead(b(text), 0, MAX)).toThrow(expect.objectContaining({ code }));
  });

  it('skips empty lines before the request line (RFC 9112 §2.2) and accepts HTTP/1.0 without Host', () => {
    expect(parseRequestHead(b('\r\n\r\nGET / HTTP/1.0\r\n\r\n'), 0, MAX)).toMatchObject({ method: 'GET', minor: 0, host: '' });
  });

  it('takes Upgrade only when Connection names it', () => {
    expect(parseRequestHead(b('GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n'), 0, MAX)!.upgrade).toBe('');
    expect(
      parseRequestHead(b('GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n'), 0, MAX)!.upgrade,
    ).toBe('websocket');
  });
});

describe('HTTP/1.1 response heads', () => {
  it('reads status, reason and framing', () => {
    expect(parseResponseHead(b('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n'), 0, MAX)).toMatchObject({
      status: 200,
      reason: 'OK',
      contentLength: 5,
    });
    expect(parseResponseHead(b('HTTP/1.1 204\r\n\r\n'), 0, MAX)).toMatchObject({ status: 204, reason: '' });
    expect(parseResponseHead(b('HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n'), 0, MAX)!.chunked).toBe(true);
    expect(parseResponseHead(b('HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n'), 0, MAX)!.otherCoding).toBe(true);
  });

  it.each([
    ['bare LF', 'HTTP/1.1 200 OK\nContent-Length: 0\n\n'],
    ['bad status line', 'HTTP/1.1 20 OK\r\n\r\n'],
    ['two CLs', 'HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n'],
    ['CL and TE', 'HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n'],
  ])('refuses %s as a bad response', (_name, text) => {
    expect(() => parseResponseHead(b(text), 0, MAX)).toThrow(expect.objectContaining({ code: 'RELAY_ERR_BAD_RESPONSE' }));
  });
});

describe('chunked bodies', () => {
  const encode = (parts: Buffer[], ext = '', trailers = ''): Buffer =>
    Buffer.concat([
      ...parts.flatMap((p) => [b(`${p.length.toString(16).toUpperCase()}${ext}\r\n`), p, b('\r\n')]),
      b(`0\r\n${trailers}\r\n`),
    ]);

  it('decodes the same data whatever the cuts, and stops at the end of the body', () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ minLength: 1, maxLength: 300 }), { maxLength: 6 }),
        fc.array(fc.nat(), { maxLength: 8 }),
        fc.constantFrom('', ';a=b', ';x'),
        fc.constantFrom('', 'X-T: 1\r\n'),
        (parts, cuts, ext, trailers) => {
          const body = encode(
            parts.map((p) => Buffer.from(p)),
            ext,
            trailers,
          );
          const next = b('GET / HTTP/1.1\r\n');
          const pieces = splitAt(Buffer.concat([body, next]), cuts);
          const { data, consumed } = decodeChunked(pieces);
          expect(data).toEqual(Buffer.concat(parts.map((p) => Buffer.from(p))));
          expect(consumed).toBe(body.length);
        },
      ),
    );
  });

  it('throws only HttpParseError on random bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
        const reader = new ChunkedReader('RELAY_ERR_BAD_RESPONSE', 64);
        try {
          reader.feed(Buffer.from(bytes), 0, bytes.length, () => {});
        } catch (err) {
          expect(err).toBeInstanceOf(HttpParseError);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it.each([
    ['a space after the size', '1 \r\na\r\n0\r\n\r\n'],
    ['a sign', '-1\r\na\r\n0\r\n\r\n'],
    ['no CRLF after data', '1\r\nab\r\n0\r\n\r\n'],
    ['16 hex digits', '0000000000000001\r\na\r\n0\r\n\r\n'],
    ['bare LF', '1\na\r\n0\r\n\r\n'],
    ['a control character in an extension', '1;a\x01\r\na\r\n0\r\n\r\n'],
    ['obs-fold in a trailer', '0\r\nX: a\r\n b\r\n\r\n'],
  ])('refuses %s', (_name, text) => {
    const reader = new ChunkedReader('RELAY_ERR_BAD_REQUEST', 4096);
    expect(() => reader.feed(b(text), 0, text.length, () => {})).toThrow(expect.objectContaining({ code: 'RELAY_ERR_BAD_REQUEST' }));
  });

  it('refuses trailers past their limit', () => {
    const reader = new ChunkedReader('RELAY_ERR_BAD_REQUEST', 16);
    const text = `0\r\nX-Long: ${'a'.repeat(32)}\r\n\r\n`;
    expect(() => reader.feed(b(text), 0, text.length, () => {})).toThrow(HttpParseError);
  });
});
