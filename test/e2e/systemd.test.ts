/**
 * The systemd units in the repository pass `systemd-analyze verify` (no warnings either), with
 * ExecStart pointing at this checkout's node and built CLIs. Skipped only where the tool is
 * missing outside CI; `.ci/run` installs it.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const UNITS = ['relay/systemd/dmz-relay.service', 'platform-agent/systemd/platform-agent.service'];
const hasTool = spawnSync('systemd-analyze', ['--version'], { stdio: 'ignore' }).status === 0;
if (!hasTool && process.env.CI) throw new Error('systemd-analyze is missing in CI: .ci/run should have installed systemd');

describe.skipIf(!hasTool)('systemd units', () => {
  it.each(UNITS)('%s verifies cleanly', (unit) => {
    const text = readFileSync(unit, 'utf8');
    // The unit's script must be one this build produces.
    const script = /ExecStart=\S+(?: --\S+)* \/opt\/dmz-relay\/(\S+)/.exec(text)?.[1];
    expect(script).toBeDefined();
    expect(existsSync(join(process.cwd(), script!))).toBe(true);
    expect(text).toMatch(/^NoNewPrivileges=yes$/m);
    expect(text).toMatch(/^KillSignal=SIGTERM$/m);
    const dir = mkdtempSync(join(tmpdir(), 'units-'));
    try {
      const local = join(dir, unit.split('/').pop()!);
      writeFileSync(local, text.replace('/usr/bin/node', process.execPath).replaceAll('/opt/dmz-relay', process.cwd()));
      const r = spawnSync('systemd-analyze', ['verify', local], { encoding: 'utf8' });
      expect(r.stderr.trim()).toBe('');
      expect(r.status).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
