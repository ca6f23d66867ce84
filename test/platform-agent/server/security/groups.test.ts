import { describe, expect, it } from 'vitest';
import {
  Groups,
  NO_OPERATION_MESSAGE,
  OPERATIONS,
  checkOperations,
  roleOperations,
  userOperations,
} from '../../../../platform-agent/server/security/groups.js';
import type { GroupRecord, UserRecord } from '../../../../platform-agent/server/store/store.js';
import { rejectsWith, throwsWith, useSecurityEnv } from './fixtures.js';
import { userRecord } from '../../../fixtures/records.js';

const env = useSecurityEnv();
const groups = (): Groups => new Groups(env().store, env().clock);

const record = (over: Partial<UserRecord> = {}): UserRecord => userRecord({ createdAt: 0, ...over });

const readers: GroupRecord = { name: 'readers', role: 'mobile', description: null, operations: ['api.read'], createdAt: 0 };

describe('groups: the operations catalog', () => {
  it('gives each role its operations; only administrators get the admin ones', () => {
    expect(OPERATIONS.map((op) => op.name)).toEqual([
      'api.read',
      'api.write',
      'profile.read',
      'admin.users',
      'admin.settings',
      'admin.devices',
    ]);
    expect(roleOperations('mobile')).toEqual(['api.read', 'api.write', 'profile.read']);
    expect(roleOperations('external')).toEqual(['api.read', 'api.write', 'profile.read']);
    expect(roleOperations('admin')).toHaveLength(6);
    for (const op of OPERATIONS) expect(op.description.length).toBeGreaterThan(10);
  });

  it('refuses an empty list with the vendor message, naming the field', () => {
    const err = throwsWith(() => checkOperations([], 'mobile'), 'PLATFORM_ERR_INVALID_REQUEST');
    expect(err.message).toBe(NO_OPERATION_MESSAGE);
    expect(NO_OPERATION_MESSAGE).toBe('A user group must have at least one operation');
    expect(err.details).toEqual({ field: 'operations' });
  });

  it('refuses unknown operations, non-arrays, and admin operations for other roles', () => {
    for (const [value, role] of [
      [['api.read', 'api.delete'], 'mobile'],
      ['api.read', 'mobile'],
      [[42], 'mobile'],
      [['admin.users'], 'external'],
    ] as const) {
      const err = throwsWith(() => checkOperations(value, role), 'PLATFORM_ERR_INVALID_REQUEST');
      expect(err.details).toEqual({ field: 'operations' });
    }
  });

  it('keeps the catalog order and drops duplicates', () => {
    expect(checkOperations(['admin.devices', 'api.read', 'admin.devices'], 'admin')).toEqual(['api.read', 'admin.devices']);
  });
});

describe("groups: a user's operations", () => {
  it('are every operation of its role without a group', () => {
    expect([...userOperations(record(), null)]).toEqual(roleOperations('mobile'));
    expect([...userOperations(record({ role: 'admin' }), null)]).toEqual(roleOperations('admin'));
  });

  it("are its group's operations, and none when the group is missing or of another role (fail closed)", () => {
    const alice = record({ group: 'readers' });
    expect([...userOperations(alice, readers)]).toEqual(['api.read']);
    expect(userOperations(alice, null).size).toBe(0);
    expect(userOperations(alice, { ...readers, role: 'external' }).size).toBe(0);
  });
});

describe('groups: administration and authorization', () => {
  it('creates a group with validated fields and refuses a duplicate name', async () => {
    const g = await groups().create({ name: 'field-crew', role: 'mobile', operations: ['profile.read', 'api.read'], description: 'crew' });
    expect(g).toMatchObject({ name: 'field-crew', role: 'mobile', operations: ['api.read', 'profile.read'], description: 'crew' });
    await rejectsWith(groups().create({ name: 'field-crew', role: 'mobile', operations: ['api.read'] }), 'PLATFORM_ERR_GROUP_EXISTS');
    for (const [body, field] of [
      [{ name: '-bad', role: 'mobile', operations: ['api.read'] }, 'name'],
      [{ name: 'g', role: 'root', operations: ['api.read'] }, 'role'],
      [{ name: 'g', role: 'mobile', operations: ['api.read'], description: 'x'.repeat(501) }, 'description'],
      [{ name: 'g', role: 'mobile', operations: ['api.read'], colour: 'red' }, 'colour'],
      [{ name: 'g', role: 'mobile' }, 'operations'],
    ] as const) {
      const err = await rejectsWith(groups().create(body), 'PLATFORM_ERR_INVALID_REQUEST');
      expect(err.details).toEqual({ field });
    }
  });

  it('refuses to change a group to no operation, with the vendor message', async () => {
    await groups().create({ name: 'readers', role: 'mobile', operations: ['api.read'] });
    const err = await rejectsWith(groups().update('readers', { operations: [] }), 'PLATFORM_ERR_INVALID_REQUEST');
    expect(err.message).toBe(NO_OPERATION_MESSAGE);
    expect((await groups().get('readers')).operations).toEqual(['api.read']);
  });

  it('checks kept operations against a new role', async () => {
    await groups().create({ name: 'ops', role: 'admin', operations: ['admin.users'] });
    const err = await rejectsWith(groups().update('ops', { role: 'mobile' }), 'PLATFORM_ERR_INVALID_REQUEST');
    expect(err.details).toEqual({ field: 'operations' });
    expect(await groups().update('ops', { role: 'mobile', operations: ['api.read'] })).toMatchObject({ role: 'mobile' });
  });

  it('puts users in groups of their role only, and refuses to delete a group in use', async () => {
    await groups().create({ name: 'readers', role: 'mobile', operations: ['api.read'] });
    const alice = await env().accounts.create({ username: 'alice', password: 'correct horse', role: 'mobile', group: 'readers' });
    expect(alice.group).toBe('readers');
    const err = await rejectsWith(
      env().accounts.create({ username: 'bob', password: 'correct horse', role: 'external', group: 'readers' }),
      'PLATFORM_ERR_INVALID_REQUEST',
    );
    expect(err.details).toEqual({ field: 'group' });
    await rejectsWith(groups().delete('readers'), 'PLATFORM_ERR_GROUP_IN_USE');
    await rejectsWith(groups().delete('nobody'), 'PLATFORM_ERR_GROUP_NOT_FOUND');
    await env().accounts.update('alice', { group: null, description: 'moved out' });
    await groups().delete('readers');
  });

  it('authorizes from the group as stored now: a change applies to the next check', async () => {
    await groups().create({ name: 'readers', role: 'mobile', operations: ['api.read'] });
    await env().accounts.create({ username: 'alice', password: 'correct horse', role: 'mobile', group: 'readers' });
    await env().addUser('bob');
    await groups().authorize('alice', 'api.read');
    const err = await rejectsWith(groups().authorize('alice', 'api.write'), 'PLATFORM_ERR_FORBIDDEN');
    expect(err.details).toEqual({ operation: 'api.write' });
    await groups().update('readers', { operations: ['api.write'] });
    await groups().authorize('alice', 'api.write');
    await rejectsWith(groups().authorize('alice', 'api.read'), 'PLATFORM_ERR_FORBIDDEN');
    // Without a group: every operation of the role, and never an admin one.
    await groups().authorize('bob', 'api.write');
    await rejectsWith(groups().authorize('bob', 'admin.users'), 'PLATFORM_ERR_FORBIDDEN');
    await rejectsWith(groups().authorize('nobody', 'api.read'), 'PLATFORM_ERR_FORBIDDEN');
  });
});

describe('groups: someone can always manage users', () => {
  it('refuses to take admin.users from the last administrator who has it, by group change or by moving the user', async () => {
    await env().addUser('root', 'admin');
    await groups().create({ name: 'auditors', role: 'admin', operations: ['admin.settings'] });
    await groups().create({ name: 'managers', role: 'admin', operations: ['admin.users', 'admin.settings'] });
    // Moving the only administrator into a group without admin.users.
    await rejectsWith(env().accounts.update('root', { group: 'auditors' }), 'PLATFORM_ERR_LAST_ADMIN');
    await env().accounts.update('root', { group: 'managers' });
    // Taking admin.users from the group the only administrator is in.
    await rejectsWith(groups().update('managers', { operations: ['admin.settings'] }), 'PLATFORM_ERR_LAST_ADMIN');
    // With a second manager, both changes are fine.
    await env().addUser('second', 'admin');
    await env().accounts.update('root', { group: 'auditors' });
    await rejectsWith(env().accounts.update('second', { locked_for_security_reasons: true }), 'PLATFORM_ERR_LAST_ADMIN');
    await rejectsWith(env().accounts.delete('second'), 'PLATFORM_ERR_LAST_ADMIN');
    // A change that takes nobody away passes, e.g. a new password.
    await env().accounts.update('second', { password: 'a new long secret' });
  });
});
