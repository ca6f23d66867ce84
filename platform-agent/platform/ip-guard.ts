/**
 * The platform's IP whitelist and blacklist: `whitelist.dat` and `blacklist.dat` in the data
 * folder. Reading, watching and logging live in `shared/ip-rule-files.ts`, parsing and matching
 * in `shared/ip-rules.ts`; this file only names the files.
 */
import { join } from 'node:path';
import type { IpDecision, IpRuleSet } from '../../shared/ip-rules.js';
import { IpRuleFiles, type IpListSummary, type IpRuleFilesSummary } from '../../shared/ip-rule-files.js';
import type { Logger } from '../../shared/logger.js';

export type { IpListSummary };

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
