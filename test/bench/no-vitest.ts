/**
 * Module resolve hook (registered with node:module `register()` by store-bench.ts) that lets the
 * bench import the PostgreSQL test fixture (test/fixtures/postgres.ts) outside vitest: that file
 * imports `beforeAll`/`afterAll` from vitest for its `usePostgres()`, and vitest throws when it is
 * imported without its runner. For that one importer, `vitest` resolves to a stub whose hooks
 * throw if called (the bench uses only `PgCluster`); every other import resolves as usual.
 */
const STUB = `data:text/javascript,${encodeURIComponent(
  "const none = () => { throw new Error('vitest is not running (the bench imports the PostgreSQL fixture for PgCluster only)'); };\n" +
    'export const beforeAll = none;\nexport const afterAll = none;\n',
)}`;

interface ResolveContext {
  parentURL?: string;
}

interface ResolveResult {
  url: string;
  shortCircuit?: boolean;
}

export async function resolve(
  specifier: string,
  context: ResolveContext,
  next: (specifier: string, context: ResolveContext) => Promise<ResolveResult>,
): Promise<ResolveResult> {
  if (specifier === 'vitest' && context.parentURL?.endsWith('/test/fixtures/postgres.js')) return { url: STUB, shortCircuit: true };
  return next(specifier, context);
}
