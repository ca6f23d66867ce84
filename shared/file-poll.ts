/**
 * Watching files by polling their paths: each period every path is stat'ed (asynchronously, so a
 * slow file system cannot stall the event loop) and its signature compared with the signature of
 * what its owner last read. Used for the relay's certificate files (relay/tls/cert-reloader.ts)
 * and the IP rule files of both processes (ip-rule-files.ts).
 *
 * Polling the path rather than `fs.watch`: it follows a file replaced by rename (editors, deploy
 * tools, certbot) and sees a file created after start, for one stat a file a period. Not
 * `fs.watchFile`: it takes its first stat asynchronously (a write between the owner's read and
 * that stat is never reported) and shares one poller per path whose interval the first caller
 * sets. The owner computes the signature of what it read from the descriptor it read
 * ({@link signatureOf} of an `fstat`), so a change between its read and the next stat is seen.
 */
import type { Stats } from 'node:fs';
import { stat } from 'node:fs/promises';

/**
 * A file's identity: `dev:ino:size:mtimeMs:ctimeMs`; `missing` when it does not exist (ENOENT,
 * or ENOTDIR: a folder on the path is a file); `error:CODE` when it cannot be stat'ed or opened.
 */
export function signatureOf(err: NodeJS.ErrnoException | null, stats?: Stats): string {
  if (err || stats === undefined) return err?.code === 'ENOENT' || err?.code === 'ENOTDIR' ? 'missing' : `error:${err?.code ?? 'unknown'}`;
  return `${stats.dev}:${stats.ino}:${stats.size}:${stats.mtimeMs}:${stats.ctimeMs}`;
}

/** The signature of what is at `path` now. Never rejects. */
export async function statSignature(path: string): Promise<string> {
  try {
    return signatureOf(null, await stat(path));
  } catch (err) {
    return signatureOf(err as NodeJS.ErrnoException);
  }
}

export interface FilePollOptions {
  /** The files watched, in the order of `known()` and of the indexes given to `onChange`. */
  paths: readonly string[];
  /** Time between polls, ms; 0 (or less) = no polling, `close()` is then a no-op. */
  intervalMs: number;
  /** The signatures of what the owner last read, one a path (read at each poll, after the stats). */
  known(): readonly string[];
  /** A poll found these paths (indexes into `paths`) changed since the owner's last read. */
  onChange(changed: readonly number[]): void;
  /** A poll found no change. */
  onUnchanged?(): void;
  /** `onChange` or `onUnchanged` threw (the poller keeps going). */
  onError(err: unknown): void;
}

/**
 * Polls `paths` every `intervalMs` and calls back when one or more signatures differ from what
 * the owner last read. A poll that finds the previous one unfinished (a slow or hung file system)
 * is skipped, so polls never overlap; the timer is unref'd (watching files is no reason to keep a
 * process alive); after `close()` no callback runs, even for a poll already under way.
 */
export class FilePoller {
  private readonly options: FilePollOptions;
  private timer: NodeJS.Timeout | undefined;
  private running = false;

  constructor(options: FilePollOptions) {
    this.options = options;
    if (options.intervalMs > 0 && options.paths.length > 0) {
      this.timer = setInterval(() => void this.poll(), options.intervalMs);
      this.timer.unref();
    }
  }

  /** Whether the poller still polls (false once closed, or when it never polled). */
  get active(): boolean {
    return this.timer !== undefined;
  }

  /** Stops polling. Idempotent. */
  close(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  private async poll(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      const now = await Promise.all(this.options.paths.map(statSignature));
      if (this.timer === undefined) return;
      const known = this.options.known();
      const changed: number[] = [];
      for (let i = 0; i < now.length; i++) if (now[i] !== known[i]) changed.push(i);
      if (changed.length > 0) this.options.onChange(changed);
      else this.options.onUnchanged?.();
    } catch (err) {
      this.options.onError(err);
    } finally {
      this.running = false;
    }
  }
}
