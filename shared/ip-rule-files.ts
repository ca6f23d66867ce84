/**
 * A whitelist file and a blacklist file, read and reloaded when they change. Parsing and matching
 * live in `ip-rules.ts`; this file owns the I/O: reading, watching, and logging what was wrong
 * with a file. Nothing here throws over a bad, missing or unreadable file. The platform's
 * `IpGuard` (one data folder, fixed file names) and the relay's edge (`--whitelist`,
 * `--blacklist`) both use it.
 */
import { closeSync, fstatSync, openSync, readFileSync, stat, statSync, type Stats } from 'node:fs';
import { defaults } from './defaults.js';
import { decideIp, IpRuleSet, parseIpRules, type IpDecision, type IpRuleProblem } from './ip-rules.js';
import type { Logger } from './logger.js';

export interface IpRuleFilesOptions {
  /** Whitelist file; without it the whitelist is empty and nothing is read or watched for it. */
  whitelistPath?: string;
  /** Blacklist file; without it the blacklist is empty and nothing is read or watched for it. */
  blacklistPath?: string;
  logger: Logger;
  /** How often each file is stat'ed for changes, in ms. Default `defaults.ipRulesPollMs` (2000). */
  pollIntervalMs?: number;
  /** A larger file is refused (the previous rules are kept). Default 16 MiB (~700k entries). */
  maxFileBytes?: number;
  /** Called after polling found a changed file and loaded it (not after an explicit `reload()`). */
  onChange?: (list: IpListName) => void;
}

/** What one file gave at its last load. */
export interface IpListSummary {
  /** Full path of the file. */
  file: string;
  /**
   * `loaded`: read and parsed (bad lines skipped). `missing`: no such file, the list is empty.
   * `kept`: the file could not be read; the previous rules stay in force (see `error`).
   */
  status: 'loaded' | 'missing' | 'kept';
  /** Entries in force for this list. */
  entries: number;
  /** Lines skipped at the last successful parse. */
  problems: IpRuleProblem[];
  /** Why the file could not be read, when `status` is `kept`. */
  error?: string;
}

/** Entries and problems per file; `null` for a list that has no file. */
export interface IpRuleFilesSummary {
  whitelist: IpListSummary | null;
  blacklist: IpListSummary | null;
}

export type IpListName = keyof IpRuleFilesSummary;

interface WatchedList {
  readonly name: IpListName;
  readonly path: string;
  rules: IpRuleSet;
  summary: IpListSummary;
  /** Identity of what was last loaded (inode, size, times), `missing`, or `error:CODE`. */
  signature: string;
}

/** Bad lines logged one by one per file and load; the rest are counted in one line. */
const maxLoggedProblems = 20;

/**
 * Whitelist and blacklist files. Both are loaded when constructed (a missing file is an empty
 * list), then each path is stat'ed every `pollIntervalMs` and the file reloaded when it is not
 * the one last loaded.
 *
 * Polling the path rather than `fs.watch`: it follows editors and deploy scripts that replace a
 * file by rename, and sees a file created after start, even in a folder created after start; two
 * stat calls every two seconds cost nothing. Not `fs.watchFile` either: it takes its first stat
 * asynchronously, so a write between our load and that stat is never reported (measured: 48 of
 * 200 such writes missed), and it shares one poller per path whose interval the first caller
 * sets. Comparing each stat with the fstat of the descriptor actually read has neither problem.
 */
export class IpRuleFiles {
  private readonly logger: Logger;
  private readonly maxFileBytes: number;
  private readonly onChange: ((list: IpListName) => void) | undefined;
  private readonly whitelistFile: WatchedList | null;
  private readonly blacklistFile: WatchedList | null;
  private timer: NodeJS.Timeout | undefined;
  private polling = false;

  constructor(options: IpRuleFilesOptions) {
    this.logger = options.logger;
    this.maxFileBytes = options.maxFileBytes ?? defaults.ipRulesMaxFileBytes;
    this.onChange = options.onChange;
    const list = (name: IpListName, path: string | undefined): WatchedList | null =>
      path === undefined
        ? null
        : {
            name,
            path,
            rules: IpRuleSet.empty,
            summary: { file: path, status: 'missing', entries: 0, problems: [] },
            signature: 'missing',
          };
    this.whitelistFile = list('whitelist', options.whitelistPath);
    this.blacklistFile = list('blacklist', options.blacklistPath);
    this.reload();
    if (this.watched().length > 0) {
      this.timer = setInterval(() => this.poll(), options.pollIntervalMs ?? defaults.ipRulesPollMs);
      // The files must not keep alive a process that is otherwise done.
      this.timer.unref();
    }
  }

  /** What the lists say about a client address (as Node reports it; mapped IPv4 included). */
  decide(ip: string): IpDecision {
    return decideIp(ip, { whitelist: this.whitelist, blacklist: this.blacklist });
  }

  /** The whitelist in force, e.g. to log which entry matched (`lookup`). */
  get whitelist(): IpRuleSet {
    return this.whitelistFile?.rules ?? IpRuleSet.empty;
  }

  /** The blacklist in force. */
  get blacklist(): IpRuleSet {
    return this.blacklistFile?.rules ?? IpRuleSet.empty;
  }

  /**
   * Reads both files again now. Synchronous: the files are small and parsing is CPU work either
   * way, and it keeps two reloads from interleaving.
   */
  reload(): IpRuleFilesSummary {
    return {
      whitelist: this.whitelistFile && this.load(this.whitelistFile),
      blacklist: this.blacklistFile && this.load(this.blacklistFile),
    };
  }

  /** The result of the last load of each file. */
  summary(): IpRuleFilesSummary {
    return {
      whitelist: this.whitelistFile && { ...this.whitelistFile.summary },
      blacklist: this.blacklistFile && { ...this.blacklistFile.summary },
    };
  }

  /** Stops watching the files. The rules in force stay; `reload()` still works. Idempotent. */
  close(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  private watched(): WatchedList[] {
    return [this.whitelistFile, this.blacklistFile].filter((list): list is WatchedList => list !== null);
  }

  /** One stat per file, asynchronous so that a slow file system cannot stall requests. */
  private poll(): void {
    // A tick that finds the previous one unfinished (slow or hung file system) skips.
    if (this.polling) return;
    const pending = this.watched();
    let left = pending.length;
    this.polling = true;
    for (const watched of pending) {
      stat(watched.path, (err, stats) => {
        if (--left === 0) this.polling = false;
        if (this.timer === undefined || signatureOf(err, stats) === watched.signature) return;
        try {
          this.load(watched);
        } catch (loadErr) {
          // load() does not throw; this is the last guard before an uncaught exception.
          this.logger.error({ err: loadErr, file: watched.path }, 'IP rules: reload failed; keeping the previous rules');
          return;
        }
        this.onChange?.(watched.name);
      });
    }
  }

  private load(watched: WatchedList): IpListSummary {
    const { path, name } = watched;
    const before = watched.summary;
    const read = this.read(path);
    watched.signature = read.signature;
    if (read.text === undefined && read.error === undefined) {
      watched.rules = IpRuleSet.empty;
      watched.summary = { file: path, status: 'missing', entries: 0, problems: [] };
      if (before.status === 'missing') this.logger.info({ file: path, list: name }, 'IP rules: no file; the list is empty');
      else this.logger.warn({ file: path, list: name }, 'IP rules: file removed; the list is now empty');
      return watched.summary;
    }
    if (read.text === undefined) {
      watched.summary = { ...before, status: 'kept', entries: watched.rules.size, error: read.error };
      this.logger.error(
        { file: path, list: name, error: read.error, entries: watched.rules.size },
        'IP rules: cannot read the file; keeping the previous rules',
      );
      return watched.summary;
    }
    const { rules, problems } = parseIpRules(read.text, path);
    watched.rules = rules;
    watched.summary = { file: path, status: 'loaded', entries: rules.size, problems };
    for (const problem of problems.slice(0, maxLoggedProblems)) {
      this.logger.warn({ file: path, list: name, ...problem }, 'IP rules: skipped a bad line');
    }
    if (problems.length > maxLoggedProblems) {
      this.logger.warn({ file: path, list: name, more: problems.length - maxLoggedProblems }, 'IP rules: more bad lines not logged');
    }
    this.logger.info({ file: path, list: name, entries: rules.size, problems: problems.length }, 'IP rules: loaded');
    return watched.summary;
  }

  /**
   * The file's text; neither `text` nor `error` when it does not exist; `error` when it cannot be
   * read. `signature` identifies what was read, so that polling reloads only on a change and an
   * unreadable file is not retried (and logged) on every tick.
   */
  private read(path: string): { text?: string; error?: string; signature: string } {
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // ENOTDIR: a folder on the path is a file, so there is no rules file either.
      if (code === 'ENOENT' || code === 'ENOTDIR') return { signature: 'missing' };
      return { error: errorText(err), signature: signatureOf(...statOf(path)) };
    }
    try {
      const stats = fstatSync(fd);
      const signature = signatureOf(null, stats);
      if (!stats.isFile()) return { error: 'not a regular file', signature };
      if (stats.size > this.maxFileBytes) return { error: `larger than ${this.maxFileBytes} bytes`, signature };
      return { text: readFileSync(fd, 'utf8'), signature };
    } catch (err) {
      return { error: errorText(err), signature: signatureOf(...statOf(path)) };
    } finally {
      try {
        closeSync(fd);
      } catch {
        // Nothing useful to do about a failed close of a read-only descriptor.
      }
    }
  }
}

function statOf(path: string): [NodeJS.ErrnoException | null, Stats | undefined] {
  try {
    return [null, statSync(path)];
  } catch (err) {
    return [err as NodeJS.ErrnoException, undefined];
  }
}

/** What a stat of the path says: `missing`, `error:CODE`, or the file's identity. */
function signatureOf(err: NodeJS.ErrnoException | null, stats: Stats | undefined): string {
  if (err || stats === undefined) return err?.code === 'ENOENT' || err?.code === 'ENOTDIR' ? 'missing' : `error:${err?.code ?? 'unknown'}`;
  return `${stats.dev}:${stats.ino}:${stats.size}:${stats.mtimeMs}:${stats.ctimeMs}`;
}

function errorText(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  return e.code ? `${e.code}: ${e.message}` : String(e?.message ?? err);
}
