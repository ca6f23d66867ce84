/**
 * Frame codec: round trips (fast-check), fuzzing of the decoder, and one targeted case per
 * protocol error. Assertions are on `RelayError#code`, never on message text.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { defaults } from '../../shared/defaults.js';
import { RelayError } from '../../shared/errors.js';
import {
  FRAME_VERSION,
  FrameBatch,
  FrameType,
  HEADER_BYTES,
  decodeFrames,
  decodeMessage,
  decodeOpenMetadata,
  encodeDataHeader,
  encodeFrame,
  encodeOpenMetadata,
  type DecodeLimits,
  type Frame,
  type FrameTypeValue,
  type OpenMetadata,
} from '../../shared/mux/frame-codec.js';
import { thrownCode } from '../fixtures/error-code.js';

const LIMITS: DecodeLimits = {
  maxDataBytes: defaults.maxFramePayloadLimitBytes,
  maxOpenBytes: defaults.maxOpenMetadataBytes,
};

/** What a frame pushed into a FrameBatch should decode to. */
interface FrameSpec {
  type: FrameTypeValue;
  streamId: number;
  payload: Buffer | null;
  value: number;
}

// ------------------------------------------------------------------------------ helpers

function decodeAll(message: Buffer, limits: DecodeLimits = LIMITS): Frame[] {
  const frames: Frame[] = [];
  decodeFrames(message, limits, (f) => frames.push(f));
  return frames;
}

/** A raw frame with every header field under the test's control. */
function rawFrame(
  fields: { version?: number; type?: number; flags?: number; streamId?: number; length?: number },
  payload: Buffer = Buffer.alloc(0),
): Buffer {
  const header = Buffer.alloc(HEADER_BYTES);
  header[0] = fields.version ?? FRAME_VERSION;
  header[1] = fields.type ?? FrameType.DATA;
  header.writeUInt16BE(fields.flags ?? 0, 2);
  header.writeUInt32BE(fields.streamId ?? 1, 4);
  header.writeUInt32BE(fields.length ?? payload.length, 8);
  return Buffer.concat([header, payload]);
}

function u32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v);
  return b;
}

function encodeSpecs(specs: FrameSpec[]): Buffer {
  const batch = new FrameBatch();
  for (const s of specs) batch.push(s.type, s.streamId, s.payload, s.value);
  expect(batch.count).toBe(specs.length);
  const expectedLength = batch.byteLength;
  const message = batch.take();
  expect(message.length).toBe(expectedLength);
  expect(batch.count).toBe(0);
  expect(batch.byteLength).toBe(0);
  return message;
}

/** Structural invariants every successfully decoded frame must satisfy, whatever the input. */
function assertFrameInvariants(frame: Frame, limits: DecodeLimits): void {
  expect(frame.type).toBeGreaterThanOrEqual(FrameType.DATA);
  expect(frame.type).toBeLessThanOrEqual(FrameType.GOAWAY);
  if (frame.type === FrameType.GOAWAY) expect(frame.streamId).toBe(0);
  else expect(frame.streamId).not.toBe(0);
  switch (frame.type) {
    case FrameType.DATA:
      expect(frame.payload.length).toBeGreaterThan(0);
      expect(frame.payload.length).toBeLessThanOrEqual(limits.maxDataBytes);
      expect(frame.value).toBe(0);
      break;
    case FrameType.OPEN:
      expect(frame.payload.length).toBeLessThanOrEqual(limits.maxOpenBytes);
      expect(frame.value).toBe(0);
      break;
    case FrameType.FIN:
      expect(frame.payload.length).toBe(0);
      expect(frame.value).toBe(0);
      break;
    case FrameType.WINDOW_UPDATE:
      expect(frame.value).toBeGreaterThanOrEqual(1);
      expect(frame.payload.length).toBe(0);
      break;
    default:
      expect(frame.payload.length).toBe(0);
  }
}

/**
 * Decodes arbitrary input: it must either succeed (every frame well formed, at most one frame per
 * header's worth of bytes) or throw a RelayError with a RELAY_ERR_ code, nothing else.
 */
function decodeOrRelayError(message: Buffer, limits: DecodeLimits = LIMITS): { frames: Frame[]; code: string | null } {
  const frames: Frame[] = [];
  let code: string | null = null;
  try {
    decodeFrames(message, limits, (f) => {
      frames.push(f);
      // a decoder that does not advance would loop forever: fail fast instead of hanging
      if (frames.length > Math.floor(message.length / HEADER_BYTES)) throw new Error('decoder does not advance');
    });
  } catch (err) {
    if (!(err instanceof RelayError)) throw err;
    expect(err.code).toMatch(/^RELAY_ERR_/);
    code = err.code;
  }
  for (const f of frames) assertFrameInvariants(f, limits);
  return { frames, code };
}

// ------------------------------------------------------------------------------ arbitraries

const streamIdArb = fc.integer({ min: 1, max: 0xffff_ffff });
const u32Arb = fc.integer({ min: 0, max: 0xffff_ffff });
const bytesArb = (min: number, max: number) => fc.uint8Array({ minLength: min, maxLength: max }).map((a) => Buffer.from(a));

const frameSpecArb: fc.Arbitrary<FrameSpec> = fc.oneof(
  fc.record({ type: fc.constant(FrameType.DATA), streamId: streamIdArb, payload: bytesArb(1, 4096), value: fc.constant(0) }),
  fc.record({
    type: fc.constant(FrameType.WINDOW_UPDATE),
    streamId: streamIdArb,
    payload: fc.constant(null),
    value: fc.integer({ min: 1, max: 0xffff_ffff }),
  }),
  fc.record({ type: fc.constant(FrameType.OPEN), streamId: streamIdArb, payload: bytesArb(0, LIMITS.maxOpenBytes), value: fc.constant(0) }),
  fc.record({ type: fc.constant(FrameType.FIN), streamId: streamIdArb, payload: fc.constant(null), value: fc.constant(0) }),
  fc.record({ type: fc.constant(FrameType.RST), streamId: streamIdArb, payload: fc.constant(null), value: u32Arb }),
  fc.record({ type: fc.constant(FrameType.GOAWAY), streamId: fc.constant(0), payload: fc.constant(null), value: u32Arb }),
) as fc.Arbitrary<FrameSpec>;

const framesArb = fc.array(frameSpecArb, { minLength: 1, maxLength: 40 });

const metaArb: fc.Arbitrary<OpenMetadata> = fc.record({
  clientIp: fc.oneof(fc.ipV4(), fc.ipV6(), fc.string({ minLength: 1, maxLength: 64 })),
  clientPort: fc.integer({ min: 0, max: 65535 }),
  listenerPort: fc.integer({ min: 0, max: 65535 }),
  tls: fc.boolean(),
});

// ------------------------------------------------------------------------------ tests

describe('frame codec round trip (property)', () => {
  it('any sequence of valid frames encoded with FrameBatch decodes to the same frames in order', () => {
    fc.assert(
      fc.property(framesArb, (specs) => {
        const message = encodeSpecs(specs);
        const frames = decodeAll(message);
        expect(frames).toHaveLength(specs.length);
        frames.forEach((f, i) => {
          const s = specs[i]!;
          expect(f.type).toBe(s.type);
          expect(f.streamId).toBe(s.streamId);
          if (s.type === FrameType.DATA || s.type === FrameType.OPEN) {
            expect(f.payload.equals(s.payload!)).toBe(true);
            expect(f.value).toBe(0);
          } else {
            expect(f.payload.length).toBe(0);
            expect(f.value).toBe(s.value);
          }
        });
      }),
      { numRuns: 300 },
    );
  });

  it('DATA payloads are views into the message with identical bytes, not copies', () => {
    fc.assert(
      fc.property(framesArb, (specs) => {
        const message = encodeSpecs(specs);
        const frames = decodeAll(message);
        frames.forEach((f, i) => {
          if (f.type !== FrameType.DATA) return;
          const s = specs[i]!;
          expect(f.payload.equals(s.payload!)).toBe(true);
          // same memory as the message
          expect(f.payload.buffer).toBe(message.buffer);
          expect(f.payload.byteOffset).toBeGreaterThanOrEqual(message.byteOffset + HEADER_BYTES);
          expect(f.payload.byteOffset + f.payload.length).toBeLessThanOrEqual(message.byteOffset + message.length);
          // a write through the message shows in the view
          const rel = f.payload.byteOffset - message.byteOffset;
          const before = f.payload[0]!;
          message[rel] = before ^ 0xff;
          expect(f.payload[0]).toBe(before ^ 0xff);
          message[rel] = before;
        });
      }),
      { numRuns: 200 },
    );
  });

  it('encodeFrame of a single frame decodes back to that frame', () => {
    fc.assert(
      fc.property(frameSpecArb, (s) => {
        const frames = decodeAll(encodeFrame(s.type, s.streamId, s.payload, s.value));
        expect(frames).toHaveLength(1);
        expect(frames[0]!.type).toBe(s.type);
        expect(frames[0]!.streamId).toBe(s.streamId);
        if (s.payload) expect(frames[0]!.payload.equals(s.payload)).toBe(true);
        else expect(frames[0]!.value).toBe(s.value);
      }),
    );
  });

  it('FrameBatch can be reused after take() and each batch decodes independently', () => {
    fc.assert(
      fc.property(framesArb, framesArb, (a, b) => {
        const batch = new FrameBatch();
        for (const s of a) batch.push(s.type, s.streamId, s.payload, s.value);
        const m1 = batch.take();
        for (const s of b) batch.push(s.type, s.streamId, s.payload, s.value);
        const m2 = batch.take();
        expect(decodeAll(m1).map((f) => f.streamId)).toEqual(a.map((s) => s.streamId));
        expect(decodeAll(m2).map((f) => f.streamId)).toEqual(b.map((s) => s.streamId));
      }),
      { numRuns: 100 },
    );
  });

  it('OPEN metadata round-trips through encodeOpenMetadata / decodeOpenMetadata', () => {
    fc.assert(
      fc.property(metaArb, (meta) => {
        expect(decodeOpenMetadata(encodeOpenMetadata(meta))).toEqual(meta);
      }),
    );
  });
});

describe('decodeMessage: a message as fragments', () => {
  /** Decodes with decodeMessage, returning the frames or the error code. */
  function decodeFragments(fragments: Buffer[]): { frames: Frame[]; code: string | null } {
    const frames: Frame[] = [];
    try {
      decodeMessage(fragments, LIMITS, (f) => frames.push(f));
      return { frames, code: null };
    } catch (err) {
      expect(err).toBeInstanceOf(RelayError);
      return { frames, code: (err as RelayError).code };
    }
  }

  it('a DATA header and then exactly its payload, as two fragments, deliver that payload uncopied', () => {
    const payload = Buffer.from('a lent payload');
    const { frames, code } = decodeFragments([encodeDataHeader(7, payload.length), payload]);
    expect(code).toBeNull();
    expect(frames).toHaveLength(1);
    expect(frames[0]!.type).toBe(FrameType.DATA);
    expect(frames[0]!.streamId).toBe(7);
    expect(frames[0]!.payload.buffer).toBe(payload.buffer);
    expect(frames[0]!.payload.equals(payload)).toBe(true);
  });

  it('a lent DATA header is checked as any header is', () => {
    const payload = Buffer.alloc(16);
    const onStream0 = encodeDataHeader(0, payload.length);
    expect(decodeFragments([onStream0, payload]).code).toBe('RELAY_ERR_FRAME_INVALID');
    const flagged = encodeDataHeader(1, payload.length);
    flagged.writeUInt16BE(1, 2);
    expect(decodeFragments([flagged, payload]).code).toBe('RELAY_ERR_FRAME_FLAGS');
    const huge = Buffer.alloc(LIMITS.maxDataBytes + 1);
    expect(decodeFragments([encodeDataHeader(1, huge.length), huge]).code).toBe('RELAY_ERR_FRAME_TOO_LARGE');
    expect(decodeFragments([encodeDataHeader(1, 0), Buffer.alloc(0)]).code).toBe('RELAY_ERR_FRAME_INVALID');
  });

  it('any other fragmentation of a valid message decodes to the same frames as the whole message', () => {
    fc.assert(
      fc.property(framesArb, fc.array(fc.nat(), { maxLength: 6 }), (specs, cuts) => {
        const message = encodeSpecs(specs);
        const at = [...new Set(cuts.map((c) => c % (message.length + 1)))].sort((a, b) => a - b);
        const fragments = [0, ...at].map((start, i) => message.subarray(start, [...at, message.length][i]));
        const { frames, code } = decodeFragments(fragments);
        expect(code).toBeNull();
        expect(frames.map((f) => [f.type, f.streamId, f.value, f.payload.toString('hex')])).toEqual(
          decodeAll(message).map((f) => [f.type, f.streamId, f.value, f.payload.toString('hex')]),
        );
      }),
      { numRuns: 200 },
    );
  });

  it('no fragments at all (an empty message) -> RELAY_ERR_FRAME_TRUNCATED', () => {
    expect(decodeFragments([]).code).toBe('RELAY_ERR_FRAME_TRUNCATED');
  });
});

describe('frame decoder fuzzing', () => {
  it('arbitrary bytes either decode or throw a RelayError with a RELAY_ERR_ code', () => {
    fc.assert(
      fc.property(bytesArb(0, 256), (bytes) => {
        decodeOrRelayError(bytes);
      }),
      { numRuns: 3000 },
    );
  });

  it('arbitrary bytes behind a valid header prefix either decode or throw a RelayError', () => {
    // random bytes rarely pass the version/type/flags checks; give the payload paths a chance
    const headerish = fc
      .tuple(fc.integer({ min: 0, max: 7 }), streamIdArb, fc.integer({ min: 0, max: 40 }), bytesArb(0, 64))
      .map(([type, id, length, rest]) => rawFrame({ type, streamId: type === FrameType.GOAWAY ? 0 : id, length }, rest));
    fc.assert(
      fc.property(fc.array(headerish, { minLength: 1, maxLength: 6 }), (parts) => {
        decodeOrRelayError(Buffer.concat(parts));
      }),
      { numRuns: 3000 },
    );
  });

  it('valid messages with random byte mutations and truncations either decode or throw a RelayError', () => {
    const mutationArb = fc.record({
      writes: fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 8 }),
      cut: fc.option(fc.nat(), { nil: undefined }),
    });
    fc.assert(
      fc.property(fc.array(frameSpecArb, { minLength: 1, maxLength: 10 }), mutationArb, (specs, m) => {
        let message = encodeSpecs(specs);
        for (const [pos, byte] of m.writes) message[pos % message.length] = byte;
        if (m.cut !== undefined) message = message.subarray(0, m.cut % (message.length + 1));
        decodeOrRelayError(message);
      }),
      { numRuns: 3000 },
    );
  });

  it('a valid message truncated at any point throws RELAY_ERR_FRAME_TRUNCATED after delivering the whole frames before the cut', () => {
    fc.assert(
      fc.property(fc.array(frameSpecArb, { minLength: 1, maxLength: 6 }), fc.nat(), (specs, cutSeed) => {
        const message = encodeSpecs(specs);
        // frame boundaries
        const ends: number[] = [];
        let off = 0;
        for (const s of specs) {
          off += HEADER_BYTES + (s.payload ? s.payload.length : s.type === FrameType.FIN ? 0 : 4);
          ends.push(off);
        }
        const cut = cutSeed % message.length; // strictly shorter than the message
        const { frames, code } = decodeOrRelayError(message.subarray(0, cut));
        if (ends.includes(cut)) {
          expect(code).toBeNull();
        } else {
          expect(code).toBe('RELAY_ERR_FRAME_TRUNCATED');
        }
        expect(frames).toHaveLength(ends.filter((e) => e <= cut).length);
      }),
      { numRuns: 1000 },
    );
  });

  it('arbitrary OPEN payload bytes or JSON values either give valid metadata or RELAY_ERR_FRAME_INVALID', () => {
    const check = (payload: Buffer): void => {
      let meta: OpenMetadata;
      try {
        meta = decodeOpenMetadata(payload);
      } catch (err) {
        expect(err).toBeInstanceOf(RelayError);
        expect((err as RelayError).code).toBe('RELAY_ERR_FRAME_INVALID');
        return;
      }
      expect(Object.keys(meta).sort()).toEqual(['clientIp', 'clientPort', 'listenerPort', 'tls']);
      expect(typeof meta.clientIp).toBe('string');
      expect(typeof meta.tls).toBe('boolean');
    };
    fc.assert(
      fc.property(bytesArb(0, 200), (b) => check(b)),
      { numRuns: 1000 },
    );
    fc.assert(
      fc.property(fc.jsonValue(), (v) => check(Buffer.from(JSON.stringify(v) ?? 'undefined'))),
      { numRuns: 1000 },
    );
    const almostMeta = fc.record(
      {
        clientIp: fc.oneof(fc.string({ maxLength: 70 }), fc.integer(), fc.constant(null)),
        clientPort: fc.oneof(fc.integer({ min: -2, max: 70000 }), fc.double(), fc.string()),
        listenerPort: fc.oneof(fc.integer({ min: -2, max: 70000 }), fc.constant('80')),
        tls: fc.oneof(fc.boolean(), fc.constant('true'), fc.constant(1)),
      },
      { requiredKeys: [] },
    );
    fc.assert(
      fc.property(almostMeta, (v) => check(Buffer.from(JSON.stringify(v)))),
      { numRuns: 1000 },
    );
  });
});

describe('frame decoder: targeted protocol errors', () => {
  it('empty message -> RELAY_ERR_FRAME_TRUNCATED', () => {
    expect(thrownCode(() => decodeAll(Buffer.alloc(0)))).toBe('RELAY_ERR_FRAME_TRUNCATED');
  });

  it('truncated header -> RELAY_ERR_FRAME_TRUNCATED', () => {
    const full = encodeFrame(FrameType.WINDOW_UPDATE, 1, null, 10);
    for (let n = 1; n < HEADER_BYTES; n++) {
      expect(thrownCode(() => decodeAll(full.subarray(0, n)))).toBe('RELAY_ERR_FRAME_TRUNCATED');
    }
    expect(thrownCode(() => decodeAll(Buffer.from([9, 9, 9])))).toBe('RELAY_ERR_FRAME_TRUNCATED');
  });

  it('truncated header after a valid frame -> frames before are delivered, then RELAY_ERR_FRAME_TRUNCATED', () => {
    const first = encodeFrame(FrameType.DATA, 3, Buffer.from('hello'));
    const frames: Frame[] = [];
    const code = thrownCode(() => decodeFrames(Buffer.concat([first, Buffer.from([1, 0, 0])]), LIMITS, (f) => frames.push(f)));
    expect(code).toBe('RELAY_ERR_FRAME_TRUNCATED');
    expect(frames).toHaveLength(1);
    expect(frames[0]!.payload.toString()).toBe('hello');
  });

  it('truncated payload -> RELAY_ERR_FRAME_TRUNCATED', () => {
    const full = encodeFrame(FrameType.DATA, 1, Buffer.alloc(100, 7));
    expect(thrownCode(() => decodeAll(full.subarray(0, HEADER_BYTES)))).toBe('RELAY_ERR_FRAME_TRUNCATED');
    expect(thrownCode(() => decodeAll(full.subarray(0, full.length - 1)))).toBe('RELAY_ERR_FRAME_TRUNCATED');
    const rst = encodeFrame(FrameType.RST, 1, null, 1);
    expect(thrownCode(() => decodeAll(rst.subarray(0, rst.length - 2)))).toBe('RELAY_ERR_FRAME_TRUNCATED');
    // a length field far past the end
    expect(thrownCode(() => decodeAll(rawFrame({ type: FrameType.OPEN, length: 0xffff_ffff }, Buffer.from('{}'))))).toBe(
      'RELAY_ERR_FRAME_TRUNCATED',
    );
  });

  it('version != 1 -> RELAY_ERR_FRAME_VERSION', () => {
    for (const version of [0, 2, 0x7f, 0xff]) {
      expect(thrownCode(() => decodeAll(rawFrame({ version, type: FrameType.DATA }, Buffer.from('x'))))).toBe('RELAY_ERR_FRAME_VERSION');
    }
  });

  it('unknown frame type -> RELAY_ERR_FRAME_TYPE', () => {
    for (const type of [6, 7, 0x80, 0xff]) {
      expect(thrownCode(() => decodeAll(rawFrame({ type }, u32(1))))).toBe('RELAY_ERR_FRAME_TYPE');
    }
  });

  it('nonzero flags -> RELAY_ERR_FRAME_FLAGS', () => {
    for (const flags of [1, 0x100, 0x8000, 0xffff]) {
      expect(thrownCode(() => decodeAll(rawFrame({ type: FrameType.DATA, flags }, Buffer.from('x'))))).toBe('RELAY_ERR_FRAME_FLAGS');
      expect(thrownCode(() => decodeAll(rawFrame({ type: FrameType.FIN, flags })))).toBe('RELAY_ERR_FRAME_FLAGS');
    }
  });

  it('DATA over the limit -> RELAY_ERR_FRAME_TOO_LARGE (and exactly at the limit is accepted)', () => {
    const atLimit = encodeFrame(FrameType.DATA, 1, Buffer.alloc(LIMITS.maxDataBytes, 1));
    expect(decodeAll(atLimit)[0]!.payload.length).toBe(LIMITS.maxDataBytes);
    const over = encodeFrame(FrameType.DATA, 1, Buffer.alloc(LIMITS.maxDataBytes + 1, 1));
    expect(thrownCode(() => decodeAll(over))).toBe('RELAY_ERR_FRAME_TOO_LARGE');
    const small: DecodeLimits = { maxDataBytes: 16, maxOpenBytes: 1024 };
    expect(decodeAll(encodeFrame(FrameType.DATA, 1, Buffer.alloc(16)), small)).toHaveLength(1);
    expect(thrownCode(() => decodeAll(encodeFrame(FrameType.DATA, 1, Buffer.alloc(17)), small))).toBe('RELAY_ERR_FRAME_TOO_LARGE');
  });

  it('OPEN over the metadata limit -> RELAY_ERR_FRAME_TOO_LARGE', () => {
    const atLimit = encodeFrame(FrameType.OPEN, 1, Buffer.alloc(LIMITS.maxOpenBytes, 0x20));
    expect(decodeAll(atLimit)).toHaveLength(1);
    const over = encodeFrame(FrameType.OPEN, 1, Buffer.alloc(LIMITS.maxOpenBytes + 1, 0x20));
    expect(thrownCode(() => decodeAll(over))).toBe('RELAY_ERR_FRAME_TOO_LARGE');
  });

  it('empty DATA -> RELAY_ERR_FRAME_INVALID', () => {
    expect(thrownCode(() => decodeAll(rawFrame({ type: FrameType.DATA, streamId: 1, length: 0 })))).toBe('RELAY_ERR_FRAME_INVALID');
  });

  it('FIN with payload -> RELAY_ERR_FRAME_INVALID', () => {
    expect(thrownCode(() => decodeAll(rawFrame({ type: FrameType.FIN, streamId: 1 }, Buffer.from([0]))))).toBe('RELAY_ERR_FRAME_INVALID');
    expect(thrownCode(() => decodeAll(rawFrame({ type: FrameType.FIN, streamId: 1 }, u32(0))))).toBe('RELAY_ERR_FRAME_INVALID');
  });

  it('WINDOW_UPDATE with zero delta -> RELAY_ERR_FRAME_INVALID', () => {
    expect(thrownCode(() => decodeAll(rawFrame({ type: FrameType.WINDOW_UPDATE, streamId: 1 }, u32(0))))).toBe('RELAY_ERR_FRAME_INVALID');
  });

  it('WINDOW_UPDATE / RST / GOAWAY with a payload that is not 4 bytes -> RELAY_ERR_FRAME_INVALID', () => {
    for (const length of [0, 1, 3, 5, 8]) {
      const payload = Buffer.alloc(length, 1);
      expect(thrownCode(() => decodeAll(rawFrame({ type: FrameType.WINDOW_UPDATE, streamId: 1 }, payload)))).toBe(
        'RELAY_ERR_FRAME_INVALID',
      );
      expect(thrownCode(() => decodeAll(rawFrame({ type: FrameType.RST, streamId: 1 }, payload)))).toBe('RELAY_ERR_FRAME_INVALID');
      expect(thrownCode(() => decodeAll(rawFrame({ type: FrameType.GOAWAY, streamId: 0 }, payload)))).toBe('RELAY_ERR_FRAME_INVALID');
    }
  });

  it('GOAWAY on a nonzero stream -> RELAY_ERR_FRAME_INVALID', () => {
    expect(thrownCode(() => decodeAll(rawFrame({ type: FrameType.GOAWAY, streamId: 1 }, u32(0))))).toBe('RELAY_ERR_FRAME_INVALID');
    expect(thrownCode(() => decodeAll(rawFrame({ type: FrameType.GOAWAY, streamId: 0xffff_ffff }, u32(0))))).toBe(
      'RELAY_ERR_FRAME_INVALID',
    );
  });

  it('DATA (and every other stream frame) on stream 0 -> RELAY_ERR_FRAME_INVALID', () => {
    expect(thrownCode(() => decodeAll(rawFrame({ type: FrameType.DATA, streamId: 0 }, Buffer.from('x'))))).toBe('RELAY_ERR_FRAME_INVALID');
    expect(thrownCode(() => decodeAll(rawFrame({ type: FrameType.WINDOW_UPDATE, streamId: 0 }, u32(5))))).toBe('RELAY_ERR_FRAME_INVALID');
    expect(thrownCode(() => decodeAll(rawFrame({ type: FrameType.OPEN, streamId: 0 }, Buffer.from('{}'))))).toBe('RELAY_ERR_FRAME_INVALID');
    expect(thrownCode(() => decodeAll(rawFrame({ type: FrameType.FIN, streamId: 0 })))).toBe('RELAY_ERR_FRAME_INVALID');
    expect(thrownCode(() => decodeAll(rawFrame({ type: FrameType.RST, streamId: 0 }, u32(0))))).toBe('RELAY_ERR_FRAME_INVALID');
  });

  it('a malformed frame after valid ones: the valid ones are delivered in order, then the error', () => {
    const message = Buffer.concat([
      encodeFrame(FrameType.OPEN, 1, Buffer.from('{}')),
      encodeFrame(FrameType.DATA, 1, Buffer.from('abc')),
      rawFrame({ type: FrameType.DATA, streamId: 1, flags: 4 }, Buffer.from('z')),
      encodeFrame(FrameType.FIN, 1, null),
    ]);
    const frames: Frame[] = [];
    expect(thrownCode(() => decodeFrames(message, LIMITS, (f) => frames.push(f)))).toBe('RELAY_ERR_FRAME_FLAGS');
    expect(frames.map((f) => f.type)).toEqual([FrameType.OPEN, FrameType.DATA]);
  });

  it("an empty OPEN payload is a valid frame (the metadata check is decodeOpenMetadata's job)", () => {
    const frames = decodeAll(encodeFrame(FrameType.OPEN, 1, Buffer.alloc(0)));
    expect(frames).toHaveLength(1);
    expect(frames[0]!.payload.length).toBe(0);
    expect(thrownCode(() => decodeOpenMetadata(frames[0]!.payload))).toBe('RELAY_ERR_FRAME_INVALID');
  });
});

describe('decodeOpenMetadata', () => {
  const good: OpenMetadata = { clientIp: '203.0.113.7', clientPort: 51234, listenerPort: 10443, tls: true };
  const json = (v: unknown): Buffer => Buffer.from(JSON.stringify(v));

  it('accepts valid metadata and drops unknown fields', () => {
    expect(decodeOpenMetadata(json(good))).toEqual(good);
    expect(decodeOpenMetadata(json({ ...good, extra: 'x' }))).toEqual(good);
    expect(decodeOpenMetadata(Buffer.from(JSON.stringify(good).replace('{', '{"__proto__":{"tls":1},')))).toEqual(good);
    expect(decodeOpenMetadata(json({ ...good, clientIp: 'a'.repeat(64), clientPort: 0, listenerPort: 65535, tls: false }))).toEqual({
      clientIp: 'a'.repeat(64),
      clientPort: 0,
      listenerPort: 65535,
      tls: false,
    });
  });

  it('payload that is not JSON -> RELAY_ERR_FRAME_INVALID', () => {
    for (const raw of ['', 'not json', '{', '{"clientIp":', '\u0000']) {
      expect(thrownCode(() => decodeOpenMetadata(Buffer.from(raw)))).toBe('RELAY_ERR_FRAME_INVALID');
    }
    expect(thrownCode(() => decodeOpenMetadata(Buffer.from([0xff, 0xfe, 0xfd])))).toBe('RELAY_ERR_FRAME_INVALID');
  });

  it('JSON that is not an object -> RELAY_ERR_FRAME_INVALID', () => {
    for (const v of [null, 1, 'str', true, [], [good]]) {
      expect(thrownCode(() => decodeOpenMetadata(json(v)))).toBe('RELAY_ERR_FRAME_INVALID');
    }
  });

  it('missing fields -> RELAY_ERR_FRAME_INVALID', () => {
    for (const key of Object.keys(good) as (keyof OpenMetadata)[]) {
      const partial: Partial<OpenMetadata> = { ...good };
      delete partial[key];
      expect(thrownCode(() => decodeOpenMetadata(json(partial)))).toBe('RELAY_ERR_FRAME_INVALID');
    }
    expect(thrownCode(() => decodeOpenMetadata(json({})))).toBe('RELAY_ERR_FRAME_INVALID');
  });

  it('fields of the wrong type or out of range -> RELAY_ERR_FRAME_INVALID', () => {
    const bad: Record<string, unknown>[] = [
      { clientIp: '' },
      { clientIp: 'a'.repeat(65) },
      { clientIp: 42 },
      { clientIp: null },
      { clientPort: -1 },
      { clientPort: 65536 },
      { clientPort: 1.5 },
      { clientPort: '80' },
      { listenerPort: null },
      { listenerPort: 1e9 },
      { tls: 'true' },
      { tls: 1 },
      { tls: null },
    ];
    for (const patch of bad) {
      expect(
        thrownCode(() => decodeOpenMetadata(json({ ...good, ...patch }))),
        JSON.stringify(patch),
      ).toBe('RELAY_ERR_FRAME_INVALID');
    }
  });
});
