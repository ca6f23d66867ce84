import { describe, expect, it } from 'vitest';
import { RelayError } from '../../../../shared/errors.js';
import { ANY_METHOD, methodNotAllowed, Router } from '../../../../platform-agent/server/http/router.js';

describe('Router', () => {
  it('matches literal paths exactly, with or without a leading slash, and nothing else', () => {
    const router = new Router<string>([
      { path: '/healthz', methods: { GET: 'health' } },
      { path: 'settings/security', methods: { GET: 'show' } },
      { path: '', methods: { GET: 'home' } },
    ]);
    expect(router.match('GET', '/healthz')).toMatchObject({ kind: 'handler', handler: 'health', params: {} });
    expect(router.match('GET', 'healthz')).toMatchObject({ kind: 'handler', handler: 'health' });
    expect(router.match('GET', 'settings/security')).toMatchObject({ kind: 'handler', handler: 'show', path: 'settings/security' });
    expect(router.match('GET', '')).toMatchObject({ kind: 'handler', handler: 'home' });
    expect(router.match('GET', '/')).toMatchObject({ kind: 'handler', handler: 'home' });
    expect(router.match('GET', '/healthz/')).toBeNull();
    expect(router.match('GET', '/Healthz')).toBeNull();
    expect(router.match('GET', '/health%7A')).toBeNull(); // literals are not decoded
    expect(router.match('GET', 'settings')).toBeNull();
    expect(router.match('GET', 'settings/security/x')).toBeNull();
  });

  it('decodes each named segment once, and gives the route data', () => {
    const router = new Router<string, { op: string }>([
      { path: 'users/:name/edit', methods: { GET: 'edit' }, data: { op: 'admin.users' } },
      { path: 'a/:x/:y', methods: { GET: 'two' }, data: { op: 'none' } },
    ]);
    expect(router.match('GET', 'users/ann/edit')).toEqual({
      kind: 'handler',
      path: 'users/:name/edit',
      handler: 'edit',
      params: { name: 'ann' },
      data: { op: 'admin.users' },
    });
    expect(router.match('GET', 'users/J%C3%BCrgen%2Fx/edit')?.params).toEqual({ name: 'Jürgen/x' });
    expect(router.match('GET', 'users/%2541/edit')?.params).toEqual({ name: '%41' }); // once, not twice
    expect(router.match('GET', 'a/1/2')?.params).toEqual({ x: '1', y: '2' });
  });

  it('does not match a named segment that is empty or does not decode', () => {
    const router = new Router<string>([
      { path: 'users/:name', methods: { GET: 'user' } },
      { path: 'users/:name/edit', methods: { GET: 'edit' } },
    ]);
    expect(router.match('GET', 'users/')).toBeNull();
    expect(router.match('GET', 'users//edit')).toBeNull();
    expect(router.match('GET', 'users/%ZZ')).toBeNull();
    expect(router.match('GET', 'users/%C3/edit')).toBeNull();
    expect(router.match('GET', 'users')).toBeNull();
  });

  it('falls through to a later route when a named segment does not decode', () => {
    const router = new Router<string>([
      { path: 'files/:name', methods: { GET: 'decoded' } },
      { path: 'files/*', methods: { GET: 'raw' } },
    ]);
    expect(router.match('GET', 'files/%ZZ')).toMatchObject({ handler: 'raw', params: { '*': '%ZZ' } });
  });

  it('gives the undecoded rest of the path to a last *, zero segments included', () => {
    const router = new Router<string>([{ path: '/admin/api/v1/*', methods: { [ANY_METHOD]: 'admin' } }]);
    expect(router.match('GET', '/admin/api/v1/users/a%2Fb')?.params).toEqual({ '*': 'users/a%2Fb' });
    expect(router.match('GET', '/admin/api/v1/')?.params).toEqual({ '*': '' });
    expect(router.match('GET', '/admin/api/v1')?.params).toEqual({ '*': '' });
    expect(router.match('GET', '/admin/api/v2')).toBeNull();
    expect(router.match('GET', '/admin/api')).toBeNull();
  });

  it('says which methods a known path allows, in table order, when the method is not one of them', () => {
    const router = new Router<string, string>([
      { path: 'users/:name', methods: { GET: 'get', PATCH: 'patch', DELETE: 'delete' }, data: 'admin.users' },
      { path: 'login', methods: { POST: 'login', [ANY_METHOD]: 'page' }, data: 'public' },
    ]);
    expect(router.match('PUT', 'users/ann')).toEqual({
      kind: 'method-not-allowed',
      path: 'users/:name',
      allowed: ['GET', 'PATCH', 'DELETE'],
      params: { name: 'ann' },
      data: 'admin.users',
    });
    expect(router.match('HEAD', 'users/ann')?.kind).toBe('method-not-allowed'); // no implicit HEAD
    expect(router.match('PATCH', 'users/ann')).toMatchObject({ kind: 'handler', handler: 'patch' });
    expect(router.match('POST', 'login')).toMatchObject({ kind: 'handler', handler: 'login' });
    expect(router.match('PUT', 'login')).toMatchObject({ kind: 'handler', handler: 'page' });
    expect(router.match('GET', 'nowhere')).toBeNull();
  });

  it('lets table order decide between patterns that both match', () => {
    const router = new Router<string>([
      { path: 'users/new', methods: { GET: 'new' } },
      { path: 'users/:name', methods: { GET: 'user', DELETE: 'delete' } },
      { path: 'api/v1/auth/login', methods: { POST: 'login' } },
      { path: 'api/*', methods: { [ANY_METHOD]: 'forward' } },
    ]);
    expect(router.match('GET', 'users/new')).toMatchObject({ handler: 'new' });
    expect(router.match('GET', 'users/newer')).toMatchObject({ handler: 'user', params: { name: 'newer' } });
    // The first match decides even when a later route has the method.
    expect(router.match('DELETE', 'users/new')).toMatchObject({ kind: 'method-not-allowed', allowed: ['GET'] });
    expect(router.match('GET', 'api/v1/auth/login')).toMatchObject({ kind: 'method-not-allowed', allowed: ['POST'] });
    expect(router.match('GET', 'api/v1/other')).toMatchObject({ handler: 'forward', params: { '*': 'v1/other' } });
    expect(router.match('GET', 'api')).toMatchObject({ handler: 'forward', params: { '*': '' } });
    expect(router.match('GET', 'apis')).toBeNull();

    const reversed = new Router<string>([
      { path: 'users/:name', methods: { GET: 'user' } },
      { path: 'users/new', methods: { GET: 'new' } },
    ]);
    expect(reversed.match('GET', 'users/new')).toMatchObject({ handler: 'user', params: { name: 'new' } });
  });

  it('refuses a malformed table when it is made', () => {
    expect(() => new Router<string>([{ path: 'a/*/b', methods: { GET: 'x' } }])).toThrow(/last segment/);
    expect(() => new Router<string>([{ path: 'a/:', methods: { GET: 'x' } }])).toThrow(/parameter name/);
    expect(() => new Router<string>([{ path: 'a/:x/:x', methods: { GET: 'x' } }])).toThrow(/twice/);
    expect(() => new Router<string>([{ path: 'a/b:c', methods: { GET: 'x' } }])).toThrow(/whole segments/);
    expect(() => new Router<string>([{ path: 'a', methods: {} }])).toThrow(/no methods/);
    expect(() => new Router<string>([{ path: 'a', methods: { get: 'x' } }])).toThrow(/bad method/);
  });

  it('makes the 405 error with the allowed list', () => {
    const err = methodNotAllowed(['GET', 'PATCH']);
    expect(err).toBeInstanceOf(RelayError);
    expect(err.code).toBe('RELAY_ERR_METHOD_NOT_ALLOWED');
    expect(err.message).toBe('use GET or PATCH');
    expect(err.details).toEqual({ allowed: ['GET', 'PATCH'] });
  });
});
