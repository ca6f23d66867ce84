/**
 * `relay cert …`: make a private CA with the relay's server certificate (`init`), client
 * certificates for agents (`issue-agent`), import a certificate from a trusted authority
 * (`import`, PKCS#12 or PEM with its chain) and describe one (`show`). The certificate work lives
 * in `shared/certs.ts` (reading, checking) and `cert-issuing.ts` (the CA, PKCS#12: node-forge,
 * loaded only when a command needs it, since the `relay` CLI registers these commands for
 * `relay start` too); this file owns the files in `--dir` and what the operator reads.
 *
 * Output goes through a {@link CertCliIo}, so the commands run in-process in tests. A failed
 * operation prints one line `relay: <message>` and sets exit code 1; a bad option value exit code 2
 * (yargs reports missing or unknown options itself, through the caller's `.fail()`).
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { isAbsolute, join } from 'node:path';
import type { Argv } from 'yargs';
import {
  certError,
  certPolicy,
  defaultServerSans,
  describeCertificate,
  parseCertificateChain,
  parseSubjectAltNames,
  withCommonName,
  type CertificateDescription,
  type SubjectAltName,
} from '../shared/certs.js';
import { parsePemBundle, type CertificateBundle } from './cert-bundle.js';
import { intOption } from '../shared/config.js';
import { configError, RelayError } from '../shared/errors.js';

/** Where the commands write and what time they read. */
export interface CertCliIo {
  /** One line for stdout. */
  out(line: string): void;
  /** One line for stderr (errors and warnings). */
  err(line: string): void;
  /** Milliseconds since the epoch: validity checks and days left. */
  now(): number;
  /** Records the exit status of a failed command (default: `process.exitCode`). */
  setExitCode(code: number): void;
}

/** The process's stdout, stderr, clock and exit code. */
export const processIo: CertCliIo = {
  out: (line) => void process.stdout.write(`${line}\n`),
  err: (line) => void process.stderr.write(`${line}\n`),
  now: () => Date.now(),
  setExitCode: (code) => {
    process.exitCode = code;
  },
};

/** File names inside `--dir`. */
export const certFiles = Object.freeze({
  caCert: 'ca.crt',
  caKey: 'ca.key',
  relayCert: 'relay.crt',
  relayKey: 'relay.key',
  agentCert: (id: string) => `agent-${id}.crt`,
  agentKey: (id: string) => `agent-${id}.key`,
});

/** Agent ids: they become file names and the certificate's CN. */
const agentIdPattern = /^[A-Za-z0-9._-]{1,64}$/;
/** X.520 upper bound of a common name (RFC 5280 Appendix A, ub-common-name). */
const maxCommonNameChars = 64;

const keyMode = 0o600;
const certMode = 0o644;
/** A folder created for keys is readable by its owner only. */
const dirMode = 0o700;

/** Adds `cert init|issue-agent|import|show` to a yargs instance (the `relay` CLI, or a test's). */
export function registerCertCommands(y: Argv, io: CertCliIo = processIo): Argv {
  return y.command('cert', 'make, import and show TLS certificates (private CA, relay, agents)', (cy) =>
    cy
      .command(
        'init',
        'make a private CA and a relay server certificate signed by it: ca.crt, ca.key, relay.crt (with the CA), relay.key',
        (c) =>
          withDir(c)
            .option('cn', { type: 'string', demandOption: true, describe: 'common name of the relay, e.g. relay.example.com' })
            .option('san', {
              type: 'string',
              describe:
                'names clients connect to, e.g. DNS:relay.example.com,IP:10.0.0.5,IP:::1 (the --cn is added when it is a host name or address; default: the CN, localhost, 127.0.0.1, ::1)',
            })
            .option('force', { type: 'boolean', default: false, describe: 'overwrite existing files (the old CA can no longer issue)' }),
        (argv) =>
          run(
            io,
            () => ({
              dir: String(argv.dir),
              commonName: commonNameOption(argv.cn),
              sans: argv.san === undefined ? undefined : parseSubjectAltNames(argv.san as string | string[]),
              force: argv.force === true,
            }),
            (options) => certInit(options, io),
          ),
      )
      .command(
        'issue-agent',
        'make a client certificate for an agent, signed by the CA in --dir: agent-<id>.crt, agent-<id>.key',
        (c) =>
          withDir(c)
            .option('name', { type: 'string', demandOption: true, describe: 'agent id: 1-64 of A-Z a-z 0-9 . _ -' })
            .option('days', { type: 'number', default: certPolicy.leafDays, describe: 'validity in days (cut to the CA expiry)' })
            .option('force', { type: 'boolean', default: false, describe: 'overwrite an existing certificate of that agent' }),
        (argv) =>
          run(
            io,
            () => ({
              dir: String(argv.dir),
              name: agentIdOption(argv.name),
              days: intOption('days', argv.days, 1, certPolicy.caDays),
              force: argv.force === true,
            }),
            (options) => certIssueAgent(options, io),
          ),
      )
      .command(
        'import',
        'check a certificate from a trusted authority and install it as relay.crt and relay.key (--pfx, or --cert with --key)',
        (c) =>
          withDir(c)
            .option('pfx', { type: 'string', describe: 'PKCS#12 file (.pfx, .p12) holding the key, the certificate and its chain' })
            .option('passphrase-file', { type: 'string', describe: 'file holding the passphrase of --pfx or of an encrypted --key' })
            .option('cert', { type: 'string', describe: 'PEM certificate followed by its chain' })
            .option('key', { type: 'string', describe: 'PEM private key of --cert' }),
        (argv) =>
          run(
            io,
            () => importOptions(argv),
            (options) => certImport(options, io),
          ),
      )
      .command(
        'show',
        'describe a certificate: subject, SANs, issuer, validity, SHA-256 fingerprint',
        (c) =>
          withDir(c)
            .option('file', { type: 'string', describe: 'certificate file, as a path or a name in --dir (default: relay.crt in --dir)' })
            .option('json', { type: 'boolean', default: false, describe: 'print JSON' }),
        (argv) =>
          run(
            io,
            () => ({ dir: String(argv.dir), file: argv.file === undefined ? undefined : String(argv.file), json: argv.json === true }),
            (options) => certShow(options, io),
          ),
      )
      .demandCommand(1, 'give a cert command: init, issue-agent, import or show'),
  );
}

function withDir<T>(y: Argv<T>): Argv<T & { dir: string }> {
  return y.option('dir', { type: 'string', default: 'certs', describe: 'folder of the certificate files' });
}

/** Value checks (exit 2), then the operation (exit 1); either way one line on stderr. */
async function run<T>(io: CertCliIo, parse: () => T, act: (options: T) => Promise<unknown> | unknown): Promise<void> {
  let options: T;
  try {
    options = parse();
  } catch (err) {
    fail(io, err, 2);
    return;
  }
  try {
    await act(options);
  } catch (err) {
    fail(io, err, 1);
  }
}

function fail(io: CertCliIo, err: unknown, code: number): void {
  const message = err instanceof Error ? err.message : String(err);
  io.err(`relay: ${message.replace(/\s*\n\s*/g, ' ')}`);
  io.setExitCode(code);
}

function commonNameOption(value: unknown): string {
  const cn = typeof value === 'string' ? value.trim() : '';
  // eslint-disable-next-line no-control-regex
  if (cn === '' || cn.length > maxCommonNameChars || /[\u0000-\u001f\u007f]/.test(cn)) {
    throw configError('cn', value, `expected 1-${maxCommonNameChars} printable characters, e.g. relay.example.com`);
  }
  return cn;
}

function agentIdOption(value: unknown): string {
  if (typeof value !== 'string' || !agentIdPattern.test(value) || value === '.' || value === '..') {
    throw configError('name', value, 'expected an agent id of 1-64 characters from A-Z a-z 0-9 . _ -');
  }
  return value;
}

// ---------------------------------------------------------------------------------------------
// init

export interface CertInitOptions {
  dir: string;
  commonName: string;
  /** Default {@link defaultServerSans}; the CN is added when it is a host name or address. */
  sans?: SubjectAltName[];
  force: boolean;
}

/** `cert init`: a private CA and a relay certificate signed by it. Refuses to overwrite without `force`. */
export async function certInit(options: CertInitOptions, io: CertCliIo): Promise<CertificateDescription> {
  const { dir } = options;
  const paths = [certFiles.caCert, certFiles.caKey, certFiles.relayCert, certFiles.relayKey].map((name) => join(dir, name));
  refuseOverwrite(paths, options.force, 'overwrite it (the old CA then issues nothing more)');
  const sans = options.sans ? withCommonName(options.commonName, options.sans) : defaultServerSans(options.commonName);
  const now = io.now();
  const { createCertificateAuthority, issueServerCertificate } = await import('./cert-issuing.js');
  const ca = await createCertificateAuthority({ commonName: `${options.commonName.slice(0, maxCommonNameChars - 3)} CA`, now });
  const relay = await issueServerCertificate(ca, { commonName: options.commonName, sans, now });
  ensureDir(dir);
  const [caCertFile, caKeyFile, relayCertFile, relayKeyFile] = paths as [string, string, string, string];
  // Keys first: a relay watching the folder applies the pair only once the certificate matches.
  writeFileAtomic(caKeyFile, ca.key, keyMode);
  writeFileAtomic(caCertFile, ca.cert, certMode);
  writeFileAtomic(relayKeyFile, relay.key, keyMode);
  writeFileAtomic(relayCertFile, relay.cert + ca.cert, certMode);
  const caInfo = describeCertificate(ca.cert, now);
  const info = describeCertificate(relay.cert, now);
  io.out(`wrote ${caCertFile} (private CA "${caInfo.subject}", valid until ${day(caInfo.notAfter)})`);
  io.out(`wrote ${caKeyFile} (mode 0600)`);
  io.out(`wrote ${relayCertFile} (relay certificate "${info.subject}" and the CA, valid until ${day(info.notAfter)})`);
  io.out(`wrote ${relayKeyFile} (mode 0600)`);
  io.out(`SANs: ${info.sans.join(', ')}`);
  io.out(`SHA-256 fingerprint: ${info.fingerprint}`);
  io.out(`agents trust it with --relay-ca ${caCertFile} (or --relay-fingerprint ${info.fingerprint})`);
  io.out(
    `${caKeyFile} signs agent certificates: after "relay cert issue-agent", move it off the DMZ host (the relay needs only ${relayCertFile} and ${relayKeyFile})`,
  );
  return info;
}

// ---------------------------------------------------------------------------------------------
// issue-agent

export interface CertIssueAgentOptions {
  dir: string;
  /** Agent id, [A-Za-z0-9._-]{1,64}: the CN and part of the file names. */
  name: string;
  days: number;
  force: boolean;
}

/** `cert issue-agent`: a client certificate for one agent, signed by the CA in the folder. */
export async function certIssueAgent(options: CertIssueAgentOptions, io: CertCliIo): Promise<CertificateDescription> {
  const { dir, name } = options;
  const caCertFile = join(dir, certFiles.caCert);
  const caKeyFile = join(dir, certFiles.caKey);
  if (!existsSync(caCertFile) || !existsSync(caKeyFile)) {
    throw certError('bad_ca', `no CA in ${dir} (${certFiles.caCert} and ${certFiles.caKey}): run relay cert init first`);
  }
  const certFile = join(dir, certFiles.agentCert(name));
  const keyFile = join(dir, certFiles.agentKey(name));
  refuseOverwrite([certFile, keyFile], options.force, 'replace it');
  const ca = { cert: readText(caCertFile), key: readText(caKeyFile) };
  const now = io.now();
  const { issueClientCertificate } = await import('./cert-issuing.js');
  const agent = await issueClientCertificate(ca, { commonName: name, days: options.days, now });
  writeFileAtomic(keyFile, agent.key, keyMode);
  writeFileAtomic(certFile, agent.cert, certMode);
  const info = describeCertificate(agent.cert, now);
  io.out(`wrote ${certFile} (client certificate "${info.subject}", valid until ${day(info.notAfter)})`);
  io.out(`wrote ${keyFile} (mode 0600)`);
  if (info.daysLeft < options.days - 1) io.out(`note: cut to the CA's expiry (${info.daysLeft} days instead of ${options.days})`);
  io.out(`SHA-256 fingerprint: ${info.fingerprint}`);
  io.out(
    `on the agent: platform-agent start --client-cert agent-${name}.crt --client-key agent-${name}.key --relay-ca ${certFiles.caCert}`,
  );
  io.out(`copy ${keyFile} to the agent host over a secure channel, then delete it here`);
  return info;
}

// ---------------------------------------------------------------------------------------------
// import

export interface CertImportOptions {
  dir: string;
  /** PKCS#12 file; or `cert` and `key`. */
  pfx?: string;
  cert?: string;
  key?: string;
  passphraseFile?: string;
}

function importOptions(argv: Record<string, unknown>): CertImportOptions {
  const text = (v: unknown): string | undefined => (v === undefined ? undefined : String(v));
  const options: CertImportOptions = {
    dir: String(argv.dir),
    pfx: text(argv.pfx),
    cert: text(argv.cert),
    key: text(argv.key),
    passphraseFile: text(argv.passphraseFile),
  };
  if (options.pfx !== undefined && (options.cert !== undefined || options.key !== undefined)) {
    throw new RelayError(
      'RELAY_ERR_CONFIG',
      '--pfx cannot be combined with --cert/--key: give a PKCS#12 file, or a PEM certificate and key',
    );
  }
  if (options.pfx === undefined && (options.cert === undefined || options.key === undefined)) {
    throw new RelayError('RELAY_ERR_CONFIG', 'give --pfx <file>, or --cert <PEM with chain> and --key <PEM key>');
  }
  return options;
}

/**
 * `cert import`: reads and checks a PKCS#12 file or a PEM certificate, chain and key (see
 * `parsePkcs12`, `parsePemBundle`), then writes `relay.crt` (leaf and chain) and `relay.key`
 * (unencrypted, 0600) into the folder. A relay watching those files picks them up.
 */
export async function certImport(options: CertImportOptions, io: CertCliIo): Promise<CertificateBundle> {
  const passphrase = options.passphraseFile === undefined ? undefined : readPassphrase(options.passphraseFile);
  const now = io.now();
  let bundle: CertificateBundle;
  if (options.pfx !== undefined) {
    const { parsePkcs12 } = await import('./cert-issuing.js');
    bundle = parsePkcs12(readBytes(options.pfx), passphrase ?? '', { now });
  } else {
    bundle = parsePemBundle(readText(options.cert!), readText(options.key!), { passphrase, now });
  }
  for (const warning of bundle.warnings) io.err(`relay: warning: ${warning}`);
  ensureDir(options.dir);
  const certFile = join(options.dir, certFiles.relayCert);
  const keyFile = join(options.dir, certFiles.relayKey);
  writeFileAtomic(keyFile, bundle.key, keyMode);
  writeFileAtomic(certFile, bundle.cert, certMode);
  const info = bundle.certificate;
  io.out(`wrote ${certFile} ("${info.subject}" and ${bundle.chain.length} chain certificate(s))`);
  io.out(`wrote ${keyFile} (mode 0600)`);
  printDescription(io, info, bundle.chain);
  return bundle;
}

/** The passphrase is the file's text without one trailing newline (what `echo` and editors add). */
function readPassphrase(file: string): string {
  return readText(file).replace(/\r?\n$/, '');
}

// ---------------------------------------------------------------------------------------------
// show

export interface CertShowOptions {
  dir: string;
  /** A path, or a file name in `dir`. Default `relay.crt` in `dir`. */
  file?: string;
  json: boolean;
}

/** `cert show`: the leaf of a certificate file (and the subjects of its chain), as text or JSON. */
export function certShow(options: CertShowOptions, io: CertCliIo): CertificateDescription {
  const file = resolveShowFile(options);
  const pem = readText(file);
  const now = io.now();
  const [leaf, ...rest] = parseCertificateChain(pem).map((c) => describeCertificate(c.raw, now));
  const info = leaf!;
  if (options.json) {
    io.out(JSON.stringify({ file, ...info, chain: rest }, null, 2));
  } else {
    io.out(`File: ${file}`);
    printDescription(io, info, rest);
  }
  if (info.daysLeft < 0) io.err(`relay: warning: the certificate expired on ${info.notAfter.toISOString()}`);
  else if (info.daysLeft < certPolicy.expiryWarnDays) io.err(`relay: warning: the certificate expires in ${info.daysLeft} days`);
  return info;
}

function resolveShowFile(options: CertShowOptions): string {
  if (options.file === undefined) return join(options.dir, certFiles.relayCert);
  if (isAbsolute(options.file) || existsSync(options.file)) return options.file;
  const inDir = join(options.dir, options.file);
  return existsSync(inDir) ? inDir : options.file;
}

function printDescription(io: CertCliIo, info: CertificateDescription, chain: readonly CertificateDescription[]): void {
  io.out(`Subject: ${info.subject}`);
  io.out(`SANs: ${info.sans.length > 0 ? info.sans.join(', ') : '(none)'}`);
  io.out(`Issuer: ${info.issuer}${info.selfSigned ? ' (self-signed)' : ''}`);
  io.out(`Valid from: ${info.notBefore.toISOString()}`);
  io.out(`Valid until: ${info.notAfter.toISOString()}`);
  io.out(`Days left: ${info.daysLeft}`);
  io.out(`Key: ${info.keyType}`);
  io.out(`Serial: ${info.serialNumber}`);
  for (const issuer of chain) io.out(`Chain: ${issuer.subject} (until ${day(issuer.notAfter)})`);
  io.out(`SHA-256 fingerprint: ${info.fingerprint}`);
}

// ---------------------------------------------------------------------------------------------
// files

function refuseOverwrite(paths: readonly string[], force: boolean, what: string): void {
  if (force) return;
  const existing = paths.find((path) => existsSync(path));
  if (existing !== undefined) throw new RelayError('RELAY_ERR_CONFIG', `${existing} already exists; pass --force to ${what}`);
}

function ensureDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: dirMode });
}

/**
 * Writes a whole file under a temporary name, then renames it over `path`: a reader (the relay's
 * reloader) never sees half a file. The mode is given at creation and set again with chmod,
 * because the umask may have narrowed it and an existing file keeps its own.
 */
function writeFileAtomic(path: string, data: string, mode: number): void {
  const tmp = `${path}.${randomBytes(6).toString('hex')}.tmp`;
  try {
    writeFileSync(tmp, data, { mode, flag: 'wx' });
    chmodSync(tmp, mode);
    renameSync(tmp, path);
  } catch (err) {
    try {
      unlinkSync(tmp);
    } catch {
      // Already renamed, or never created.
    }
    throw new RelayError('RELAY_ERR_CONFIG', `cannot write ${path} (${(err as Error).message})`, { cause: err });
  }
}

function readText(file: string): string {
  return readBytes(file).toString('utf8');
}

function readBytes(file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new RelayError('RELAY_ERR_CONFIG', `cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, {
      cause: err,
    });
  }
}

function day(date: Date): string {
  return date.toISOString().slice(0, 10);
}
