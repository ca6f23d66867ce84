/**
 * User groups and the operations they grant. A group has a role and a non-empty list of
 * operations from one fixed catalog; a user in a group may do only those (and only those its role
 * allows), a user without a group every operation of its role. The routes name the operation a
 * request needs and call `authorize`, which reads the user and its group from the store on every
 * request: a group changed while tokens live takes effect at once. Nothing here knows HTTP.
 */
import type { Clock } from '../../../shared/clock.js';
import { RelayError } from '../../../shared/errors.js';
import {
  ROLES,
  type CustomOperationRecord,
  type GroupPatch,
  type GroupRecord,
  type PlatformStore,
  type Role,
  type UserRecord,
} from '../store/store.js';
import { accountActive, accountWindow, checkDescription, checkName, checkRole, invalid, userLockActive } from './account-rules.js';

export interface OperationSpec {
  name: string;
  /** Roles whose groups may hold it (and whose users without a group have it). */
  roles: readonly Role[];
  description: string;
  /** Defined by an administrator (not built in). */
  custom?: boolean;
}

/** The built-in operations: the only place they are defined. Administrators add their own beside them (`Groups.defineOperation`). */
export const OPERATIONS = Object.freeze([
  { name: 'api.read', roles: ROLES, description: 'Read through the API: GET, HEAD and OPTIONS on /api/ routes forwarded to the backend' },
  { name: 'api.write', roles: ROLES, description: 'Change through the API: any other method on /api/ routes forwarded to the backend' },
  { name: 'profile.read', roles: ROLES, description: 'See its own identity: GET /api/v1/me' },
  { name: 'admin.users', roles: ['admin'], description: 'Manage users and groups in the admin API (users, groups, operations)' },
  { name: 'admin.settings', roles: ['admin'], description: 'Change security settings and IP rules, rotate the signing key (admin API)' },
  { name: 'admin.devices', roles: ['admin'], description: 'See devices and clear their locks in the admin API' },
] as const satisfies readonly OperationSpec[]);

export type Operation = (typeof OPERATIONS)[number]['name'];

/** The vendor's wording, kept exactly. */
export const NO_OPERATION_MESSAGE = 'A user group must have at least one operation';

const byName = new Map<string, OperationSpec>(OPERATIONS.map((op) => [op.name, op]));

export function isOperation(name: string): name is Operation {
  return byName.has(name);
}

/**
 * Roles whose groups may hold an operation an administrator defined (a document type of Mobile
 * SMARTS: what devices and integrations do; administrators' own operations are the built-in ones).
 */
export const CUSTOM_OPERATION_ROLES: readonly Role[] = Object.freeze(['mobile', 'external'] as Role[]);

/** Prefixes of the built-in operations: no operation an administrator defines may use them. */
const RESERVED_PREFIXES = ['api.', 'admin.', 'profile.'];
const CUSTOM_NAME = /^[a-z][a-z0-9_-]*(?:\.[a-z0-9_-]+)*$/;
const MAX_OPERATION_CHARS = 64;

/**
 * The name of an operation an administrator defines: 1-64 lower-case ASCII letters, digits, `_`
 * and `-`, dot-separated (`doc.receipt`, `inventory`) — it travels in the X-Platform-Operations
 * header to backends — not one of the built-in prefixes.
 */
export function checkOperationName(name: unknown): string {
  if (typeof name !== 'string' || name.length > MAX_OPERATION_CHARS || !CUSTOM_NAME.test(name))
    throw invalid(
      'name',
      `expected 1-${MAX_OPERATION_CHARS} lower-case letters, digits, _ and -, in dot-separated parts (e.g. doc.receipt)`,
    );
  if (RESERVED_PREFIXES.some((p) => name.startsWith(p)) || isOperation(name))
    throw invalid('name', `the prefixes ${RESERVED_PREFIXES.join(' ')} are the built-in operations'`);
  return name;
}

/** The catalog: the built-in operations, then those administrators defined. */
export function catalogOf(custom: readonly CustomOperationRecord[]): OperationSpec[] {
  return [
    ...OPERATIONS,
    ...custom.map((op) => ({ name: op.name, roles: CUSTOM_OPERATION_ROLES, description: op.description ?? '', custom: true })),
  ];
}

/** Every operation a role allows: what a user of that role without a group may do. */
export function roleOperations(role: Role, catalog: readonly OperationSpec[] = OPERATIONS): string[] {
  return catalog.filter((op) => (op.roles as readonly Role[]).includes(role)).map((op) => op.name);
}

/**
 * A group's operations: a non-empty array of catalog names, each allowed for `role`. Duplicates
 * are dropped; the order is the catalog's. Empty: 400 with the vendor's message.
 */
export function checkOperations(value: unknown, role: Role, catalog: readonly OperationSpec[] = OPERATIONS): string[] {
  const known = new Map(catalog.map((op) => [op.name, op]));
  if (!Array.isArray(value)) throw invalid('operations', 'expected an array of operation names');
  if (value.length === 0) throw new RelayError('PLATFORM_ERR_INVALID_REQUEST', NO_OPERATION_MESSAGE, { details: { field: 'operations' } });
  const names = new Set<string>();
  for (const name of value as unknown[]) {
    if (typeof name !== 'string' || !known.has(name))
      throw invalid('operations', `unknown operation ${JSON.stringify(name)}; expected some of ${catalog.map((op) => op.name).join(', ')}`);
    if (!(known.get(name)!.roles as readonly Role[]).includes(role))
      throw invalid(
        'operations',
        `${name} is not allowed for role ${role}; a ${role} group may hold ${roleOperations(role, catalog).join(', ')}`,
      );
    names.add(name);
  }
  return catalog.filter((op) => names.has(op.name)).map((op) => op.name);
}

/** What `user` may do: its group's operations (within its role), or every operation of its role without a group. */
export function userOperations(user: UserRecord, group: GroupRecord | null, catalog: readonly OperationSpec[] = OPERATIONS): Set<string> {
  const allowed = roleOperations(user.role, catalog);
  if (user.group === null) return new Set(allowed);
  // A group that vanished or changed role grants nothing (fail closed); the store prevents both while users remain.
  if (!group || group.name !== user.group || group.role !== user.role) return new Set();
  return new Set(allowed.filter((op) => group.operations.includes(op)));
}

/**
 * Administrators who could still manage users (admin role, no security lock in force, account
 * valid now, `admin.users` among their operations) once `change` is applied: a user changed or deleted (`after` null), or a
 * group changed. Zero means the HTTP API would have nobody left to manage accounts.
 */
export async function userManagersAfter(
  store: PlatformStore,
  now: number,
  change: { user?: { username: string; after: UserRecord | null }; group?: GroupRecord },
): Promise<number> {
  let count = 0;
  const { settings } = await store.getSettings();
  for (const current of await store.listUsers()) {
    const user = change.user && change.user.username === current.username ? change.user.after : current;
    if (!user || user.role !== 'admin') continue;
    if (userLockActive(user, now) || !accountActive(user, settings, now)) continue;
    const group =
      user.group === null ? null : change.group && change.group.name === user.group ? change.group : await store.getGroup(user.group);
    if (userOperations(user, group).has('admin.users')) count++;
  }
  return count;
}

/**
 * Is `username` the last administrator who can manage users: an admin holding `admin.users`
 * (its own lock aside) while no other administrator could manage users? That one may never be
 * locked out of the internal listener or expired.
 */
export async function isLastUserManager(store: PlatformStore, now: number, username: string): Promise<boolean> {
  const user = await store.getUser(username);
  if (!user || user.role !== 'admin') return false;
  const group = user.group === null ? null : await store.getGroup(user.group);
  if (!userOperations(user, group).has('admin.users')) return false;
  return (await userManagersAfter(store, now, { user: { username, after: null } })) === 0;
}

/**
 * Is account validity waived for `user`? Only while no administrator who can manage users (no
 * lock in force) is valid, and then for exactly one of them: the last one, the one whose validity
 * ended last (not yet begun counts as later; ties: the oldest account, then the name). So the last
 * administrator is never expired, by its own dates or by the global `account_validity_days`,
 * while every other administrator's validity applies.
 */
export async function validityWaived(store: PlatformStore, user: UserRecord, now: number): Promise<boolean> {
  if (user.role !== 'admin' || userLockActive(user, now)) return false;
  return (await waivedAdmin(store, now)) === user.username;
}

/** The administrator whose validity is waived now (see validityWaived), or null while one who can manage users is valid. */
export async function waivedAdmin(store: PlatformStore, now: number): Promise<string | null> {
  const { settings } = await store.getSettings();
  let last: { user: UserRecord; end: number } | null = null;
  for (const candidate of await store.listUsers()) {
    if (candidate.role !== 'admin' || userLockActive(candidate, now)) continue;
    const group = candidate.group === null ? null : await store.getGroup(candidate.group);
    if (!userOperations(candidate, group).has('admin.users')) continue;
    if (accountActive(candidate, settings, now)) return null;
    const window = accountWindow(candidate, settings);
    const end = window.from !== null && window.from > now ? Infinity : (window.until ?? Infinity);
    const later =
      last === null ||
      end > last.end ||
      (end === last.end &&
        (candidate.createdAt < last.user.createdAt ||
          (candidate.createdAt === last.user.createdAt && candidate.username < last.user.username)));
    if (later) last = { user: candidate, end };
  }
  return last?.user.username ?? null;
}

const noUserManager = (): RelayError => new RelayError('PLATFORM_ERR_LAST_ADMIN');

/** The `PlatformStore.exclusive` section every change that may take away an administrator able to manage users runs in (check and write). */
export const USER_MANAGERS = 'user-managers';

/**
 * Throws PLATFORM_ERR_LAST_ADMIN when `change` would take away the last administrator able to manage
 * users. A change that takes nobody away (a new password for a locked last admin, say) passes.
 */
export async function keepUserManager(store: PlatformStore, now: number, change: Parameters<typeof userManagersAfter>[2]): Promise<void> {
  if ((await userManagersAfter(store, now, change)) > 0) return;
  if ((await userManagersAfter(store, now, {})) > 0) throw noUserManager();
}

export interface GroupView {
  name: string;
  role: Role;
  description: string | null;
  operations: string[];
  users: number;
  created_at: string;
}

export function groupView(group: GroupRecord, users: number): GroupView {
  return {
    name: group.name,
    role: group.role,
    description: group.description,
    operations: [...group.operations],
    users,
    created_at: new Date(group.createdAt).toISOString(),
  };
}

export interface NewGroup {
  name: unknown;
  role: unknown;
  operations: unknown;
  description?: unknown;
}

function checkBody(body: unknown, allowed: string[]): Record<string, unknown> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw invalid('(body)', 'expected a JSON object');
  for (const key of Object.keys(body)) if (!allowed.includes(key)) throw invalid(key, `unknown field; expected ${allowed.join(', ')}`);
  return body as Record<string, unknown>;
}

/** Group administration and the per-request operation check; used by the admin API, the routes and the CLI alike. */
export class Groups {
  constructor(
    private readonly store: PlatformStore,
    private readonly clock: Clock,
  ) {}

  async create(body: unknown): Promise<GroupRecord> {
    const input = checkBody(body, ['name', 'role', 'operations', 'description']) as Partial<NewGroup>;
    const name = checkName('name', input.name);
    const role = checkRole(input.role);
    const group: GroupRecord = {
      name,
      role,
      description: input.description === undefined ? null : checkDescription(input.description),
      operations: checkOperations(input.operations, role, await this.catalog()),
      createdAt: this.clock.now(),
    };
    await this.store.createGroup(group);
    return group;
  }

  async get(name: string): Promise<GroupRecord> {
    const group = await this.store.getGroup(name);
    if (!group) throw new RelayError('PLATFORM_ERR_GROUP_NOT_FOUND', `no such group: ${name}`);
    return group;
  }

  async list(): Promise<GroupView[]> {
    const groups = await this.store.listGroups();
    return Promise.all(groups.map(async (g) => groupView(g, await this.store.countUsersInGroup(g.name))));
  }

  async view(group: GroupRecord): Promise<GroupView> {
    return groupView(group, await this.store.countUsersInGroup(group.name));
  }

  /**
   * Applies a change of `role`, `operations` and/or `description`. The operations (new or kept)
   * must suit the resulting role; a new role is refused while the group has users (409 group_in_use).
   */
  async update(name: string, body: unknown): Promise<GroupRecord> {
    const input = checkBody(body, ['role', 'operations', 'description']);
    const cur = await this.get(name);
    const patch: GroupPatch = {};
    if (input.role !== undefined) patch.role = checkRole(input.role);
    const role = patch.role ?? cur.role;
    if (input.operations !== undefined || role !== cur.role)
      patch.operations = checkOperations(input.operations ?? cur.operations, role, await this.catalog());
    if (input.description !== undefined) patch.description = checkDescription(input.description);
    const write = async (): Promise<GroupRecord | null> => {
      if (cur.role === 'admin') await keepUserManager(this.store, this.clock.now(), { group: { ...cur, ...patch } });
      return this.store.updateGroup(name, patch);
    };
    const next = cur.role === 'admin' ? await this.store.exclusive(USER_MANAGERS, write) : await write();
    if (!next) throw new RelayError('PLATFORM_ERR_GROUP_NOT_FOUND', `no such group: ${name}`);
    return next;
  }

  /** Deletes a group without users (409 group_in_use otherwise, decided in the store's transaction). */
  async delete(name: string): Promise<void> {
    if (!(await this.store.deleteGroup(name))) throw new RelayError('PLATFORM_ERR_GROUP_NOT_FOUND', `no such group: ${name}`);
  }

  /**
   * Throws 403 PLATFORM_ERR_FORBIDDEN unless `username` may do `operation` now (its group as
   * stored at this moment); returns every operation the user has, in catalog order (what the
   * gateway tells backends in X-Platform-Operations).
   */
  async authorize(username: string, operation: Operation): Promise<string[]> {
    // The account a token acts as (always authenticated just before, which read it the same way: one read per request).
    const user = await this.store.getLoginUser(username);
    const group = user?.group ? await this.store.getGroup(user.group) : null;
    const catalog = await this.catalog();
    const operations = user ? userOperations(user, group, catalog) : new Set<string>();
    if (!operations.has(operation))
      throw new RelayError('PLATFORM_ERR_FORBIDDEN', `this account may not do that: it lacks the operation ${operation}`, {
        details: { operation },
      });
    return catalog.filter((op) => operations.has(op.name)).map((op) => op.name);
  }

  /** The operations catalog: built in, then those administrators defined. */
  async catalog(): Promise<OperationSpec[]> {
    return catalogOf(await this.store.listCustomOperations());
  }

  /** Defines an operation beside the built-in ones: `{name, description}`. */
  async defineOperation(body: unknown): Promise<OperationSpec> {
    const input = checkBody(body, ['name', 'description']);
    const op: CustomOperationRecord = {
      name: checkOperationName(input.name),
      description: input.description === undefined ? null : checkDescription(input.description),
      createdAt: this.clock.now(),
    };
    await this.store.createCustomOperation(op);
    return catalogOf([op]).at(-1)!;
  }

  /** Changes the description of an operation an administrator defined (a built-in one is not found). */
  async changeOperation(name: string, body: unknown): Promise<OperationSpec> {
    const input = checkBody(body, ['description']);
    const description = input.description === undefined ? null : checkDescription(input.description);
    const op = await this.store.updateCustomOperation(name, description);
    if (!op) throw new RelayError('PLATFORM_ERR_OPERATION_NOT_FOUND', `no operation defined by an administrator is named ${name}`);
    return catalogOf([op]).at(-1)!;
  }

  /** Deletes an operation an administrator defined; refused while a group holds it (409 operation_in_use). */
  async deleteOperation(name: string): Promise<void> {
    if (!(await this.store.deleteCustomOperation(name)))
      throw new RelayError('PLATFORM_ERR_OPERATION_NOT_FOUND', `no operation defined by an administrator is named ${name}`);
  }
}
