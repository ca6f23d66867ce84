/**
 * The relay connection as the platform stores it (Settings → Security → "Use Relay Server"):
 * whether the tunnel is on, the relays, the agent token, how the relay's certificate is
 * verified, and connections per relay. Validation for the admin API and the control panel, and
 * how command-line flags combine with what is stored:
 *
 * - flags seed the stored settings on the first start with `--relay` (nothing stored yet);
 * - afterwards a flag wins over the stored value for that run (logged as
 *   `relay_setting_overridden`, shown on the page), and the stored value is used again when the
 *   flag is gone;
 * - "Use Relay Server" (`enabled`) is never a flag: only the page or the API turn it off or on.
 */
import { normalizeFingerprint, parseCertificateChain } from '../../shared/certs.js';
import { defaults } from '../../shared/defaults.js';
import { RelayError } from '../../shared/errors.js';

export interface RelayConnectionSettings {
  /** "Use Relay Server". */
  enabled: boolean;
  /** Relay tunnel URLs, wss://host:port. */
  relays: string[];
  /** The agent token the relay knows by its hash; never shown or logged. */
  token: string | null;
  /** PEM CA that signed the relay's certificate (null: the system CAs). */
  relay_ca: string | null;
  /** The relay certificate's SHA-256 fingerprint (`AA:BB:…`), pinned instead of a CA. */
  relay_fingerprint: string | null;
  /** Tunnel connections per relay. */
  connections: number;
}

/** The fields a command-line flag can set. */
export type RelayFlagField = 'relays' | 'token' | 'relay_ca' | 'relay_fingerprint' | 'connections';
export type RelayFlags = Partial<Pick<RelayConnectionSettings, RelayFlagField>>;

/** The flag that sets each field (for messages). */
export const FLAG_OF: Readonly<Record<RelayFlagField, string>> = {
  relays: '--relay',
  token: '--token',
  relay_ca: '--relay-ca',
  relay_fingerprint: '--relay-fingerprint',
  connections: '--connections',
};

export const RELAY_CONFIG_KEY = 'relay_connection';
export const MAX_RELAYS = 8;
export const MIN_TOKEN_CHARS = 16;
const MAX_TOKEN_CHARS = 4096;
const MAX_CA_CHARS = 64 * 1024;

export const defaultRelayConnection: Readonly<RelayConnectionSettings> = Object.freeze({
  enabled: false,
  relays: [],
  token: null,
  relay_ca: null,
  relay_fingerprint: null,
  connections: defaults.connectionsPerRelay,
});

function invalid(field: string, message: string): RelayError {
  return new RelayError('PLATFORM_ERR_INVALID_SETTING', `${field}: ${message}`, { details: { field } });
}

/** What is wrong with a relay tunnel URL, or null when it is a good `wss://` URL. */
export function relayUrlProblem(raw: string): string | null {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return 'expected a URL such as wss://relay.dmz.example:10900';
  }
  if (url.protocol !== 'wss:') return 'the tunnel runs over TLS: use wss://host:port';
  if (url.username || url.password) return 'no user name or password in the URL: the agent token goes in its own field';
  return null;
}

/** Turns a stored document (possibly from an older version, possibly hand-edited) into settings; bad fields fall back to defaults. */
export function storedRelayConnection(value: unknown): RelayConnectionSettings | null {
  if (typeof value !== 'object' || value === null) return null;
  try {
    return applyRelayPatch(defaultRelayConnection, value, { checkEnabled: false });
  } catch {
    return null;
  }
}

/**
 * Applies a partial update (the admin API's PATCH body, or the page's form) to `current`.
 * `token` absent keeps the token; null clears it — but a change of the relays, the CA or the pin
 * needs the token given again (it would be sent to the new place). Throws PLATFORM_ERR_INVALID_SETTING
 * naming the first bad field; `current` is never changed. Turning the connection on needs a relay and a
 * token (unless `checkEnabled` is false, or the flags supply them: `effective`).
 */
export function applyRelayPatch(
  current: Readonly<RelayConnectionSettings>,
  patch: unknown,
  options: { checkEnabled?: boolean; flags?: RelayFlags } = {},
): RelayConnectionSettings {
  if (typeof patch !== 'object' || patch === null || Array.isArray(patch)) throw invalid('(body)', 'expected a JSON object');
  const next: RelayConnectionSettings = { ...current, relays: [...current.relays] };
  for (const [key, v] of Object.entries(patch as Record<string, unknown>)) {
    switch (key) {
      case 'enabled':
        if (typeof v !== 'boolean') throw invalid(key, `expected true or false, got ${JSON.stringify(v)}`);
        next.enabled = v;
        break;
      case 'relays': {
        if (!Array.isArray(v) || v.some((u) => typeof u !== 'string'))
          throw invalid(key, 'expected a list of wss:// URLs, e.g. ["wss://relay.dmz.example:10900"]');
        const list = [...new Set((v as string[]).map((u) => u.trim()).filter((u) => u !== ''))];
        if (list.length > MAX_RELAYS) throw invalid(key, `at most ${MAX_RELAYS} relays`);
        for (const u of list) {
          const problem = u.length > 2048 ? 'longer than 2048 characters' : relayUrlProblem(u);
          if (problem) throw invalid(key, `${JSON.stringify(u.slice(0, 100))}: ${problem}`);
        }
        next.relays = list;
        break;
      }
      case 'token':
        if (v === null) next.token = null;
        else if (typeof v !== 'string' || v.length < MIN_TOKEN_CHARS || v.length > MAX_TOKEN_CHARS || /\s/.test(v))
          throw invalid(
            key,
            `expected the agent token: ${MIN_TOKEN_CHARS} to ${MAX_TOKEN_CHARS} characters, no spaces (relay token create prints one)`,
          );
        else next.token = v;
        break;
      case 'relay_ca':
        if (v === null || v === '') next.relay_ca = null;
        else if (typeof v !== 'string' || v.length > MAX_CA_CHARS)
          throw invalid(key, `expected PEM text of at most ${MAX_CA_CHARS} characters`);
        else {
          try {
            parseCertificateChain(v);
          } catch {
            throw invalid(key, 'expected a PEM certificate (-----BEGIN CERTIFICATE-----), e.g. the relay CA from relay cert init');
          }
          next.relay_ca = v.trim() + '\n';
        }
        break;
      case 'relay_fingerprint':
        if (v === null || v === '') next.relay_fingerprint = null;
        else {
          const fp = typeof v === 'string' ? normalizeFingerprint(v) : null;
          if (!fp) throw invalid(key, 'expected a SHA-256 fingerprint: 64 hex digits, colons optional');
          next.relay_fingerprint = fp;
        }
        break;
      case 'connections':
        if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 64)
          throw invalid(key, `expected an integer from 1 to 64, got ${JSON.stringify(v)}`);
        next.connections = v;
        break;
      default:
        throw invalid(key, 'unknown setting');
    }
  }
  // The token goes wherever the relays are and to whoever the trust accepts: moving either needs it typed again.
  const retargeted = (['relays', 'relay_ca', 'relay_fingerprint'] as const).some(
    (k) => JSON.stringify(next[k]) !== JSON.stringify(current[k]),
  );
  const tokenGiven = Object.hasOwn(patch, 'token') || options.flags?.token !== undefined;
  if (options.checkEnabled !== false && retargeted && current.token !== null && next.token !== null && !tokenGiven)
    throw invalid('token', 'type the agent token again: a change of relay addresses, CA or pin sends it to where they now point');
  if (options.checkEnabled !== false && next.enabled) {
    const effective = { ...next, ...options.flags };
    if (effective.relays.length === 0) throw invalid('relays', 'give at least one relay to use the relay server');
    if (effective.token === null) throw invalid('token', 'give the agent token to use the relay server');
  }
  return next;
}

/** The fields whose flag value differs from the stored one (the flag wins for this run). */
export function overriddenFields(stored: RelayConnectionSettings, flags: RelayFlags): RelayFlagField[] {
  return (Object.keys(flags) as RelayFlagField[]).filter(
    (key) => flags[key] !== undefined && JSON.stringify(flags[key]) !== JSON.stringify(stored[key]),
  );
}

/** The settings as an API answer: the token never leaves, only whether there is one. */
export function relaySettingsView(s: RelayConnectionSettings): Omit<RelayConnectionSettings, 'token'> & { token_set: boolean } {
  const { token, ...rest } = s;
  return { ...rest, token_set: token !== null };
}
