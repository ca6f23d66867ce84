/**
 * Error answers of the edge: a status and a JSON body `{"error":"<code>","message":"…"}`
 * ({@link errorBody}, shared with the other listeners), as the bytes of a whole HTTP/1.1
 * response, written on the client's socket.
 */
import { STATUS_CODES } from 'node:http';
import { errorBody, type ErrorCode } from '../../shared/errors.js';

export type ExtraHeaders = Record<string, string | number>;

/**
 * A whole HTTP/1.1 error response for a catalog code. With `keepAlive` (the relay's
 * `Keep-Alive: timeout=…` line, or '' for none) the connection stays open; without it the
 * response says `Connection: close`.
 */
export function rawCatalogResponse(code: ErrorCode, headers: ExtraHeaders = {}, keepAlive?: string): string {
  const { status, headers: own, body } = errorBody(code);
  let head = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\ncache-control: no-store\r\n`;
  for (const [name, value] of Object.entries({ ...own, ...headers })) head += `${name}: ${value}\r\n`;
  head += keepAlive === undefined ? 'connection: close\r\n' : `connection: keep-alive\r\n${keepAlive}`;
  return `${head}\r\n${body}`;
}
