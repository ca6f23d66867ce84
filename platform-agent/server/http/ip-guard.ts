/**
 * The platform's IP whitelist and blacklist. Where they live depends on the store:
 *
 * - the embedded store (SQLite, one instance): `whitelist.dat` and `blacklist.dat` in the data
 *   folder. Reading, watching, saving and logging live in `shared/ip-rule-files.ts`.
 * - a shared store (PostgreSQL, several instances; `store.ipLists`): in the store, so that a save
 *   through one instance is in force on every other within the poll interval. The files of the
 *   data folder are imported into it once, on the first start that finds a list missing there.
 *
 * Parsing and matching live in `shared/ip-rules.ts`, the checks of a save in
 * `shared/ip-rule-files.ts` (the same for both). This file holds the one rule a save must respect
 * beyond the file format: it must not silently lock out the address making it.
 */
import { join } from 'node:path';
import { defaults } from '../../../shared/defaults.js';
import { RelayError } from '../../../shared/errors.js';
import { decideIp, IpRuleSet, parseIpRules, type IpDecision, type IpRule } from '../../../shared/ip-rules.js';
import {
  checkIpListText,
  IpRuleFiles,
  loadIpListText,
  normaliseIpRulesText,
  readRulesFile,
  type IpListDraft,
  type IpListName,
  type IpListSummary,
  type IpRuleFilesSummary,
} from '../../../shared/ip-rule-files.js';
import type { Logger } from '../../../shared/logger.js';
import type { IpListStore, PlatformStore } from '../store/store.js';

export type { IpListDraft, IpListName, IpListSummary };

/** Both lists, in the order pages and API answers show them. */
export const IP_LISTS: readonly IpListName[] = ['whitelist', 'blacklist'];

export interface IpGuardOptions {
  /** Folder holding both files. It may not exist yet; files created later are picked up. */
  dir: string;
  logger: Logger;
  /** Default `whitelist.dat`. */
  whitelistFile?: string;
  /** Default `blacklist.dat`. */
  blacklistFile?: string;
  /** How often each file is stat'ed, or the store asked for the lists' versions, in ms. Default 2000. */
  pollIntervalMs?: number;
  /** A larger file (or list in the store) is refused (the previous rules are kept). Default 16 MiB (~700k entries). */
  maxFileBytes?: number;
  /**
   * The platform's store. When it keeps the IP lists (`store.ipLists`: a shared store), they are
   * read from it and saved to it, and `ready()` must be awaited before the server serves; else
   * (or without it) they are the files.
   */
  store?: PlatformStore;
  /** Time of a save to the store (its version), ms since the epoch. Default `Date.now`. */
  now?: () => number;
}

/** Entries and problems per list, as returned by {@link IpGuard.reload}. */
export interface IpGuardSummary {
  whitelist: IpListSummary;
  blacklist: IpListSummary;
}

/**
 * Whitelist and blacklist of the platform server: from the files (loaded when constructed, a
 * missing file is an empty list, reloaded when they change: see {@link IpRuleFiles}) or from a
 * shared store (loaded by `ready()`, then polled: see {@link StoredIpLists}).
 *
 * `save` and `reload` are synchronous and work on the files only (as they always did); `commit`
 * and `refresh` are their asynchronous forms and work on either source: the admin API and the
 * control panel use those.
 */
export class IpGuard {
  private readonly files: IpRuleFiles | null;
  private readonly stored: StoredIpLists | null;

  constructor(options: IpGuardOptions) {
    const paths = {
      whitelist: join(options.dir, options.whitelistFile ?? 'whitelist.dat'),
      blacklist: join(options.dir, options.blacklistFile ?? 'blacklist.dat'),
    };
    const lists = options.store?.ipLists ?? null;
    if (options.store && lists) {
      this.files = null;
      this.stored = new StoredIpLists(options.store, lists, {
        dir: options.dir,
        paths,
        logger: options.logger,
        pollIntervalMs: options.pollIntervalMs ?? defaults.ipRulesPollMs,
        maxFileBytes: options.maxFileBytes ?? defaults.ipRulesMaxFileBytes,
        now: options.now ?? Date.now,
      });
      return;
    }
    this.stored = null;
    this.files = new IpRuleFiles({
      whitelistPath: paths.whitelist,
      blacklistPath: paths.blacklist,
      logger: options.logger,
      ...(options.pollIntervalMs !== undefined ? { pollIntervalMs: options.pollIntervalMs } : {}),
      ...(options.maxFileBytes !== undefined ? { maxFileBytes: options.maxFileBytes } : {}),
    });
  }

  /** Where the lists live: the data folder's files, or the shared store (`describe()` of its IpListStore). */
  get source(): { kind: 'files' } | { kind: 'store'; store: string } {
    return this.stored ? { kind: 'store', store: this.stored.where } : { kind: 'files' };
  }

  /**
   * Loads the lists before the server serves. Nothing to do for the files (loaded when
   * constructed). With a shared store: imports the data folder's files into it where a list was
   * never saved there, loads both lists and starts polling; rejects when the store cannot be read
   * (until then `decide` blocks every address: the lists in force are not known yet).
   */
  async ready(): Promise<void> {
    await this.stored?.ready();
  }

  /** What the lists say about a client address (as Node reports it; mapped IPv4 included). */
  decide(ip: string): IpDecision {
    return this.stored ? this.stored.decide(ip) : this.files!.decide(ip);
  }

  /** The whitelist in force, e.g. to log which entry matched (`lookup`). */
  get whitelist(): IpRuleSet {
    return this.stored ? this.stored.rules('whitelist') : this.files!.whitelist;
  }

  /** The blacklist in force. */
  get blacklist(): IpRuleSet {
    return this.stored ? this.stored.rules('blacklist') : this.files!.blacklist;
  }

  /** Largest file (or list text) read or saved, in bytes. */
  get maxFileBytes(): number {
    return this.stored ? this.stored.maxFileBytes : this.files!.maxFileBytes;
  }

  /**
   * A list's text (`null` when its file is unreadable) and the summary of its rules in force.
   * From a shared store: the text last loaded (polled), which is the text in force.
   */
  contents(list: IpListName): { text: string | null; summary: IpListSummary } {
    return this.stored ? this.stored.contents(list) : this.files!.contents(list);
  }

  /** Checks new text for a list; throws RELAY_ERR_INVALID_IP_RULES or _TOO_LARGE (see IpRuleFiles.prepare). */
  prepare(list: IpListName, text: string): IpListDraft {
    return this.stored ? this.stored.prepare(list, text) : this.files!.prepare(list, text);
  }

  /**
   * Saves a checked list where the lists live and puts it in force at once on this instance (the
   * other instances of a shared store within their poll interval). For the files, written
   * atomically (IpRuleFiles.save, whose errors it throws); for a store, its error (503 PLATFORM_ERR_STORE_UNAVAILABLE while it is down), and then
   * nothing changed.
   */
  async commit(draft: IpListDraft): Promise<IpListSummary> {
    return this.stored ? this.stored.commit(draft) : this.files!.save(draft);
  }

  /**
   * The blacklist entry that would block `ip` once `drafts` are saved (each replacing its list;
   * a list without a draft stays as it is), or undefined when `ip` would not be blocked. Callers
   * ask before saving, with the address of the request making the change, so that an
   * administrator does not lock themselves out without saying so.
   */
  blockingRule(ip: string, drafts: readonly IpListDraft[]): IpRule | undefined {
    const draft = (list: IpListName): IpRuleSet | undefined => drafts.find((d) => d.list === list)?.rules;
    const lists = { whitelist: draft('whitelist') ?? this.whitelist, blacklist: draft('blacklist') ?? this.blacklist };
    return decideIp(ip, lists) === 'blacklisted' ? lists.blacklist.lookup(ip) : undefined;
  }

  /**
   * Reads both lists again now from where they live. Never throws: a store that cannot be read
   * leaves the rules in force (`status: 'kept'` with the `error`), as an unreadable file does.
   */
  async refresh(): Promise<IpGuardSummary> {
    return this.stored ? this.stored.refresh() : bothLists(this.files!.reload());
  }

  /** The result of the last load of each list. */
  summary(): IpGuardSummary {
    return this.stored ? this.stored.summary() : bothLists(this.files!.summary());
  }

  /** Stops watching the files (polling the store). The rules in force stay; `refresh()` still works. Idempotent. */
  close(): void {
    if (this.stored) this.stored.close();
    else this.files!.close();
  }
}

/** The guard always names both files, so neither summary is null. */
function bothLists(summary: IpRuleFilesSummary): IpGuardSummary {
  if (!summary.whitelist || !summary.blacklist) throw new Error('IpGuard: both rule files are always configured');
  return { whitelist: summary.whitelist, blacklist: summary.blacklist };
}

// ------------------------------------------------------------- the lists in a shared store

interface StoredIpListsOptions {
  dir: string;
  /** The data folder's files, imported on the first start that finds a list missing in the store. */
  paths: Record<IpListName, string>;
  logger: Logger;
  pollIntervalMs: number;
  maxFileBytes: number;
  now: () => number;
}

interface StoredList {
  readonly name: IpListName;
  /** How the list is named in summaries and logs: `<store>/ip_lists/<list>`. */
  readonly file: string;
  rules: IpRuleSet;
  text: string;
  /** The version in force: the store's `updatedAt`, null when the store holds no such list, undefined to reload at the next poll. */
  version: number | null | undefined;
  summary: IpListSummary;
  /** Saves made here: a load that began before one does not put back the older text. */
  saves: number;
}

/** The name of a list in the store, as summaries and logs give it (its last segment is the list). */
export const storedListName = (where: string, list: IpListName): string => `${where}/ip_lists/${list}`;

/**
 * The lists of a shared store, in force on this instance. Loaded by `ready()`; then every
 * `pollIntervalMs` one query (`versions`) says whether another instance saved one, and that list
 * is loaded again. A poll that cannot reach the store keeps the rules in force (an empty list
 * would unblock every address it blocks), says so once per outage (`ip_lists_poll_failed`) and
 * once when it reads the store again (`ip_lists_poll_recovered`).
 */
class StoredIpLists {
  readonly maxFileBytes: number;
  readonly where: string;
  private readonly logger: Logger;
  private readonly lists: Record<IpListName, StoredList>;
  private readonly drafts = new WeakSet<IpListDraft>();
  private starting: Promise<void> | null = null;
  private loaded = false;
  private closed = false;
  private timer: NodeJS.Timeout | null = null;
  /** Loads run one after another; a poll tick that finds one running is skipped. */
  private queue: Promise<unknown> = Promise.resolve();
  private busy = false;
  /** Why the store could not be read, while it cannot. */
  private outage: string | null = null;

  constructor(
    private readonly store: PlatformStore,
    private readonly ipLists: IpListStore,
    private readonly opts: StoredIpListsOptions,
  ) {
    this.maxFileBytes = opts.maxFileBytes;
    this.logger = opts.logger;
    this.where = ipLists.describe();
    const list = (name: IpListName): StoredList => {
      const file = storedListName(this.where, name);
      return {
        name,
        file,
        rules: IpRuleSet.empty,
        text: '',
        version: undefined,
        summary: { file, status: 'missing', entries: 0, problems: [] },
        saves: 0,
      };
    };
    this.lists = { whitelist: list('whitelist'), blacklist: list('blacklist') };
  }

  ready(): Promise<void> {
    this.starting ??= this.start().catch((err: unknown) => {
      this.starting = null; // a later ready() tries again
      throw err;
    });
    return this.starting;
  }

  decide(ip: string): IpDecision {
    // Before the lists are loaded the rules in force are not known: nobody passes.
    if (!this.loaded) return 'blacklisted';
    return decideIp(ip, { whitelist: this.lists.whitelist.rules, blacklist: this.lists.blacklist.rules });
  }

  rules(list: IpListName): IpRuleSet {
    return this.lists[list].rules;
  }

  contents(list: IpListName): { text: string; summary: IpListSummary } {
    const l = this.lists[list];
    return { text: l.text, summary: { ...l.summary } };
  }

  prepare(list: IpListName, text: string): IpListDraft {
    const draft: IpListDraft = { list, ...checkIpListText(list, text, this.maxFileBytes, this.lists[list].file) };
    this.drafts.add(draft);
    return draft;
  }

  async commit(draft: IpListDraft): Promise<IpListSummary> {
    if (!this.drafts.has(draft)) throw new Error('IpGuard.commit: pass a draft made by prepare() of the same instance');
    const l = this.lists[draft.list];
    const version = await this.ipLists.put(draft.list, draft.text, this.opts.now());
    l.saves++;
    // Versions of a list only grow: a reply overtaken by a newer save of this instance changes nothing.
    if (typeof l.version !== 'number' || version >= l.version) {
      l.version = version;
      l.text = draft.text;
      l.rules = draft.rules;
      l.summary = { file: l.file, status: 'loaded', entries: draft.rules.size, problems: [] };
      this.logger.info({ file: l.file, list: l.name, entries: l.rules.size, problems: 0 }, 'IP rules: loaded');
    }
    return { ...l.summary };
  }

  async refresh(): Promise<IpGuardSummary> {
    await this.enqueue(() => this.sync(true));
    return this.summary();
  }

  summary(): IpGuardSummary {
    return { whitelist: { ...this.lists.whitelist.summary }, blacklist: { ...this.lists.blacklist.summary } };
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  private async start(): Promise<void> {
    await this.importFiles();
    const files = IP_LISTS.map((list) => this.opts.paths[list]);
    this.logger.info(
      { event: 'ip_lists_in_store', store: this.where, files },
      `IP whitelist and blacklist live in the store ${this.where}: the files in ${this.opts.dir} are not read (platform-agent ip-rules export|import)`,
    );
    const failed = await this.enqueue(() => this.sync(true));
    if (failed) throw failed;
    this.loaded = true;
    if (this.closed || this.timer) return;
    this.timer = setInterval(() => {
      if (this.busy) return;
      void this.enqueue(() => this.sync(false));
    }, this.opts.pollIntervalMs).unref();
  }

  /**
   * A list the store has never held is imported from its file in the data folder, as it is
   * (lines that are not valid are skipped when loaded and shown, as they are for a file). Once
   * the store holds a list, even an empty one, the file is never imported again. One instance at
   * a time, so that instances starting together on an empty store import once.
   */
  private async importFiles(): Promise<void> {
    await this.store.exclusive('ip-lists-import', async () => {
      for (const list of IP_LISTS) {
        if ((await this.ipLists.get(list)) !== null) continue;
        const file = this.opts.paths[list];
        const read = readRulesFile(file, this.maxFileBytes);
        if (read.error !== undefined) {
          this.logger.error(
            { event: 'ip_list_import_failed', list, file, error: read.error },
            `IP ${list}: cannot read ${file} to import it into the store; the list is empty until it is saved, or imported at a later start`,
          );
          continue;
        }
        if (read.text === undefined) continue;
        const text = normaliseIpRulesText(read.text);
        const { rules, problems } = parseIpRules(text, file);
        await this.ipLists.put(list, text, this.opts.now());
        this.logger.info(
          { event: 'ip_list_imported', list, file, store: this.where, entries: rules.size, problems: problems.length },
          `IP ${list} imported from ${file} into the store: ${rules.size} entries`,
        );
      }
    });
  }

  private enqueue<T>(fn: () => Promise<T>): Promise<T> {
    const run = async (): Promise<T> => {
      this.busy = true;
      try {
        return await fn();
      } finally {
        this.busy = false;
      }
    };
    const next = this.queue.then(run, run);
    this.queue = next.catch(() => undefined);
    return next;
  }

  /**
   * Loads the lists whose version changed (every list when `all`). Returns the error when the
   * store could not be read (the rules in force stay), else null.
   */
  private async sync(all: boolean): Promise<Error | null> {
    try {
      const versions = all ? null : await this.ipLists.versions();
      for (const list of IP_LISTS) {
        const l = this.lists[list];
        if (versions && versions[list] === l.version) continue;
        const saves = l.saves;
        const row = await this.ipLists.get(list);
        if (l.saves === saves) this.apply(l, row);
      }
    } catch (err) {
      this.lost(err);
      return err instanceof Error ? err : new Error(String(err));
    }
    if (this.outage !== null) {
      this.logger.info({ event: 'ip_lists_poll_recovered', store: this.where }, 'IP lists: the store can be read again');
      this.outage = null;
    }
    return null;
  }

  private apply(l: StoredList, row: { text: string; updatedAt: number } | null): void {
    const { name, file } = l;
    if (row === null) {
      const before = l.summary.status;
      l.version = null;
      l.text = '';
      l.rules = IpRuleSet.empty;
      l.summary = { file, status: 'missing', entries: 0, problems: [] };
      if (before === 'loaded') this.logger.warn({ file, list: name }, 'IP rules: the list is gone from the store; it is now empty');
      else this.logger.info({ file, list: name }, 'IP rules: the store holds no such list; it is empty');
      return;
    }
    l.version = row.updatedAt;
    if (Buffer.byteLength(row.text) > this.maxFileBytes) {
      const error = `larger than ${this.maxFileBytes} bytes`;
      l.summary = { ...l.summary, status: 'kept', entries: l.rules.size, error };
      this.logger.error(
        { file, list: name, error, entries: l.rules.size },
        'IP rules: cannot use the list in the store; keeping the previous rules',
      );
      return;
    }
    const loaded = loadIpListText(this.logger, name, file, row.text);
    l.text = row.text;
    l.rules = loaded.rules;
    l.summary = loaded.summary;
  }

  /** The store could not be read: the rules stay, the summaries say why, and the next poll loads both lists again. */
  private lost(err: unknown): void {
    const error = errorText(err);
    for (const list of IP_LISTS) {
      const l = this.lists[list];
      l.version = undefined;
      l.summary = { ...l.summary, status: 'kept', entries: l.rules.size, error: `the store cannot be read: ${error}` };
    }
    if (this.outage !== null) return;
    this.outage = error;
    this.logger.warn(
      {
        event: 'ip_lists_poll_failed',
        store: this.where,
        err: error,
        whitelist: this.lists.whitelist.rules.size,
        blacklist: this.lists.blacklist.rules.size,
      },
      'IP lists: the store cannot be read; the rules in force stay until it can',
    );
  }
}

function errorText(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const cause = err.cause instanceof Error ? err.cause.message : undefined;
  return cause && cause !== err.message ? `${err.message} (${cause})` : err.message;
}

// ------------------------------------------------------------- the CLI's export and import

/**
 * A list's text exactly as saved, for `platform-agent ip-rules export`: from the store when it
 * keeps the lists ('' while it holds none), else the file in `dir` ('' when there is none).
 * `where` names it.
 */
export async function exportIpList(
  store: PlatformStore,
  dir: string,
  list: IpListName,
  logger: Logger,
): Promise<{ text: string; entries: number; where: string }> {
  if (store.ipLists) {
    const row = await store.ipLists.get(list);
    const text = row?.text ?? '';
    return { text, entries: parseIpRules(text).rules.size, where: storedListName(store.ipLists.describe(), list) };
  }
  const guard = new IpGuard({ dir, logger, pollIntervalMs: 3_600_000 });
  try {
    const { text, summary } = guard.contents(list);
    if (text === null)
      throw new RelayError('PLATFORM_ERR_STORE', `${summary.file} cannot be read (${summary.error ?? 'unknown error'})`, {
        details: { list },
      });
    return { text, entries: summary.entries, where: summary.file };
  } finally {
    guard.close();
  }
}

/**
 * Replaces a list with `text`, for `platform-agent ip-rules import`: with the checks of the admin
 * API (RELAY_ERR_INVALID_IP_RULES naming the bad lines, RELAY_ERR_IP_RULES_TOO_LARGE), into the
 * store when it keeps the lists (the instances load it at their next poll), else as the file in
 * `dir` (the server reloads it at its next poll).
 */
export async function importIpList(
  store: PlatformStore,
  dir: string,
  list: IpListName,
  text: string,
  now: number,
  logger: Logger,
): Promise<{ entries: number; where: string }> {
  if (store.ipLists) {
    const where = storedListName(store.ipLists.describe(), list);
    const checked = checkIpListText(list, text, defaults.ipRulesMaxFileBytes, where);
    await store.ipLists.put(list, checked.text, now);
    return { entries: checked.rules.size, where };
  }
  const guard = new IpGuard({ dir, logger, pollIntervalMs: 3_600_000 });
  try {
    const summary = await guard.commit(guard.prepare(list, text));
    return { entries: summary.entries, where: summary.file };
  } finally {
    guard.close();
  }
}
