/**
 * Which `Host` a local listener answers: the defence against DNS rebinding. A web page on the
 * internet can point a name it owns at 127.0.0.1 and have the browser send requests to a
 * listener that trusts its loopback bind; the `Host` header then still carries the attacker's
 * name. So a listener answers only the names and addresses it is bound to, plus names the
 * operator configured:
 *
 * - the bound address itself (`10.0.0.5`, `[fd00::5]`);
 * - for a loopback bind, `localhost`, `127.0.0.1` and `[::1]` as well;
 * - for a wildcard bind (`0.0.0.0`, `::`), any address literal of this host (the address the
 *   connection arrived on, or one of its interfaces): names must be configured;
 * - the configured names (`--admin-allowed-hosts`, `--listen-allowed-hosts`), compared without case.
 *
 * Each with or without a port; a port, when given, must be the listener's. Anything else gets
 * 421 Misdirected Request (RELAY_ERR_MISDIRECTED, RFC 9110 §15.5.20); an HTTP/1.1 request without
 * `Host` gets 400 (RFC 9112 §3.2).
 */
import type { IncomingMessage } from 'node:http';
import { isIP } from 'node:net';
import { networkInterfaces } from 'node:os';
import { configError, RelayError } from './errors.js';

/** A host name (RFC 1123 labels) as an allowed-hosts entry may give it. */
const HOST_NAME = /^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*\.?$/;

/** `127.0.0.0/8`, `::1`, `localhost` (and IPv4-mapped loopback). */
export function isLoopbackHost(host: string): boolean {
  const h = unbracket(host);
  if (h === 'localhost' || h === '::1') return true;
  const v4 = h.startsWith('::ffff:') ? h.slice(7) : h;
  return isIP(v4) === 4 && v4.startsWith('127.');
}

const unbracket = (h: string): string => h.replace(/^\[|\]$/g, '').toLowerCase();

/** An address literal in one spelling: lower case, no brackets, IPv4-mapped IPv6 as IPv4, no trailing dot. */
function canonical(host: string): string {
  const h = unbracket(host).replace(/\.$/, '');
  return h.startsWith('::ffff:') && isIP(h.slice(7)) === 4 ? h.slice(7) : h;
}

/**
 * Parses a comma-separated `--…-allowed-hosts` value: host names or address literals (IPv6 in
 * brackets or not), without ports. Throws a config error naming `option` for a bad entry.
 */
export function parseAllowedHosts(option: string, value: unknown): string[] {
  if (value === undefined || value === null || value === '') return [];
  const entries = String(value)
    .split(',')
    .map((e) => e.trim())
    .filter((e) => e !== '');
  for (const entry of entries) {
    const h = canonical(entry);
    if (isIP(h) === 0 && !HOST_NAME.test(h))
      throw configError(
        option,
        value,
        `"${entry}" is not a host name or an address; give names such as status.dmz.example, comma-separated`,
      );
  }
  return entries.map(canonical);
}

/** Splits a Host header into host and port; null when it is not `host[:port]` or `[v6][:port]`. */
function splitHost(header: string): { host: string; port: number | null } | null {
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:[\]]+)(?::(\d{1,5}))?$/.exec(header);
  if (!m) return null;
  return { host: canonical(m[1]!), port: m[2] === undefined ? null : Number(m[2]) };
}

/** This host's interface addresses, canonical. */
function interfaceAddresses(): Set<string> {
  const out = new Set<string>();
  for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) out.add(canonical(a.address.split('%', 1)[0]!));
  return out;
}

/** Decides, per request, whether a listener bound to `bindHost` serves the request's `Host`. */
export class HostCheck {
  private readonly bind: string;
  private readonly wildcard: boolean;
  private readonly allowed: Set<string>;

  /** `bindHost`: what the listener was given to bind (an address, `localhost`, or a wildcard); `configured`: from parseAllowedHosts. */
  constructor(bindHost: string, configured: readonly string[] = []) {
    this.bind = canonical(bindHost);
    this.wildcard = this.bind === '0.0.0.0' || this.bind === '::' || this.bind === '';
    this.allowed = new Set(configured.map(canonical));
    this.allowed.add(this.bind);
    if (isLoopbackHost(this.bind)) for (const name of ['localhost', '127.0.0.1', '::1']) this.allowed.add(name);
  }

  /** True when `req` may be served; its port, when the Host names one, must be the one the connection arrived on. */
  allows(req: IncomingMessage): boolean {
    const header = req.headers.host;
    if (header === undefined || header === '') return false;
    const parsed = splitHost(header.trim());
    if (!parsed) return false;
    if (parsed.port !== null && parsed.port !== req.socket.localPort) return false;
    if (this.allowed.has(parsed.host)) return true;
    if (!this.wildcard || isIP(parsed.host) === 0) return false;
    const local = canonical(req.socket.localAddress ?? '');
    return parsed.host === local || interfaceAddresses().has(parsed.host);
  }

  /** Throws RELAY_ERR_BAD_REQUEST (no Host on HTTP/1.1) or RELAY_ERR_MISDIRECTED when `req` may not be served. */
  check(req: IncomingMessage): void {
    if (this.allows(req)) return;
    if ((req.headers.host ?? '') === '') {
      // HTTP/1.0 has no Host to check; no browser sends such a request, so no page can rebind it.
      if (req.httpVersion === '1.0') return;
      throw new RelayError('RELAY_ERR_BAD_REQUEST', 'the request has no Host header (required in HTTP/1.1)');
    }
    throw new RelayError('RELAY_ERR_MISDIRECTED');
  }
}
