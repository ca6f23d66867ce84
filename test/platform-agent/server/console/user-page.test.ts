import { describe, expect, it } from 'vitest';
import { formatUtc } from '../../../../platform-agent/server/security/account-rules.js';
import {
  fieldMessage,
  formFields,
  newUserInput,
  userPage,
  userPatch,
  userValuesFromForm,
  userValuesFromRecord,
  type UserPageInput,
} from '../../../../platform-agent/server/console/user-page.js';
import type { UserRecord } from '../../../../platform-agent/server/store/store.js';
import { userRecord } from '../../../fixtures/records.js';

const T0 = Date.UTC(2026, 10, 23, 12, 0, 0);

const record = (over: Partial<UserRecord> = {}): UserRecord => userRecord(over);

describe('user form values and patches', () => {
  it('asks for no change when the form shows the user as stored', () => {
    const user = record({ group: 'staff', description: 'Phone', validFrom: Date.UTC(2026, 0, 1), validUntil: Date.UTC(2027, 0, 1) });
    expect(userPatch(userValuesFromRecord(user, false), user, '', false)).toEqual({});
  });

  it('keeps a validity set to the minute when the form keeps its day', () => {
    const user = record({ validUntil: Date.UTC(2027, 0, 1, 18, 30) });
    const values = userValuesFromRecord(user, false);
    expect(values.account_valid_until).toBe('2027-01-01');
    expect(userPatch(values, user, '', false)).toEqual({});
    expect(userPatch({ ...values, account_valid_until: '2027-01-02' }, user, '', false)).toEqual({ account_valid_until: '2027-01-02' });
    expect(userPatch({ ...values, account_valid_until: '' }, user, '', false)).toEqual({ account_valid_until: null });
  });

  it('sends only what changed, empty meaning none, and a password only when one was typed', () => {
    const user = record({ group: 'staff', description: 'Phone' });
    const values = { ...userValuesFromRecord(user, false), role: 'external', group: '', description: '' };
    expect(userPatch(values, user, 'new-password-1', false)).toEqual({
      role: 'external',
      group: null,
      description: null,
      password: 'new-password-1',
    });
  });

  it('changes the lock only when the box was moved from what the page showed', () => {
    const user = record();
    const shownUnlocked = userValuesFromRecord(user, false);
    // Locked by failed logins while the page was open: an untouched box leaves the lock alone.
    expect(userPatch(shownUnlocked, user, '', false)).toEqual({});
    expect(userPatch({ ...shownUnlocked, locked: true }, user, '', false)).toEqual({ locked_for_security_reasons: true });
    expect(userPatch({ ...shownUnlocked, locked: false }, user, '', true)).toEqual({ locked_for_security_reasons: false });
  });

  it('reads a form, trimming text, and turns empty fields into null for Accounts.create', () => {
    const form = new URLSearchParams(
      'username=+bob+&role=mobile&group=&description=+x+&account_valid_from=&locked_for_security_reasons=on',
    );
    const values = userValuesFromForm(form);
    expect(values).toMatchObject({ username: 'bob', description: 'x', locked: true, account_valid_until: '' });
    expect(newUserInput(values, 'pw')).toEqual({
      username: 'bob',
      password: 'pw',
      role: 'mobile',
      group: null,
      description: 'x',
      account_valid_from: null,
      account_valid_until: null,
    });
  });

  it('words validator messages for people', () => {
    expect(fieldMessage('account_valid_until', 'account_valid_until: must be after account_valid_from')).toBe(
      'Must be after “Account valid from”',
    );
    expect(formFields(true)).toContain('username');
    expect(formFields(false)).not.toContain('username');
  });
});

describe('user page', () => {
  const base = (over: Partial<UserPageInput>): UserPageInput => ({
    user: 'new',
    values: userValuesFromRecord(record(), false),
    groups: [],
    accountValidityDays: 90,
    csrf: 'token',
    error: null,
    alert: null,
    retyped: false,
    ...over,
  });

  it('escapes every value it shows and labels every input', () => {
    const user = record({ description: '"><script>alert(1)</script>' });
    const view = {
      username: 'alice',
      role: 'mobile' as const,
      group: null,
      description: user.description,
      created_at: new Date(T0).toISOString(),
      account_valid_from: null,
      account_valid_until: new Date(T0 + 90 * 86_400_000).toISOString(),
      locked_for_security_reasons: false,
      locked_until: null,
      status: 'Active',
      barcode_set: false,
    };
    const html = userPage(base({ user: { record: user, view }, values: userValuesFromRecord(user, false) }));
    expect(html).not.toContain('<script>');
    expect(html).toContain('value="&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"');
    expect(html).toContain(`In force now: valid until ${formatUtc(T0 + 90 * 86_400_000)} (the global setting)`);
    const ids = [...html.matchAll(/<(?:input|select) (?:type="(?:text|password|date|checkbox)" )?id="([^"]+)"/g)].map((m) => m[1]!);
    expect(ids).toHaveLength(11); // the user barcode joined the form (issue 14)
    for (const id of ids) expect(html, id).toContain(`<label for="${id}">`);
  });
});
