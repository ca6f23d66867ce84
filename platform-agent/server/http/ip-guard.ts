/**
 * The platform's IP whitelist and blacklist: `whitelist.dat` and `blacklist.dat` in the data
 * folder. Reading, watching, saving and logging live in `shared/ip-rule-files.ts`, parsing and
 * matching in `shared/ip-rules.ts`; this file names the files and holds the one rule a save must
 * respect beyond the file format: it must not silently lock out the address making it.
 */
import { join } from 'node:path';
import { decideIp, type IpDecision, type IpRule, type IpRuleSet } from '../../../shared/ip-rules.js';
import {
  IpRuleFiles,
  type IpListDraft,
  type IpListName,
  type IpListSummary,
  type IpRuleFilesSummary,
} from '../../../shared/ip-rule-files.js';
import type { Logger } from '../../../shared/logger.js';

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
  /** How often each file is stat'ed for changes, in ms. Default 2000. */
  pollIntervalMs?: number;
  /** A larger file is refused (the previous rules are kept). Default 16 MiB (~700k entries). */
  maxFileBytes?: number;
}

/** Entries and problems per file, as returned by {@link IpGuard.reload}. */
export interface IpGuardSummary {
  whitelist: IpListSummary;
  blacklist: IpListSummary;
}

/**
 * Whitelist and blacklist files of the platform server, loaded when constructed (a missing file
 * is an empty list) and reloaded when they change (see {@link IpRuleFiles}).
 */
export class IpGuard {
  private readonly files: IpRuleFiles;

  constructor(options: IpGuardOptions) {
    this.files = new IpRuleFiles({
      whitelistPath: join(options.dir, options.whitelistFile ?? 'whitelist.dat'),
      blacklistPath: join(options.dir, options.blacklistFile ?? 'blacklist.dat'),
      logger: options.logger,
      ...(options.pollIntervalMs !== undefined ? { pollIntervalMs: options.pollIntervalMs } : {}),
      ...(options.maxFileBytes !== undefined ? { maxFileBytes: options.maxFileBytes } : {}),
    });
  }

  /** What the lists say about a client address (as Node reports it; mapped IPv4 included). */
  decide(ip: string): IpDecision {
    return this.files.decide(ip);
  }

  /** The whitelist in force, e.g. to log which entry matched (`lookup`). */
  get whitelist(): IpRuleSet {
    return this.files.whitelist;
  }

  /** The blacklist in force. */
  get blacklist(): IpRuleSet {
    return this.files.blacklist;
  }

  /** Largest file read or saved, in bytes. */
  get maxFileBytes(): number {
    return this.files.maxFileBytes;
  }

  /** A list's file as text (`null` when unreadable) and the summary of its rules in force. */
  contents(list: IpListName): { text: string | null; summary: IpListSummary } {
    return this.files.contents(list);
  }

  /** Checks new text for a list; throws RELAY_ERR_INVALID_IP_RULES or _TOO_LARGE (see IpRuleFiles.prepare). */
  prepare(list: IpListName, text: string): IpListDraft {
    return this.files.prepare(list, text);
  }

  /** Writes a checked list atomically and puts it in force at once (see IpRuleFiles.save). */
  save(draft: IpListDraft): IpListSummary {
    return this.files.save(draft);
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

  /** Reads both files again now (synchronous). */
  reload(): IpGuardSummary {
    return bothLists(this.files.reload());
  }

  /** The result of the last load of each file. */
  summary(): IpGuardSummary {
    return bothLists(this.files.summary());
  }

  /** Stops watching the files. The rules in force stay; `reload()` still works. Idempotent. */
  close(): void {
    this.files.close();
  }
}

/** The guard always names both files, so neither summary is null. */
function bothLists(summary: IpRuleFilesSummary): IpGuardSummary {
  if (!summary.whitelist || !summary.blacklist) throw new Error('IpGuard: both rule files are always configured');
  return { whitelist: summary.whitelist, blacklist: summary.blacklist };
}
