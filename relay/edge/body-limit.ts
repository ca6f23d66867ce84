/**
 * The request body limit (`--max-body-bytes`), decided in one place for both framings: a declared
 * `Content-Length` is checked when the head is in, a chunked body as its bytes are decoded. Past
 * the limit the request gets 413 `body_too_large` and the connection closes; the refusal is
 * counted and logged by {@link ConnectionHost.reject} under {@link BODY_TOO_LARGE.reason}.
 */
import type { ErrorCode } from '../../shared/errors.js';
import type { EdgeRejectReason } from './edge-stats.js';

/** What a request over the limit gets: its catalog code (413) and the reason it is counted under. */
export const BODY_TOO_LARGE: { readonly code: ErrorCode; readonly reason: EdgeRejectReason } = Object.freeze({
  code: 'RELAY_ERR_BODY_TOO_LARGE',
  reason: 'body_too_large',
});

/** Whether `bytes` of request body (declared, or decoded so far) are past `maxBodyBytes`; 0 = no limit. */
export function overBodyLimit(maxBodyBytes: number, bytes: number): boolean {
  return maxBodyBytes > 0 && bytes > maxBodyBytes;
}
