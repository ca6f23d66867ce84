import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { BlockWriter } from '../../shared/logger.js';

describe('BlockWriter (the log destination)', () => {
  let dir: string;
  let fd: number;
  const open = (): string => {
    dir = mkdtempSync(join(tmpdir(), 'block-writer-'));
    const file = join(dir, 'out.log');
    fd = openSync(file, 'w');
    return file;
  };
  afterEach(() => {
    closeSync(fd);
    rmSync(dir, { recursive: true, force: true });
  });

  it('holds lines until a block is full, then writes them in order', async () => {
    const file = open();
    const w = new BlockWriter(fd, 100);
    w.write('a'.repeat(40) + '\n');
    w.write('b'.repeat(40) + '\n');
    expect(readFileSync(file, 'utf8')).toBe('');
    w.write('c'.repeat(40) + '\n');
    await vi.waitFor(() => expect(readFileSync(file, 'utf8')).toBe(['a', 'b', 'c'].map((x) => x.repeat(40) + '\n').join('')));
  });

  it('writes what is held within 100 ms even when no block fills', async () => {
    const file = open();
    const w = new BlockWriter(fd, 1024 * 1024);
    w.write('one line\n');
    await vi.waitFor(() => expect(readFileSync(file, 'utf8')).toBe('one line\n'), { timeout: 2_000 });
  });

  it('flushes synchronously (process exit), multi-byte text intact', () => {
    const file = open();
    const w = new BlockWriter(fd, 1024 * 1024);
    w.write('Иванов\n');
    w.write('Операторы ТСД\n');
    w.flushSync();
    expect(readFileSync(file, 'utf8')).toBe('Иванов\nОператоры ТСД\n');
  });

  it('drops and counts lines past its bound instead of growing', () => {
    open();
    const w = new BlockWriter(fd, 1024 * 1024, 100);
    for (let i = 0; i < 10; i++) w.write('x'.repeat(30));
    expect(w.dropped).toBe(7);
    w.flushSync();
  });
});
