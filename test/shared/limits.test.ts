/**
 * The limits table (shared/limits.ts): its entries are consistent, it covers every numeric option
 * of `relay start`, the help lines come from it, and the built CLI refuses a value past an
 * entry's range with the message that names the option. Uses the built relay (dist/), as the
 * end-to-end suites do: `npm test` builds first.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { defaults } from '../../shared/defaults.js';
import { argvKey, checkLimit, limitDoc, limits, limitSpec, limitValue, type LimitName } from '../../shared/limits.js';
import { TOKEN, certsDir } from '../fixtures/harness.js';
import { AGENT, RELAY, run, type Proc } from '../fixtures/processes.js';

const names = Object.keys(limits) as LimitName[];

/** `--name` of every option `relay start --help` lists as a number, with its help line and default. */
function numericHelp(): Map<string, { doc: string; default: number }> {
  const help = spawnSync(process.execPath, [RELAY, 'start', '--help'], { encoding: 'utf8' });
  expect(help.status).toBe(0);
  // yargs wraps long lines; an option starts with two spaces and `--`
  const entries = help.stdout.split(/\n(?= {2}--)/);
  const found = new Map<string, { doc: string; default: number }>();
  for (const entry of entries) {
    const m = /^\s*--([a-z0-9-]+)\s+([\s\S]*?)\s*\[number\]\s*(?:\[default: (-?\d+)\])?/.exec(entry);
    if (m) found.set(m[1]!, { doc: m[2]!.replace(/\s+/g, ' '), default: Number(m[3]) });
  }
  return found;
}

/** Starts a CLI with each option one past its max (a few processes at a time: two cores, other suites beside) and checks each refusal: exit 2, the option and its range named. */
async function refusesPastMax(options: LimitName[], start: (name: LimitName, value: string) => Proc): Promise<void> {
  const refuse = async (name: LimitName) => {
    const { max, min } = limitSpec(name);
    const proc = start(name, String(max + 1));
    return { name, max, min, code: await proc.exited, stderr: proc.stderr.join('\n') };
  };
  const results: Awaited<ReturnType<typeof refuse>>[] = [];
  for (let i = 0; i < options.length; i += 4) results.push(...(await Promise.all(options.slice(i, i + 4).map(refuse))));
  for (const { name, max, min, code, stderr } of results) {
    expect(code, name).toBe(2);
    expect(stderr, name).toContain(`--${name}: ${max + 1} is not valid; expected an integer from ${min} to ${max}`);
  }
}

describe('limits table', () => {
  it('holds a default within [min, max] for every entry, and a help line for each side', () => {
    for (const name of names) {
      const spec = limitSpec(name);
      expect(Number.isSafeInteger(spec.min) && Number.isSafeInteger(spec.max), name).toBe(true);
      expect(spec.min, name).toBeLessThanOrEqual(spec.max);
      expect(spec.default, name).toBeGreaterThanOrEqual(spec.min);
      expect(spec.default, name).toBeLessThanOrEqual(spec.max);
      expect(checkLimit(name, spec.default)).toBe(spec.default);
      if (spec.zero !== null) expect(spec.min, `${name}: 0 means ${spec.zero}`).toBe(0);
      for (const side of spec.sides) expect(limitDoc(name, side).length, `${name} (${side})`).toBeGreaterThan(0);
    }
    expect(limitSpec('max-body-bytes').default).toBe(defaults.maxBodyBytes);
    expect(limitSpec('max-stream-share-per-ip').default).toBe(defaults.maxStreamSharePerIpPercent);
  });

  it('checks a value against its range with the message naming the option', () => {
    expect(limitValue('max-stream-share-per-ip', { maxStreamSharePerIp: '25' })).toBe(25);
    expect(argvKey('max-requests-per-second-per-ip')).toBe('maxRequestsPerSecondPerIp');
    expect(() => checkLimit('max-stream-share-per-ip', 101)).toThrow(
      /^--max-stream-share-per-ip: 101 is not valid; expected an integer from 0 to 100$/,
    );
    expect(() => checkLimit('max-header-bytes', 1.5)).toThrow(/--max-header-bytes: 1.5 is not valid/);
  });

  it('covers every numeric option of relay start, whose defaults and help lines it gives', () => {
    const help = numericHelp();
    expect(help.size).toBeGreaterThan(20);
    for (const [option, shown] of help) {
      expect(names, `--${option} is a number option of relay start but not in shared/limits.ts`).toContain(option);
      const name = option as LimitName;
      expect(limitSpec(name).sides).toContain('relay');
      expect(shown.default, option).toBe(limitSpec(name).default);
      expect(shown.doc, option).toBe(limitDoc(name, 'relay'));
    }
    for (const name of names) if (limitSpec(name).sides.includes('relay')) expect([...help.keys()]).toContain(name);
  });

  it('makes the relay CLI refuse a value past the max, naming the option', async () => {
    const tls = ['--cert', join(certsDir(), 'relay.crt'), '--key', join(certsDir(), 'relay.key')];
    const relayNames = names.filter((name) => limitSpec(name).sides.includes('relay'));
    await refusesPastMax(relayNames, (name, value) => run(RELAY, ['start', ...tls, `--${name}`, value], { RELAY_AGENT_TOKEN: TOKEN }));
  }, 180_000);

  it('makes the agent CLI refuse a value past the max, naming the option', async () => {
    const data = mkdtempSync(join(tmpdir(), 'agent-limits-'));
    const agentNames = names.filter((name) => limitSpec(name).sides.includes('agent'));
    expect(agentNames).toEqual(expect.arrayContaining(['connections', 'store-pool-size', 'store-statement-timeout-ms']));
    await refusesPastMax(agentNames, (name, value) =>
      run(AGENT, ['start', '--listen', '127.0.0.1:0', '--data', join(data, name), `--${name}`, value], { PLATFORM_AGENT_TOKEN: TOKEN }),
    );
  }, 180_000);

  it('checks a value from a --config file by the same range', async () => {
    const config = join(mkdtempSync(join(tmpdir(), 'relay-limits-')), 'relay.json');
    writeFileSync(config, JSON.stringify({ maxStreamSharePerIp: 150 }));
    const tls = ['--cert', join(certsDir(), 'relay.crt'), '--key', join(certsDir(), 'relay.key')];
    const proc = run(RELAY, ['start', ...tls, '--config', config], { RELAY_AGENT_TOKEN: TOKEN });
    expect(await proc.exited).toBe(2);
    expect(proc.stderr.join('\n')).toContain('--max-stream-share-per-ip: 150 is not valid; expected an integer from 0 to 100');
  });
});
