/**
 * Settings → IP rules: the platform's whitelist and blacklist as two textareas in one form. One
 * form, so that a change spanning both lists (whitelist your own address, blacklist its network)
 * is checked as a whole: both lists are validated line by line and nothing is saved unless both
 * are valid, and the self-block check sees the two new lists together. A list the administrator
 * did not touch is not rewritten (the form carries a hash of the text it showed), so saving one
 * list never overwrites a change someone else made to the other meanwhile.
 *
 * Validation lives in shared/ip-rule-files.ts (`prepare`); the page shows its bad lines next to
 * the textarea, as "Line N: <text> — <message>", with what the administrator typed kept.
 */
import { createHash } from 'node:crypto';
import { basename } from 'node:path';
import { lineErrors, normaliseIpRulesText, type IpRuleLineError } from '../../../shared/ip-rule-files.js';
import type { IpDecision } from '../../../shared/ip-rules.js';
import { IP_LISTS, type IpListName, type IpListSummary } from '../http/ip-guard.js';
import { csrfInput, esc } from './html.js';

export const CONFIRM_SELF_BLOCK = 'confirm_self_block';
/** Form field carrying the hash of the text a list's textarea was loaded with. */
export const loadedField = (list: IpListName): string => `${list}_loaded`;

/** Bad lines listed on the page for one list; the rest are counted. */
const maxShownProblems = 100;

/** Identifies a list's text as the page showed it (after the same normalisation a save applies). */
export function textHash(text: string): string {
  return createHash('sha256').update(normaliseIpRulesText(text)).digest('base64url');
}

/** Why a save was refused, for one list. */
export interface IpListError {
  message: string;
  problems: IpRuleLineError[];
  /** All bad lines, `problems` holding the first of them. */
  problemCount: number;
}

/** One list's part of the form. */
export interface IpListForm {
  /** What the textarea shows: the file, or what was typed. null: the file cannot be read, and the list cannot be edited here. */
  text: string | null;
  /** {@link textHash} of the text the page first showed (kept across a failed save). */
  loaded: string;
  /** The file in force: entries, load status, lines skipped. */
  summary: IpListSummary;
  error: IpListError | null;
}

export interface IpRulesPageInput {
  csrf: string;
  notice: string | null;
  alert: string | null;
  lists: Record<IpListName, IpListForm>;
  /** The address the page was requested from, and what the lists in force say about it. */
  client: { ip: string; decision: IpDecision };
  /** `ip_login_attempts_per_minute` of the security settings. */
  loginLimit: number;
  /** Set when the save would block the administrator's own address: why, shown with the confirmation box. */
  selfBlock: string | null;
}

const LABELS: Record<IpListName, string> = { whitelist: 'Whitelist', blacklist: 'Blacklist' };
const ROLES: Record<IpListName, string> = {
  whitelist: 'Never blocked, whatever the blacklist says, and exempt from the per-address login limit.',
  blacklist: 'Every request from these addresses is refused (403), unless the whitelist covers the address.',
};
const DECISIONS: Record<IpDecision, string> = {
  whitelisted: 'on the whitelist',
  blacklisted: 'on the blacklist',
  neutral: 'on neither list',
};

const plural = (n: number, one: string, many: string): string => `${n.toLocaleString('en-US')} ${n === 1 ? one : many}`;
export const entriesText = (n: number): string => plural(n, 'entry', 'entries');

function problemList(problems: readonly IpRuleLineError[], total: number): string {
  const items = problems
    .slice(0, maxShownProblems)
    .map((p) => `<li>Line ${p.line}: <code>${esc(p.text)}</code> — ${esc(p.message)}</li>`)
    .join('');
  const more = total - Math.min(problems.length, maxShownProblems);
  return `<ul class="problems">${items}</ul>${more > 0 ? `<p>… and ${plural(more, 'more line', 'more lines')}.</p>` : ''}`;
}

function listRow(list: IpListName, f: IpListForm, p: IpRulesPageInput): string {
  const id = `ip-${list}`;
  const selfBlock = list === 'blacklist' ? p.selfBlock : null;
  const invalid = f.error !== null || selfBlock !== null;
  const { summary } = f;
  const fileName = basename(summary.file);
  const hasSkipped = summary.problems.length > 0 && f.error === null;
  const described = [`${id}-hint`, `${id}-format`, invalid ? `${id}-error` : '', hasSkipped ? `${id}-skipped` : '']
    .filter(Boolean)
    .join(' ');

  let status = `${entriesText(summary.entries)} in force.`;
  if (summary.status === 'missing') status = `No ${fileName} yet: the list is empty.`;
  const unreadable =
    f.text === null
      ? `<p class="alert" role="alert">${esc(fileName)} cannot be read (${esc(summary.error ?? 'unknown error')}): the rules loaded before stay in force (${esc(entriesText(summary.entries))}). Fix or replace the file on the server; it cannot be edited here.</p>`
      : '';
  const skipped = hasSkipped
    ? `<div class="warning" id="${id}-skipped"><p>${esc(fileName)} has ${esc(plural(summary.problems.length, 'line that is', 'lines that are'))} skipped: fix or remove ${summary.problems.length === 1 ? 'it' : 'them'}, then save.</p>${problemList(lineErrors(summary.problems), summary.problems.length)}</div>`
    : '';
  const error = f.error
    ? `<div class="error" id="${id}-error" role="alert"><p>${esc(f.error.message)}</p>${f.error.problems.length ? problemList(f.error.problems, f.error.problemCount) : ''}</div>`
    : selfBlock
      ? `<div class="error" id="${id}-error" role="alert"><p>${esc(selfBlock)}</p></div>`
      : '';
  const confirm = selfBlock
    ? `<label class="confirm"><input type="checkbox" id="${CONFIRM_SELF_BLOCK}" name="${CONFIRM_SELF_BLOCK}" aria-describedby="${id}-error"> I understand: save anyway and block my own address ${esc(p.client.ip)}</label>`
    : '';
  const textarea = `<textarea id="${id}" name="${list}" rows="12" cols="60" spellcheck="false" autocomplete="off" autocapitalize="off" aria-describedby="${described}"${invalid ? ' aria-invalid="true"' : ''}${f.text === null ? ' disabled' : ''}>\n${esc(f.text ?? '')}</textarea>`;
  return `<fieldset><legend>${LABELS[list]}</legend>
<div class="row ip-list${invalid ? ' invalid' : ''}"><div class="label"><label for="${id}">${LABELS[list]} entries</label>
<p class="hint" id="${id}-hint">${esc(status)} ${esc(ROLES[list])}</p></div>
<div class="inputs">${unreadable}${textarea}
<p class="hint" id="${id}-format">One entry a line: an address <code>10.0.0.5</code>, a CIDR block <code>10.0.0.0/8</code>, a range <code>10.0.0.1-10.0.0.9</code>, IPv6 alike <code>2001:db8::/32</code>; <code># comment</code> to the end of the line. Comments and blank lines are kept.</p>
${error}${confirm}${skipped}</div></div></fieldset>`;
}

/** The body of Settings → IP rules. */
export function ipRulesPage(p: IpRulesPageInput): string {
  const hidden = IP_LISTS.map((list) => `<input type="hidden" name="${loadedField(list)}" value="${esc(p.lists[list].loaded)}">`).join('');
  return `<h2>Settings → IP rules</h2>
${p.notice ? `<p class="notice" role="status">${esc(p.notice)}</p>` : ''}
${p.alert ? `<p class="alert" role="alert">${esc(p.alert)}</p>` : ''}
<div class="panel"><p>The platform server checks the client address of every request against two lists, <code>whitelist.dat</code> and <code>blacklist.dat</code> in its data folder:</p>
<ul>
<li>A request from a blacklisted address is refused with 403 — the API, the admin API and this control panel alike.</li>
<li>The whitelist wins over the blacklist: a whitelisted address is never blocked.</li>
<li>Whitelisted addresses are exempt from the per-address login limit (${esc(plural(p.loginLimit, 'attempt', 'attempts'))} a minute); device and user locks still apply to them.</li>
<li>An address on neither list is served as usual: the whitelist does not restrict who may connect.</li>
</ul>
<p>Saved rules apply from the next request. The relay in the DMZ has lists of its own (<code>--whitelist</code>, <code>--blacklist</code>), not edited here.</p>
<p>Your address: <code>${esc(p.client.ip)}</code>, ${esc(DECISIONS[p.client.decision])}.</p></div>
<form method="post" action="/console/settings/ip-rules" novalidate>${csrfInput(p.csrf)}${hidden}
${IP_LISTS.map((list) => listRow(list, p.lists[list], p)).join('\n')}
<div class="actions"><button type="submit">Save IP rules</button><span class="hint">Both lists are checked line by line: if any line is not valid, nothing is saved. A list you did not change is not rewritten.</span></div>
</form>`;
}
