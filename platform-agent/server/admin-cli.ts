/**
 * `platform-agent user|group|device|settings|ip-rules …`: administration straight on the data folder, without the
 * HTTP API and also while the server runs (platform.db is in WAL mode and every change is one
 * transaction, so two processes share it safely). The rules live in security/ and store/; this file
 * parses, reads a password without echo, calls them, and prints a table (or JSON with --json).
 *
 * Exit status: 0 done; 1 the data or the request was refused (one line `platform-agent: <why>` on
 * stderr); 2 bad usage (the yargs `.fail` handler of cli.ts).
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { Writable } from 'node:stream';
import stringWidth from 'string-width';
import type { Argv } from 'yargs';
import { systemClock } from '../../shared/clock.js';
import { defaults } from '../../shared/defaults.js';
import { RelayError } from '../../shared/errors.js';
import type { IpRuleLineError } from '../../shared/ip-rule-files.js';
import { createFileLogger, silentLogger } from '../../shared/logger.js';
import { exportIpList, importIpList, IP_LISTS, type IpListName } from './http/ip-guard.js';
import { Accounts } from './security/accounts.js';
import { checkBarcode, checkPassword, checkUsername, formatUtc, parseDate, userView, type UserView } from './security/account-rules.js';
import { Groups, OPERATIONS, waivedAdmin, type GroupView, type OperationSpec } from './security/groups.js';
import { lockoutPolicy, patchFromAssignments, type SecuritySettings } from './security/settings.js';
import { SettingsService } from './security/settings-service.js';
import { openStore, withStoreOptions } from './store/open-store.js';
import { PgStore } from './store/pg-store.js';
import { DB_FILE, SqliteStore } from './store/sqlite-store.js';
import type { PlatformStore } from './store/store.js';
import { ROLES, type DeviceRecord, type UserRecord } from './store/store.js';

type Args = Record<string, unknown>;

/** Longest first line of a non-terminal stdin taken as a password (passwords may have 1024 characters, up to 4 bytes each). */
const MAX_PASSWORD_INPUT_BYTES = 4 * 1024;

// ------------------------------------------------------------- password input

function passwordError(message: string): RelayError {
  return new RelayError('PLATFORM_ERR_INVALID_REQUEST', `password: ${message}`, { details: { field: 'password' } });
}

/** One line typed on the terminal with echo off; the prompt goes to stderr so stdout stays clean for --json. */
function promptHidden(input: NodeJS.ReadStream, prompt: string): Promise<string> {
  // readline echoes what is typed to its output: give it one that drops everything (raw mode already hides it from the terminal).
  const muted = new Writable({ write: (_chunk, _encoding, done) => done() });
  const rl = createInterface({ input, output: muted, terminal: true });
  process.stderr.write(prompt);
  return new Promise((resolve, reject) => {
    let answer: string | undefined;
    rl.once('line', (line) => {
      answer = line;
      rl.close();
    });
    rl.once('SIGINT', () => rl.close());
    rl.once('close', () => {
      process.stderr.write('\n');
      if (answer === undefined) reject(passwordError('input cancelled'));
      else resolve(answer);
    });
  });
}

/** The first line of a pipe or file, without its line ending; refuses a line longer than `limit` bytes. */
function readFirstLine(input: NodeJS.ReadStream, limit: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let buffered = Buffer.alloc(0);
    const finish = (err: Error | null, line = ''): void => {
      input.off('data', onData).off('end', onEnd).off('error', onError);
      // Whatever follows the first line is not ours; stop reading so a writer that keeps the pipe open cannot hold the process.
      input.destroy();
      if (err) reject(err);
      else resolve(line.replace(/\r$/, ''));
    };
    const onData = (chunk: Buffer): void => {
      buffered = Buffer.concat([buffered, chunk]);
      const newline = buffered.subarray(0, limit + 1).indexOf(0x0a);
      if (newline >= 0) finish(null, buffered.subarray(0, newline).toString('utf8'));
      else if (buffered.length > limit) finish(passwordError(`the first line of stdin is longer than ${limit} bytes`));
    };
    const onEnd = (): void => finish(null, buffered.toString('utf8'));
    const onError = (err: Error): void => finish(passwordError(`cannot read stdin (${err.message})`));
    input.on('data', onData).once('end', onEnd).once('error', onError);
  });
}

/**
 * A new password, never from argv: typed twice at a prompt with echo off when `input` is a
 * terminal, else the first line of `input` (a pipe or a file, at most 4 KiB). Checked against the
 * password rules before it is returned.
 */
export async function readPassword(input: NodeJS.ReadStream = process.stdin): Promise<string> {
  return readSecret(input, 'password', checkPassword);
}

/** A user barcode (a credential, as a password: never from argv), read as `readPassword` reads; a scanner types it at the prompt. */
export async function readBarcode(input: NodeJS.ReadStream = process.stdin): Promise<string> {
  return readSecret(input, 'barcode', (v) => checkBarcode(v)!);
}

async function readSecret(input: NodeJS.ReadStream, what: 'password' | 'barcode', check: (value: string) => string): Promise<string> {
  const refuse = (message: string): RelayError =>
    what === 'password'
      ? passwordError(message)
      : new RelayError('PLATFORM_ERR_INVALID_REQUEST', `barcode: ${message}`, { details: { field: 'barcode' } });
  if (!input.isTTY) {
    const line = await readFirstLine(input, MAX_PASSWORD_INPUT_BYTES);
    if (line === '') throw refuse(`stdin is empty: give the ${what} as its first line, or run in a terminal to be prompted`);
    return check(line);
  }
  const first = check(await promptHidden(input, what === 'password' ? 'New password: ' : 'Scan or type the barcode: '));
  if ((await promptHidden(input, what === 'password' ? 'Repeat the password: ' : 'Once more: ')) !== first)
    throw refuse('the two entries differ');
  return first;
}

// ------------------------------------------------------------- output

function print(text: string): void {
  process.stdout.write(`${text}\n`);
}

function printJson(value: unknown): void {
  print(JSON.stringify(value, null, 2));
}

/**
 * Columns padded to their widest cell, two spaces apart. Widths are as a terminal shows them
 * (`string-width`: a combining mark takes no column, a CJK character two), so names in any script
 * line up.
 */
function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(stringWidth(h), ...rows.map((row) => stringWidth(row[i]!))));
  const pad = (c: string, width: number): string => c + ' '.repeat(Math.max(0, width - stringWidth(c)));
  const line = (cells: string[]): string => cells.map((c, i) => (i === cells.length - 1 ? c : pad(c, widths[i]!))).join('  ');
  return [header, ...rows].map(line).join('\n');
}

function keyValues(record: object): string {
  const entries = Object.entries(record);
  const width = Math.max(...entries.map(([k]) => k.length));
  return entries.map(([k, v]) => `${`${k}:`.padEnd(width + 1)}  ${v === null ? '-' : String(v)}`).join('\n');
}

// ------------------------------------------------------------- running a command on the store

interface Ctx {
  store: PlatformStore;
  accounts: Accounts;
  groups: Groups;
  json: boolean;
}

function reportError(err: unknown): void {
  const message =
    err instanceof RelayError ? err.message : `unexpected error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`;
  process.stderr.write(`platform-agent: ${message}\n`);
  process.exitCode = 1;
}

/** A yargs handler that runs `fn` on the store, reports a refusal as one line with status 1, and always closes the store. */
function onStore(create: boolean, fn: (ctx: Ctx, argv: Args) => Promise<void>): (argv: Args) => Promise<void> {
  return async (argv) => {
    let store: PlatformStore | undefined;
    try {
      // Nothing of the store's own logging reaches the terminal: --json output stays clean.
      store = await openStore(argv, silentLogger(), { create });
      await fn(
        { store, accounts: new Accounts(store, systemClock), groups: new Groups(store, systemClock), json: argv.json === true },
        argv,
      );
    } catch (err) {
      reportError(err);
    } finally {
      await store?.close();
    }
  };
}

function withDataOptions<T>(y: Argv<T>) {
  return withStoreOptions(y)
    .option('data', {
      type: 'string',
      default: defaults.platformDataDir,
      describe: "the platform's data folder (platform.db, or lookup.key beside a postgres:// --store)",
    })
    .option('json', { type: 'boolean', default: false, describe: 'print JSON instead of text' });
}

// ------------------------------------------------------------- users

async function requireUser(ctx: Ctx, username: string): Promise<UserRecord> {
  const user = await ctx.store.getUser(username);
  if (!user) throw new RelayError('PLATFORM_ERR_USER_NOT_FOUND', `no such user: ${username}`);
  return user;
}

async function printUser(ctx: Ctx, user: UserRecord): Promise<void> {
  const now = systemClock.now();
  const view = userView(user, (await ctx.store.getSettings()).settings, now, await waivedAdmin(ctx.store, now));
  if (ctx.json) printJson(view);
  else print(keyValues(view));
}

const VALIDITY_OPTIONS = { validFrom: 'account_valid_from', validUntil: 'account_valid_until' } as const;

/** `--valid-from` / `--valid-until` as account fields: "none" clears the user's own period; dates are checked before any prompt. */
function validityFields(argv: Args): Record<string, string | null> {
  const fields: Record<string, string | null> = {};
  for (const [option, field] of Object.entries(VALIDITY_OPTIONS)) {
    if (argv[option] === undefined) continue;
    fields[field] = argv[option] === 'none' ? null : String(argv[option]);
    parseDate(field, fields[field]);
  }
  return fields;
}

/** `--group` (`none`: no group) and `--description` (`""`: none) as account fields. */
function groupFields(argv: Args): Record<string, string | null> {
  const fields: Record<string, string | null> = {};
  if (argv.group !== undefined) fields.group = argv.group === 'none' ? null : String(argv.group);
  if (argv.description !== undefined) fields.description = String(argv.description);
  return fields;
}

/** A named group must exist before a password is asked for; whether it suits the role the store checks with the write. */
async function requireGroupOption(ctx: Ctx, fields: Record<string, string | null>): Promise<void> {
  if (typeof fields.group === 'string' && !(await ctx.store.getGroup(fields.group)))
    throw new RelayError('PLATFORM_ERR_INVALID_REQUEST', `group: no such group: ${fields.group}`, { details: { field: 'group' } });
}

async function userAdd(ctx: Ctx, argv: Args): Promise<void> {
  const username = checkUsername(String(argv.username));
  const validity = validityFields(argv);
  const grouping = groupFields(argv);
  if (await ctx.store.getUser(username)) throw new RelayError('PLATFORM_ERR_USER_EXISTS', `user ${username} already exists`);
  await requireGroupOption(ctx, grouping);
  const password = await readPassword();
  await printUser(ctx, await ctx.accounts.create({ username, password, role: argv.role, ...validity, ...grouping }));
}

const userRow = (v: UserView): string[] => [v.username, v.role, v.group ?? '-', v.status];

async function userList(ctx: Ctx): Promise<void> {
  const { settings } = await ctx.store.getSettings();
  const now = systemClock.now();
  const waived = await waivedAdmin(ctx.store, now);
  const views = (await ctx.store.listUsers()).map((user) => userView(user, settings, now, waived));
  if (ctx.json) printJson(views);
  else if (views.length === 0) print('no users');
  else print(table(['USERNAME', 'ROLE', 'GROUP', 'STATUS'], views.map(userRow)));
}

async function userShow(ctx: Ctx, argv: Args): Promise<void> {
  await printUser(ctx, await requireUser(ctx, String(argv.username)));
}

async function userSet(ctx: Ctx, argv: Args): Promise<void> {
  const username = String(argv.username);
  const change: Record<string, unknown> = { ...validityFields(argv), ...groupFields(argv) };
  if (argv.role !== undefined) change.role = argv.role;
  await requireUser(ctx, username);
  await requireGroupOption(ctx, change as Record<string, string | null>);
  if (argv.password === true) change.password = await readPassword();
  if (argv.barcode === true) change.barcode = await readBarcode();
  if (argv.clearBarcode === true) change.barcode = null;
  await printUser(ctx, await ctx.accounts.update(username, change));
}

/** Locking sets no end: the user stays locked (its sessions ended) until an administrator unlocks it. */
function userLock(locked: boolean): (ctx: Ctx, argv: Args) => Promise<void> {
  return async (ctx, argv) => {
    const username = String(argv.username);
    await requireUser(ctx, username);
    await printUser(ctx, await ctx.accounts.update(username, { locked_for_security_reasons: locked }));
  };
}

async function userDelete(ctx: Ctx, argv: Args): Promise<void> {
  const username = String(argv.username);
  await requireUser(ctx, username);
  await ctx.accounts.delete(username);
  if (ctx.json) printJson({ deleted: username });
  else print(`deleted user ${username}`);
}

function userCommands(y: Argv): Argv {
  const username = <T>(c: Argv<T>) => withDataOptions(c).positional('username', { type: 'string', demandOption: true });
  return y
    .command(
      'add <username>',
      "create an account; its password is prompted for (or read from stdin's first line), never taken from argv",
      (c) =>
        username(c)
          .option('role', { choices: ROLES, demandOption: true, describe: 'mobile (API user), external (integration) or admin' })
          .option('valid-from', { type: 'string', describe: "start of the account's own validity period (ISO 8601)" })
          .option('valid-until', { type: 'string', describe: "end of the account's own validity period (ISO 8601)" })
          .option('group', {
            type: 'string',
            describe: 'its user group (of the same role); without one it has every operation of its role',
          })
          .option('description', { type: 'string', describe: 'a description (at most 500 characters)' }),
      onStore(true, userAdd),
    )
    .command('list', 'list accounts: username, role, status', withDataOptions, onStore(false, userList))
    .command('show <username>', 'show one account', username, onStore(false, userShow))
    .command(
      'set <username>',
      'change an account',
      (c) =>
        username(c)
          .option('role', { choices: ROLES, describe: 'new role' })
          .option('valid-from', { type: 'string', describe: 'start of its validity period (ISO 8601), or "none"' })
          .option('valid-until', { type: 'string', describe: 'end of its validity period (ISO 8601), or "none"' })
          // nargs 0: `--password=<value>` is an error rather than a silent `false` (yargs' reading of a boolean given a value).
          .option('group', { type: 'string', describe: 'its user group (of the same role), or "none"' })
          .option('description', { type: 'string', describe: 'a description (at most 500 characters); "" clears it' })
          .option('password', { type: 'boolean', nargs: 0, describe: "set a new password, prompted for (or read from stdin's first line)" })
          .option('barcode', {
            type: 'boolean',
            nargs: 0,
            describe: "set the user barcode (barcode login), prompted for (or read from stdin's first line); never shown again",
          })
          .option('clear-barcode', { type: 'boolean', nargs: 0, describe: 'remove the user barcode' })
          .conflicts('barcode', ['password', 'clear-barcode'])
          .check((argv) => {
            const given = [
              argv.role,
              argv.validFrom,
              argv.validUntil,
              argv.group,
              argv.description,
              argv.password,
              argv.barcode,
              argv.clearBarcode,
            ];
            if (given.every((v) => v === undefined || v === false))
              throw new Error(
                'nothing to change: give --role, --group, --description, --valid-from, --valid-until, --password, --barcode or --clear-barcode',
              );
            return true;
          }),
      onStore(false, userSet),
    )
    .command(
      'lock <username>',
      'lock an account until an administrator unlocks it (ends its sessions)',
      username,
      onStore(false, userLock(true)),
    )
    .command('unlock <username>', 'clear the security lock of an account', username, onStore(false, userLock(false)))
    .command('delete <username>', 'delete an account with its sessions and tokens', username, onStore(false, userDelete))
    .demandCommand(1, 'give a user command: add, list, show, set, lock, unlock or delete');
}

// ------------------------------------------------------------- groups

/** `--operations a,b` as a list; an empty list is left to the group rules (the vendor's message). */
const operationList = (value: unknown): string[] =>
  String(value)
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');

function printGroup(ctx: Ctx, view: GroupView): void {
  if (ctx.json) printJson(view);
  else print(keyValues({ ...view, operations: view.operations.join(', ') }));
}

async function groupAdd(ctx: Ctx, argv: Args): Promise<void> {
  const body: Record<string, unknown> = { name: argv.name, role: argv.role, operations: operationList(argv.operations) };
  if (argv.description !== undefined) body.description = String(argv.description);
  printGroup(ctx, await ctx.groups.view(await ctx.groups.create(body)));
}

const groupRow = (v: GroupView): string[] => [v.name, v.role, String(v.users), v.operations.join(',')];

async function groupList(ctx: Ctx): Promise<void> {
  const views = await ctx.groups.list();
  if (ctx.json) printJson(views);
  else if (views.length === 0) print('no groups');
  else print(table(['NAME', 'ROLE', 'USERS', 'OPERATIONS'], views.map(groupRow)));
}

async function groupShow(ctx: Ctx, argv: Args): Promise<void> {
  printGroup(ctx, await ctx.groups.view(await ctx.groups.get(String(argv.name))));
}

async function groupSet(ctx: Ctx, argv: Args): Promise<void> {
  const change: Record<string, unknown> = {};
  if (argv.role !== undefined) change.role = argv.role;
  if (argv.operations !== undefined) change.operations = operationList(argv.operations);
  if (argv.description !== undefined) change.description = String(argv.description);
  printGroup(ctx, await ctx.groups.view(await ctx.groups.update(String(argv.name), change)));
}

async function groupDelete(ctx: Ctx, argv: Args): Promise<void> {
  const name = String(argv.name);
  await ctx.groups.delete(name);
  if (ctx.json) printJson({ deleted: name });
  else print(`deleted group ${name}`);
}

function groupCommands(y: Argv): Argv {
  const name = <T>(c: Argv<T>) => withDataOptions(c).positional('name', { type: 'string', demandOption: true });
  const operations = `comma-separated operations: ${OPERATIONS.map((op) => op.name).join(', ')}, or one defined with "platform-agent operation add"`;
  return y
    .command(
      'add <name>',
      'create a user group with the operations its users may perform',
      (c) =>
        name(c)
          .option('role', { choices: ROLES, demandOption: true, describe: 'the role of its users: mobile, external or admin' })
          .option('operations', { type: 'string', demandOption: true, describe: operations })
          .option('description', { type: 'string', describe: 'a description (at most 500 characters)' }),
      onStore(true, groupAdd),
    )
    .command('list', 'list groups: name, role, users, operations', withDataOptions, onStore(false, groupList))
    .command('show <name>', 'show one group', name, onStore(false, groupShow))
    .command(
      'set <name>',
      'change a group',
      (c) =>
        name(c)
          .option('role', { choices: ROLES, describe: 'new role (only while the group has no users)' })
          .option('operations', { type: 'string', describe: operations })
          .option('description', { type: 'string', describe: 'a description (at most 500 characters); "" clears it' })
          .check((argv) => {
            if ([argv.role, argv.operations, argv.description].every((v) => v === undefined))
              throw new Error('nothing to change: give --role, --operations or --description');
            return true;
          }),
      onStore(false, groupSet),
    )
    .command('delete <name>', 'delete a group that has no users', name, onStore(false, groupDelete))
    .demandCommand(1, 'give a group command: add, list, show, set or delete');
}

// ------------------------------------------------------------- operations

interface OperationRow {
  name: string;
  roles: readonly string[];
  description: string;
  custom: boolean;
}

const operationRow = (op: OperationSpec): OperationRow => ({
  name: op.name,
  roles: op.roles,
  description: op.description,
  custom: op.custom === true,
});

function printOperation(ctx: Ctx, op: OperationSpec): void {
  const row = operationRow(op);
  if (ctx.json) printJson(row);
  else print(keyValues({ ...row, roles: row.roles.join(', ') }));
}

async function operationsList(ctx: Ctx): Promise<void> {
  const rows = (await ctx.groups.catalog()).map(operationRow);
  if (ctx.json) printJson(rows);
  else
    print(
      table(
        ['NAME', 'ROLES', 'DEFINED BY', 'DESCRIPTION'],
        rows.map((r) => [r.name, r.roles.join(','), r.custom ? 'administrator' : 'built in', r.description]),
      ),
    );
}

async function operationAdd(ctx: Ctx, argv: Args): Promise<void> {
  const body: Record<string, unknown> = { name: argv.name };
  if (argv.description !== undefined) body.description = String(argv.description);
  printOperation(ctx, await ctx.groups.defineOperation(body));
}

async function operationSet(ctx: Ctx, argv: Args): Promise<void> {
  printOperation(ctx, await ctx.groups.changeOperation(String(argv.name), { description: String(argv.description) || null }));
}

async function operationDelete(ctx: Ctx, argv: Args): Promise<void> {
  const name = String(argv.name);
  await ctx.groups.deleteOperation(name);
  if (ctx.json) printJson({ deleted: name });
  else print(`deleted operation ${name}`);
}

function operationCommands(y: Argv): Argv {
  const name = <T>(c: Argv<T>) => withDataOptions(c).positional('name', { type: 'string', demandOption: true });
  return y
    .command('list', 'list the operations: built in, then those defined by administrators', withDataOptions, onStore(false, operationsList))
    .command(
      'add <name>',
      'define an operation groups of mobile and external users may hold (a document type, say: doc.receipt)',
      (c) => name(c).option('description', { type: 'string', describe: 'what it allows (at most 500 characters)' }),
      onStore(true, operationAdd),
    )
    .command(
      'set <name>',
      'change the description of an operation defined by an administrator',
      (c) => name(c).option('description', { type: 'string', demandOption: true, describe: 'what it allows; "" clears it' }),
      onStore(false, operationSet),
    )
    .command('delete <name>', 'delete an operation no group holds', name, onStore(false, operationDelete))
    .demandCommand(1, 'give an operation command: list, add, set or delete');
}

// ------------------------------------------------------------- devices

interface DeviceView {
  device_id: string;
  /** Failed logins that still count towards a lock (0 once the count has reset). */
  failures: number;
  last_username: string | null;
  last_seen_at: string | null;
  last_failure_at: string | null;
  locked_until: string | null;
  status: string;
}

const isoOrNull = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());

/** A device's state at `now`: locked, counting failures, or active. */
function deviceView(device: DeviceRecord, settings: SecuritySettings, now: number): DeviceView {
  const locked = device.lockedUntil !== null && device.lockedUntil > now;
  const counting = device.lastFailureAt !== null && now - device.lastFailureAt < lockoutPolicy(settings).failureResetMs;
  const failures = counting ? device.failures : 0;
  return {
    device_id: device.deviceId,
    failures,
    last_username: device.lastUsername,
    last_seen_at: isoOrNull(device.lastSeenAt),
    last_failure_at: isoOrNull(device.lastFailureAt),
    locked_until: locked ? isoOrNull(device.lockedUntil) : null,
    status: locked
      ? `Locked until ${formatUtc(device.lockedUntil!)}`
      : failures > 0
        ? `${failures} failed login${failures === 1 ? '' : 's'}`
        : 'Active',
  };
}

const deviceRow = (v: DeviceView): string[] => [
  v.device_id,
  v.last_username ?? '-',
  v.last_seen_at === null ? '-' : formatUtc(Date.parse(v.last_seen_at)),
  v.status,
];

async function deviceList(ctx: Ctx, argv: Args): Promise<void> {
  const { settings } = await ctx.store.getSettings();
  const now = systemClock.now();
  const devices = await ctx.store.listDevices(argv.user === undefined ? {} : { username: String(argv.user) });
  const views = devices.map((d) => deviceView(d, settings, now));
  if (ctx.json) printJson(views);
  else if (views.length === 0) print(argv.user === undefined ? 'no devices' : `no devices of ${String(argv.user)}`);
  else print(table(['DEVICE', 'USER', 'LAST SEEN', 'STATUS'], views.map(deviceRow)));
}

async function deviceUnlock(ctx: Ctx, argv: Args): Promise<void> {
  const deviceId = String(argv.deviceId);
  if (!(await ctx.store.unlockDevice(deviceId))) throw new RelayError('PLATFORM_ERR_DEVICE_NOT_FOUND', `no such device: ${deviceId}`);
  if (ctx.json) printJson({ unlocked: deviceId });
  else print(`device ${deviceId} unlocked, its failure count cleared`);
}

function deviceCommands(y: Argv): Argv {
  return y
    .command(
      'list',
      'list every device by user (the user of its last login): last seen, status (locked, failed logins that still count, or active)',
      (c) =>
        withDataOptions(c)
          .option('user', { type: 'string', describe: "only this user's devices" })
          .check((argv) => {
            if (argv.user === '') throw new Error('--user: give a user name');
            return true;
          }),
      onStore(false, deviceList),
    )
    .command(
      'unlock <device-id>',
      'clear the lock and the failure count of a device',
      (c) => withDataOptions(c).positional('device-id', { type: 'string', demandOption: true }),
      onStore(false, deviceUnlock),
    )
    .demandCommand(1, 'give a device command: list or unlock');
}

// ------------------------------------------------------------- settings

/** Where `settings set` writes its audit line (`settings_changed`, as the server logs it), in the data folder. */
const CLI_AUDIT_FILE = 'cli-audit.log';

/** Who ran the command, for the audit line. */
function osUser(): string {
  try {
    return `${userInfo().username} (cli)`;
  } catch {
    return `uid ${process.getuid?.() ?? '?'} (cli)`;
  }
}

async function settingsSet(ctx: Ctx, argv: Args): Promise<void> {
  const audit = createFileLogger({ name: 'platform-agent' }, join(String(argv.data), CLI_AUDIT_FILE));
  const service = new SettingsService(ctx.store, systemClock, audit);
  const change = await service.update(patchFromAssignments((argv.assignments as unknown[]).map(String)), osUser(), 'cli');
  const { changed } = change;
  const tokensInvalidated = changed.length > 0 && change.invalidatesTokens;
  const locksRecalculated = changed.length > 0 && change.recalculatesLocks;
  if (ctx.json) return printJson({ changed, tokens_invalidated: tokensInvalidated, locks_recalculated: locksRecalculated });
  if (changed.length === 0) return print('no change');
  for (const c of changed) print(`${c.setting}: ${JSON.stringify(c.from)} -> ${JSON.stringify(c.to)}`);
  if (tokensInvalidated) print('a token validity changed: every token issued so far is now invalid; users and administrators log in again');
  if (locksRecalculated) print('a lock duration changed: the end of every user and device lock in force was recalculated');
}

function settingsCommands(y: Argv): Argv {
  return y
    .command(
      'show',
      'print the security settings (JSON)',
      withDataOptions,
      onStore(false, async (ctx) => printJson((await ctx.store.getSettings()).settings)),
    )
    .command(
      'set <assignments...>',
      'change settings, e.g. lockout.device_failures=3 admin_inactivity_timeout=00:30 account_validity_days=null',
      (c) => withDataOptions(c).positional('assignments', { type: 'string', array: true, demandOption: true }),
      onStore(true, settingsSet),
    )
    .demandCommand(1, 'give a settings command: show or set');
}

// ------------------------------------------------------------- IP rules

const entriesText = (n: number): string => `${n} ${n === 1 ? 'entry' : 'entries'}`;

/** Bad lines named in a refused import's one line of stderr (the rest are counted). */
const MAX_NAMED_LINES = 5;

/** A refused import names its bad lines (the API has them in `details.problems`; the CLI has one line of stderr). */
function withLines(err: RelayError): RelayError {
  const problems = (err.details?.problems ?? []) as IpRuleLineError[];
  const total = typeof err.details?.problem_count === 'number' ? err.details.problem_count : problems.length;
  const named = problems.slice(0, MAX_NAMED_LINES).map((p) => `line ${p.line} ${JSON.stringify(p.text)}: ${p.message}`);
  const more = total - named.length > 0 ? `; and ${total - named.length} more` : '';
  return new RelayError(err.code, `${err.message}: ${named.join('; ')}${more}`, {
    cause: err,
    ...(err.details ? { details: err.details } : {}),
  });
}

async function ipRulesExport(ctx: Ctx, argv: Args): Promise<void> {
  const list = argv.list as IpListName;
  const { text, entries, where } = await exportIpList(ctx.store, String(argv.data), list, silentLogger());
  if (argv.out === undefined) {
    if (ctx.json) return printJson({ list, entries, from: where, text });
    // stdout is the list exactly as saved; the summary goes to stderr.
    process.stdout.write(text);
    process.stderr.write(`${list}: ${entriesText(entries)} exported from ${where}\n`);
    return;
  }
  const out = String(argv.out);
  try {
    writeFileSync(out, text, { mode: 0o600 });
  } catch (err) {
    throw new RelayError('PLATFORM_ERR_INVALID_REQUEST', `--out ${out}: cannot write it (${(err as Error).message})`, {
      details: { field: 'out' },
    });
  }
  if (ctx.json) printJson({ list, entries, from: where, out });
  else print(`${list}: ${entriesText(entries)} exported from ${where} to ${out}`);
}

async function ipRulesImport(ctx: Ctx, argv: Args): Promise<void> {
  const list = argv.list as IpListName;
  const file = String(argv.file);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new RelayError('PLATFORM_ERR_INVALID_REQUEST', `--file ${file}: cannot read it (${(err as Error).message})`, {
      details: { field: 'file' },
    });
  }
  let imported: { entries: number; where: string };
  try {
    imported = await importIpList(ctx.store, String(argv.data), list, text, systemClock.now(), silentLogger());
  } catch (err) {
    if (err instanceof RelayError && err.code === 'RELAY_ERR_INVALID_IP_RULES') throw withLines(err);
    throw err;
  }
  const { entries, where } = imported;
  const audit = createFileLogger({ name: 'platform-agent' }, join(String(argv.data), CLI_AUDIT_FILE));
  audit.info({ event: 'ip_rules_changed', list, entries, by: osUser(), via: 'cli', to: where, from: file }, `IP ${list} changed`);
  if (ctx.json) printJson({ list, entries, to: where, from: file });
  else
    print(
      `${list}: ${entriesText(entries)} imported from ${file} into ${where}; in force within the platform server's poll interval (on every instance of a shared store)`,
    );
}

function ipRulesCommands(y: Argv): Argv {
  const list = <T>(c: Argv<T>) =>
    withDataOptions(c).positional('list', { choices: IP_LISTS, demandOption: true, describe: 'whitelist or blacklist' });
  return y
    .command(
      'export <list>',
      'print a list exactly as saved (whitelist.dat or blacklist.dat, or the list in a postgres:// --store)',
      (c) => list(c).option('out', { type: 'string', describe: 'write it to this file instead of stdout' }),
      onStore(false, ipRulesExport),
    )
    .command(
      'import <list>',
      'replace a list with a file, checked as the admin API checks a save (one entry, comment or blank a line)',
      (c) => list(c).option('file', { type: 'string', demandOption: true, describe: 'the new list, e.g. an exported one' }),
      onStore(false, ipRulesImport),
    )
    .demandCommand(1, 'give an ip-rules command: export or import');
}

// ------------------------------------------------------------- store

/**
 * `store copy`: the data folder's SQLite platform (platform.db) into the PostgreSQL `--store`,
 * for a platform that grows from one instance to several. Everything but the per-address attempts
 * (an hour's worth) is copied in one transaction; the target must hold no user. The lookup key
 * stays the data folder's, so password and barcode tags keep working: copy lookup.key to every
 * other instance. The IP rule files are imported by the first instance started on the store with
 * this data folder (as for any first start).
 */
async function storeCopy(ctx: Ctx, argv: Args): Promise<void> {
  if (!(ctx.store instanceof PgStore))
    throw new RelayError('RELAY_ERR_CONFIG', "--store: give the postgres://… database to copy the data folder's platform into");
  const dir = String(argv.data);
  if (!existsSync(join(dir, DB_FILE)))
    throw new RelayError('PLATFORM_ERR_STORE', `--data ${dir}: no ${DB_FILE} there; give the data folder of the platform to copy`);
  const source = new SqliteStore(dir);
  try {
    const { users, groups } = await source.ambiguousNames();
    const clashes = [...users, ...groups];
    if (clashes.length > 0)
      throw new RelayError(
        'PLATFORM_ERR_STORE',
        `names that differ only in case must be resolved first (keep one of each, then copy): ${clashes.map((set) => set.join(' / ')).join('; ')}`,
      );
    const written = await ctx.store.importTables(source.exportTables());
    if (ctx.json) return printJson({ copied: written, into: ctx.store.shown });
    print(`copied ${join(dir, DB_FILE)} into ${ctx.store.shown}:`);
    for (const [table, n] of Object.entries(written)) print(`  ${table}: ${n}`);
    print(`every instance on ${ctx.store.shown} needs ${join(dir, 'lookup.key')} in its --data folder`);
  } finally {
    await source.close();
  }
}

function storeCommands(y: Argv): Argv {
  return y
    .command(
      'copy',
      "copy the data folder's SQLite platform (platform.db) into the postgres:// --store, which must hold no user",
      withDataOptions,
      onStore(false, storeCopy),
    )
    .demandCommand(1, 'give a store command: copy');
}

/**
 * Adds the administrator commands (`user …`, `group …`, `operation …`, `device …`, `settings …`, `ip-rules …`) to the `platform-agent`
 * CLI. Each works on `--data <dir>` (default ./data) and prints JSON with `--json`.
 */
export function registerAdminCommands<T>(y: Argv<T>): Argv<T> {
  return y
    .command('user', 'manage accounts in the data folder (also while the server runs)', userCommands)
    .command('group', 'manage user groups and their operations in the data folder', groupCommands)
    .command('operation', 'see the operations, and define your own, in the data folder', operationCommands)
    .command('device', 'see and clear device lockouts in the data folder', deviceCommands)
    .command('settings', 'show or change the security settings in the data folder', settingsCommands)
    .command(
      'ip-rules',
      "export or import the IP whitelist and blacklist (the data folder's files, or a postgres:// --store)",
      ipRulesCommands,
    )
    .command('store', "move the data folder's SQLite platform into a shared PostgreSQL store", storeCommands);
}
