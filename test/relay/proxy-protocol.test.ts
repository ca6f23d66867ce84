/**
 * PROXY protocol parser (relay/edge/proxy-protocol.ts): one case per rule, and fast-check
 * properties — every split of a valid header across reads parses the same, random bytes give a
 * header, "incomplete" or a typed refusal (never a throw), over-long headers are refused.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  looksLikeProxyHeader,
  maxHeaderBytes,
  maxV1Bytes,
  maxV2AddressBytes,
  parseProxyHeader,
  ProxyHeaderReader,
  V2_SIGNATURE,
  type ProxyRead,
  type ProxyRefusal,
} from '../../relay/edge/proxy-protocol.js';
import { v2Header, v4Block, v6Block } from './proxy-headers.js';

const refusals: readonly ProxyRefusal[] = [
  'missing',
  'v1_malformed',
  'v1_too_long',
  'v2_version',
  'v2_family',
  'v2_malformed',
  'v2_too_long',
];

const parse = (text: string | Buffer) => parseProxyHeader(typeof text === 'string' ? Buffer.from(text, 'latin1') : text);
const reason = (text: string | Buffer): string => {
  const r = parse(text);
  return r.kind === 'refused' ? r.reason : r.kind;
};

describe('PROXY v1', () => {
  it('reads TCP4, TCP6 and UNKNOWN', () => {
    expect(parse('PROXY TCP4 198.51.100.7 192.0.2.1 51234 443\r\nGET')).toEqual({
      kind: 'header',
      header: { version: 1, source: { ip: '198.51.100.7', port: 51234 }, destination: { ip: '192.0.2.1', port: 443 }, length: 45 },
    });
    const six = parse('PROXY TCP6 2001:DB8:0:0::7 2001:db8::9 1 65535\r\n');
    expect(six).toMatchObject({
      kind: 'header',
      header: { source: { ip: '2001:db8::7', port: 1 }, destination: { ip: '2001:db8::9', port: 65535 } },
    });
    expect(parse('PROXY TCP6 ::ffff:198.51.100.7 ::1 1 2\r\n')).toMatchObject({ header: { source: { ip: '198.51.100.7' } } });
    expect(parse('PROXY UNKNOWN\r\n')).toEqual({ kind: 'header', header: { version: 1, source: null, destination: null, length: 15 } });
    expect(parse('PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n')).toMatchObject({ kind: 'header', header: { source: null } });
  });

  it('waits for more bytes while a header may still come', () => {
    for (const p of ['P', 'PROX', 'PROXY ', 'PROXY TCP4 1.2.3.4', 'PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r']) expect(reason(p)).toBe('incomplete');
  });

  it('refuses what breaks the grammar', () => {
    for (const p of [
      'PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n', // LF without CR
      'PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX',
      'PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n', // two spaces
      'PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n',
      'PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n',
      'PROXY TCP4 2001:db8::7 5.6.7.8 1 2\r\n', // family mismatch
      'PROXY TCP6 1.2.3.4 ::1 1 2\r\n',
      'PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n',
      'PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n',
      'PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n', // leading zero
      'PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n',
      'PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n',
      'PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n',
      'PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n',
      'PROXY TCP4 1.2.3.4 5.6.7.8 1 2\x00\r\n',
      'PROXY \r\n',
    ])
      expect(reason(p), JSON.stringify(p)).toBe('v1_malformed');
    expect(reason('PROXZ')).toBe('missing');
    expect(reason('GET / HTTP/1.1\r\n')).toBe('missing');
  });

  it('refuses a header with no CRLF within 107 bytes', () => {
    const longest = `PROXY UNKNOWN ${'x'.repeat(maxV1Bytes - 16)}\r\n`;
    expect(longest.length).toBe(maxV1Bytes);
    expect(reason(longest)).toBe('header');
    expect(reason(`PROXY UNKNOWN ${'x'.repeat(maxV1Bytes - 15)}\r\n`)).toBe('v1_too_long');
    expect(reason(`PROXY UNKNOWN ${'x'.repeat(maxV1Bytes)}`)).toBe('v1_too_long');
  });
});

describe('PROXY v2', () => {
  it('reads PROXY over AF_INET and AF_INET6, and skips TLVs', () => {
    const v4 = v2Header(v4Block('198.51.100.7', '192.0.2.1', 51234, 443));
    expect(parse(Buffer.concat([v4, Buffer.from([0x16, 0x03])]))).toEqual({
      kind: 'header',
      header: { version: 2, source: { ip: '198.51.100.7', port: 51234 }, destination: { ip: '192.0.2.1', port: 443 }, length: 28 },
    });
    expect(parse(v2Header(v6Block(7, 443), { family: 0x21 }))).toMatchObject({
      header: { source: { ip: '2001:db8::7', port: 7 }, destination: { ip: '2001:db8::9', port: 443 }, length: 52 },
    });
    const tlvs = Buffer.from([0x04, 0x00, 0x00, 0x02, 0x00, 0x03, 0x61, 0x62, 0x63]); // NOOP (empty), AUTHORITY "abc"
    expect(parse(v2Header(Buffer.concat([v4Block('198.51.100.7', '192.0.2.1', 1, 2), tlvs])))).toMatchObject({
      header: { source: { ip: '198.51.100.7' }, length: 28 + tlvs.length },
    });
  });

  it('reads LOCAL whatever its family, ignoring the block', () => {
    expect(parse(v2Header(Buffer.alloc(0), { command: 0, family: 0 }))).toEqual({
      kind: 'header',
      header: { version: 2, source: null, destination: null, length: 16 },
    });
    expect(parse(v2Header(Buffer.from([1, 2, 3]), { command: 0, family: 0x31 }))).toMatchObject({ header: { source: null, length: 19 } });
  });

  it('refuses other versions, commands, families and transports', () => {
    expect(reason(v2Header(v4Block('1.2.3.4', '5.6.7.8', 1, 2), { version: 1 }))).toBe('v2_version');
    expect(reason(v2Header(v4Block('1.2.3.4', '5.6.7.8', 1, 2), { command: 2 }))).toBe('v2_version');
    for (const family of [0x00, 0x01, 0x10, 0x12, 0x22, 0x31, 0x41])
      expect(reason(v2Header(Buffer.alloc(216), { family })), family.toString(16)).toBe('v2_family');
  });

  it('refuses a block too short for its addresses, badly framed TLVs, and a block over the bound', () => {
    expect(reason(v2Header(Buffer.alloc(11)))).toBe('v2_malformed');
    expect(reason(v2Header(Buffer.alloc(35), { family: 0x21 }))).toBe('v2_malformed');
    expect(reason(v2Header(Buffer.concat([v4Block('1.2.3.4', '5.6.7.8', 1, 2), Buffer.from([0x04, 0x00])])))).toBe('v2_malformed');
    expect(reason(v2Header(Buffer.concat([v4Block('1.2.3.4', '5.6.7.8', 1, 2), Buffer.from([0x04, 0x00, 0x05, 1])])))).toBe('v2_malformed');
    // the longest block accepted: addresses and one TLV filling it
    const fill = Buffer.alloc(maxV2AddressBytes - 12);
    fill.writeUInt16BE(fill.length - 3, 1);
    expect(reason(v2Header(Buffer.concat([v4Block('1.2.3.4', '5.6.7.8', 1, 2), fill])))).toBe('header');
    // the bound is on the declared length, before any byte of the block arrives
    const over = v2Header(Buffer.alloc(0));
    over.writeUInt16BE(maxV2AddressBytes + 1, 14);
    expect(reason(over)).toBe('v2_too_long');
    expect(reason(V2_SIGNATURE.subarray(0, 5))).toBe('incomplete');
    expect(reason(Buffer.from([0x0d, 0x0a, 0x0d, 0x0b]))).toBe('missing');
  });
});

describe('signature sniffing (addresses not listed)', () => {
  it('tells PROXY signatures from HTTP and TLS', () => {
    expect(looksLikeProxyHeader(Buffer.from('PROXY TCP4'))).toBe('yes');
    expect(looksLikeProxyHeader(V2_SIGNATURE)).toBe('yes');
    expect(looksLikeProxyHeader(Buffer.from('PRO'))).toBe('maybe');
    expect(looksLikeProxyHeader(Buffer.from('\r\n'))).toBe('maybe');
    expect(looksLikeProxyHeader(Buffer.from('PROPFIND / HTTP/1.1'))).toBe('no');
    expect(looksLikeProxyHeader(Buffer.from('GET / HTTP/1.1'))).toBe('no');
    expect(looksLikeProxyHeader(Buffer.from([0x16, 0x03, 0x01]))).toBe('no');
    expect(looksLikeProxyHeader(Buffer.from('\r\nGET'))).toBe('no');
  });
});

// ------------------------------------------------------------------------------ properties

const octet = fc.integer({ min: 0, max: 255 });
const port = fc.integer({ min: 0, max: 65535 });
const ipv4 = fc.tuple(octet, octet, octet, octet).map((o) => o.join('.'));
const tlv = fc.tuple(octet, fc.uint8Array({ maxLength: 40 })).map(([type, value]) => {
  const b = Buffer.alloc(3 + value.length);
  b[0] = type;
  b.writeUInt16BE(value.length, 1);
  Buffer.from(value).copy(b, 3);
  return b;
});
const validHeader: fc.Arbitrary<Buffer> = fc.oneof(
  fc.tuple(ipv4, ipv4, port, port).map(([s, d, sp, dp]) => Buffer.from(`PROXY TCP4 ${s} ${d} ${sp} ${dp}\r\n`)),
  fc.tuple(fc.ipV6(), fc.ipV6(), port, port).map(([s, d, sp, dp]) => Buffer.from(`PROXY TCP6 ${s} ${d} ${sp} ${dp}\r\n`)),
  fc.constant(Buffer.from('PROXY UNKNOWN\r\n')),
  fc
    .tuple(ipv4, ipv4, port, port, fc.array(tlv, { maxLength: 4 }))
    .map(([s, d, sp, dp, tlvs]) => v2Header(Buffer.concat([v4Block(s, d, sp, dp), ...tlvs]))),
  fc
    .tuple(fc.uint8Array({ minLength: 36, maxLength: 36 }), fc.array(tlv, { maxLength: 4 }))
    .map(([addr, tlvs]) => v2Header(Buffer.concat([Buffer.from(addr), ...tlvs]), { family: 0x21 })),
  fc.uint8Array({ maxLength: 60 }).map((b) => v2Header(Buffer.from(b), { command: 0, family: 0 })),
);

/** Feeds `bytes` to a reader in pieces cut at `cuts`; the first result that is not "incomplete". */
function feed(bytes: Buffer, cuts: number[]): ProxyRead {
  const reader = new ProxyHeaderReader();
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  let from = 0;
  for (const to of [...points, bytes.length]) {
    if (to <= from) continue;
    const r = reader.push(bytes.subarray(from, to));
    from = to;
    if (r.kind !== 'incomplete') return r;
  }
  return { kind: 'incomplete' };
}

describe('properties', () => {
  it('every split of a valid header (with the client bytes after it) parses the same', () => {
    fc.assert(
      fc.property(validHeader, fc.uint8Array({ maxLength: 20 }), fc.array(fc.nat(), { maxLength: 12 }), (header, after, cuts) => {
        const whole = Buffer.concat([header, Buffer.from(after)]);
        const once = parseProxyHeader(whole);
        expect(once.kind).toBe('header');
        if (once.kind !== 'header') return;
        expect(once.header.length).toBe(header.length);
        const split = feed(whole, cuts);
        expect(split.kind).toBe('header');
        if (split.kind !== 'header') return;
        expect(split.header).toEqual(once.header);
        // the bytes after the header that arrived with it; the rest follows on the socket untouched
        expect(Buffer.from(after).subarray(0, split.rest.length).equals(split.rest)).toBe(true);
      }),
      { numRuns: 500 },
    );
  });

  it('byte by byte works', () => {
    fc.assert(
      fc.property(validHeader, (header) => {
        const r = feed(
          header,
          Array.from({ length: header.length }, (_, i) => i),
        );
        expect(r).toMatchObject({ kind: 'header', header: { length: header.length }, rest: Buffer.alloc(0) });
      }),
    );
  });

  it('random bytes never throw: a header, incomplete, or a typed refusal', () => {
    const prefixed = fc.oneof(
      fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b)),
      fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.concat([Buffer.from('PROXY '), Buffer.from(b)])),
      fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.concat([V2_SIGNATURE, Buffer.from(b)])),
    );
    fc.assert(
      fc.property(prefixed, fc.array(fc.nat(), { maxLength: 8 }), (bytes, cuts) => {
        const once = parseProxyHeader(bytes);
        if (once.kind === 'refused') expect(refusals).toContain(once.reason);
        if (once.kind === 'header') expect(once.header.length).toBeLessThanOrEqual(Math.min(bytes.length, maxHeaderBytes));
        const split = feed(bytes, cuts);
        // refusals come as soon as the bytes rule a header out: the same whatever the split
        expect(split.kind).toBe(once.kind);
      }),
      { numRuns: 2000 },
    );
  });

  it('never waits past the bounds: 107 bytes for v1, the declared length for v2', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: maxV1Bytes, maxLength: 300 }), (tail) => {
        const v1 = Buffer.concat([Buffer.from('PROXY '), Buffer.from(tail)]);
        expect(parseProxyHeader(v1).kind).not.toBe('incomplete');
        const v2 = Buffer.concat([V2_SIGNATURE, Buffer.from(tail)]);
        const r = parseProxyHeader(v2);
        if (r.kind === 'incomplete') expect(v2.length).toBeLessThan(16 + v2.readUInt16BE(14));
      }),
    );
  });
});
