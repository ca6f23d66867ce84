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
import { t, type MessageKey } from './i18n/i18n.js';

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

const LABELS: Record<IpListName, MessageKey> = { whitelist: 'ip.whitelist', blacklist: 'ip.blacklist' };
const ENTRIES_LABELS: Record<IpListName, MessageKey> = { whitelist: 'ip.whitelist_entries', blacklist: 'ip.blacklist_entries' };
const ROLES: Record<IpListName, MessageKey> = { whitelist: 'ip.whitelist_role', blacklist: 'ip.blacklist_role' };
const DECISIONS: Record<IpDecision, MessageKey> = {
  whitelisted: 'ip.decision.whitelisted',
  blacklisted: 'ip.decision.blacklisted',
  neutral: 'ip.decision.neutral',
};

/** A list's name as the page says it ("Whitelist"). */
export const listLabel = (list: IpListName): string => t(LABELS[list]);
export const entriesText = (n: number): string => t('ip.entries', { count: n });

function problemList(problems: readonly IpRuleLineError[], total: number): string {
  const items = problems
    .slice(0, maxShownProblems)
    .map((p) => `<li>${esc(t('ip.line', { line: p.line }))} <code>${esc(p.text)}</code> — ${esc(p.message)}</li>`)
    .join('');
  const more = total - Math.min(problems.length, maxShownProblems);
  return `<ul class="problems">${items}</ul>${more > 0 ? `<p>${esc(t('ip.more_lines', { count: more }))}</p>` : ''}`;
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

  let status = t('ip.in_force', { entries: entriesText(summary.entries) });
  if (summary.status === 'missing') status = t('ip.missing', { file: fileName });
  const unreadable =
    f.text === null
      ? `<p class="alert" role="alert">${esc(t('ip.unreadable', { file: fileName, error: summary.error ?? t('ip.unknown_error'), entries: entriesText(summary.entries) }))}</p>`
      : '';
  const skipped = hasSkipped
    ? `<div class="warning" id="${id}-skipped"><p>${esc(t('ip.skipped', { file: fileName, count: summary.problems.length }))}</p>${problemList(lineErrors(summary.problems), summary.problems.length)}</div>`
    : '';
  const error = f.error
    ? `<div class="error" id="${id}-error" role="alert"><p>${esc(f.error.message)}</p>${f.error.problems.length ? problemList(f.error.problems, f.error.problemCount) : ''}</div>`
    : selfBlock
      ? `<div class="error" id="${id}-error" role="alert"><p>${esc(selfBlock)}</p></div>`
      : '';
  const confirm = selfBlock
    ? `<label class="confirm"><input type="checkbox" id="${CONFIRM_SELF_BLOCK}" name="${CONFIRM_SELF_BLOCK}" aria-describedby="${id}-error"> ${esc(t('ip.confirm_self_block', { ip: p.client.ip }))}</label>`
    : '';
  const textarea = `<textarea id="${id}" name="${list}" rows="12" cols="60" spellcheck="false" autocomplete="off" autocapitalize="off" aria-describedby="${described}"${invalid ? ' aria-invalid="true"' : ''}${f.text === null ? ' disabled' : ''}>\n${esc(f.text ?? '')}</textarea>`;
  return `<fieldset><legend>${esc(t(LABELS[list]))}</legend>
<div class="row ip-list${invalid ? ' invalid' : ''}"><div class="label"><label for="${id}">${esc(t(ENTRIES_LABELS[list]))}</label>
<p class="hint" id="${id}-hint">${esc(status)} ${esc(t(ROLES[list]))}</p></div>
<div class="inputs">${unreadable}${textarea}
<p class="hint" id="${id}-format">${t('ip.format_html')}</p>
${error}${confirm}${skipped}</div></div></fieldset>`;
}

/** The body of Settings → IP rules. */
export function ipRulesPage(p: IpRulesPageInput): string {
  const hidden = IP_LISTS.map((list) => `<input type="hidden" name="${loadedField(list)}" value="${esc(p.lists[list].loaded)}">`).join('');
  return `<h2>${esc(t('ip.title'))}</h2>
${p.notice ? `<p class="notice" role="status">${esc(p.notice)}</p>` : ''}
${p.alert ? `<p class="alert" role="alert">${esc(p.alert)}</p>` : ''}
<div class="panel"><p>${t('ip.intro_html')}</p>
<ul>
<li>${esc(t('ip.rule_blacklist'))}</li>
<li>${esc(t('ip.rule_wins'))}</li>
<li>${esc(t('ip.rule_limit', { count: p.loginLimit }))}</li>
<li>${esc(t('ip.rule_neither'))}</li>
</ul>
<p>${t('ip.relay_html')}</p>
<p>${t('ip.your_address_html', { ip: esc(p.client.ip), decision: esc(t(DECISIONS[p.client.decision])) })}</p></div>
<form method="post" action="/console/settings/ip-rules" novalidate>${csrfInput(p.csrf)}${hidden}
${IP_LISTS.map((list) => listRow(list, p.lists[list], p)).join('\n')}
<div class="actions"><button type="submit">${esc(t('ip.save'))}</button><span class="hint">${esc(t('ip.save_hint'))}</span></div>
</form>`;
}
