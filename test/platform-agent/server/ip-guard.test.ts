import { mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { IpGuard, type IpGuardOptions } from '../../../platform-agent/server/http/ip-guard.js';
import type { IpDecision } from '../../../shared/ip-rules.js';
import { rejectedRelayError, thrownRelayError } from '../../fixtures/error-code.js';

const root = mkdtempSync(join(tmpdir(), 'ip-guard-test-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const pollIntervalMs = 25;
const guards: IpGuard[] = [];
afterEach(() => {
  for (const guard of guards.splice(0)) guard.close();
});

interface LogLine {
  level: number;
  msg: string;
  [field: string]: unknown;
}

/** A fresh folder, a guard on it with a logger whose lines the test can read, and its log. */
function setup(files: { whitelist?: string; blacklist?: string } = {}, options: Partial<IpGuardOptions> = {}) {
  const dir = mkdtempSync(join(root, 'case-'));
  if (files.whitelist !== undefined) writeFileSync(join(dir, 'whitelist.dat'), files.whitelist);
  if (files.blacklist !== undefined) writeFileSync(join(dir, 'blacklist.dat'), files.blacklist);
  const log: LogLine[] = [];
  const logger = pino({ level: 'debug' }, { write: (line: string) => void log.push(JSON.parse(line) as LogLine) });
  const guard = new IpGuard({ dir, logger, pollIntervalMs, ...options });
  guards.push(guard);
  return { dir, guard, log, logger };
}

/** Polls `check` until it holds; fails after a bounded wait instead of sleeping blindly. */
async function waitFor(check: () => boolean, what: string, deadlineMs = 5_000): Promise<void> {
  const until = Date.now() + deadlineMs;
  while (!check()) {
    if (Date.now() > until) throw new Error(`still waiting after ${deadlineMs} ms for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

function waitForDecision(guard: IpGuard, ip: string, expected: IpDecision): Promise<void> {
  return waitFor(() => guard.decide(ip) === expected, `decide(${ip}) to be ${expected}`);
}

const warnings = (log: LogLine[]): LogLine[] => log.filter((line) => line.level === 40);

describe('IP guard: loading', () => {
  it('treats missing files as empty lists', async () => {
    const { guard, log } = setup();
    expect(guard.decide('10.0.0.1')).toBe('neutral');
    const summary = await guard.refresh();
    expect(summary.whitelist).toMatchObject({ status: 'missing', entries: 0, problems: [] });
    expect(summary.blacklist).toMatchObject({ status: 'missing', entries: 0, problems: [] });
    expect(summary.blacklist.file).toMatch(/blacklist\.dat$/);
    expect(log.filter((line) => line.level >= 50)).toEqual([]);
  });

  it('loads both files at construction and lets the whitelist win', async () => {
    const { guard } = setup({ whitelist: '10.1.0.0/16\n', blacklist: '10.0.0.0/8\n2001:db8::/32\n' });
    expect(guard.decide('10.1.2.3')).toBe('whitelisted');
    expect(guard.decide('::ffff:10.2.0.1')).toBe('blacklisted');
    expect(guard.decide('2001:db8::1')).toBe('blacklisted');
    expect(guard.decide('192.168.0.1')).toBe('neutral');
    expect(guard.summary().blacklist).toMatchObject({ status: 'loaded', entries: 2 });
  });

  it('reads file names given in the options', async () => {
    const { dir } = setup();
    writeFileSync(join(dir, 'allow.txt'), '10.0.0.1');
    writeFileSync(join(dir, 'deny.txt'), '10.0.0.0/24');
    const guard = new IpGuard({
      dir,
      logger: pino({ level: 'silent' }),
      whitelistFile: 'allow.txt',
      blacklistFile: 'deny.txt',
      pollIntervalMs,
    });
    guards.push(guard);
    expect(guard.decide('10.0.0.1')).toBe('whitelisted');
    expect(guard.decide('10.0.0.2')).toBe('blacklisted');
  });

  it('logs each bad line as a warning with its file and line number and keeps the good ones', async () => {
    const { guard, log } = setup({ blacklist: '# bad ones below\n10.0.0.1\nnonsense\n10.0.0.0/40\n10.0.0.9-10.0.0.1\n' });
    expect(guard.decide('10.0.0.1')).toBe('blacklisted');
    const bad = warnings(log).map(({ file, line, text, reason }) => ({ file, line, text, reason }));
    expect(bad).toEqual([
      { file: expect.stringMatching(/blacklist\.dat$/), line: 3, text: 'nonsense', reason: expect.stringMatching(/not an IP address/) },
      { file: expect.stringMatching(/blacklist\.dat$/), line: 4, text: '10.0.0.0/40', reason: expect.stringMatching(/prefix length/) },
      {
        file: expect.stringMatching(/blacklist\.dat$/),
        line: 5,
        text: '10.0.0.9-10.0.0.1',
        reason: expect.stringMatching(/after its end/),
      },
    ]);
    expect(guard.summary().blacklist.problems.map((p) => p.line)).toEqual([3, 4, 5]);
  });

  it('logs the first 20 bad lines of a garbage file one by one and counts the rest', async () => {
    const { guard, log } = setup({ whitelist: Array.from({ length: 500 }, (_, i) => `junk ${i}`).join('\n') });
    expect(guard.summary().whitelist).toMatchObject({ status: 'loaded', entries: 0 });
    expect(guard.summary().whitelist.problems).toHaveLength(500);
    const lines = warnings(log);
    expect(lines).toHaveLength(21);
    expect(lines[19]?.line).toBe(20);
    expect(lines[20]).toMatchObject({ more: 480 });
  });
});

describe('IP guard: reloading', () => {
  it('reloads a file rewritten in place', async () => {
    const { dir, guard } = setup({ blacklist: '10.0.0.1\n' });
    expect(guard.decide('10.0.0.2')).toBe('neutral');
    writeFileSync(join(dir, 'blacklist.dat'), '10.0.0.2\n');
    await waitForDecision(guard, '10.0.0.2', 'blacklisted');
    expect(guard.decide('10.0.0.1')).toBe('neutral');
  });

  it('reloads a file replaced by rename, as editors and deploy scripts do', async () => {
    const { dir, guard } = setup({ whitelist: '10.0.0.1\n', blacklist: '10.0.0.0/8\n' });
    writeFileSync(join(dir, 'whitelist.dat.tmp'), '10.0.0.1\n10.0.0.7\n');
    renameSync(join(dir, 'whitelist.dat.tmp'), join(dir, 'whitelist.dat'));
    await waitForDecision(guard, '10.0.0.7', 'whitelisted');
  });

  it('picks up a file created after start', async () => {
    const { dir, guard } = setup();
    writeFileSync(join(dir, 'blacklist.dat'), '2001:db8::/32\n');
    await waitForDecision(guard, '2001:db8::5', 'blacklisted');
  });

  it('picks up files in a folder created after start', async () => {
    const dir = join(root, 'created-later');
    const guard = new IpGuard({ dir, logger: pino({ level: 'silent' }), pollIntervalMs });
    guards.push(guard);
    mkdirSync(dir);
    writeFileSync(join(dir, 'whitelist.dat'), '10.9.9.9\n');
    await waitForDecision(guard, '10.9.9.9', 'whitelisted');
  });

  it('picks up a change made right after construction', async () => {
    // The window between the initial load and the first poll must not swallow a change.
    for (let i = 0; i < 20; i++) {
      const { dir, guard } = setup({ blacklist: '10.0.0.1\n' });
      writeFileSync(join(dir, 'blacklist.dat'), '10.0.0.2\n');
      await waitForDecision(guard, '10.0.0.2', 'blacklisted');
      guard.close();
    }
  });

  it('empties a list when its file is removed, and says so', async () => {
    const { dir, guard, log } = setup({ blacklist: '10.0.0.0/8\n' });
    unlinkSync(join(dir, 'blacklist.dat'));
    await waitForDecision(guard, '10.0.0.1', 'neutral');
    expect(warnings(log).some((line) => /removed/.test(line.msg))).toBe(true);
  });

  it('keeps the last good rules when a file becomes unreadable, and logs it', async () => {
    const { dir, guard, log } = setup({ blacklist: '10.0.0.0/8\n' });
    const file = join(dir, 'blacklist.dat');
    // A folder in place of the file: unreadable whoever runs the test (root ignores chmod).
    renameSync(file, join(dir, 'old.dat'));
    mkdirSync(file);
    await waitFor(() => guard.summary().blacklist.status === 'kept', 'the poll to find the folder');
    expect(guard.decide('10.0.0.1')).toBe('blacklisted');
    expect(guard.summary().blacklist).toMatchObject({ entries: 1, error: 'not a regular file' });
    expect(log.filter((line) => line.level === 50 && /keeping the previous rules/.test(line.msg))).toHaveLength(1);
    expect((await guard.refresh()).blacklist).toMatchObject({ status: 'kept', entries: 1 });
    // Readable again: the new content takes over.
    rmSync(file, { recursive: true });
    writeFileSync(file, '192.168.0.0/16\n');
    await waitForDecision(guard, '192.168.1.1', 'blacklisted');
    expect(guard.decide('10.0.0.1')).toBe('neutral');
  });

  it('refuses a file over the size limit and keeps the previous rules', async () => {
    const { dir, guard } = setup({ blacklist: '10.0.0.0/8\n' }, { maxFileBytes: 64 });
    writeFileSync(join(dir, 'blacklist.dat'), '10.0.0.1\n'.repeat(100));
    expect((await guard.refresh()).blacklist).toMatchObject({ status: 'kept', error: expect.stringMatching(/larger than 64 bytes/) });
    expect(guard.decide('10.200.0.1')).toBe('blacklisted');
  });

  it('stops reloading once closed', async () => {
    const { dir, guard: closed } = setup({ blacklist: '10.0.0.1\n' });
    closed.close();
    closed.close();
    // A second guard on the same files is the witness: once it has seen the change, a poller
    // would have had its chance; a few more intervals leave no doubt.
    const witness = new IpGuard({ dir, logger: pino({ level: 'silent' }), pollIntervalMs });
    guards.push(witness);
    writeFileSync(join(dir, 'blacklist.dat'), '10.0.0.2\n');
    await waitForDecision(witness, '10.0.0.2', 'blacklisted');
    await new Promise((resolve) => setTimeout(resolve, pollIntervalMs * 4));
    expect(closed.decide('10.0.0.2')).toBe('neutral');
    expect(closed.decide('10.0.0.1')).toBe('blacklisted');
    // A manual reload still works after close.
    await closed.refresh();
    expect(closed.decide('10.0.0.2')).toBe('blacklisted');
  });
});

describe('IP guard: saving a list', () => {
  /** Runs `fn`; returns the RelayError it throws (fails when it throws nothing or something else). */
  it('writes the text as given (comments, blank lines), with \\n line endings and a final newline, mode 0600', async () => {
    // A poll interval of an hour: whatever changes below was put in force by save() itself.
    const { dir, guard } = setup({ blacklist: '10.0.0.0/8\n' }, { pollIntervalMs: 3_600_000 });
    const summary = await guard.commit(guard.prepare('blacklist', '# office\r\n\r\n192.0.2.0/24  # lab\r2001:db8::/32'));
    const file = join(dir, 'blacklist.dat');
    expect(readFileSync(file, 'utf8')).toBe('# office\n\n192.0.2.0/24  # lab\n2001:db8::/32\n');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(summary).toMatchObject({ status: 'loaded', entries: 2, problems: [] });
    expect(guard.decide('192.0.2.9')).toBe('blacklisted');
    expect(guard.decide('2001:db8::1')).toBe('blacklisted');
    expect(guard.decide('10.0.0.1')).toBe('neutral');
    // No temporary file is left behind.
    expect(readdirSync(dir).sort()).toEqual(['blacklist.dat']);
    // An empty list is an empty file, not a lone newline.
    await guard.commit(guard.prepare('blacklist', ''));
    expect(readFileSync(file, 'utf8')).toBe('');
    expect(guard.decide('192.0.2.9')).toBe('neutral');
  });

  it('makes the data folder (mode 0700) when it does not exist yet', async () => {
    const { dir: parent, logger } = setup();
    const dir = join(parent, 'data', 'ip');
    const guard = new IpGuard({ dir, logger, pollIntervalMs: 3_600_000 });
    guards.push(guard);
    await guard.commit(guard.prepare('whitelist', '10.1.2.3'));
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    expect(readFileSync(join(dir, 'whitelist.dat'), 'utf8')).toBe('10.1.2.3\n');
    expect(guard.decide('10.1.2.3')).toBe('whitelisted');
  });

  it('refuses text with any bad line, naming every one with its line number, and writes nothing', async () => {
    const { dir, guard } = setup({ whitelist: '10.0.0.1\n' }, { pollIntervalMs: 3_600_000 });
    const err = thrownRelayError(() =>
      guard.prepare('whitelist', '10.0.0.2\n10.0.0.300\n# fine\n\n10.0.0.9-10.0.0.1 # backwards\nfe80::1%eth0\n'),
    );
    expect(err.code).toBe('RELAY_ERR_INVALID_IP_RULES');
    expect(err.httpStatus).toBe(400);
    expect(err.details).toMatchObject({ list: 'whitelist', problem_count: 3 });
    const problems = err.details?.problems as { line: number; text: string; message: string }[];
    expect(problems.map((p) => [p.line, p.text])).toEqual([
      [2, '10.0.0.300'],
      [5, '10.0.0.9-10.0.0.1'],
      [6, 'fe80::1%eth0'],
    ]);
    expect(problems[1]!.message).toBe('range start is after its end');
    expect(readFileSync(join(dir, 'whitelist.dat'), 'utf8')).toBe('10.0.0.1\n');
    expect(guard.decide('10.0.0.1')).toBe('whitelisted');
  });

  it('refuses text over the size limit the reader applies; text exactly at it is saved', async () => {
    const { dir, guard } = setup({ blacklist: '10.0.0.0/8\n' }, { maxFileBytes: 64, pollIntervalMs: 3_600_000 });
    const err = thrownRelayError(() => guard.prepare('blacklist', '10.0.0.1\n'.repeat(8))); // 72 bytes
    expect(err.code).toBe('RELAY_ERR_IP_RULES_TOO_LARGE');
    expect(err.httpStatus).toBe(413);
    expect(err.details).toMatchObject({ list: 'blacklist', bytes: 72, max_bytes: 64 });
    expect(readFileSync(join(dir, 'blacklist.dat'), 'utf8')).toBe('10.0.0.0/8\n');
    // The final newline counts: 63 characters become 64 bytes, the limit itself.
    const atLimit = `${'10.0.0.1\n'.repeat(6)}10.0.0.19`;
    expect((await guard.commit(guard.prepare('blacklist', atLimit))).entries).toBe(7);
    expect(statSync(join(dir, 'blacklist.dat')).size).toBe(64);
    expect((await guard.refresh()).blacklist.status).toBe('loaded');
  });

  it('keeps the file and the rules in force when the file cannot be written', async () => {
    const { dir, guard, log } = setup({ blacklist: '10.0.0.0/8\n' }, { pollIntervalMs: 3_600_000 });
    const draft = guard.prepare('blacklist', '192.0.2.0/24\n');
    // A folder in place of the file: rename() cannot replace it, whoever runs the test.
    renameSync(join(dir, 'blacklist.dat'), join(dir, 'old.dat'));
    mkdirSync(join(dir, 'blacklist.dat'));
    const err = await rejectedRelayError(guard.commit(draft));
    expect(err.code).toBe('RELAY_ERR_IP_RULES_WRITE');
    expect(err.message).toMatch(/^blacklist\.dat could not be written \(E[A-Z]+\)/);
    expect(guard.decide('10.0.0.1')).toBe('blacklisted');
    expect(guard.decide('192.0.2.1')).toBe('neutral');
    expect(readdirSync(dir).sort()).toEqual(['blacklist.dat', 'old.dat']);
    expect(log.some((line) => line.level === 50 && /cannot write/.test(line.msg))).toBe(true);
  });

  it('saves only drafts it made itself', async () => {
    const { guard } = setup();
    const { guard: other } = setup();
    await expect(guard.commit(other.prepare('whitelist', '10.0.0.1'))).rejects.toThrow(/draft made by prepare/);
    await expect(guard.commit({ ...guard.prepare('whitelist', '10.0.0.1'), text: '0.0.0.0/0\n' })).rejects.toThrow(/draft made by prepare/);
  });

  it('shows the file as it is on disk, loading a hand edit the poll has not seen yet', async () => {
    const { dir, guard } = setup({ blacklist: '10.0.0.0/8\n' }, { pollIntervalMs: 3_600_000 });
    writeFileSync(join(dir, 'blacklist.dat'), '# by hand\n10.0.0.0/8\nnot-an-address\n');
    const { text, summary } = guard.contents('blacklist');
    expect(text).toBe('# by hand\n10.0.0.0/8\nnot-an-address\n');
    expect(summary).toMatchObject({ status: 'loaded', entries: 1, problems: [{ line: 3, text: 'not-an-address' }] });
    expect(guard.contents('whitelist')).toMatchObject({ text: '', summary: { status: 'missing' } });
  });

  it('names the blacklist entry that would block an address once drafts are saved; the whitelist saves it', async () => {
    const { guard } = setup({ whitelist: '127.0.0.1\n' }, { pollIntervalMs: 3_600_000 });
    const blacklist = guard.prepare('blacklist', '# all loopback\n127.0.0.0/8\n');
    expect(guard.blockingRule('127.0.0.1', [blacklist])).toBeUndefined();
    expect(guard.blockingRule('127.0.0.2', [blacklist])).toMatchObject({ line: 2, text: '127.0.0.0/8' });
    // The same blacklist with the whitelist emptied in the same change blocks 127.0.0.1 too.
    expect(guard.blockingRule('127.0.0.1', [blacklist, guard.prepare('whitelist', '')])).toMatchObject({ line: 2 });
    // Nothing was saved by asking.
    expect(guard.decide('127.0.0.2')).toBe('neutral');
  });
});
