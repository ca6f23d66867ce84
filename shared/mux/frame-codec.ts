/**
 * Tunnel frame codec: bytes <-> frames. One WebSocket binary message carries one or more whole
 * frames (a frame never spans messages), which lets the sender batch a tick's frames into one
 * write. Semantics follow hashicorp/yamux `spec.md`; the layout is ours:
 *
 *   0       1       2       4               8              12
 *   +-------+-------+-------+---------------+---------------+----------------
 *   |version| type  | flags |   stream id   |    length     |  payload ...
 *   +-------+-------+-------+---------------+---------------+----------------
 *     u8      u8      u16 BE    u32 BE          u32 BE         `length` bytes
 *
 * | type          | stream id | payload                                         |
 * | DATA 0        | != 0      | 1..limit bytes of stream data                   |
 * | WINDOW_UPDATE 1 | != 0    | u32 credit delta, >= 1                          |
 * | OPEN 2        | != 0      | UTF-8 JSON object: metadata about the connection |
 * | FIN 3         | != 0      | empty: the sender will write no more            |
 * | RST 4         | != 0      | u32 reset code                                  |
 * | GOAWAY 5      | 0         | u32 code: the sender takes and opens no new streams |
 *
 * Flags are reserved and must be zero. Anything else is a protocol error with a stable code.
 */
import { RelayError } from '../errors.js';

export const FRAME_VERSION = 1;
export const HEADER_BYTES = 12;

export const FrameType = Object.freeze({
  DATA: 0,
  WINDOW_UPDATE: 1,
  OPEN: 2,
  FIN: 3,
  RST: 4,
  GOAWAY: 5,
});
export type FrameTypeValue = (typeof FrameType)[keyof typeof FrameType];

export const frameTypeName = ['DATA', 'WINDOW_UPDATE', 'OPEN', 'FIN', 'RST', 'GOAWAY'] as const;

/** What the relay tells the agent about the mobile connection behind a stream. */
export interface OpenMetadata {
  /** Client IP as the relay's socket saw it. */
  clientIp: string;
  clientPort: number;
  /** Relay listener port the client connected to (10080, 10443, ...). */
  listenerPort: number;
  /** Whether the client connection was TLS. */
  tls: boolean;
}

export interface Frame {
  type: FrameTypeValue;
  streamId: number;
  /** DATA: the bytes (a view into the message, not a copy). OPEN: the raw JSON. Empty otherwise. */
  payload: Buffer;
  /** WINDOW_UPDATE: delta; RST and GOAWAY: code; 0 otherwise. */
  value: number;
}

export interface DecodeLimits {
  /** Largest DATA payload accepted. */
  maxDataBytes: number;
  /** Largest OPEN payload accepted. */
  maxOpenBytes: number;
}

const EMPTY = Buffer.alloc(0);

/**
 * Decodes every frame in one message, calling `onFrame` for each in order. Throws a RelayError
 * (stable code) on the first malformed frame; frames before it have already been delivered.
 */
export function decodeFrames(message: Buffer, limits: DecodeLimits, onFrame: (frame: Frame) => void): void {
  let offset = 0;
  const end = message.length;
  if (end === 0) throw new RelayError('RELAY_ERR_FRAME_TRUNCATED', 'empty tunnel message');
  while (offset < end) {
    if (end - offset < HEADER_BYTES) throw new RelayError('RELAY_ERR_FRAME_TRUNCATED');
    const frame = decodeFrame(message, offset, message, offset + HEADER_BYTES, end, limits);
    offset += HEADER_BYTES + message.readUInt32BE(offset + 8);
    onFrame(frame);
  }
}

/**
 * Decodes one message as `ws` hands it over with binaryType 'fragments'. A message of two
 * fragments, a DATA frame's 12-byte header and then exactly its payload, is how a large DATA
 * frame is sent without copying it (see the session's write path): its payload is delivered as
 * it came. Any other fragmentation (a peer may fragment as it likes, RFC 6455 §5.4) is joined
 * into one buffer first.
 */
export function decodeMessage(fragments: Buffer[], limits: DecodeLimits, onFrame: (frame: Frame) => void): void {
  const [first, second] = fragments;
  if (fragments.length === 1) {
    decodeFrames(first!, limits, onFrame);
  } else if (
    fragments.length === 2 &&
    first!.length === HEADER_BYTES &&
    first![1] === FrameType.DATA &&
    first!.readUInt32BE(8) === second!.length
  ) {
    onFrame(decodeFrame(first!, 0, second!, 0, second!.length, limits));
  } else {
    decodeFrames(Buffer.concat(fragments), limits, onFrame);
  }
}

/**
 * Validates the header at `at` of `head` and reads its payload from `body` at `bodyAt` (where
 * `bodyEnd` bytes end what is there): for a whole message both are the message.
 */
function decodeFrame(head: Buffer, at: number, body: Buffer, bodyAt: number, bodyEnd: number, limits: DecodeLimits): Frame {
  const version = head[at]!;
  const type = head[at + 1]!;
  const flags = head.readUInt16BE(at + 2);
  const streamId = head.readUInt32BE(at + 4);
  const length = head.readUInt32BE(at + 8);
  if (version !== FRAME_VERSION) throw new RelayError('RELAY_ERR_FRAME_VERSION', `unsupported frame version ${version}`);
  if (type > FrameType.GOAWAY) throw new RelayError('RELAY_ERR_FRAME_TYPE', `unknown frame type ${type}`);
  if (flags !== 0) throw new RelayError('RELAY_ERR_FRAME_FLAGS');
  if (length > bodyEnd - bodyAt) throw new RelayError('RELAY_ERR_FRAME_TRUNCATED');

  let payload: Buffer = EMPTY;
  let value = 0;
  switch (type) {
    case FrameType.DATA:
      if (length > limits.maxDataBytes) {
        throw new RelayError('RELAY_ERR_FRAME_TOO_LARGE', `DATA payload of ${length} bytes exceeds ${limits.maxDataBytes}`);
      }
      if (length === 0) throw new RelayError('RELAY_ERR_FRAME_INVALID', 'empty DATA frame');
      payload = body.subarray(bodyAt, bodyAt + length);
      break;
    case FrameType.OPEN:
      if (length > limits.maxOpenBytes) {
        throw new RelayError('RELAY_ERR_FRAME_TOO_LARGE', `OPEN payload of ${length} bytes exceeds ${limits.maxOpenBytes}`);
      }
      payload = body.subarray(bodyAt, bodyAt + length);
      break;
    case FrameType.FIN:
      if (length !== 0) throw new RelayError('RELAY_ERR_FRAME_INVALID', 'FIN with a payload');
      break;
    default: // WINDOW_UPDATE, RST, GOAWAY carry one u32
      if (length !== 4) throw new RelayError('RELAY_ERR_FRAME_INVALID', `${frameTypeName[type]} payload must be 4 bytes`);
      value = body.readUInt32BE(bodyAt);
      if (type === FrameType.WINDOW_UPDATE && value === 0) {
        throw new RelayError('RELAY_ERR_FRAME_INVALID', 'WINDOW_UPDATE with a zero delta');
      }
  }
  if (type === FrameType.GOAWAY ? streamId !== 0 : streamId === 0) {
    throw new RelayError('RELAY_ERR_FRAME_INVALID', `${frameTypeName[type]} on stream ${streamId}`);
  }
  return { type: type as FrameTypeValue, streamId, payload, value };
}

/** Parses and validates OPEN metadata. Throws RELAY_ERR_FRAME_INVALID on anything unexpected. */
export function decodeOpenMetadata(payload: Buffer): OpenMetadata {
  let parsed: unknown;
  try {
    parsed = JSON.parse(payload.toString('utf8'));
  } catch {
    throw new RelayError('RELAY_ERR_FRAME_INVALID', 'OPEN metadata is not JSON');
  }
  const m = parsed as Partial<OpenMetadata> | null;
  if (
    typeof m !== 'object' ||
    m === null ||
    typeof m.clientIp !== 'string' ||
    m.clientIp.length === 0 ||
    m.clientIp.length > 64 ||
    !isPort(m.clientPort) ||
    !isPort(m.listenerPort) ||
    typeof m.tls !== 'boolean'
  ) {
    throw new RelayError('RELAY_ERR_FRAME_INVALID', 'OPEN metadata has missing or invalid fields');
  }
  return { clientIp: m.clientIp, clientPort: m.clientPort, listenerPort: m.listenerPort, tls: m.tls };
}

function isPort(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 65535;
}

/**
 * Accumulates frames and writes them into one message buffer: one allocation and one copy of
 * each payload per batch, instead of one WebSocket frame (and one `writev`) per tunnel frame.
 */
export class FrameBatch {
  private types: number[] = [];
  private ids: number[] = [];
  private values: number[] = [];
  private payloads: (Buffer | null)[] = [];
  /** Bytes the encoded batch will take. */
  byteLength = 0;

  get count(): number {
    return this.types.length;
  }

  push(type: FrameTypeValue, streamId: number, payload: Buffer | null, value = 0): void {
    this.types.push(type);
    this.ids.push(streamId);
    this.values.push(value);
    this.payloads.push(payload);
    const len = payload ? payload.length : type === FrameType.FIN ? 0 : 4;
    this.byteLength += HEADER_BYTES + len;
  }

  /** Encodes the batch and empties it. */
  take(): Buffer {
    const out = Buffer.allocUnsafe(this.byteLength);
    let offset = 0;
    for (let i = 0; i < this.types.length; i++) {
      const type = this.types[i]!;
      const payload = this.payloads[i];
      out[offset] = FRAME_VERSION;
      out[offset + 1] = type;
      out.writeUInt16BE(0, offset + 2);
      out.writeUInt32BE(this.ids[i]!, offset + 4);
      if (payload) {
        out.writeUInt32BE(payload.length, offset + 8);
        payload.copy(out, offset + HEADER_BYTES);
        offset += HEADER_BYTES + payload.length;
      } else if (type === FrameType.FIN) {
        out.writeUInt32BE(0, offset + 8);
        offset += HEADER_BYTES;
      } else {
        out.writeUInt32BE(4, offset + 8);
        out.writeUInt32BE(this.values[i]!, offset + HEADER_BYTES);
        offset += HEADER_BYTES + 4;
      }
    }
    this.types = [];
    this.ids = [];
    this.values = [];
    this.payloads = [];
    this.byteLength = 0;
    return out;
  }
}

/** The 12-byte header of a DATA frame, for a payload sent apart from it (uncopied). */
export function encodeDataHeader(streamId: number, length: number): Buffer {
  const header = Buffer.allocUnsafe(HEADER_BYTES);
  header[0] = FRAME_VERSION;
  header[1] = FrameType.DATA;
  header.writeUInt16BE(0, 2);
  header.writeUInt32BE(streamId, 4);
  header.writeUInt32BE(length, 8);
  return header;
}

/** Encodes a single frame (tests, tools). */
export function encodeFrame(type: FrameTypeValue, streamId: number, payload: Buffer | null, value = 0): Buffer {
  const batch = new FrameBatch();
  batch.push(type, streamId, payload, value);
  return batch.take();
}

export function encodeOpenMetadata(meta: OpenMetadata): Buffer {
  return Buffer.from(JSON.stringify(meta), 'utf8');
}
