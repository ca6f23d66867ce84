/**
 * Who may open tunnel connections, and for which platform. Each credential binds an agent to one
 * platform id, by a token (stored only as its SHA-256) or by the common name of a client
 * certificate signed by the relay's agent CA (`--agent-ca`). The relay keeps no token in clear:
 * `relay token create` prints a new token once, with the line to store.
 *
 * File format (`--agent-credentials <file>`, reloaded on SIGHUP): a JSON array of
 * `{"id": "courier-1", "platform": "courier", "token_sha256": "<64 hex>"}` and/or
 * `{"id": "courier-2", "platform": "courier", "cert_cn": "courier-2"}`.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { RelayError } from '../../shared/errors.js';

/** The platform of a relay configured with one `--agent-token` and no platform routing. */
export const DEFAULT_PLATFORM = 'default';

const ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
/** What an agent, platform or certificate id may be, in the words errors use. */
export const ID_RULE = 'expected 1-64 of A-Z a-z 0-9 . _ - (not first)';

/** Whether `value` is a valid agent, platform or certificate id. */
export function isValidId(value: unknown): value is string {
  return typeof value === 'string' && ID.test(value);
}

export interface AgentCredential {
  id: string;
  platform: string;
  /** SHA-256 of the token, 32 bytes. */
  tokenHash?: Buffer;
  /** Common name of a client certificate signed by the agent CA. */
  certCn?: string;
}

export function hashToken(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest();
}

/** A new agent token (256 bits, base64url) and the credential line that stores only its hash. */
export function createToken(id: string, platform: string): { token: string; line: Record<string, string> } {
  checkId('id', id);
  checkId('platform', platform);
  const token = randomBytes(32).toString('base64url');
  return { token, line: { id, platform, token_sha256: hashToken(token).toString('hex') } };
}

function checkId(field: string, value: unknown): string {
  if (!isValidId(value)) throw new RelayError('RELAY_ERR_CONFIG', `${field}: ${JSON.stringify(value)} is not valid; ${ID_RULE}`);
  return value;
}

/** Validates a parsed credentials file. Errors name the entry and the field. */
export function parseCredentials(value: unknown, source = 'agent credentials'): AgentCredential[] {
  if (!Array.isArray(value)) throw new RelayError('RELAY_ERR_CONFIG', `${source}: expected a JSON array of credentials`);
  const seen = new Set<string>();
  return value.map((entry: unknown, i) => {
    const where = `${source}[${i}]`;
    if (typeof entry !== 'object' || entry === null) throw new RelayError('RELAY_ERR_CONFIG', `${where}: expected an object`);
    const e = entry as Record<string, unknown>;
    for (const key of Object.keys(e))
      if (!['id', 'platform', 'token_sha256', 'cert_cn'].includes(key))
        throw new RelayError('RELAY_ERR_CONFIG', `${where}.${key}: unknown field (expected id, platform, token_sha256, cert_cn)`);
    const id = checkId(`${where}.id`, e.id);
    if (seen.has(id)) throw new RelayError('RELAY_ERR_CONFIG', `${where}.id: "${id}" appears twice`);
    seen.add(id);
    const cred: AgentCredential = { id, platform: checkId(`${where}.platform`, e.platform) };
    if (e.token_sha256 !== undefined) {
      if (typeof e.token_sha256 !== 'string' || !/^[0-9a-f]{64}$/i.test(e.token_sha256))
        throw new RelayError('RELAY_ERR_CONFIG', `${where}.token_sha256: expected 64 hex digits (relay token create prints the line)`);
      cred.tokenHash = Buffer.from(e.token_sha256, 'hex');
    }
    if (e.cert_cn !== undefined) cred.certCn = checkId(`${where}.cert_cn`, e.cert_cn);
    if (!cred.tokenHash && !cred.certCn) throw new RelayError('RELAY_ERR_CONFIG', `${where}: give token_sha256, cert_cn, or both`);
    return cred;
  });
}

export class CredentialSet {
  readonly list: readonly AgentCredential[];

  constructor(list: AgentCredential[]) {
    this.list = Object.freeze([...list]);
  }

  /** One credential for the default platform from a single token (`--agent-token`). */
  static single(tokenHash: Buffer): CredentialSet {
    return new CredentialSet([{ id: 'default', platform: DEFAULT_PLATFORM, tokenHash }]);
  }

  /**
   * The credential whose token the `Authorization: Bearer` header carries, or null. The presented
   * value is hashed whatever it is, and compared with every stored hash without stopping early,
   * so that timing tells nothing about which (if any) matched.
   */
  matchBearer(header: string | undefined): AgentCredential | null {
    const match = /^Bearer ([^\s]+)$/i.exec(header ?? '');
    const presented = hashToken(match?.[1] ?? '');
    let found: AgentCredential | null = null;
    for (const cred of this.list) {
      if (cred.tokenHash && timingSafeEqual(presented, cred.tokenHash) && match !== null && found === null) found = cred;
    }
    return found;
  }

  /** The credential bound to a verified client certificate's common name, or null. */
  matchCertificate(commonName: string | undefined): AgentCredential | null {
    if (!commonName) return null;
    return this.list.find((c) => c.certCn === commonName) ?? null;
  }

  platforms(): string[] {
    return [...new Set(this.list.map((c) => c.platform))].sort();
  }
}
