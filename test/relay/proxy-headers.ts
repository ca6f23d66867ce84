/** PROXY protocol v2 headers for the tests (relay/edge/proxy-protocol.ts reads them). */
import { V2_SIGNATURE } from '../../relay/edge/proxy-protocol.js';

/** A v2 header: command 1 PROXY / 0 LOCAL, family byte, address block (addresses + TLVs). */
export function v2Header(block: Buffer, options: { command?: number; family?: number; version?: number } = {}): Buffer {
  const head = Buffer.alloc(16);
  V2_SIGNATURE.copy(head, 0);
  head[12] = ((options.version ?? 2) << 4) | (options.command ?? 1);
  head[13] = options.family ?? 0x11;
  head.writeUInt16BE(block.length, 14);
  return Buffer.concat([head, block]);
}

export function v4Block(src: string, dst: string, sport: number, dport: number): Buffer {
  const b = Buffer.alloc(12);
  src.split('.').forEach((o, i) => (b[i] = Number(o)));
  dst.split('.').forEach((o, i) => (b[4 + i] = Number(o)));
  b.writeUInt16BE(sport, 8);
  b.writeUInt16BE(dport, 10);
  return b;
}

/** 2001:db8::7 → 2001:db8::9, ports given. */
export function v6Block(sport: number, dport: number): Buffer {
  const b = Buffer.alloc(36);
  b.writeUInt16BE(0x2001, 0);
  b.writeUInt16BE(0x0db8, 2);
  b.writeUInt16BE(7, 14);
  b.writeUInt16BE(0x2001, 16);
  b.writeUInt16BE(0x0db8, 18);
  b.writeUInt16BE(9, 30);
  b.writeUInt16BE(sport, 32);
  b.writeUInt16BE(dport, 34);
  return b;
}
