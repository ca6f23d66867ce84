/**
 * Error answers of the edge: a status and a JSON body `{"error":"<code>","message":"…"}`, as the
 * bytes of a whole HTTP/1.1 response, written on the client's socket.
 */
import { STATUS_CODES } from 'node:http';
import { describeError, publicCode, type ErrorCode } from '../../shared/errors.js';

export type ExtraHeaders = Record<string, string | number>;

/** The status, public code and message of a catalog code (500 if it has no status). */
export function errorParts(code: ErrorCode): { status: number; error: string; message: string } {
  const spec = describeError(code);
  return { status: spec.httpStatus ?? 500, error: publicCode(code), message: spec.message };
}

/**
 * A whole HTTP/1.1 error response. With `keepAlive` (the relay's `Keep-Alive: timeout=…` line, or
 * '' for none) the connection stays open; without it the response says `Connection: close`.
 */
export function rawErrorResponse(status: number, error: string, message: string, headers: ExtraHeaders = {}, keepAlive?: string): string {
  const body = JSON.stringify({ error, message });
  let head = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\ncache-control: no-store\r\n`;
  for (const [name, value] of Object.entries(headers)) head += `${name}: ${value}\r\n`;
  head += keepAlive === undefined ? 'connection: close\r\n' : `connection: keep-alive\r\n${keepAlive}`;
  return `${head}\r\n${body}`;
}

/** {@link rawErrorResponse} for a catalog code. */
export function rawCatalogResponse(code: ErrorCode, headers: ExtraHeaders = {}, keepAlive?: string): string {
  const { status, error, message } = errorParts(code);
  return rawErrorResponse(status, error, message, headers, keepAlive);
}
