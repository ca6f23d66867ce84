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
import { waivedAdmin, type Groups, type Operation, type OperationSpec } from '../security/groups.js';
import type { SettingsService } from '../security/settings-service.js';
import type { TokenClaims } from '../security/tokens.js';
import type { DeviceRecord, PlatformStore, UserRecord } from '../store/store.js';
import type { AuthRoutes, RequestContext } from './auth-routes.js';
import { bearerToken, readJson, sendJson, sendNoContent } from './http-io.js';
import { methodNotAllowed, Router, type Params } from './router.js';
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

/** The server's services the admin API uses. */
export interface AdminServices {
  readonly store: PlatformStore;
  readonly auth: AuthService;
  readonly accounts: Accounts;
  readonly groups: Groups;
  readonly settings: SettingsService;
  readonly authRoutes: AuthRoutes;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly ipGuard: IpGuard;
  /** The relay connection the agent manages, if any. */
  readonly relay: () => RelayControl | null;
}

/** A request to a route that needs an administrator: who they are, and the route's decoded segments. */
interface AdminRequest {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  readonly ctx: RequestContext;
  readonly who: TokenClaims;
  readonly params: Params;
}

type AdminHandler = (r: AdminRequest) => Promise<void>;
/** A login route's handler: it needs no administrator. */
interface LoginHandler {
  readonly login: (req: IncomingMessage, res: ServerResponse, ctx: RequestContext) => Promise<void>;
}

/**
 * What a route needs besides its handler: none for the login routes; for every other one an
 * administrator's token and the `operation`. `exists` runs after the authorisation and before
 * the method check: the thing the path names must be there (its 404 comes before a 405).
 */
interface AdminRoute {
  readonly operation: Operation;
  readonly exists?: (r: AdminRequest) => Promise<void> | void;
}

/** An operation as the admin API shows it (`custom`: defined by an administrator). */
function operationView(op: OperationSpec): { name: string; roles: readonly string[]; description: string; custom: boolean } {
  return { name: op.name, roles: op.roles, description: op.description, custom: op.custom === true };
}

export class AdminRoutes {
  private readonly router: Router<AdminHandler | LoginHandler, AdminRoute | undefined>;

  constructor(private readonly s: AdminServices) {
    const { authRoutes } = s;
    const settings: AdminRoute = { operation: 'admin.settings' };
    const users: AdminRoute = { operation: 'admin.users' };
    const devices: AdminRoute = { operation: 'admin.devices' };
    // Paths below ADMIN_PREFIX, read top to bottom (the first that matches decides).
    this.router = new Router<AdminHandler | LoginHandler, AdminRoute | undefined>([
      { path: 'auth/login', methods: { POST: { login: (req, res, ctx) => authRoutes.login(req, res, ctx, 'admin') } } },
      { path: 'auth/refresh', methods: { POST: { login: (req, res) => authRoutes.refresh(req, res) } } },
      { path: 'auth/logout', methods: { POST: { login: (req, res) => authRoutes.logout(req, res, 'admin') } } },
      { path: 'settings/security', methods: { GET: this.getSettings, PATCH: this.patchSettings }, data: settings },
      { path: 'settings/security/rotate-signing-key', methods: { POST: this.rotateKey }, data: settings },
      {
        path: 'settings/relay',
        methods: { GET: this.getRelay, PATCH: this.patchRelay },
        data: { ...settings, exists: () => void this.relay() },
      },
      { path: 'ip-rules', methods: { GET: this.getIpRules }, data: settings },
      ...IP_LISTS.map((list) => ({
        path: `ip-rules/${list}`,
        methods: { GET: this.getIpList(list), PUT: this.putIpList(list) },
        data: settings,
      })),
      { path: 'operations', methods: { GET: this.getOperations, POST: this.defineOperation }, data: users },
      { path: 'operations/:name', methods: { PATCH: this.patchOperation, DELETE: this.deleteOperation }, data: users },
      { path: 'users', methods: { GET: this.listUsers, POST: this.createUser }, data: users },
      { path: 'users/:name', methods: { GET: this.getUser, PATCH: this.patchUser, DELETE: this.deleteUser }, data: users },
      { path: 'groups', methods: { GET: this.listGroups, POST: this.createGroup }, data: users },
      { path: 'groups/:name', methods: { GET: this.getGroup, PATCH: this.patchGroup, DELETE: this.deleteGroup }, data: users },
      { path: 'devices', methods: { GET: this.listDevices }, data: devices },
      {
        path: 'devices/:id',
        methods: { GET: this.getDevice, PATCH: this.patchDevice },
        data: { ...devices, exists: async (r) => void (await this.device(r.params.id!)) },
      },
    ]);
  }

  /**
   * Serves `path` (below ADMIN_PREFIX); false when no route matches (404, before any
   * authentication). A known path is authenticated, then its operation authorised, then a wrong
   * method gets 405 with the allowed list.
   */
  async handle(req: IncomingMessage, res: ServerResponse, path: string, ctx: RequestContext): Promise<boolean> {
    const match = this.router.match(req.method ?? 'GET', path);
    if (!match) return false;
    const route = match.data;
    if (route === undefined) {
      if (match.kind === 'method-not-allowed') throw methodNotAllowed(match.allowed);
      if (!('login' in match.handler)) throw new Error(`admin route ${match.path} needs an operation`);
      await match.handler.login(req, res, ctx);
      return true;
    }
    const who = await this.admin(req);
    await this.s.groups.authorize(who.sub, route.operation);
    const r: AdminRequest = { req, res, ctx, who, params: match.params };
    await route.exists?.(r);
    if (match.kind === 'method-not-allowed') throw methodNotAllowed(match.allowed);
    if ('login' in match.handler) throw new Error(`admin route ${match.path} is no login route`);
    await match.handler(r);
    return true;
  }

  private async admin(req: IncomingMessage): Promise<TokenClaims> {
    const token = bearerToken(req);
    if (!token) throw new RelayError('PLATFORM_ERR_INVALID_TOKEN', 'an administrator access token is required');
    return this.s.auth.authenticate(token, 'admin');
  }

  // settings/security, settings/security/rotate-signing-key, settings/relay

  private readonly getSettings = async ({ res }: AdminRequest): Promise<void> => {
    const { settings } = await this.s.settings.get();
    sendJson(res, 200, settings);
  };

  private readonly patchSettings = async (r: AdminRequest): Promise<void> => {
    await this.s.settings.update(await readJson(r.req), r.who.sub, 'api');
    await this.getSettings(r);
  };

  private readonly rotateKey = async ({ res, who }: AdminRequest): Promise<void> => {
    await this.s.auth.tokens.rotateKey();
    this.s.logger.warn({ event: 'signing_key_rotated', by: who.sub }, 'signing key rotated: every token issued before is invalid');
    sendNoContent(res);
  };

  private relay(): RelayControl {
    const relay = this.s.relay();
    if (!relay)
      throw new RelayError('RELAY_ERR_NOT_FOUND', 'this platform server has no relay connection to manage (it runs without the agent)');
    return relay;
  }

  private readonly getRelay = async ({ res }: AdminRequest): Promise<void> => {
    sendJson(res, 200, this.relay().view());
  };

  private readonly patchRelay = async ({ req, res, who }: AdminRequest): Promise<void> => {
    const relay = this.relay();
    await relay.update(await readJson(req), who.sub, 'api');
    sendJson(res, 200, relay.view());
  };

  // ip-rules, ip-rules/<list>: `GET ip-rules` (both lists), `GET ip-rules/<list>`, `PUT
  // ip-rules/<list>` with `{"text": "...", "confirm_self_block": true?}`: the whole file, checked
  // line by line, saved atomically and in force for the next request. A change that would block
  // the address of the request making it is refused (409 ip_rules_self_block) unless confirmed.

  private ipListView(list: IpListName): Record<string, unknown> {
    const { text, summary } = this.s.ipGuard.contents(list);
    return ipListView(text, summary);
  }

  private readonly getIpRules = async ({ res }: AdminRequest): Promise<void> => {
    sendJson(res, 200, Object.fromEntries(IP_LISTS.map((list) => [list, this.ipListView(list)])));
  };

  private getIpList(list: IpListName): AdminHandler {
    return async ({ res }) => sendJson(res, 200, this.ipListView(list));
  }

  private putIpList(list: IpListName): AdminHandler {
    return async ({ req, res, who, ctx }) => {
      const { ipGuard, logger } = this.s;
      // JSON escapes (each newline is \n) make the body larger than the file it carries.
      const { text, confirmSelfBlock } = ipRulesBody(await readJson(req, 2 * ipGuard.maxFileBytes + 4096));
      const draft = ipGuard.prepare(list, text);
      const blocking = ipGuard.blockingRule(ctx.ip, [draft]);
      if (blocking && !confirmSelfBlock) throw selfBlockError(list, ctx.ip, blocking);
      const summary = await ipGuard.commit(draft);
      logger[blocking ? 'warn' : 'info'](
        { event: 'ip_rules_changed', list, entries: summary.entries, by: who.sub, ...(blocking ? { selfBlocked: ctx.ip } : {}) },
        blocking ? `IP ${list} changed: it blocks the address of the administrator who saved it` : `IP ${list} changed`,
      );
      sendJson(res, 200, ipListView(draft.text, summary));
    };
  }

  // operations, users, users/<name>

  private readonly getOperations = async ({ res }: AdminRequest): Promise<void> => {
    sendJson(res, 200, { operations: (await this.s.groups.catalog()).map(operationView) });
  };

  private readonly defineOperation = async ({ req, res, who }: AdminRequest): Promise<void> => {
    const op = await this.s.groups.defineOperation(await readJson(req));
    this.s.logger.info({ event: 'operation_defined', operation: op.name, by: who.sub }, 'operation defined');
    sendJson(res, 201, operationView(op), { location: `${ADMIN_PREFIX}operations/${encodeURIComponent(op.name)}` });
  };

  private readonly patchOperation = async ({ req, res, who, params }: AdminRequest): Promise<void> => {
    const op = await this.s.groups.changeOperation(params.name!, await readJson(req));
    this.s.logger.info({ event: 'operation_changed', operation: op.name, by: who.sub }, 'operation changed');
    sendJson(res, 200, operationView(op));
  };

  private readonly deleteOperation = async ({ res, who, params }: AdminRequest): Promise<void> => {
    await this.s.groups.deleteOperation(params.name!);
    this.s.logger.info({ event: 'operation_deleted', operation: params.name, by: who.sub }, 'operation deleted');
    sendNoContent(res);
  };

  private async userView(u: UserRecord): Promise<UserView> {
    const now = this.s.clock.now();
    const { settings } = await this.s.store.getSettings();
    return userView(u, settings, now, await waivedAdmin(this.s.store, now));
  }

  private readonly listUsers = async ({ res }: AdminRequest): Promise<void> => {
    const { store, clock } = this.s;
    const now = clock.now();
    const { settings } = await store.getSettings();
    const waived = await waivedAdmin(store, now);
    sendJson(res, 200, { users: (await store.listUsers()).map((u) => userView(u, settings, now, waived)) });
  };

  private readonly createUser = async ({ req, res, who }: AdminRequest): Promise<void> => {
    const body = await readJson(req);
    const user = await this.s.accounts.create(body as never);
    this.s.logger.info({ event: 'user_created', username: user.username, role: user.role, by: who.sub }, 'user created');
    sendJson(res, 201, await this.userView(user), { location: `${ADMIN_PREFIX}users/${encodeURIComponent(user.username)}` });
  };

  private readonly getUser = async ({ res, params }: AdminRequest): Promise<void> => {
    sendJson(res, 200, await this.userView(await this.s.accounts.get(params.name!)));
  };

  private readonly patchUser = async ({ req, res, who, params }: AdminRequest): Promise<void> => {
    const username = params.name!;
    const body = await readJson(req);
    const user = await this.s.accounts.update(username, body);
    this.s.logger.info({ event: 'user_changed', username, fields: Object.keys(body), by: who.sub }, 'user changed');
    sendJson(res, 200, await this.userView(user));
  };

  private readonly deleteUser = async ({ res, who, params }: AdminRequest): Promise<void> => {
    const username = params.name!;
    await this.s.accounts.delete(username);
    this.s.logger.info({ event: 'user_deleted', username, by: who.sub }, 'user deleted');
    sendNoContent(res);
  };

  // groups, groups/<name>

  private readonly listGroups = async ({ res }: AdminRequest): Promise<void> => {
    sendJson(res, 200, { groups: await this.s.groups.list() });
  };

  private readonly createGroup = async ({ req, res, who }: AdminRequest): Promise<void> => {
    const { groups, logger } = this.s;
    const group = await groups.create(await readJson(req));
    logger.info({ event: 'group_created', group: group.name, role: group.role, by: who.sub }, 'user group created');
    sendJson(res, 201, await groups.view(group), { location: `${ADMIN_PREFIX}groups/${encodeURIComponent(group.name)}` });
  };

  private readonly getGroup = async ({ res, params }: AdminRequest): Promise<void> => {
    const { groups } = this.s;
    sendJson(res, 200, await groups.view(await groups.get(params.name!)));
  };

  private readonly patchGroup = async ({ req, res, who, params }: AdminRequest): Promise<void> => {
    const { groups, logger } = this.s;
    const name = params.name!;
    const body = await readJson(req);
    const group = await groups.update(name, body);
    logger.info({ event: 'group_changed', group: name, fields: Object.keys(body), by: who.sub }, 'user group changed');
    sendJson(res, 200, await groups.view(group));
  };

  private readonly deleteGroup = async ({ res, who, params }: AdminRequest): Promise<void> => {
    const name = params.name!;
    await this.s.groups.delete(name);
    this.s.logger.info({ event: 'group_deleted', group: name, by: who.sub }, 'user group deleted');
    sendNoContent(res);
  };

  // devices (`?user=` for one user's), devices/<id>

  private async device(id: string): Promise<DeviceRecord> {
    const device = await this.s.store.getDevice(id);
    if (!device) throw new RelayError('PLATFORM_ERR_DEVICE_NOT_FOUND');
    return device;
  }

  private readonly listDevices = async ({ req, res }: AdminRequest): Promise<void> => {
    const now = this.s.clock.now();
    const user = new URL(req.url ?? '/', 'http://admin.invalid').searchParams.get('user');
    if (user === '') throw new RelayError('PLATFORM_ERR_INVALID_REQUEST', 'user: give a user name', { details: { field: 'user' } });
    const devices = await this.s.store.listDevices(user === null ? {} : { username: user });
    sendJson(res, 200, { devices: devices.map((d) => deviceView(d, now)) });
  };

  private readonly getDevice = async ({ res, params }: AdminRequest): Promise<void> => {
    sendJson(res, 200, deviceView(await this.device(params.id!), this.s.clock.now()));
  };

  private readonly patchDevice = async ({ req, res, who, params }: AdminRequest): Promise<void> => {
    const id = params.id!;
    const body = await readJson(req);
    if (body.locked !== false || Object.keys(body).length !== 1)
      throw new RelayError('PLATFORM_ERR_INVALID_REQUEST', 'locked: only {"locked": false} (unlock) is accepted', {
        details: { field: 'locked' },
      });
    await this.s.store.unlockDevice(id);
    this.s.logger.info({ event: 'device_unlocked', deviceId: id, by: who.sub }, 'device unlocked');
    sendJson(res, 200, deviceView(await this.device(id), this.s.clock.now()));
  };
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
