/**
 * The password policy (settings `password_policy`): the Mobile SMARTS recommendation — about 8
 * characters, upper- and lower-case letters, digits — on offer; today's rule (8 characters) the
 * default and the floor. It applies to passwords set from then on.
 */
import { describe, expect, it } from 'vitest';
import { passwordPolicyProblem, recommendedPasswordPolicy } from '../../../../platform-agent/server/security/settings.js';
import { PASSWORD, rejectsWith, useSecurityEnv } from './fixtures.js';

const env = useSecurityEnv();

describe('password policy', () => {
  it('asks by default only for 8 characters, as before', async () => {
    expect((await env().settings.get()).settings.password_policy).toEqual({
      min_length: 8,
      require_mixed_case: false,
      require_digit: false,
    });
    await env().accounts.create({ username: 'alice', password: 'lowercase only', role: 'mobile' });
  });

  it('with the recommended policy, refuses a password without mixed case or a digit, naming the field and what is missing', async () => {
    await env().patchSettings({ password_policy: recommendedPasswordPolicy });
    const refused = await rejectsWith(
      env().accounts.create({ username: 'alice', password: PASSWORD, role: 'mobile' }),
      'PLATFORM_ERR_INVALID_REQUEST',
    );
    expect(refused.details?.field).toBe('password');
    expect(refused.message).toBe('password: the password policy asks for upper- and lower-case letters, a digit');
    await env().accounts.create({ username: 'alice', password: 'Correct-Horse-7', role: 'mobile' });
    // Cyrillic letters have case too.
    await env().accounts.create({ username: 'Иванов', password: 'Пароль-2026', role: 'mobile' });
    await rejectsWith(env().accounts.update('alice', { password: 'no digits Here' }), 'PLATFORM_ERR_INVALID_REQUEST');
  });

  it('keeps passwords set before the policy valid', async () => {
    await env().addUser('alice');
    await env().patchSettings({ password_policy: { ...recommendedPasswordPolicy, min_length: 12 } });
    await env().login({ username: 'alice', deviceId: 'd1' });
  });

  it('counts the length in characters and keeps 8 as the floor', async () => {
    expect(passwordPolicyProblem('Жжжжжжж1', { min_length: 8, require_mixed_case: false, require_digit: true })).toBeNull();
    expect(passwordPolicyProblem('Жжжжжж1', { min_length: 8, require_mixed_case: false, require_digit: true })).toBe(
      'the password policy asks for at least 8 characters',
    );
    const err = await rejectsWith(env().patchSettings({ password_policy: { min_length: 7 } }), 'PLATFORM_ERR_INVALID_SETTING');
    expect(err.details?.field).toBe('password_policy.min_length');
  });
});
