/**
 * The administrators' API under `/admin/api/v1/`: security settings, signing-key rotation, the IP
 * whitelist and blacklist, users, user groups, the operations catalog, and devices (each one's
 * last user and last login, failure count and lock; `?user=` for one user's). Every route but
 * login needs an administrator's access token (audience `platform-admin`), which also moves its
 * inactivity clock, and the operation the route belongs to (`admin.users`, `admin.settings`,
 * `admin.devices`) when the administrator is in a group.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Clock } from '../../../shared/clock.js';
import { RelayError } from '../../../shared/errors.js';
import { lineErrors } from '../../../shared/ip-rule-files.js';
import type { IpRule } from '../../../shared/ip-rules.js';
import type { RelayControl } from '../relay-control.js';
import type { Logger } from '../../../shared/logger.js';
import type { Accounts } from '../security/accounts.js';
import { userView, type UserView } from '../security/account-rules.js';
import type { AuthService } from '../security/auth.js';
import { OPERATIONS, waivedAdmin, type Groups, type Operation } from '../security/groups.js';
import type { SettingsService } from '../security/settings-service.js';
import type { TokenClaims } from '../security/tokens.js';
import type { DeviceRecord, PlatformStore, UserRecord } from '../store/store.js';
import type { AuthRoutes, RequestContext } from './auth-routes.js';
import { bearerToken, readJson, sendJson, sendNoContent } from './http-io.js';
import { IP_LISTS, type IpGuard, type IpListName, type IpListSummary } from './ip-guard.js';

export const ADMIN_PREFIX = '/admin/api/v1/';

const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());

export function deviceView(d: DeviceRecord, now: number): Record<string, unknown> {
  const locked = d.lockedUntil !== null && d.lockedUntil > now;
  return {
    device_id: d.deviceId,
    failures: d.failures,
    last_failure_at: iso(d.lastFailureAt),
    last_username: d.lastUsername,
    last_seen_at: iso(d.lastSeenAt),
    locked,
    locked_until: locked ? iso(d.lockedUntil) : null,
  };
}

function methodNotAllowed(allowed: string[]): RelayError {
  return new RelayError('RELAY_ERR_METHOD_NOT_ALLOWED', `use ${allowed.join(' or ')}`, { details: { allowed } });
}

/** The operation an admin route needs, or null when `path` is no admin route (404). */
function adminOperation(path: string): Operation | null {
  if (path === 'settings/security' || path === 'settings/security/rotate-signing-key' || path === 'settings/relay') return 'admin.settings';
  if (/^ip-rules(\/(whitelist|blacklist))?$/.test(path)) return 'admin.settings';
  if (path === 'operations' || /^(users|groups)(\/[^/]+)?$/.test(path)) return 'admin.users';
  if (/^devices(\/[^/]+)?$/.test(path)) return 'admin.devices';
  return null;
}

export class AdminRoutes {
  constructor(
    private readonly store: PlatformStore,
    private readonly auth: AuthService,
    private readonly accounts: Accounts,
    private readonly groups: Groups,
    private readonly settings: SettingsService,
    private readonly authRoutes: AuthRoutes,
    private readonly clock: Clock,
    private readonly logger: Logger,
    private readonly ipGuard: IpGuard,
    /** The relay connection the agent manages, if any. */
    private readonly relay: () => RelayControl | null,
  ) {}

  private async admin(req: IncomingMessage): Promise<TokenClaims> {
    const token = bearerToken(req);
    if (!token) throw new RelayError('PLATFORM_ERR_INVALID_TOKEN', 'an administrator access token is required');
    return this.auth.authenticate(token, 'admin');
  }

  /** Serves `path` (below ADMIN_PREFIX); false when no route matches. */
  async handle(req: IncomingMessage, res: ServerResponse, path: string, ctx: RequestContext): Promise<boolean> {
    const method = req.method ?? 'GET';
    if (path === 'auth/login') {
      if (method !== 'POST') throw methodNotAllowed(['POST']);
      await this.authRoutes.login(req, res, ctx, 'admin');
      return true;
    }
    if (path === 'auth/refresh') {
      if (method !== 'POST') throw methodNotAllowed(['POST']);
      await this.authRoutes.refresh(req, res);
      return true;
    }
    if (path === 'auth/logout') {
      if (method !== 'POST') throw methodNotAllowed(['POST']);
      await this.authRoutes.logout(req, res, 'admin');
      return true;
    }
    const operation = adminOperation(path);
    if (!operation) return false;
    const who = await this.admin(req);
    await this.groups.authorize(who.sub, operation);
    const now = this.clock.now();

    if (path === 'settings/security') {
      if (method === 'GET') return this.sendSettings(res);
      if (method !== 'PATCH') throw methodNotAllowed(['GET', 'PATCH']);
      await this.settings.update(await readJson(req), who.sub, 'api');
      return this.sendSettings(res);
    }
    if (path === 'settings/security/rotate-signing-key') {
      if (method !== 'POST') throw methodNotAllowed(['POST']);
      await this.auth.tokens.rotateKey();
      this.logger.warn({ event: 'signing_key_rotated', by: who.sub }, 'signing key rotated: every token issued before is invalid');
      sendNoContent(res);
      return true;
    }
    if (path === 'settings/relay') {
      const relay = this.relay();
      if (!relay)
        throw new RelayError('RELAY_ERR_NOT_FOUND', 'this platform server has no relay connection to manage (it runs without the agent)');
      if (method === 'PATCH') await relay.update(await readJson(req), who.sub, 'api');
      else if (method !== 'GET') throw methodNotAllowed(['GET', 'PATCH']);
      sendJson(res, 200, relay.view());
      return true;
    }
    if (path === 'ip-rules' || path.startsWith('ip-rules/')) return this.handleIpRules(req, res, method, path, who, ctx);
    if (path === 'operations') {
      if (method !== 'GET') throw methodNotAllowed(['GET']);
      sendJson(res, 200, { operations: OPERATIONS.map((op) => ({ name: op.name, roles: op.roles, description: op.description })) });
      return true;
    }
    const [collection, rawId] = path.split('/') as [string, string | undefined];
    const id = rawId === undefined ? undefined : decodeURIComponent(rawId);
    if (collection === 'groups') return this.handleGroups(req, res, method, id, who);
    const { settings } = await this.store.getSettings();
    if (collection === 'users') {
      const view = async (u: UserRecord): Promise<UserView> => userView(u, settings, now, await waivedAdmin(this.store, now));
      if (id === undefined) {
        if (method === 'GET') {
          const waived = await waivedAdmin(this.store, now);
          sendJson(res, 200, { users: (await this.store.listUsers()).map((u) => userView(u, settings, now, waived)) });
          return true;
        }
        if (method !== 'POST') throw methodNotAllowed(['GET', 'POST']);
        const body = await readJson(req);
        const user = await this.accounts.create(body as never);
        this.logger.info({ event: 'user_created', username: user.username, role: user.role, by: who.sub }, 'user created');
        sendJson(res, 201, await view(user), { location: `${ADMIN_PREFIX}users/${encodeURIComponent(user.username)}` });
        return true;
      }
      if (method === 'GET') {
        sendJson(res, 200, await view(await this.accounts.get(id)));
        return true;
      }
      if (method === 'PATCH') {
        const body = await readJson(req);
        const user = await this.accounts.update(id, body);
        this.logger.info({ event: 'user_changed', username: id, fields: Object.keys(body), by: who.sub }, 'user changed');
        sendJson(res, 200, await view(user));
        return true;
      }
      if (method === 'DELETE') {
        await this.accounts.delete(id);
        this.logger.info({ event: 'user_deleted', username: id, by: who.sub }, 'user deleted');
        sendNoContent(res);
        return true;
      }
      throw methodNotAllowed(['GET', 'PATCH', 'DELETE']);
    }
    // devices
    if (id === undefined) {
      if (method !== 'GET') throw methodNotAllowed(['GET']);
      const user = new URL(req.url ?? '/', 'http://admin.invalid').searchParams.get('user');
      if (user === '') throw new RelayError('PLATFORM_ERR_INVALID_REQUEST', 'user: give a user name', { details: { field: 'user' } });
      const devices = await this.store.listDevices(user === null ? {} : { username: user });
      sendJson(res, 200, { devices: devices.map((d) => deviceView(d, now)) });
      return true;
    }
    const device = await this.store.getDevice(id);
    if (!device) throw new RelayError('PLATFORM_ERR_DEVICE_NOT_FOUND');
    if (method === 'GET') {
      sendJson(res, 200, deviceView(device, now));
      return true;
    }
    if (method !== 'PATCH') throw methodNotAllowed(['GET', 'PATCH']);
    const body = await readJson(req);
    if (body.locked !== false || Object.keys(body).length !== 1)
      throw new RelayError('PLATFORM_ERR_INVALID_REQUEST', 'locked: only {"locked": false} (unlock) is accepted', {
        details: { field: 'locked' },
      });
    await this.store.unlockDevice(id);
    this.logger.info({ event: 'device_unlocked', deviceId: id, by: who.sub }, 'device unlocked');
    sendJson(res, 200, deviceView((await this.store.getDevice(id))!, now));
    return true;
  }

  private async handleGroups(
    req: IncomingMessage,
    res: ServerResponse,
    method: string,
    id: string | undefined,
    who: TokenClaims,
  ): Promise<true> {
    if (id === undefined) {
      if (method === 'GET') {
        sendJson(res, 200, { groups: await this.groups.list() });
        return true;
      }
      if (method !== 'POST') throw methodNotAllowed(['GET', 'POST']);
      const group = await this.groups.create(await readJson(req));
      this.logger.info({ event: 'group_created', group: group.name, role: group.role, by: who.sub }, 'user group created');
      sendJson(res, 201, await this.groups.view(group), { location: `${ADMIN_PREFIX}groups/${encodeURIComponent(group.name)}` });
      return true;
    }
    if (method === 'GET') {
      sendJson(res, 200, await this.groups.view(await this.groups.get(id)));
      return true;
    }
    if (method === 'PATCH') {
      const body = await readJson(req);
      const group = await this.groups.update(id, body);
      this.logger.info({ event: 'group_changed', group: id, fields: Object.keys(body), by: who.sub }, 'user group changed');
      sendJson(res, 200, await this.groups.view(group));
      return true;
    }
    if (method === 'DELETE') {
      await this.groups.delete(id);
      this.logger.info({ event: 'group_deleted', group: id, by: who.sub }, 'user group deleted');
      sendNoContent(res);
      return true;
    }
    throw methodNotAllowed(['GET', 'PATCH', 'DELETE']);
  }

  /**
   * `GET ip-rules` (both lists), `GET ip-rules/<list>`, `PUT ip-rules/<list>` with
   * `{"text": "...", "confirm_self_block": true?}`: the whole file, checked line by line, saved
   * atomically and in force for the next request. A change that would block the address of the
   * request making it is refused (409 ip_rules_self_block) unless confirmed.
   */
  private async handleIpRules(
    req: IncomingMessage,
    res: ServerResponse,
    method: string,
    path: string,
    who: TokenClaims,
    ctx: RequestContext,
  ): Promise<true> {
    const view = (list: IpListName): Record<string, unknown> => {
      const { text, summary } = this.ipGuard.contents(list);
      return ipListView(text, summary);
    };
    if (path === 'ip-rules') {
      if (method !== 'GET') throw methodNotAllowed(['GET']);
      sendJson(res, 200, Object.fromEntries(IP_LISTS.map((list) => [list, view(list)])));
      return true;
    }
    const list = path.slice('ip-rules/'.length) as IpListName;
    if (method === 'GET') {
      sendJson(res, 200, view(list));
      return true;
    }
    if (method !== 'PUT') throw methodNotAllowed(['GET', 'PUT']);
    // JSON escapes (each newline is \n) make the body larger than the file it carries.
    const { text, confirmSelfBlock } = ipRulesBody(await readJson(req, 2 * this.ipGuard.maxFileBytes + 4096));
    const draft = this.ipGuard.prepare(list, text);
    const blocking = this.ipGuard.blockingRule(ctx.ip, [draft]);
    if (blocking && !confirmSelfBlock) throw selfBlockError(list, ctx.ip, blocking);
    const summary = this.ipGuard.save(draft);
    this.logger[blocking ? 'warn' : 'info'](
      { event: 'ip_rules_changed', list, entries: summary.entries, by: who.sub, ...(blocking ? { selfBlocked: ctx.ip } : {}) },
      blocking ? `IP ${list} changed: it blocks the address of the administrator who saved it` : `IP ${list} changed`,
    );
    sendJson(res, 200, ipListView(draft.text, summary));
    return true;
  }

  private async sendSettings(res: ServerResponse): Promise<true> {
    const { settings } = await this.settings.get();
    sendJson(res, 200, settings);
    return true;
  }
}

/** One list as the API shows it: the file's text, the entries in force, lines skipped at load. */
function ipListView(text: string | null, summary: IpListSummary): Record<string, unknown> {
  return {
    text,
    entries: summary.entries,
    status: summary.status,
    ...(summary.error !== undefined ? { error: summary.error } : {}),
    problem_count: summary.problems.length,
    problems: lineErrors(summary.problems),
  };
}

const IP_RULES_FIELDS = new Set(['text', 'confirm_self_block']);

/** The body of `PUT ip-rules/<list>`. */
function ipRulesBody(body: Record<string, unknown>): { text: string; confirmSelfBlock: boolean } {
  const invalid = (field: string, message: string): RelayError =>
    new RelayError('PLATFORM_ERR_INVALID_REQUEST', `${field}: ${message}`, { details: { field } });
  const unknown = Object.keys(body).find((key) => !IP_RULES_FIELDS.has(key));
  if (unknown !== undefined) throw invalid(unknown, 'unknown field; expected "text" and optionally "confirm_self_block"');
  if (typeof body.text !== 'string') throw invalid('text', 'expected a string: the whole file, one entry a line (empty for an empty list)');
  const confirm = body.confirm_self_block ?? false;
  if (typeof confirm !== 'boolean') throw invalid('confirm_self_block', 'expected true or false');
  return { text: body.text, confirmSelfBlock: confirm };
}

function selfBlockError(list: IpListName, ip: string, rule: IpRule): RelayError {
  return new RelayError(
    'RELAY_ERR_IP_RULES_SELF_BLOCK',
    `the ${list} was not saved: it would block your own address ${ip} (blacklist line ${rule.line}: ${rule.text}, and no whitelist entry covers it); ` +
      'send "confirm_self_block": true to save it anyway',
    { details: { list, field: 'confirm_self_block', ip, rule: { line: rule.line, text: rule.text } } },
  );
}
