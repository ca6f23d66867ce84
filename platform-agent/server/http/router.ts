/**
 * The route table of one HTTP surface (the platform server's own paths, the admin API, the
 * control panel): routes read top to bottom, each a path pattern, a handler per method and
 * optional data of the surface's own (the operation the route needs, say).
 *
 * Patterns are `/`-separated segments; a leading `/` is ignored on patterns and paths alike.
 * - a literal segment matches itself exactly (no decoding, case counts);
 * - `:name` matches one non-empty segment, percent-decoded once into `params.name`; a segment
 *   that does not decode does not match (nor does an empty one);
 * - `*`, last only, matches the rest of the path (zero or more segments) into `params['*']`,
 *   undecoded: a surface mounted there matches it against its own table.
 *
 * The first route whose pattern matches decides: table order breaks ties (`users/new` before
 * `users/:name`). If that route has no handler for the method (and no `*` handler for any
 * method), the match says so with the methods it does have, in the order the table gives them.
 * There is no implicit HEAD or OPTIONS: a surface lists every method it serves.
 */
import { RelayError } from '../../../shared/errors.js';

/** The method key whose handler serves every method a route has no handler of its own for. */
export const ANY_METHOD = '*';

/** Decoded `:name` segments by name, and `*` for the undecoded rest. */
export type Params = Readonly<Record<string, string>>;

interface RouteBase<H> {
  /** `users/:name/edit`, `admin/api/v1/*`, `` (the empty path). */
  readonly path: string;
  /** Handlers by method name (`GET`, `POST`, …, or `*`). At least one. */
  readonly methods: Readonly<Record<string, H>>;
}

/** One row of a table: `data` is required unless the surface's data type allows `undefined`. */
export type RouteSpec<H, D = undefined> = RouteBase<H> & (undefined extends D ? { readonly data?: D } : { readonly data: D });

export type RouteMatch<H, D> =
  | {
      readonly kind: 'handler';
      readonly path: string;
      readonly handler: H;
      readonly params: Params;
      readonly data: D;
    }
  | {
      /** The path is known, the method is not: answer 405 with `allowed`. */
      readonly kind: 'method-not-allowed';
      readonly path: string;
      readonly allowed: readonly string[];
      readonly params: Params;
      readonly data: D;
    };

type Segment = { readonly literal: string } | { readonly param: string } | { readonly rest: true };

interface CompiledRoute<H, D> {
  readonly path: string;
  readonly segments: readonly Segment[];
  readonly methods: Readonly<Record<string, H>>;
  readonly allowed: readonly string[];
  readonly data: D;
}

const PARAM_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const METHOD_NAME = /^[A-Z]+$/;

function splitPath(path: string): string[] {
  return (path.startsWith('/') ? path.slice(1) : path).split('/');
}

function compile(pattern: string): Segment[] {
  const parts = splitPath(pattern);
  const names = new Set<string>();
  return parts.map((part, i): Segment => {
    if (part === '*') {
      if (i !== parts.length - 1) throw new Error(`route ${pattern}: * must be the last segment`);
      return { rest: true };
    }
    if (part.startsWith(':')) {
      const name = part.slice(1);
      if (!PARAM_NAME.test(name)) throw new Error(`route ${pattern}: bad parameter name "${name}"`);
      if (names.has(name)) throw new Error(`route ${pattern}: parameter "${name}" given twice`);
      names.add(name);
      return { param: name };
    }
    if (part.includes(':') || part.includes('*')) throw new Error(`route ${pattern}: ":" and "*" only begin whole segments`);
    return { literal: part };
  });
}

/** The params when `parts` match `segments`, else null. */
function matchSegments(segments: readonly Segment[], parts: readonly string[]): Record<string, string> | null {
  const params: Record<string, string> = {};
  for (let i = 0; i < segments.length; i++) {
    const segment = segments[i]!;
    if ('rest' in segment) {
      params['*'] = parts.slice(i).join('/');
      return params;
    }
    const part = parts[i];
    if (part === undefined) return null;
    if ('literal' in segment) {
      if (part !== segment.literal) return null;
      continue;
    }
    if (part === '') return null;
    try {
      params[segment.param] = decodeURIComponent(part);
    } catch {
      return null;
    }
  }
  return parts.length === segments.length ? params : null;
}

export class Router<H, D = undefined> {
  private readonly routes: readonly CompiledRoute<H, D>[];

  /** Checks every pattern and method name now: a bad table fails at start, not on a request. */
  constructor(table: readonly RouteSpec<H, D>[]) {
    this.routes = table.map((spec) => {
      const methods = Object.keys(spec.methods);
      if (methods.length === 0) throw new Error(`route ${spec.path}: no methods`);
      for (const m of methods) if (m !== ANY_METHOD && !METHOD_NAME.test(m)) throw new Error(`route ${spec.path}: bad method "${m}"`);
      return {
        path: spec.path,
        segments: compile(spec.path),
        methods: spec.methods,
        allowed: methods.filter((m) => m !== ANY_METHOD),
        data: (spec as { data?: D }).data as D,
      };
    });
  }

  /** The first route whose pattern matches `path`, with its handler for `method` or the methods it allows; null when none matches. */
  match(method: string, path: string): RouteMatch<H, D> | null {
    const parts = splitPath(path);
    for (const route of this.routes) {
      const params = matchSegments(route.segments, parts);
      if (!params) continue;
      const handler = Object.hasOwn(route.methods, method) ? route.methods[method] : route.methods[ANY_METHOD];
      if (handler !== undefined) return { kind: 'handler', path: route.path, handler, params, data: route.data };
      return { kind: 'method-not-allowed', path: route.path, allowed: route.allowed, params, data: route.data };
    }
    return null;
  }
}

/** The 405 of a known path: `RELAY_ERR_METHOD_NOT_ALLOWED` with the allowed methods in its details. */
export function methodNotAllowed(allowed: readonly string[]): RelayError {
  return new RelayError('RELAY_ERR_METHOD_NOT_ALLOWED', `use ${allowed.join(' or ')}`, { details: { allowed: [...allowed] } });
}
