/**
 * A whitelist file and a blacklist file, read and reloaded when they change. Parsing and matching
 * live in `ip-rules.ts`; this file owns the I/O: reading, watching, logging what was wrong with a
 * file, and saving a new version of one. Nothing here throws over a bad, missing or unreadable
 * file. The platform's `IpGuard` (one data folder, fixed file names) and the relay's edge
 * (`--whitelist`, `--blacklist`) both use it; only the platform saves.
 */
import { randomBytes } from 'node:crypto';
import {
  closeSync,
  fstatSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
  type Stats,
} from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { defaults } from './defaults.js';
import { FilePoller, signatureOf } from './file-poll.js';
import { RelayError } from './errors.js';
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

/**
 * A list's new text, checked by {@link IpRuleFiles.prepare} and ready for
 * {@link IpRuleFiles.save}: line endings are `\n`, it ends with a newline (unless empty), and
 * every line is an entry, a comment or blank.
 */
export interface IpListDraft {
  readonly list: IpListName;
  /** The file content to write, comments and blank lines as given. */
  readonly text: string;
  /** What the list will hold once saved, e.g. to check an address against it first. */
  readonly rules: IpRuleSet;
}

/** A bad line of a refused save, as the admin API reports it (`details.problems`). */
export interface IpRuleLineError {
  line: number;
  text: string;
  message: string;
}

/**
 * Bad lines carried in one refused save's error: enough to fix a file by hand, bounded so that a
 * pasted garbage file does not become a response of many megabytes. `problem_count` says how many
 * there were in all.
 */
export const maxReportedProblems = 1000;

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
  /** Largest file read or saved, in bytes. */
  readonly maxFileBytes: number;
  private readonly logger: Logger;
  private readonly onChange: ((list: IpListName) => void) | undefined;
  private readonly whitelistFile: WatchedList | null;
  private readonly blacklistFile: WatchedList | null;
  private readonly poller: FilePoller;
  /** Drafts this instance made: `save` writes nothing that `prepare` did not check. */
  private readonly drafts = new WeakSet<IpListDraft>();

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
    // One stat per file and period, asynchronous so that a slow file system cannot stall requests;
    // the poller's timer is unref'd (the files must not keep alive a process that is otherwise done).
    const watched = this.watched();
    this.poller = new FilePoller({
      paths: watched.map((list) => list.path),
      intervalMs: options.pollIntervalMs ?? defaults.ipRulesPollMs,
      known: () => watched.map((list) => list.signature),
      onChange: (changed) => {
        for (const i of changed) this.reloadChanged(watched[i]!);
      },
      onError: (err) => this.logger.error({ err }, 'IP rules: reload failed; keeping the previous rules'),
    });
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

  /**
   * The list's file as text (`''` when there is none, `null` when it cannot be read: see the
   * summary's `error`), with the summary of the rules in force. A file changed since its last
   * load is loaded now, so that the text and the summary always describe the same file.
   */
  contents(list: IpListName): { text: string | null; summary: IpListSummary } {
    const watched = this.file(list);
    const read = this.read(watched.path);
    if (read.signature !== watched.signature) this.apply(watched, read);
    return { text: read.text ?? (read.error === undefined ? '' : null), summary: { ...watched.summary } };
  }

  /**
   * Checks new text for a list without writing anything. Line endings become `\n` and a final
   * newline is added; comments and blank lines are kept as given. Throws
   * `RELAY_ERR_IP_RULES_TOO_LARGE` past `maxFileBytes` (the limit the reader applies), and
   * `RELAY_ERR_INVALID_IP_RULES` when any line is neither an entry, a comment nor blank, with
   * every bad line (up to {@link maxReportedProblems}) in `details.problems`.
   */
  prepare(list: IpListName, text: string): IpListDraft {
    const draft: IpListDraft = { list, ...checkIpListText(list, text, this.maxFileBytes, this.file(list).path) };
    this.drafts.add(draft);
    return draft;
  }

  /**
   * Writes a draft from {@link prepare} as the list's file and loads it at once, so that its rules
   * apply from the next `decide` (not only after the next poll). The write is atomic: a temporary
   * file in the same folder (mode 0600), fsync'd, then renamed over the file; the folder is made
   * (mode 0700) when missing. Synchronous, like `reload()`: two saves never interleave. Throws
   * `RELAY_ERR_IP_RULES_WRITE` when the file cannot be written; the old file then stays in force.
   */
  save(draft: IpListDraft): IpListSummary {
    if (!this.drafts.has(draft)) throw new Error('IpRuleFiles.save: pass a draft made by prepare() of the same instance');
    const watched = this.file(draft.list);
    const { path } = watched;
    const dir = dirname(path);
    const temp = join(dir, `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
    try {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      const fd = openSync(temp, 'wx', 0o600);
      try {
        writeFileSync(fd, draft.text);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      renameSync(temp, path);
    } catch (err) {
      try {
        rmSync(temp, { force: true });
      } catch {
        // The write failed already; a leftover temporary file is harmless and named as one.
      }
      this.logger.error(
        { file: path, list: draft.list, error: errorText(err) },
        'IP rules: cannot write the file; the previous rules stay',
      );
      const code = (err as NodeJS.ErrnoException).code ?? 'error';
      throw new RelayError('RELAY_ERR_IP_RULES_WRITE', `${basename(path)} could not be written (${code}); nothing was changed`, {
        cause: err,
        details: { list: draft.list },
      });
    }
    syncFolder(dir);
    return this.load(watched);
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
    this.poller.close();
  }

  private file(list: IpListName): WatchedList {
    const watched = list === 'whitelist' ? this.whitelistFile : this.blacklistFile;
    if (!watched) throw new Error(`IpRuleFiles: no ${list} file is configured`);
    return watched;
  }

  private watched(): WatchedList[] {
    return [this.whitelistFile, this.blacklistFile].filter((list): list is WatchedList => list !== null);
  }

  /** A file the poller found changed: loaded again, then `onChange`. */
  private reloadChanged(watched: WatchedList): void {
    try {
      this.load(watched);
    } catch (loadErr) {
      // load() does not throw; this is the last guard before an uncaught exception.
      this.logger.error({ err: loadErr, file: watched.path }, 'IP rules: reload failed; keeping the previous rules');
      return;
    }
    this.onChange?.(watched.name);
  }

  private load(watched: WatchedList): IpListSummary {
    return this.apply(watched, this.read(watched.path));
  }

  /** Makes what `read` gave the list in force (or keeps the previous rules when it is an error). */
  private apply(watched: WatchedList, read: RulesFileRead): IpListSummary {
    const { path, name } = watched;
    const before = watched.summary;
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
    const loaded = loadIpListText(this.logger, name, path, read.text);
    watched.rules = loaded.rules;
    watched.summary = loaded.summary;
    return watched.summary;
  }

  private read(path: string): RulesFileRead {
    return readRulesFile(path, this.maxFileBytes);
  }
}

function statOf(path: string): [NodeJS.ErrnoException | null, Stats | undefined] {
  try {
    return [null, statSync(path)];
  } catch (err) {
    return [err as NodeJS.ErrnoException, undefined];
  }
}

/** What {@link readRulesFile} found. */
export interface RulesFileRead {
  text?: string;
  error?: string;
  signature: string;
}

/**
 * A rules file's text (at most `maxFileBytes`); neither `text` nor `error` when it does not
 * exist; `error` when it cannot be read. `signature` identifies what was read, so that polling
 * reloads only on a change and an unreadable file is not retried (and logged) on every tick.
 * IpRuleFiles reads with it, and so does the platform's import of the files into a shared store.
 */
export function readRulesFile(path: string, maxFileBytes: number): RulesFileRead {
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
    if (stats.size > maxFileBytes) return { error: `larger than ${maxFileBytes} bytes`, signature };
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

/**
 * The checks of {@link IpRuleFiles.prepare}, for any place a list is kept (a file, a shared
 * store): the text normalised, refused past `maxBytes` (RELAY_ERR_IP_RULES_TOO_LARGE) or with any
 * bad line (RELAY_ERR_INVALID_IP_RULES, the lines in `details.problems`). `source` names the list
 * in the problems.
 */
export function checkIpListText(list: IpListName, text: string, maxBytes: number, source: string): { text: string; rules: IpRuleSet } {
  const normalised = normaliseIpRulesText(text);
  const bytes = Buffer.byteLength(normalised);
  if (bytes > maxBytes)
    throw new RelayError(
      'RELAY_ERR_IP_RULES_TOO_LARGE',
      `the ${list} is ${bytes} bytes, over the limit of ${maxBytes}; nothing was saved`,
      {
        details: { list, bytes, max_bytes: maxBytes },
      },
    );
  const { rules, problems } = parseIpRules(normalised, source);
  if (problems.length > 0) {
    const lines = problems.length === 1 ? 'line is' : 'lines are';
    throw new RelayError('RELAY_ERR_INVALID_IP_RULES', `the ${list} was not saved: ${problems.length} ${lines} not valid`, {
      details: {
        list,
        problem_count: problems.length,
        problems: lineErrors(problems),
      },
    });
  }
  return { text: normalised, rules };
}

/**
 * A list's text as loaded rules: parsed (bad lines skipped and logged, the first few one by one)
 * and summarised as `loaded` from `file`. How IpRuleFiles loads a file, and the platform a list
 * kept in a shared store.
 */
export function loadIpListText(logger: Logger, list: IpListName, file: string, text: string): { rules: IpRuleSet; summary: IpListSummary } {
  const { rules, problems } = parseIpRules(text, file);
  for (const problem of problems.slice(0, maxLoggedProblems)) {
    logger.warn({ file, list, ...problem }, 'IP rules: skipped a bad line');
  }
  if (problems.length > maxLoggedProblems) {
    logger.warn({ file, list, more: problems.length - maxLoggedProblems }, 'IP rules: more bad lines not logged');
  }
  logger.info({ file, list, entries: rules.size, problems: problems.length }, 'IP rules: loaded');
  return { rules, summary: { file, status: 'loaded', entries: rules.size, problems } };
}

/** Text as {@link IpRuleFiles.prepare} saves it: `\n` line endings, a final newline unless empty. */
export function normaliseIpRulesText(text: string): string {
  const lf = text.replace(/\r\n?/g, '\n');
  return lf === '' || lf.endsWith('\n') ? lf : `${lf}\n`;
}

/** Bad lines as the admin API reports them: `{line, text, message}`, the first {@link maxReportedProblems}. */
export function lineErrors(problems: readonly IpRuleProblem[]): IpRuleLineError[] {
  return problems.slice(0, maxReportedProblems).map((p) => ({ line: p.line, text: p.text, message: p.reason }));
}

/**
 * Makes a rename durable: the new directory entry is on disk only once the folder is fsync'd.
 * Best effort: some file systems refuse to fsync a directory, and the file itself is written.
 */
function syncFolder(dir: string): void {
  try {
    const fd = openSync(dir, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch {
    // The rename has happened; only its durability across a power cut is in question.
  }
}

function errorText(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  return e.code ? `${e.code}: ${e.message}` : String(e?.message ?? err);
}
