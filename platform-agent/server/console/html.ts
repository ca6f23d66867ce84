/**
 * The control panel's HTML: escaping, the page frame, and the one stylesheet. Every value that
 * reaches a page goes through `esc` (or `attr`); templates never concatenate raw input.
 */
import type { ServerResponse } from 'node:http';
import { TLSSocket } from 'node:tls';
import { CATALOGS, LANG_PARAM, LANGUAGES, language, t } from './i18n/i18n.js';

export const CONSOLE_PREFIX = '/console/';

const ENTITIES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

/** Escapes text for element content and quoted attribute values alike. */
export function esc(value: unknown): string {
  return String(value ?? '').replace(/[&<>"']/g, (c) => ENTITIES[c]!);
}

/** The stylesheet, served at /console/console.css so that the CSP needs no inline styles. */
const CSS = `
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2330;background:#f3f5f8}
header{display:flex;flex-wrap:wrap;align-items:center;gap:8px 20px;padding:10px 24px;background:#1f3a5f;color:#fff}
header h1{font-size:17px;margin:0;white-space:nowrap}
header nav{display:flex;flex-wrap:wrap;gap:4px 14px;flex:1 1 0;min-width:0}
header .tools{display:flex;align-items:center;gap:20px;margin-left:auto}
header nav a{white-space:nowrap}
header .spacer{flex:1}
header nav.lang{flex:0 0 auto;align-items:center;gap:4px;white-space:nowrap;font-size:14px;color:#9cc3ff}
header nav.lang a[aria-current]{border-bottom-color:#9cc3ff;font-weight:600}
header a{color:#fff;text-decoration:none;padding:4px 2px;border-bottom:2px solid transparent}
header a[aria-current=page]{border-bottom-color:#9cc3ff}
header a:focus-visible,button:focus-visible,input:focus-visible{outline:3px solid #f5b400;outline-offset:2px}
header form{margin:0}
header button{background:transparent;color:#fff;border:1px solid #9cc3ff}
main{max-width:1040px;margin:24px auto;padding:0 24px}
h2{font-size:22px;margin:0 0 16px}
fieldset{background:#fff;border:1px solid #d5dbe5;border-radius:6px;margin:0 0 20px;padding:12px 20px 16px}
legend{font-weight:600;font-size:16px;padding:0 6px}
.row{display:grid;grid-template-columns:320px 1fr;gap:12px;align-items:start;padding:8px 0;border-top:1px solid #eef1f5}
.row:first-of-type{border-top:0}
.row>label,.row>.label{font-weight:500;padding-top:6px}
.inputs{display:flex;flex-wrap:wrap;gap:8px 14px;align-items:center}
.inputs label{display:inline-flex;gap:6px;align-items:center}
input[type=text],input[type=number],input[type=password],input[type=search]{font:inherit;padding:5px 8px;border:1px solid #aab4c3;border-radius:4px;background:#fff}
input[type=number]{width:7.5em}
input[type=checkbox]{width:18px;height:18px}
.inputs p{margin:0}
.hint{color:#5b6678;font-size:13px;width:100%}
.error{color:#b00020;font-weight:600;width:100%}
.row.invalid input{border-color:#b00020}
.warning{background:#fff6df;border:1px solid #e9c46a;border-radius:4px;padding:8px 12px;margin:4px 0 8px}
.notice{background:#e7f4ea;border:1px solid #7cbf8e;border-radius:4px;padding:8px 12px;margin:0 0 16px}
.alert{background:#fdecee;border:1px solid #e0a0a8;border-radius:4px;padding:8px 12px;margin:0 0 16px}
button{font:inherit;padding:6px 16px;border-radius:4px;border:1px solid #1f3a5f;background:#1f3a5f;color:#fff;cursor:pointer}
button.secondary{background:#fff;color:#1f3a5f}
.actions{display:flex;gap:12px;align-items:center;margin:0 0 24px}
.actions button{white-space:nowrap;flex:0 0 auto}
.panel code{white-space:nowrap}
table{width:100%;border-collapse:collapse;background:#fff;border:1px solid #d5dbe5}
th,td{text-align:left;padding:8px 12px;border-top:1px solid #e3e7ee;vertical-align:middle}
th{background:#eef1f5;font-weight:600}
td form{display:flex;gap:10px;align-items:center;margin:0}
.locked{color:#b00020;font-weight:600}
.search{display:flex;gap:8px;align-items:center;margin:0 0 16px}
.login{max-width:420px;margin:80px auto}
h3{font-size:18px;margin:28px 0 12px}
select{font:inherit;padding:5px 8px;border:1px solid #aab4c3;border-radius:4px;background:#fff}
select:focus-visible{outline:3px solid #f5b400;outline-offset:2px}
.ops{flex-direction:column;align-items:flex-start;gap:6px}
.op .hint{margin:0 0 0 24px;width:auto}
.opname{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:13px;background:#eef1f5;border-radius:3px;padding:1px 5px;white-space:nowrap}
td .opname{display:inline-block;margin:2px 0}
form.delete{display:flex;gap:12px;align-items:center;margin:-8px 0 28px}
form.delete button{white-space:nowrap}
main table{margin:0 0 24px}
.row.invalid select{border-color:#b00020}
.login .row{grid-template-columns:150px 1fr}
input[type=date]{font:inherit;padding:4px 8px;border:1px solid #aab4c3;border-radius:4px;background:#fff}
input[readonly]{background:#eef1f5;border-color:#d5dbe5}
main a{color:#1f3a5f}
main a:focus-visible{outline:3px solid #f5b400;outline-offset:2px}
a.button{display:inline-block;padding:6px 16px;border-radius:4px;border:1px solid #1f3a5f;background:#1f3a5f;color:#fff;text-decoration:none;white-space:nowrap}
.toolbar{display:flex;justify-content:space-between;align-items:center;gap:16px;margin:0 0 16px}
.toolbar .search{margin:0}
.back{margin:0 0 8px}
td.description{color:#5b6678;overflow-wrap:anywhere}
.inputs .locked{margin-left:4px}
#user-form .row select{min-width:16em}
code{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:13px;background:#eef1f5;border-radius:3px;padding:1px 4px}
.panel{background:#fff;border:1px solid #d5dbe5;border-radius:6px;margin:0 0 20px;padding:4px 20px}
.panel ul{margin:0;padding-left:22px}
.panel li{margin:2px 0}
textarea{font:13px/1.5 ui-monospace,SFMono-Regular,Menlo,monospace;width:100%;min-height:14em;padding:6px 8px;border:1px solid #aab4c3;border-radius:4px;background:#fff;resize:vertical}
textarea:focus-visible{outline:3px solid #f5b400;outline-offset:2px}
textarea:disabled{background:#eef1f5}
.row.invalid textarea{border-color:#b00020;border-width:2px}
.row>.label .hint{font-weight:400;margin:4px 0 0}
.inputs .error p,.inputs .warning p{margin:0 0 4px}
.problems{margin:0;padding-left:20px;font-weight:400}
.problems li{margin:2px 0}
.inputs .warning{width:100%}
label.confirm{font-weight:600}
.actions .hint{width:auto}
.hint code{white-space:nowrap}
#relay textarea{min-height:4.5em}
#relay table{margin:0}
table.devices tbody+tbody{border-top:2px solid #b8c2d1}
tr.locked-row td{background:#fdf1f3}
table.devices td.device{overflow-wrap:anywhere;min-width:16em}
td.number{font-variant-numeric:tabular-nums}
table.devices .nowrap{white-space:nowrap}
html[lang=ru] table.devices td.nowrap{white-space:normal;min-width:7em}
`;

export interface PageOptions {
  title: string;
  /** Which nav link is current; none on the login page (no nav either). */
  current?: 'settings' | 'ip-rules' | 'users' | 'groups' | 'devices';
  /** The logout form needs the session's CSRF token; no nav without it. */
  csrf?: string;
  body: string;
}

/** The language switch: a link per language, the current one marked (`?lang=` is handled by console-routes.ts). */
function languageSwitch(): string {
  const now = language();
  const links = LANGUAGES.map((l) =>
    l === now
      ? `<a href="?${LANG_PARAM}=${l}" lang="${l}" hreflang="${l}" aria-current="true">${esc(CATALOGS[l].name)}</a>`
      : `<a href="?${LANG_PARAM}=${l}" lang="${l}" hreflang="${l}">${esc(CATALOGS[l].name)}</a>`,
  );
  return `<nav class="lang" aria-label="${esc(t('frame.language'))}">${links.join('<span aria-hidden="true"> | </span>')}</nav>`;
}

export function page(o: PageOptions): string {
  const link = (href: string, key: PageOptions['current'], text: string): string =>
    `<a href="${href}"${o.current === key ? ' aria-current="page"' : ''}>${esc(text)}</a>`;
  const nav =
    o.csrf === undefined
      ? '<span class="spacer"></span>'
      : `<nav aria-label="${esc(t('frame.sections'))}">${link('/console/settings/security', 'settings', t('nav.security'))}${link('/console/settings/ip-rules', 'ip-rules', t('nav.ip_rules'))}${link('/console/users', 'users', t('nav.users'))}${link('/console/groups', 'groups', t('nav.groups'))}${link('/console/devices', 'devices', t('nav.devices'))}</nav>`;
  const logout =
    o.csrf === undefined
      ? ''
      : `<form method="post" action="/console/logout">${csrfInput(o.csrf)}<button type="submit">${esc(t('nav.logout'))}</button></form>`;
  return `<!doctype html>
<html lang="${language()}"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(t('frame.title_suffix', { title: o.title }))}</title><link rel="stylesheet" href="/console/console.css"></head>
<body><header><h1>${esc(t('frame.title'))}</h1>${nav}<div class="tools">${languageSwitch()}${logout}</div></header>
<main>${o.body}</main></body></html>`;
}

export function csrfInput(token: string): string {
  return `<input type="hidden" name="csrf" value="${esc(token)}">`;
}

/** A Host header that is a plain host name or address, with an optional port. */
export const HOST_HEADER = /^(?:[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::\d{1,5})?$/;

/**
 * The console's headers. Over plain HTTP, forms may also go to https:// on the same host and
 * port: saving "HTTPS for the Control Panel" moves the browser there, and Chromium does not count
 * that upgrade as 'self' for `form-action`.
 */
function securityHeaders(res: ServerResponse): Record<string, string> {
  const req = res.req as ServerResponse['req'] | undefined;
  const host = req?.headers.host;
  const upgrade = req && !(req.socket instanceof TLSSocket) && host && HOST_HEADER.test(host) ? ` https://${host}` : '';
  return {
    'cache-control': 'no-store',
    'content-security-policy': `default-src 'none'; style-src 'self'; form-action 'self'${upgrade}; frame-ancestors 'none'; base-uri 'none'`,
    'x-content-type-options': 'nosniff',
    'referrer-policy': 'no-referrer',
  };
}

export function sendHtml(res: ServerResponse, status: number, html: string, headers: Record<string, string | string[]> = {}): void {
  res.writeHead(status, {
    'content-type': 'text/html; charset=utf-8',
    'content-length': Buffer.byteLength(html),
    ...securityHeaders(res),
    ...headers,
  });
  res.end(html);
}

export function sendCss(res: ServerResponse): void {
  res.writeHead(200, {
    'content-type': 'text/css; charset=utf-8',
    'content-length': Buffer.byteLength(CSS),
    'cache-control': 'no-cache',
    'x-content-type-options': 'nosniff',
  });
  res.end(CSS);
}

/** 303 See Other: after a POST, the browser GETs `location`. */
export function redirect(res: ServerResponse, location: string, headers: Record<string, string | string[]> = {}): void {
  res.writeHead(303, { location, 'content-length': 0, ...securityHeaders(res), ...headers });
  res.end();
}
