/**
 * The platform's IP whitelist and blacklist files, read from one folder and reloaded when they
 * change. Parsing and matching live in `shared/ip-rules.ts`; this file owns the I/O: reading,
 * watching, and logging what was wrong with a file. Nothing here throws over a bad, missing or
 * unreadable file.
 */
import { closeSync, fstatSync, openSync, readFileSync, stat, statSync, type Stats } from 'node:fs';
import { join } from 'node:path';
import { decideIp, IpRuleSet, parseIpRules, type IpDecision, type IpRuleProblem } from '../../shared/ip-rules.js';
import type { Logger } from '../../shared/logger.js';
import { defaults } from '../../shared/defaults.js';

export interface IpGuardOptions {
  /** Folder holding both files. It may not exist yet; files created later are picked up. */
  dir: string;
  logger: Logger;
  /** Default `whitelist.dat`. */
  whitelistFile?: string;
  /** Default `blacklist.dat`. */
  blacklistFile?: string;
  /** How often each file is stat'ed for changes, in ms. Default 2000. */
  pollIntervalMs?: number;
  /** A larger file is refused (the previous rules are kept). Default 16 MiB (~700k entries). */
  maxFileBytes?: number;
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

/** Entries and problems per file, as returned by {@link IpGuard.reload}. */
export interface IpGuardSummary {
  whitelist: IpListSummary;
  blacklist: IpListSummary;
}

type ListName = keyof IpGuardSummary;

interface WatchedList {
  readonly name: ListName;
  readonly path: string;
  rules: IpRuleSet;
  summary: IpListSummary;
  /** Identity of what was last loaded (inode, size, times), `missing`, or `error:CODE`. */
  signature: string;
}

/** Bad lines logged one by one per file and load; the rest are counted in one line. */
const maxLoggedProblems = 20;

/**
 * Whitelist and blacklist files of the platform server. Both are loaded when constructed (a
 * missing file is an empty list), then each path is stat'ed every `pollIntervalMs` and the file
 * reloaded when it is not the one last loaded.
 *
 * Polling the path rather than `fs.watch`: it follows editors and deploy scripts that replace a
 * file by rename, and sees a file created after start, even in a folder created after start; two
 * stat calls every two seconds cost nothing. Not `fs.watchFile` either: it takes its first stat
 * asynchronously, so a write between our load and that stat is never reported (measured: 48 of
 * 200 such writes missed), and it shares one poller per path whose interval the first caller
 * sets. Comparing each stat with the fstat of the descriptor actually read has neither problem.
 */
export class IpGuard {
  private readonly logger: Logger;
  private readonly maxFileBytes: number;
  private readonly lists: Record<ListName, WatchedList>;
  private timer: NodeJS.Timeout | undefined;
  private polling = false;

  constructor(options: IpGuardOptions) {
    this.logger = options.logger;
    this.maxFileBytes = options.maxFileBytes ?? defaults.ipRulesMaxFileBytes;
    const list = (name: ListName, file: string): WatchedList => {
      const path = join(options.dir, file);
      return {
        name,
        path,
        rules: IpRuleSet.empty,
        summary: { file: path, status: 'missing', entries: 0, problems: [] },
        signature: 'missing',
      };
    };
    this.lists = {
      whitelist: list('whitelist', options.whitelistFile ?? 'whitelist.dat'),
      blacklist: list('blacklist', options.blacklistFile ?? 'blacklist.dat'),
    };
    this.reload();
    this.timer = setInterval(() => this.poll(), options.pollIntervalMs ?? defaults.ipRulesPollMs);
    // The guard must not keep alive a process that is otherwise done.
    this.timer.unref();
  }

  /** What the lists say about a client address (as Node reports it; mapped IPv4 included). */
  decide(ip: string): IpDecision {
    return decideIp(ip, { whitelist: this.lists.whitelist.rules, blacklist: this.lists.blacklist.rules });
  }

  /** The whitelist in force, e.g. to log which entry matched (`lookup`). */
  get whitelist(): IpRuleSet {
    return this.lists.whitelist.rules;
  }

  /** The blacklist in force. */
  get blacklist(): IpRuleSet {
    return this.lists.blacklist.rules;
  }

  /**
   * Reads both files again now. Synchronous: the files are small and parsing is CPU work either
   * way, and it keeps two reloads from interleaving.
   */
  reload(): IpGuardSummary {
    return { whitelist: this.load(this.lists.whitelist), blacklist: this.load(this.lists.blacklist) };
  }

  /** The result of the last load of each file. */
  summary(): IpGuardSummary {
    return { whitelist: { ...this.lists.whitelist.summary }, blacklist: { ...this.lists.blacklist.summary } };
  }

  /** Stops watching the files. The rules in force stay; `reload()` still works. Idempotent. */
  close(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** One stat per file, asynchronous so that a slow file system cannot stall requests. */
  private poll(): void {
    // A tick that finds the previous one unfinished (slow or hung file system) skips.
    if (this.polling) return;
    const pending = Object.values(this.lists);
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
        }
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
