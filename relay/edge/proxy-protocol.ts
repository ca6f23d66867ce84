/**
 * PROXY protocol (HAProxy, https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt), v1 and
 * v2, as a TCP load balancer puts it in front of a client's bytes: strict, pure and total (no
 * I/O; any input gives a header, "need more bytes", or a typed refusal — never a throw).
 *
 * Accepted:
 *   v1  `PROXY TCP4 <src> <dst> <sport> <dport>\r\n`, `PROXY TCP6 …`, `PROXY UNKNOWN[ anything]\r\n`,
 *       at most 107 bytes with the CRLF; addresses as net.isIPv4/isIPv6 read them (no zone),
 *       ports 0–65535 in decimal without leading zeros, single spaces.
 *   v2  the 12-byte signature, version 2, command LOCAL (any family, address block ignored) or
 *       PROXY with AF_INET or AF_INET6 over STREAM; an address block of at most
 *       {@link maxV2AddressBytes} bytes whose TLVs (after the addresses) are skipped but must be
 *       well framed.
 * Anything else is refused; so is a header that cannot end within its bound.
 *
 * No npm parser was used: the ones found (proxy-protocol-js, proxy-protocol, node-proxy-protocol)
 * parse whole buffers with no bound or streaming, or are unmaintained.
 */
import net from 'node:net';

/** Longest v1 header, CRLF included (the specification's bound). */
export const maxV1Bytes = 107;
/** Longest v2 address block (addresses and TLVs) accepted; the specification allows 65535. */
export const maxV2AddressBytes = 512;
/** Fixed part of a v2 header: signature, version/command, family, length. */
export const v2FixedBytes = 16;
/** Longest header of either version. */
export const maxHeaderBytes = v2FixedBytes + maxV2AddressBytes;

export const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
const V1_PREFIX = Buffer.from('PROXY ', 'latin1');

/** Why a PROXY header was refused. */
export type ProxyRefusal =
  /** the bytes are not the start of a PROXY header (a listed balancer sent none) */
  | 'missing'
  /** a v1 header that breaks the grammar */
  | 'v1_malformed'
  /** no CRLF within 107 bytes */
  | 'v1_too_long'
  /** a v2 version other than 2, or a command other than LOCAL/PROXY */
  | 'v2_version'
  /** PROXY with a family or transport other than AF_INET/AF_INET6 over STREAM */
  | 'v2_family'
  /** the address block is shorter than the family's addresses, or its TLVs are badly framed */
  | 'v2_malformed'
  /** the address block is longer than {@link maxV2AddressBytes} */
  | 'v2_too_long';

export interface ProxyAddress {
  /** Canonical spelling (IPv4 dotted quad; IPv6 lower case, RFC 5952 compressed). */
  ip: string;
  port: number;
}

export interface ProxyHeader {
  version: 1 | 2;
  /**
   * The client's address, or null for v2 LOCAL and v1 UNKNOWN (a balancer's own connection, e.g.
   * a health check): the connection's own peer stands.
   */
  source: ProxyAddress | null;
  destination: ProxyAddress | null;
  /** Bytes the header took; what follows belongs to the client. */
  length: number;
}

export type ProxyParse = { kind: 'header'; header: ProxyHeader } | { kind: 'incomplete' } | { kind: 'refused'; reason: ProxyRefusal };

const INCOMPLETE: ProxyParse = { kind: 'incomplete' };
const refuse = (reason: ProxyRefusal): { kind: 'refused'; reason: ProxyRefusal } => ({ kind: 'refused', reason });

/**
 * Parses a PROXY header at the start of `buf` (the bytes received so far). `incomplete`: a valid
 * header may still follow; a refusal comes as soon as the bytes seen rule one out.
 */
export function parseProxyHeader(buf: Uint8Array): ProxyParse {
  if (buf.length === 0) return INCOMPLETE;
  if (buf[0] === 0x50) return parseV1(buf);
  if (buf[0] === 0x0d) return parseV2(buf);
  return refuse('missing');
}

/**
 * Whether `buf` starts like a PROXY header of either version: `yes` (a full signature), `no`, or
 * `maybe` (a prefix of one; read more). For connections from addresses not listed: a PROXY header
 * from them is refused, never trusted.
 */
export function looksLikeProxyHeader(buf: Uint8Array): 'yes' | 'no' | 'maybe' {
  for (const sig of [V1_PREFIX, V2_SIGNATURE]) {
    const n = Math.min(buf.length, sig.length);
    let same = true;
    for (let i = 0; i < n; i++) {
      if (buf[i] !== sig[i]) {
        same = false;
        break;
      }
    }
    if (!same) continue;
    if (buf.length >= sig.length) return 'yes';
    return 'maybe';
  }
  return 'no';
}

function startsWith(buf: Uint8Array, prefix: Uint8Array): 'yes' | 'no' | 'short' {
  const n = Math.min(buf.length, prefix.length);
  for (let i = 0; i < n; i++) if (buf[i] !== prefix[i]) return 'no';
  return buf.length >= prefix.length ? 'yes' : 'short';
}

function parseV1(buf: Uint8Array): ProxyParse {
  const prefix = startsWith(buf, V1_PREFIX);
  if (prefix === 'no') return refuse('missing');
  if (prefix === 'short') return INCOMPLETE;
  const limit = Math.min(buf.length, maxV1Bytes);
  let lf = -1;
  for (let i = V1_PREFIX.length; i < limit; i++) {
    const c = buf[i] as number;
    if (c === 0x0a) {
      lf = i;
      break;
    }
    // printable US-ASCII, or the CR right before the LF
    if (c === 0x0d) {
      if (i + 1 < buf.length && buf[i + 1] !== 0x0a) return refuse('v1_malformed');
      continue;
    }
    if (c < 0x20 || c > 0x7e) return refuse('v1_malformed');
  }
  if (lf === -1) return buf.length >= maxV1Bytes ? refuse('v1_too_long') : INCOMPLETE;
  if (buf[lf - 1] !== 0x0d) return refuse('v1_malformed');
  const line = Buffer.from(buf.subarray(V1_PREFIX.length, lf - 1)).toString('latin1');
  const length = lf + 1;
  if (line === 'UNKNOWN' || line.startsWith('UNKNOWN ')) {
    return { kind: 'header', header: { version: 1, source: null, destination: null, length } };
  }
  const parts = line.split(' ');
  if (parts.length !== 5) return refuse('v1_malformed');
  const [proto, src, dst, sport, dport] = parts as [string, string, string, string, string];
  const family = proto === 'TCP4' ? 4 : proto === 'TCP6' ? 6 : 0;
  if (family === 0) return refuse('v1_malformed');
  const check = family === 4 ? net.isIPv4 : net.isIPv6;
  if (!check(src) || !check(dst) || src.includes('%') || dst.includes('%')) return refuse('v1_malformed');
  const sp = v1Port(sport);
  const dp = v1Port(dport);
  if (sp === -1 || dp === -1) return refuse('v1_malformed');
  const canon = family === 4 ? (ip: string) => ip : (ip: string) => formatV6(parseV6Text(ip));
  return {
    kind: 'header',
    header: { version: 1, source: { ip: canon(src), port: sp }, destination: { ip: canon(dst), port: dp }, length },
  };
}

function v1Port(text: string): number {
  if (!/^(0|[1-9]\d{0,4})$/.test(text)) return -1;
  const n = Number(text);
  return n <= 0xffff ? n : -1;
}

function parseV2(buf: Uint8Array): ProxyParse {
  const sig = startsWith(buf, V2_SIGNATURE);
  if (sig === 'no') return refuse('missing');
  if (sig === 'short') return INCOMPLETE;
  if (buf.length < 13) return INCOMPLETE;
  const verCmd = buf[12] as number;
  const command = verCmd & 0x0f;
  if (verCmd >> 4 !== 2 || command > 1) return refuse('v2_version');
  if (buf.length < 14) return INCOMPLETE;
  const fam = buf[13] as number;
  const family = fam >> 4;
  const transport = fam & 0x0f;
  const local = command === 0;
  if (!local && (transport !== 1 || (family !== 1 && family !== 2))) return refuse('v2_family');
  if (buf.length < v2FixedBytes) return INCOMPLETE;
  const blockLength = ((buf[14] as number) << 8) | (buf[15] as number);
  if (blockLength > maxV2AddressBytes) return refuse('v2_too_long');
  const addrBytes = local ? 0 : family === 1 ? 12 : 36;
  if (blockLength < addrBytes) return refuse('v2_malformed');
  const length = v2FixedBytes + blockLength;
  if (buf.length < length) return INCOMPLETE;
  const block = buf.subarray(v2FixedBytes, length);
  if (local) return { kind: 'header', header: { version: 2, source: null, destination: null, length } };
  // TLVs: type (1), length (2, big-endian), value; skipped, but they must fill the block exactly
  for (let at = addrBytes; at < block.length;) {
    if (at + 3 > block.length) return refuse('v2_malformed');
    const tlvLength = ((block[at + 1] as number) << 8) | (block[at + 2] as number);
    at += 3 + tlvLength;
    if (at > block.length) return refuse('v2_malformed');
  }
  let source: ProxyAddress;
  let destination: ProxyAddress;
  if (family === 1) {
    source = { ip: formatV4(block, 0), port: u16(block, 8) };
    destination = { ip: formatV4(block, 4), port: u16(block, 10) };
  } else {
    source = { ip: formatV6(groupsAt(block, 0)), port: u16(block, 32) };
    destination = { ip: formatV6(groupsAt(block, 16)), port: u16(block, 34) };
  }
  return { kind: 'header', header: { version: 2, source, destination, length } };
}

function u16(b: Uint8Array, at: number): number {
  return ((b[at] as number) << 8) | (b[at + 1] as number);
}

function formatV4(b: Uint8Array, at: number): string {
  return `${b[at]}.${b[at + 1]}.${b[at + 2]}.${b[at + 3]}`;
}

function groupsAt(b: Uint8Array, at: number): number[] {
  const groups: number[] = [];
  for (let i = 0; i < 8; i++) groups.push(u16(b, at + 2 * i));
  return groups;
}

/** The eight groups of an IPv6 address that net.isIPv6 accepted (with or without an IPv4 tail). */
function parseV6Text(text: string): number[] {
  let tail: number[] = [];
  let head = text.toLowerCase();
  const lastColon = head.lastIndexOf(':');
  const last = head.slice(lastColon + 1);
  if (last.includes('.')) {
    const o = last.split('.').map(Number) as [number, number, number, number];
    tail = [(o[0] << 8) | o[1], (o[2] << 8) | o[3]];
    head = head.slice(0, lastColon + 1) + '0:0';
  }
  const [left, right] = head.includes('::') ? (head.split('::') as [string, string]) : [head, undefined];
  const l = left === '' ? [] : left.split(':').map((g) => parseInt(g, 16));
  const r = right === undefined ? [] : right === '' ? [] : right.split(':').map((g) => parseInt(g, 16));
  const groups = right === undefined ? l : [...l, ...new Array<number>(8 - l.length - r.length).fill(0), ...r];
  if (tail.length === 2) {
    groups[6] = tail[0] as number;
    groups[7] = tail[1] as number;
  }
  return groups;
}

/**
 * RFC 5952 text of eight groups: lower case, the longest run of two or more zero groups (the
 * first of equal ones) as `::`; an IPv4-mapped address (`::ffff:a.b.c.d`) as its IPv4 address, as
 * the rest of the relay spells clients (canonicalIp).
 */
export function formatV6(groups: readonly number[]): string {
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) {
    const a = groups[6] as number;
    const b = groups[7] as number;
    return `${a >> 8}.${a & 0xff}.${b >> 8}.${b & 0xff}`;
  }
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart === -1) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

/** What {@link ProxyHeaderReader.push} says: as {@link ProxyParse}, with the bytes after a whole header. */
export type ProxyRead =
  { kind: 'header'; header: ProxyHeader; rest: Buffer } | { kind: 'incomplete' } | { kind: 'refused'; reason: ProxyRefusal };

/**
 * Reads a PROXY header from chunks as they arrive: `push` returns `incomplete` until the header is
 * whole (then `rest` is what followed it in the last chunk, the client's first bytes) or refused.
 * Holds at most {@link maxHeaderBytes} bytes plus one chunk.
 */
export class ProxyHeaderReader {
  private buffered: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): ProxyRead {
    this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
    const result = parseProxyHeader(this.buffered);
    if (result.kind !== 'header') {
      // a bound every path already enforces; kept as a backstop
      if (result.kind === 'incomplete' && this.buffered.length > maxHeaderBytes) return refuse('v2_too_long');
      return result;
    }
    const rest = this.buffered.subarray(result.header.length);
    this.buffered = Buffer.alloc(0);
    return { ...result, rest };
  }
}
