/**
 * The relay's Node flags are given in three places that cannot import them (the systemd unit,
 * the npm script) or do (the benchmark): the first two must say what relay/node-flags.ts says.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { relayNodeFlags } from '../../relay/node-flags.js';

/** The flags between `node` and the script on a command line. */
function flagsBefore(commandLine: string, script: string): string[] {
  const words = commandLine.trim().split(/\s+/);
  const at = words.findIndex((w) => w.endsWith(script));
  expect(at).toBeGreaterThan(0);
  return words.slice(1, at);
}

describe('relay node flags', () => {
  it('are the ones the systemd unit starts node with', () => {
    const unit = readFileSync('relay/systemd/dmz-relay.service', 'utf8');
    const execStart = /^ExecStart=(.*)$/m.exec(unit)?.[1];
    expect(execStart).toBeDefined();
    expect(flagsBefore(execStart!, 'dist/relay/cli.js')).toEqual(relayNodeFlags);
  });

  it('are the ones npm run relay starts node with', () => {
    const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as { scripts: Record<string, string> };
    expect(flagsBefore(pkg.scripts.relay!, 'dist/relay/cli.js')).toEqual(relayNodeFlags);
  });

  it('are accepted by this node', () => {
    const r = spawnSync(process.execPath, [...relayNodeFlags, '-e', 'process.exit(0)'], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });
});
