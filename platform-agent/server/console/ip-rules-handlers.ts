/**
 * Settings → IP rules (ip-rules-page.ts): the page, and saving both lists from its one form.
 */
import type { ServerResponse } from 'node:http';
import { RelayError } from '../../../shared/errors.js';
import type { IpRuleLineError } from '../../../shared/ip-rule-files.js';
import type { RequestContext } from '../http/auth-routes.js';
import { IP_LISTS, type IpListDraft, type IpListName } from '../http/ip-guard.js';
import { MAX_FORM_BYTES, sentence, type ConsoleRequest, type ConsoleServices, type Session } from './console-request.js';
import { draftBackMessage, type ConsoleSessions } from './console-session.js';
import { page, redirect, sendHtml } from './html.js';
import { t } from './i18n/i18n.js';
import {
  CONFIRM_SELF_BLOCK,
  entriesText,
  listLabel,
  ipRulesPage,
  loadedField,
  textHash,
  type IpListForm,
  type IpRulesPageInput,
} from './ip-rules-page.js';

export class IpRulesHandlers {
  constructor(
    private readonly s: ConsoleServices,
    private readonly sessions: ConsoleSessions,
  ) {}

  /**
   * The largest form `POST settings/ip-rules` reads. Both lists as url-encoded text may be three
   * times the file size limit each (every byte %XX): any file the reader accepts can be saved
   * from the page, and a larger one meets the size check with its clear message rather than a bare 413.
   */
  readonly formBytes = (): number => 2 * 3 * this.s.ipGuard.maxFileBytes + MAX_FORM_BYTES;

  /** `GET settings/ip-rules`, with a kept form back in it. */
  readonly show = async ({ req, res, session, ctx, query }: ConsoleRequest): Promise<void> => {
    const draft = this.sessions.takeDraft(req, 'settings/ip-rules');
    await this.page(res, session, ctx, 200, { notice: draft ? draftBackMessage() : this.notice(query.get('saved')) }, draft?.form);
  };

  private async page(
    res: ServerResponse,
    session: Session,
    ctx: RequestContext,
    status: number,
    extra: Partial<IpRulesPageInput>,
    draft?: URLSearchParams,
  ): Promise<void> {
    const { ipGuard, store } = this.s;
    const lists = {} as Record<IpListName, IpListForm>;
    for (const list of IP_LISTS) {
      const { text, summary } = ipGuard.contents(list);
      const typed = text === null ? null : (draft?.get(list) ?? null);
      lists[list] =
        typed !== null
          ? { text: typed, loaded: draft!.get(loadedField(list)) ?? textHash(text ?? ''), summary, error: null }
          : { text, loaded: textHash(text ?? ''), summary, error: null };
    }
    const { settings } = await store.getSettings();
    const body = ipRulesPage({
      csrf: session.csrf,
      notice: null,
      alert: null,
      lists,
      client: { ip: ctx.ip, decision: ipGuard.decide(ctx.ip) },
      loginLimit: settings.ip_login_attempts_per_minute,
      selfBlock: null,
      ...extra,
    });
    sendHtml(res, status, page({ title: t('ip.title'), current: 'ip-rules', csrf: session.csrf, body }));
  }

  /** "Whitelist saved: 3 entries." for `?saved=whitelist,blacklist`, with the counts in force now. */
  private notice(saved: string | null): string | null {
    if (saved === null) return null;
    const lists = IP_LISTS.filter((list) => saved.split(',').includes(list));
    if (lists.length === 0) return t('ip.nothing');
    const summaries = this.s.ipGuard.summary();
    return lists.map((list) => t('ip.saved', { list: listLabel(list), entries: entriesText(summaries[list].entries) })).join(' ');
  }

  /**
   * `POST settings/ip-rules`: checks every changed list, then the self-block rule over both, then
   * saves: all or nothing as far as validation goes. A list whose text is what the page showed is left alone.
   */
  readonly save = async ({ res, session, ctx }: ConsoleRequest, form: URLSearchParams): Promise<void> => {
    const { ipGuard, logger } = this.s;
    const lists = {} as Record<IpListName, IpListForm>;
    const drafts: IpListDraft[] = [];
    let refused: RelayError | null = null;
    for (const list of IP_LISTS) {
      const typed = form.get(list);
      const { text, summary } = ipGuard.contents(list);
      const loaded = form.get(loadedField(list)) ?? textHash(text ?? '');
      lists[list] = { text: typed ?? text, loaded, summary, error: null };
      // Absent: the textarea was disabled (unreadable file). Same hash: not edited on the page.
      if (typed === null || textHash(typed) === loaded) continue;
      try {
        drafts.push(ipGuard.prepare(list, typed));
      } catch (err) {
        if (!(err instanceof RelayError) || (err.code !== 'RELAY_ERR_INVALID_IP_RULES' && err.code !== 'RELAY_ERR_IP_RULES_TOO_LARGE'))
          throw err;
        const problems = (err.details?.problems ?? []) as IpRuleLineError[];
        const count = typeof err.details?.problem_count === 'number' ? err.details.problem_count : problems.length;
        lists[list].error = { message: t('ip.refused', { message: sentence(err.message) }), problems, problemCount: count };
        refused ??= err;
      }
    }
    if (refused) {
      await this.page(res, session, ctx, refused.httpStatus ?? 400, { lists });
      return;
    }
    const blocking = ipGuard.blockingRule(ctx.ip, drafts);
    if (blocking && form.get(CONFIRM_SELF_BLOCK) !== 'on') {
      const selfBlock = t('ip.self_block', { ip: ctx.ip, line: blocking.line, text: blocking.text });
      await this.page(res, session, ctx, 409, { lists, selfBlock });
      return;
    }
    const saved: IpListName[] = [];
    for (const draft of drafts) {
      try {
        const summary = await ipGuard.commit(draft);
        saved.push(draft.list);
        logger[blocking ? 'warn' : 'info'](
          {
            event: 'ip_rules_changed',
            list: draft.list,
            entries: summary.entries,
            by: session.claims.sub,
            via: 'console',
            ...(blocking ? { selfBlocked: ctx.ip } : {}),
          },
          blocking ? `IP ${draft.list} changed: it blocks the address of the administrator who saved it` : `IP ${draft.list} changed`,
        );
      } catch (err) {
        // A file that cannot be written, or a shared store that cannot be reached (the lists then live there).
        if (!(err instanceof RelayError) || (err.code !== 'RELAY_ERR_IP_RULES_WRITE' && err.code !== 'PLATFORM_ERR_STORE_UNAVAILABLE'))
          throw err;
        const done = saved.length ? ` The ${saved.join(' and ')} was saved.` : '';
        await this.page(res, session, ctx, err.httpStatus ?? 500, { lists, alert: `${sentence(err.message)}.${done}` });
        return;
      }
    }
    redirect(res, `/console/settings/ip-rules?saved=${saved.join(',')}`);
  };
}
