/**
 * HTTP/1.1 on the relay's edge, strict (RFC 9112): a request-head parser for what mobile clients
 * send, a response-head parser for what comes back through the tunnel, and a chunked-body reader
 * for both directions. Anything ambiguous is refused rather than guessed at, because the relay is
 * a protocol break: only a request whose framing the relay and the platform cannot read
 * differently crosses into the internal network (request smuggling, RFC 9112 §11.2).
 *
 * Refused (each an {@link HttpParseError} with a status and a stable code):
 *   - a line not ended by CRLF: bare LF or bare CR anywhere in a head (§2.2);
 *   - a request line that is not `method SP origin-form|asterisk-form SP HTTP/1.x` (§3); the
 *     absolute and authority forms (the relay is not a forward proxy); another version: 505;
 *   - whitespace before a field's colon, an empty or non-token field name, a control character or
 *     NUL in a value, obs-fold (a line starting with SP or HTAB) (§5.1, §5.2);
 *   - Content-Length that is not 1*DIGIT, given twice, or with Transfer-Encoding (§6.1, §6.3);
 *   - Transfer-Encoding other than one `chunked`, or in an HTTP/1.0 request (§6.1): 501 / 400;
 *   - chunk sizes that are not bare HEXDIG (no sign, no whitespace), or longer than 15 digits,
 *     chunk data not followed by CRLF, chunk extensions or trailers with control characters (§7.1).
 */

export type HttpErrorCode =
  | 'RELAY_ERR_BAD_REQUEST'
  | 'RELAY_ERR_HEADER_TOO_LARGE'
  | 'RELAY_ERR_VERSION_NOT_SUPPORTED'
  | 'RELAY_ERR_NOT_IMPLEMENTED'
  | 'RELAY_ERR_BAD_RESPONSE';

/** A head or body the parser refuses; `code` is a catalog code (shared/errors.ts). */
export class HttpParseError extends Error {
  readonly code: HttpErrorCode;
  constructor(code: HttpErrorCode, detail: string) {
    super(detail);
    this.name = 'HttpParseError';
    this.code = code;
  }
}

const CR = 0x0d;
const LF = 0x0a;

// field-line = field-name ":" OWS field-value OWS; field-value: VCHAR, obs-text, SP/HTAB inside
const FIELD_LINE = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*((?:[\x21-\x7e\x80-\xff](?:[ \t]*[\x21-\x7e\x80-\xff])*)?)[ \t]*$/;
const REQUEST_LINE = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([\x21-\x7e]+) HTTP\/(\d)\.(\d)$/;
const STATUS_LINE = /^HTTP\/1\.([01]) ([1-9]\d\d)(?: ([\t\x20-\x7e\x80-\xff]*))?$/;
// uri-host [ ":" port ] (RFC 9110 §7.2): reg-name, IPv4 or a bracketed IPv6 literal
const HOST = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(?::\d{0,5})?$/;
const DIGITS = /^\d{1,15}$/;

/** A parsed head: field lines in arrival order, names as sent, values without surrounding OWS. */
export interface HeadFields {
  /** [name, value, name, value, ...] */
  fields: string[];
  /** Content-Length, or -1 when absent. */
  contentLength: number;
  /** Transfer-Encoding is exactly `chunked`. */
  chunked: boolean;
  /** Lower-cased tokens of the Connection header(s). */
  connection: string[];
}

export interface RequestHead extends HeadFields {
  method: string;
  target: string;
  /** 0 for HTTP/1.0, 1 for HTTP/1.1. */
  minor: number;
  /** The one Host value ('' when an HTTP/1.0 request has none). */
  host: string;
  /** Expect header value, lower-cased ('' when absent). */
  expect: string;
  /** Upgrade header value when Connection names `upgrade` in an HTTP/1.1 request ('' otherwise). */
  upgrade: string;
}

export interface ResponseHead extends HeadFields {
  status: number;
  reason: string;
  minor: number;
  /** Transfer-Encoding present but `chunked` not its final coding: the body ends at close (§6.3). */
  otherCoding: boolean;
  /** The transfer codings as sent, lower-cased and comma-joined ('' when none). */
  transferEncoding: string;
}

/**
 * Reads a head's lines as bytes arrive, in one pass: each byte is looked at once however the
 * head is cut (a client dribbling a head one byte at a time costs what a whole head costs), and
 * only the line in progress is kept as bytes. Throws {@link HttpParseError} on a bare LF or CR,
 * or once the head passes `max` bytes. Empty lines before the first line are skipped (RFC 9112
 * §2.2) but count against the limit.
 */
export class HeadReader {
  private lines: string[] = [];
  private partial: Buffer = EMPTY_BUF;
  private partialLength = 0;
  /** Bytes of the head so far. */
  bytes = 0;
  private readonly max: number;
  private readonly bad: HttpErrorCode;
  private readonly tooLarge: HttpErrorCode;

  constructor(max: number, bad: HttpErrorCode, tooLarge: HttpErrorCode) {
    this.max = max;
    this.bad = bad;
    this.tooLarge = tooLarge;
  }

  /** Feeds `buf[start..end)`. Returns the offset just past the head once it is whole, else -1. */
  feed(buf: Buffer, start: number, end: number): number {
    let pos = start;
    while (pos < end) {
      const limit = Math.min(end, pos + (this.max - this.bytes) + 1);
      const lf = buf.indexOf(LF, pos);
      if (lf === -1 || lf >= limit) {
        const n = Math.min(end, limit) - pos;
        this.bytes += n;
        if (this.bytes > this.max) throw new HttpParseError(this.tooLarge, 'head larger than the limit');
        this.keep(buf, pos, pos + n);
        const cr = buf.indexOf(CR, pos);
        // a CR may only be the last byte so far (its LF still to come)
        if (cr !== -1 && cr < end - 1) throw new HttpParseError(this.bad, 'bare CR in the head');
        return -1;
      }
      this.bytes += lf + 1 - pos;
      if (this.bytes > this.max) throw new HttpParseError(this.tooLarge, 'head larger than the limit');
      let line: string;
      if (this.partialLength === 0) {
        if (lf === pos || buf[lf - 1] !== CR) throw new HttpParseError(this.bad, 'line not ended by CRLF');
        line = buf.toString('latin1', pos, lf - 1);
      } else {
        this.keep(buf, pos, lf);
        const p = this.partial;
        const n = this.partialLength;
        if (p[n - 1] !== CR) throw new HttpParseError(this.bad, 'line not ended by CRLF');
        line = p.toString('latin1', 0, n - 1);
        this.partialLength = 0;
        if (p.length > 4096) this.partial = EMPTY_BUF;
      }
      pos = lf + 1;
      if (line.includes('\r')) throw new HttpParseError(this.bad, 'bare CR in the head');
      if (line.length === 0) {
        if (this.lines.length > 0) return pos;
        continue; // CRLFs before the first line
      }
      this.lines.push(line);
    }
    return -1;
  }

  /** The lines of the whole head (first line first); the reader is then ready for the next head. */
  take(): string[] {
    const lines = this.lines;
    this.lines = [];
    this.bytes = 0;
    return lines;
  }

  /** Forgets a head in progress (after an error, or when its sender went away). */
  reset(): void {
    this.lines = [];
    this.bytes = 0;
    this.partialLength = 0;
  }

  /** Keeps `buf[from..to)` as part of the line in progress (the buffer grows by doubling). */
  private keep(buf: Buffer, from: number, to: number): void {
    const need = this.partialLength + (to - from);
    if (need > this.partial.length) {
      const grown = Buffer.allocUnsafe(Math.max(need, this.partial.length * 2, 256));
      this.partial.copy(grown, 0, 0, this.partialLength);
      this.partial = grown;
    }
    buf.copy(this.partial, this.partialLength, from, to);
    this.partialLength = need;
  }
}

const EMPTY_BUF = Buffer.alloc(0);

/** Reads field lines 1..n into `head`; `bad` is the code for a malformed line. */
function readFields(lines: string[], bad: HttpErrorCode): HeadFields & { host: string[]; expect: string; upgrade: string; te: string[] } {
  const fields: string[] = [];
  let contentLength = -1;
  const connection: string[] = [];
  const host: string[] = [];
  const te: string[] = [];
  let expect = '';
  let upgrade = '';
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    const c = line.charCodeAt(0);
    if (c === 0x20 || c === 0x09) throw new HttpParseError(bad, 'obs-fold (a field line starting with whitespace)');
    const m = FIELD_LINE.exec(line);
    if (!m) throw new HttpParseError(bad, 'malformed field line');
    const name = m[1]!;
    const value = m[2]!;
    fields.push(name, value);
    switch (name.length) {
      case 4:
        if (name.toLowerCase() === 'host') host.push(value);
        break;
      case 6:
        if (name.toLowerCase() === 'expect') expect = value.toLowerCase();
        break;
      case 7:
        if (name.toLowerCase() === 'upgrade') upgrade = value;
        break;
      case 10:
        if (name.toLowerCase() === 'connection') {
          for (const token of value.split(',')) {
            const t = token.trim().toLowerCase();
            if (t !== '') connection.push(t);
          }
        }
        break;
      case 14:
        if (name.toLowerCase() === 'content-length') {
          if (contentLength !== -1) throw new HttpParseError(bad, 'Content-Length given twice');
          if (!DIGITS.test(value)) throw new HttpParseError(bad, 'Content-Length is not a number');
          contentLength = Number(value);
        }
        break;
      case 17:
        if (name.toLowerCase() === 'transfer-encoding') {
          for (const token of value.split(',')) te.push(token.trim().toLowerCase());
        }
        break;
    }
  }
  return { fields, contentLength, chunked: false, connection, host, expect, upgrade, te };
}

/**
 * Reads a request head from its lines (from a {@link HeadReader}); throws {@link HttpParseError}
 * for anything RFC 9112 does not allow or the relay refuses.
 */
export function parseRequestLines(lines: string[]): RequestHead {
  const m = REQUEST_LINE.exec(lines[0]!);
  if (!m) throw new HttpParseError('RELAY_ERR_BAD_REQUEST', 'malformed request line');
  const method = m[1]!;
  const target = m[2]!;
  if (m[3] !== '1') throw new HttpParseError('RELAY_ERR_VERSION_NOT_SUPPORTED', `HTTP/${m[3]}.${m[4]}`);
  const minor = Number(m[4]);
  if (minor > 1) throw new HttpParseError('RELAY_ERR_VERSION_NOT_SUPPORTED', `HTTP/1.${minor}`);
  if (target.charCodeAt(0) !== 0x2f /* / */ && !(target === '*' && method === 'OPTIONS')) {
    // absolute-form and authority-form are for proxies (§3.2.2, §3.2.3); CONNECT is refused too
    throw new HttpParseError('RELAY_ERR_BAD_REQUEST', 'request target is not in origin form');
  }
  const f = readFields(lines, 'RELAY_ERR_BAD_REQUEST');
  // §3.2: a server MUST answer 400 to an HTTP/1.1 request without Host or with more than one
  if (f.host.length > 1 || (minor === 1 && f.host.length === 0))
    throw new HttpParseError('RELAY_ERR_BAD_REQUEST', 'exactly one Host is required');
  const host = f.host[0] ?? '';
  if (!HOST.test(host)) throw new HttpParseError('RELAY_ERR_BAD_REQUEST', 'malformed Host');
  let chunked = false;
  if (f.te.length > 0) {
    if (minor === 0) throw new HttpParseError('RELAY_ERR_BAD_REQUEST', 'Transfer-Encoding in an HTTP/1.0 request');
    if (f.contentLength !== -1) throw new HttpParseError('RELAY_ERR_BAD_REQUEST', 'both Content-Length and Transfer-Encoding');
    if (f.te.length !== 1 || f.te[0] !== 'chunked')
      throw new HttpParseError('RELAY_ERR_NOT_IMPLEMENTED', 'transfer coding other than chunked');
    chunked = true;
  }
  // a server MUST ignore Upgrade in an HTTP/1.0 request (RFC 9110 §7.8)
  const upgrade = minor === 1 && f.upgrade !== '' && f.connection.includes('upgrade') ? f.upgrade : '';
  return {
    method,
    target,
    minor,
    fields: f.fields,
    contentLength: f.contentLength,
    chunked,
    connection: f.connection,
    host,
    expect: f.expect,
    upgrade,
  };
}

/** Reads a response head (what the platform sent back) from its lines. */
export function parseResponseLines(lines: string[]): ResponseHead {
  const m = STATUS_LINE.exec(lines[0]!);
  if (!m) throw new HttpParseError('RELAY_ERR_BAD_RESPONSE', 'malformed status line');
  const f = readFields(lines, 'RELAY_ERR_BAD_RESPONSE');
  let chunked = false;
  let otherCoding = false;
  if (f.te.length > 0) {
    if (f.contentLength !== -1) throw new HttpParseError('RELAY_ERR_BAD_RESPONSE', 'both Content-Length and Transfer-Encoding');
    // chunked must be the final coding (§6.1); codings under it (gzip, chunked) are the client's to undo
    chunked = f.te[f.te.length - 1] === 'chunked';
    if (f.te.indexOf('chunked') !== f.te.length - 1 && f.te.includes('chunked')) {
      throw new HttpParseError('RELAY_ERR_BAD_RESPONSE', 'chunked applied more than once or not last');
    }
    otherCoding = !chunked;
  }
  return {
    status: Number(m[2]),
    reason: m[3] ?? '',
    minor: Number(m[1]),
    fields: f.fields,
    contentLength: f.contentLength,
    chunked,
    otherCoding,
    transferEncoding: f.te.join(', '),
    connection: f.connection,
  };
}

/** A request head at `buf[start..]` in one piece, with the bytes it took; null while incomplete. */
export function parseRequestHead(buf: Buffer, start: number, maxHeaderBytes: number): (RequestHead & { length: number }) | null {
  const reader = new HeadReader(maxHeaderBytes, 'RELAY_ERR_BAD_REQUEST', 'RELAY_ERR_HEADER_TOO_LARGE');
  const end = reader.feed(buf, start, buf.length);
  return end === -1 ? null : { ...parseRequestLines(reader.take()), length: end - start };
}

/** A response head at `buf[start..]` in one piece, with the bytes it took; null while incomplete. */
export function parseResponseHead(buf: Buffer, start: number, maxBytes: number): (ResponseHead & { length: number }) | null {
  const reader = new HeadReader(maxBytes, 'RELAY_ERR_BAD_RESPONSE', 'RELAY_ERR_BAD_RESPONSE');
  const end = reader.feed(buf, start, buf.length);
  return end === -1 ? null : { ...parseResponseLines(reader.take()), length: end - start };
}

// ---------------------------------------------------------------- chunked bodies (§7.1)

const enum Chunk {
  Size,
  Ext,
  SizeLf,
  Data,
  DataCr,
  DataLf,
  Trailer,
  TrailerLf,
  Done,
}

/** Largest chunk-size accepted: 15 hex digits keep it a safe integer. */
const MAX_SIZE_DIGITS = 15;

/**
 * Reads a chunked body incrementally. `feed` consumes bytes of `buf[start..end)` and calls
 * `onData` with each slice of chunk data (views, not copies); it returns how many bytes it
 * consumed, which is less than offered only once the body is complete (the rest belongs to the
 * next message). Throws {@link HttpParseError} (`code` as given) on bad syntax. Trailer fields are
 * checked for syntax and passed on as bytes by the caller that forwards raw (responses); the
 * request side drops them.
 */
export class ChunkedReader {
  private state = Chunk.Size;
  private digits = 0;
  private remaining = 0;
  private lineBytes = 0;
  private lineStart = true;
  private trailerBytes = 0;
  private readonly code: HttpErrorCode;
  private readonly maxTrailerBytes: number;

  constructor(code: HttpErrorCode, maxTrailerBytes: number) {
    this.code = code;
    this.maxTrailerBytes = maxTrailerBytes;
  }

  get done(): boolean {
    return this.state === Chunk.Done;
  }

  feed(buf: Buffer, start: number, end: number, onData: (buf: Buffer, start: number, end: number) => void): number {
    let i = start;
    while (i < end) {
      const c = buf[i]!;
      switch (this.state) {
        case Chunk.Size: {
          const v = hexValue(c);
          if (v >= 0) {
            if (++this.digits > MAX_SIZE_DIGITS) throw this.error('chunk size too long');
            this.remaining = this.remaining * 16 + v;
            i++;
            continue;
          }
          if (this.digits === 0) throw this.error('chunk size is not hexadecimal');
          if (c === 0x3b /* ; */) {
            this.state = Chunk.Ext;
            this.lineBytes = 0;
          } else if (c === CR) this.state = Chunk.SizeLf;
          else throw this.error('bad character after a chunk size');
          i++;
          continue;
        }
        case Chunk.Ext:
          // chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] ): printable, no CTL
          if (c === CR) this.state = Chunk.SizeLf;
          else if ((c < 0x20 && c !== 0x09) || c === 0x7f) throw this.error('control character in a chunk extension');
          else if (++this.lineBytes > 4096) throw this.error('chunk extension too long');
          i++;
          continue;
        case Chunk.SizeLf:
          if (c !== LF) throw this.error('chunk size line not ended by CRLF');
          i++;
          this.digits = 0;
          if (this.remaining === 0) {
            this.state = Chunk.Trailer;
            this.lineStart = true;
            this.lineBytes = 0;
          } else this.state = Chunk.Data;
          continue;
        case Chunk.Data: {
          const n = Math.min(this.remaining, end - i);
          onData(buf, i, i + n);
          i += n;
          this.remaining -= n;
          if (this.remaining === 0) this.state = Chunk.DataCr;
          continue;
        }
        case Chunk.DataCr:
          if (c !== CR) throw this.error('chunk data not followed by CRLF');
          this.state = Chunk.DataLf;
          i++;
          continue;
        case Chunk.DataLf:
          if (c !== LF) throw this.error('chunk data not followed by CRLF');
          this.state = Chunk.Size;
          i++;
          continue;
        case Chunk.Trailer:
          // trailer-section = *( field-line CRLF ) CRLF
          if (c === CR) {
            this.state = Chunk.TrailerLf;
          } else {
            if (this.lineStart && (c === 0x20 || c === 0x09)) throw this.error('obs-fold in a trailer');
            if ((c < 0x20 && c !== 0x09) || c === 0x7f) throw this.error('control character in a trailer');
            this.lineStart = false;
            this.lineBytes++;
          }
          if (++this.trailerBytes > this.maxTrailerBytes) throw this.error('trailers too large');
          i++;
          continue;
        case Chunk.TrailerLf:
          if (c !== LF) throw this.error('trailer line not ended by CRLF');
          i++;
          if (this.lineBytes === 0) {
            this.state = Chunk.Done;
            return i - start;
          }
          this.state = Chunk.Trailer;
          this.lineStart = true;
          this.lineBytes = 0;
          continue;
        case Chunk.Done:
          return i - start;
      }
    }
    return i - start;
  }

  private error(detail: string): HttpParseError {
    return new HttpParseError(this.code, detail);
  }
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  return -1;
}
