/**
 * Error answers of the edge: a status and a JSON body `{"error":"<code>","message":"…"}`, on a
 * `ServerResponse` or, where Node's HTTP layer has none (parser errors, refused connections,
 * upgrades), as the bytes of a whole response with `Connection: close`.
 */
import { STATUS_CODES, type ServerResponse } from 'node:http';
import { describeError, publicCode, type ErrorCode } from '../../shared/errors.js';

export type ExtraHeaders = Record<string, string | number>;

/** The status, public code and message of a catalog code (500 if it has no status). */
export function errorParts(code: ErrorCode): { status: number; error: string; message: string } {
  const spec = describeError(code);
  return { status: spec.httpStatus ?? 500, error: publicCode(code), message: spec.message };
}

/** Answers `res` with the status and JSON body of `code`. */
export function sendError(res: ServerResponse, code: ErrorCode, headers: ExtraHeaders = {}): void {
  const { status, error, message } = errorParts(code);
  const body = JSON.stringify({ error, message });
  res
    .writeHead(status, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(body),
      'cache-control': 'no-store',
      ...headers,
    })
    .end(body);
}

/** A whole HTTP/1.1 error response with `Connection: close`, to write on a raw socket. */
export function rawErrorResponse(status: number, error: string, message: string, headers: ExtraHeaders = {}): string {
  const body = JSON.stringify({ error, message });
  const head = Object.entries({
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
    ...headers,
    connection: 'close',
  })
    .map(([name, value]) => `${name}: ${value}\r\n`)
    .join('');
  return `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\n${head}\r\n${body}`;
}

/** {@link rawErrorResponse} for a catalog code. */
export function rawCatalogResponse(code: ErrorCode, headers: ExtraHeaders = {}): string {
  const { status, error, message } = errorParts(code);
  return rawErrorResponse(status, error, message, headers);
}
