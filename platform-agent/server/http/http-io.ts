/**
 * JSON in and out for the platform server's API: bounded body reading, error bodies
 * `{"error": "<stable_code>", "message": "..."}` from the error catalog, and header parsing.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { defaults } from '../../../shared/defaults.js';
import { errorBody, RelayError } from '../../../shared/errors.js';

/** Largest JSON body the API reads (logins and admin changes are small). */
export const MAX_JSON_BODY_BYTES = defaults.platformMaxJsonBodyBytes;

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string | string[]> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
    ...headers,
  });
  res.end(text);
}

export function sendNoContent(res: ServerResponse, headers: Record<string, string | string[]> = {}): void {
  res.writeHead(204, { 'cache-control': 'no-store', ...headers });
  res.end();
}

/** Writes a RelayError as its status and JSON body (shared/errors.ts `errorBody`, as the relay does); anything else is a 500 with no detail. */
export function sendError(res: ServerResponse, err: unknown): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const { status, headers, body } = errorBody(err);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
    ...headers,
  });
  res.end(body);
}

/** Reads a whole request body up to `limit` bytes; past it, 413 (the rest of the body is drained, not kept). */
export async function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const tooLarge = (): RelayError => {
    req.resume();
    return new RelayError('RELAY_ERR_BODY_TOO_LARGE', `the request body is over ${limit} bytes`);
  };
  if (Number(req.headers['content-length'] ?? 0) > limit) throw tooLarge();
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) throw tooLarge();
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/** Reads a JSON object body up to MAX_JSON_BODY_BYTES (413 past it, 400 when it is not JSON). */
export async function readJson(req: IncomingMessage, limit = MAX_JSON_BODY_BYTES): Promise<Record<string, unknown>> {
  const body = await readBody(req, limit);
  if (body.length === 0) return {};
  let value: unknown;
  try {
    value = JSON.parse(body.toString('utf8'));
  } catch {
    throw new RelayError('PLATFORM_ERR_INVALID_JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw new RelayError('PLATFORM_ERR_INVALID_JSON', 'the request body must be a JSON object');
  return value as Record<string, unknown>;
}

/** The token of `Authorization: Bearer <token>`, or undefined. */
export function bearerToken(req: IncomingMessage): string | undefined {
  const m = /^Bearer\s+([A-Za-z0-9._~+/=-]+)\s*$/i.exec(req.headers.authorization ?? '');
  return m?.[1];
}

export function cookie(req: IncomingMessage, name: string): string | undefined {
  const header = req.headers.cookie;
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

/** A single header value; repeated headers count as absent (ambiguous). */
export function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return typeof v === 'string' && v !== '' ? v : undefined;
}

export function stringField(body: Record<string, unknown>, field: string, max = 1024): string {
  const v = body[field];
  if (typeof v !== 'string' || v === '' || v.length > max)
    throw new RelayError('PLATFORM_ERR_INVALID_REQUEST', `${field}: expected a non-empty string of at most ${max} characters`, {
      details: { field },
    });
  return v;
}
