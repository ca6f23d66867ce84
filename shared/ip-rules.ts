/**
 * IP allow and deny lists: the whitelist/blacklist file format, parsed once into ranges sorted by
 * start so that the check made on every request is a binary search (O(log n), no allocation for
 * IPv4). Pure: no I/O. The platform's `ip-guard.ts` reads and watches the files.
 *
 * File format, one entry a line:
 *   10.1.2.3          2001:db8::1              a single address
 *   10.0.0.0/8        2001:db8::/32            a CIDR block (host bits are masked off)
 *   10.0.0.1-10.0.0.50                         an inclusive range, both ends of one family
 *   # comment         10.0.0.0/8  # trailing   blank lines are ignored
 *
 * IPv4 clients on a dual-stack socket are reported by Node as IPv4-mapped IPv6 addresses
 * (`::ffff:10.1.2.3`, RFC 4291 §2.5.5.2). Such an address is matched as the IPv4 address it is,
 * and a rule written in mapped form (`::ffff:10.0.0.0/104`) is an IPv4 rule. Any other IPv6 rule
 * covers IPv6 clients only, even one that contains the mapped block: `::/0` means every IPv6
 * client, not every client.
 */

/** One accepted entry of a rules file, for logs that say which rule matched. */
export interface IpRule {
  /** Where the rule came from (a file name), as passed to {@link parseIpRules}. */
  readonly source: string | undefined;
  /** 1-based line number. */
  readonly line: number;
  /** The entry as written, comment and surrounding whitespace removed. */
  readonly text: string;
}

/** A line of a rules file that was skipped, and why. */
export interface IpRuleProblem {
  /** 1-based line number. */
  line: number;
  /** The entry as written (comment removed), cut to {@link maxProblemTextChars} characters. */
  text: string;
  reason: string;
}

/** What the lists say about a client address. */
export type IpDecision = 'whitelisted' | 'blacklisted' | 'neutral';

/** Longest line text quoted in a problem: a garbage file must not turn into megabytes of log. */
export const maxProblemTextChars = 120;

const maxV4 = 0xffff_ffff;
const maxV6 = (1n << 128n) - 1n;
/** ::ffff:0:0/96, where IPv4-mapped addresses live. */
const mappedStart = 0xffffn << 32n;
const mappedEnd = mappedStart | BigInt(maxV4);

/**
 * Ranges of one family sorted by start. `reachEnd[i]` is the largest end among ranges 0..i and
 * `reachRule[i]` the rule that has it: the rule ranges may overlap, and a point x is covered iff
 * the last range starting at or before x reaches x. That keeps one entry per rule (so a match can
 * name its rule) without an interval tree.
 */
interface RangeTable<T extends number | bigint> {
  readonly starts: T[];
  readonly reachEnd: T[];
  readonly reachRule: number[];
}

interface PendingRange<T extends number | bigint> {
  start: T;
  end: T;
  rule: number;
}

function buildTable<T extends number | bigint>(ranges: PendingRange<T>[]): RangeTable<T> {
  ranges.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  const starts: T[] = [];
  const reachEnd: T[] = [];
  const reachRule: number[] = [];
  let best: PendingRange<T> | undefined;
  for (const range of ranges) {
    if (best === undefined || range.end > best.end) best = range;
    starts.push(range.start);
    reachEnd.push(best.end);
    reachRule.push(best.rule);
  }
  return { starts, reachEnd, reachRule };
}

/** The index of the rule covering `x`, or -1. */
function findRule<T extends number | bigint>(table: RangeTable<T>, x: T): number {
  const { starts } = table;
  let lo = 0;
  let hi = starts.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((starts[mid] as T) <= x) lo = mid + 1;
    else hi = mid;
  }
  const i = lo - 1;
  return i >= 0 && (table.reachEnd[i] as T) >= x ? (table.reachRule[i] as number) : -1;
}

// The constructor stays private (a set is only made by parseIpRules); a static block hands
// this module a way to call it.
let newRuleSet: (rules: IpRule[], v4: PendingRange<number>[], v6: PendingRange<bigint>[]) => IpRuleSet;

/** A parsed whitelist or blacklist. Immutable; build one with {@link parseIpRules}. */
export class IpRuleSet {
  /** The list with no entries: matches nothing. */
  static readonly empty: IpRuleSet = new IpRuleSet([], [], []);

  static {
    newRuleSet = (rules, v4, v6) => new IpRuleSet(rules, v4, v6);
  }

  private readonly rules: readonly IpRule[];
  private readonly v4: RangeTable<number>;
  private readonly v6: RangeTable<bigint>;

  private constructor(rules: IpRule[], v4: PendingRange<number>[], v6: PendingRange<bigint>[]) {
    this.rules = rules;
    this.v4 = buildTable(v4);
    this.v6 = buildTable(v6);
  }

  /** Number of entries (accepted lines), overlapping ones included. */
  get size(): number {
    return this.rules.length;
  }

  /**
   * Whether an entry covers `ip`. `ip` is an address as Node reports it (`socket.remoteAddress`):
   * IPv4, IPv6, IPv4-mapped IPv6, optionally with a `%zone`. Anything else matches nothing.
   */
  matches(ip: string): boolean {
    return this.find(ip) !== -1;
  }

  /** The entry that covers `ip` (when several do, the one reaching furthest), for logs. */
  lookup(ip: string): IpRule | undefined {
    const i = this.find(ip);
    return i === -1 ? undefined : this.rules[i];
  }

  private find(ip: string): number {
    if (this.rules.length === 0) return -1;
    const key = addressKey(ip);
    if (key === undefined) return -1;
    return typeof key === 'number' ? findRule(this.v4, key) : findRule(this.v6, key);
  }
}

/**
 * Parses a whitelist or blacklist file (format in the module comment). Never throws: a bad line
 * is skipped and reported in `problems` with its 1-based line number. `source` (a file name) is
 * recorded on each rule so a match can say where it came from.
 */
export function parseIpRules(text: string, source?: string): { rules: IpRuleSet; problems: IpRuleProblem[] } {
  const rules: IpRule[] = [];
  const v4: PendingRange<number>[] = [];
  const v6: PendingRange<bigint>[] = [];
  const problems: IpRuleProblem[] = [];
  // Line numbers as an editor counts them: \r\n, \n and a lone \r each end a line.
  const lines = String(text)
    .replace(/^\uFEFF/, '')
    .split(/\r\n|\n|\r/);
  for (let index = 0; index < lines.length; index++) {
    const raw = lines[index] as string;
    const hash = raw.indexOf('#');
    const entry = (hash === -1 ? raw : raw.slice(0, hash)).trim();
    if (entry === '') continue;
    const line = index + 1;
    const parsed = parseEntry(entry);
    if (typeof parsed === 'string') {
      problems.push({ line, text: clip(entry), reason: parsed });
      continue;
    }
    const rule = rules.length;
    rules.push({ source, line, text: entry });
    if (parsed.family === 4) {
      v4.push({ start: parsed.start, end: parsed.end, rule });
    } else if (parsed.start >= mappedStart && parsed.end <= mappedEnd) {
      // Written in mapped form: an IPv4 rule (see the module comment).
      v4.push({ start: Number(parsed.start - mappedStart), end: Number(parsed.end - mappedStart), rule });
    } else {
      v6.push({ start: parsed.start, end: parsed.end, rule });
    }
  }
  return { rules: rules.length === 0 ? IpRuleSet.empty : newRuleSet(rules, v4, v6), problems };
}

/** Whitelist first: a whitelisted address is never blacklisted, whatever the blacklist says. */
export function decideIp(ip: string, lists: { whitelist: IpRuleSet; blacklist: IpRuleSet }): IpDecision {
  if (lists.whitelist.matches(ip)) return 'whitelisted';
  return lists.blacklist.matches(ip) ? 'blacklisted' : 'neutral';
}

type ParsedEntry = { family: 4; start: number; end: number } | { family: 6; start: bigint; end: bigint };
type Address = { family: 4; value: number } | { family: 6; value: bigint };

/** An entry as a range, or the reason it is not one. */
function parseEntry(entry: string): ParsedEntry | string {
  const slash = entry.indexOf('/');
  if (slash !== -1) return parseCidr(entry.slice(0, slash).trim(), entry.slice(slash + 1).trim());
  const dash = entry.indexOf('-');
  if (dash !== -1) return parseRange(entry.slice(0, dash).trim(), entry.slice(dash + 1).trim());
  const address = parseRuleAddress(entry);
  if (typeof address === 'string') return address;
  return address.family === 4
    ? { family: 4, start: address.value, end: address.value }
    : { family: 6, start: address.value, end: address.value };
}

function parseCidr(addressText: string, prefixText: string): ParsedEntry | string {
  const address = parseRuleAddress(addressText);
  if (typeof address === 'string') return address;
  const bits = address.family === 4 ? 32 : 128;
  const prefix = /^\d{1,3}$/.test(prefixText) ? Number(prefixText) : NaN;
  if (!(prefix <= bits)) return `prefix length "${clip(prefixText, 20)}" must be an integer from 0 to ${bits} for IPv${address.family}`;
  if (address.family === 4) {
    const size = 2 ** (32 - prefix);
    const start = Math.floor(address.value / size) * size;
    return { family: 4, start, end: start + size - 1 };
  }
  const hostMask = (1n << BigInt(128 - prefix)) - 1n;
  const start = address.value & (maxV6 ^ hostMask);
  return { family: 6, start, end: start | hostMask };
}

function parseRange(startText: string, endText: string): ParsedEntry | string {
  if (endText.includes('-')) return 'a range has exactly one "-"';
  const start = parseRuleAddress(startText, 'range start');
  if (typeof start === 'string') return start;
  const end = parseRuleAddress(endText, 'range end');
  if (typeof end === 'string') return end;
  if (start.family === 4 && end.family === 4) {
    return start.value <= end.value ? { family: 4, start: start.value, end: end.value } : 'range start is after its end';
  }
  if (start.family === 6 && end.family === 6) {
    return start.value <= end.value ? { family: 6, start: start.value, end: end.value } : 'range start is after its end';
  }
  return 'range mixes IPv4 and IPv6';
}

function parseRuleAddress(text: string, what = 'entry'): Address | string {
  if (text === '') return `${what} is empty`;
  if (text.includes('%')) return `${what} has a zone index (%...), which a rule cannot use`;
  const v4 = parseV4(text);
  if (v4 !== -1) return { family: 4, value: v4 };
  const groups = parseV6Groups(text);
  if (groups !== undefined) return { family: 6, value: groupsToBigInt(groups) };
  return `${what} "${clip(text, 60)}" is not an IP address`;
}

/**
 * The lookup key of a client address: a number for IPv4 (IPv4-mapped IPv6 included), a bigint
 * for other IPv6, undefined when it is not an address. A `%zone` suffix is ignored.
 */
function addressKey(ip: string): number | bigint | undefined {
  if (typeof ip !== 'string') return undefined;
  const v4 = parseV4(ip);
  if (v4 !== -1) return v4;
  const zone = ip.indexOf('%');
  const groups = parseV6Groups(zone === -1 ? ip : ip.slice(0, zone));
  if (groups === undefined) return undefined;
  if (groups[0] === 0 && groups[1] === 0 && groups[2] === 0 && groups[3] === 0 && groups[4] === 0 && groups[5] === 0xffff) {
    return (groups[6] as number) * 0x1_0000 + (groups[7] as number);
  }
  return groupsToBigInt(groups);
}

/**
 * Strict dotted quad: four decimal octets 0-255 without leading zeros (`010.0.0.1` is octal to
 * inet_aton and decimal to others, so it is refused, as `net.isIPv4` does). -1 when invalid.
 */
function parseV4(s: string): number {
  const n = s.length;
  if (n < 7 || n > 15) return -1;
  let value = 0;
  let dots = 0;
  let octet = 0;
  let digits = 0;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if (c === 46 /* . */) {
      if (digits === 0 || ++dots > 3) return -1;
      value = value * 256 + octet;
      octet = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57) {
      if (digits > 0 && octet === 0) return -1;
      octet = octet * 10 + (c - 48);
      digits++;
      if (octet > 255) return -1;
    } else {
      return -1;
    }
  }
  if (digits === 0 || dots !== 3) return -1;
  return value * 256 + octet;
}

const hexGroup = /^[0-9a-fA-F]{1,4}$/;

/** RFC 4291 §2.2 text form as eight 16-bit groups, or undefined. No zone index. */
function parseV6Groups(s: string): number[] | undefined {
  // The longest valid form is ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 (45 characters).
  if (s.length < 2 || s.length > 45) return undefined;
  const gap = s.indexOf('::');
  if (gap !== -1 && s.indexOf('::', gap + 1) !== -1) return undefined;
  const head = parseGroups(gap === -1 ? s : s.slice(0, gap), gap === -1);
  const tail = gap === -1 ? [] : parseGroups(s.slice(gap + 2), true);
  if (head === undefined || tail === undefined) return undefined;
  const missing = 8 - head.length - tail.length;
  // "::" stands for at least one zero group.
  if (gap === -1 ? missing !== 0 : missing < 1) return undefined;
  return gap === -1 ? head : [...head, ...new Array<number>(missing).fill(0), ...tail];
}

/** Colon-separated groups; the last may be a dotted quad (two groups) when `v4Last`. */
function parseGroups(part: string, v4Last: boolean): number[] | undefined {
  if (part === '') return [];
  const pieces = part.split(':');
  const groups: number[] = [];
  for (let i = 0; i < pieces.length; i++) {
    const piece = pieces[i] as string;
    if (hexGroup.test(piece)) {
      groups.push(parseInt(piece, 16));
    } else if (v4Last && i === pieces.length - 1) {
      const v4 = parseV4(piece);
      if (v4 === -1) return undefined;
      groups.push(v4 >>> 16, v4 & 0xffff);
    } else {
      return undefined;
    }
  }
  return groups;
}

function groupsToBigInt(groups: number[]): bigint {
  let value = 0n;
  for (let i = 0; i < 8; i += 2) value = (value << 32n) | BigInt((groups[i] as number) * 0x1_0000 + (groups[i + 1] as number));
  return value;
}

function clip(text: string, max = maxProblemTextChars): string {
  return text.length <= max ? text : `${text.slice(0, max)}…`;
}

/**
 * One spelling per client address, for per-address counters and logs: an IPv4-mapped IPv6
 * address (`::ffff:10.1.2.3`, as dual-stack sockets report IPv4 clients) becomes `10.1.2.3`, and
 * an IPv6 zone is dropped. Anything else is returned as given.
 */
export function canonicalIp(ip: string): string {
  const bare = ip.includes('%') ? ip.slice(0, ip.indexOf('%')) : ip;
  const mapped = /^::ffff:(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})$/i.exec(bare);
  return mapped ? mapped[1]! : bare.toLowerCase();
}
