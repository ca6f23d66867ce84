/**
 * The relay's IP rules (`--whitelist`, `--blacklist`, `--whitelist-only`): which mobile clients
 * the edge drops before any TLS or HTTP work, and which are exempt from the per-IP limits. Same
 * file format as the platform's (`shared/ip-rules.ts`), read and reloaded by
 * `shared/ip-rule-files.ts`.
 *
 * - On the whitelist: admitted, and exempt from the per-IP connection and rate limits, whatever
 *   the blacklist says (the whitelist wins).
 * - On the blacklist only: dropped (`ip_blacklist`).
 * - On neither: admitted, unless `whitelistOnly`, then dropped (`ip_not_whitelisted`).
 */
import { RelayError } from '../../shared/errors.js';
import { IpRuleFiles, type IpListName, type IpRuleFilesSummary } from '../../shared/ip-rule-files.js';
import type { Logger } from '../../shared/logger.js';

export interface IpFilterOptions {
  whitelistPath?: string;
  blacklistPath?: string;
  /** Drop every client not on the whitelist. Needs `whitelistPath`. */
  whitelistOnly: boolean;
  logger: Logger;
  pollIntervalMs?: number;
  maxFileBytes?: number;
  /** Called after polling loaded a changed file (not after `reload()`). */
  onChange?: (list: IpListName) => void;
}

/** What the edge does with a client address. */
export type IpVerdict = 'allow' | 'exempt' | 'ip_blacklist' | 'ip_not_whitelisted';

export class IpFilter {
  readonly whitelistOnly: boolean;
  private readonly files: IpRuleFiles;
  private readonly logger: Logger;

  constructor(options: IpFilterOptions) {
    if (options.whitelistOnly && options.whitelistPath === undefined) {
      throw new RelayError('RELAY_ERR_CONFIG', '--whitelist-only needs --whitelist <file>: without one every client would be dropped');
    }
    this.whitelistOnly = options.whitelistOnly;
    this.logger = options.logger;
    this.files = new IpRuleFiles({
      logger: options.logger,
      ...(options.whitelistPath !== undefined ? { whitelistPath: options.whitelistPath } : {}),
      ...(options.blacklistPath !== undefined ? { blacklistPath: options.blacklistPath } : {}),
      ...(options.pollIntervalMs !== undefined ? { pollIntervalMs: options.pollIntervalMs } : {}),
      ...(options.maxFileBytes !== undefined ? { maxFileBytes: options.maxFileBytes } : {}),
      onChange: (list) => {
        this.warnIfNobodyAdmitted();
        options.onChange?.(list);
      },
    });
    this.warnIfNobodyAdmitted();
  }

  /** True when a file is configured: without one every client is `allow`. */
  get active(): boolean {
    const { whitelist, blacklist } = this.files.summary();
    return whitelist !== null || blacklist !== null;
  }

  /** The verdict for a client address in canonical form (`canonicalIp`). */
  check(ip: string): IpVerdict {
    const decision = this.files.decide(ip);
    if (decision === 'whitelisted') return 'exempt';
    if (decision === 'blacklisted') return 'ip_blacklist';
    return this.whitelistOnly ? 'ip_not_whitelisted' : 'allow';
  }

  /** True when the whitelist covers `ip` (exempt from the per-IP limits). */
  isWhitelisted(ip: string): boolean {
    return this.files.whitelist.matches(ip);
  }

  /** Reads both files again now (SIGHUP); the new rules apply to the next connection. */
  reload(): IpRuleFilesSummary {
    const summary = this.files.reload();
    this.warnIfNobodyAdmitted();
    return summary;
  }

  /** The result of the last load of each file (`null`: no such option). */
  summary(): IpRuleFilesSummary {
    return this.files.summary();
  }

  /** Stops watching the files. Idempotent. */
  close(): void {
    this.files.close();
  }

  private warnIfNobodyAdmitted(): void {
    if (this.whitelistOnly && this.files.whitelist.size === 0) {
      this.logger.warn({ event: 'ip_rules_whitelist_empty' }, '--whitelist-only with an empty whitelist: every mobile client is dropped');
    }
  }
}
