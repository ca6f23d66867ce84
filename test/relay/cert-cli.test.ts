/**
 * `relay cert …` run in-process through yargs (the same command definitions the `relay` CLI
 * registers), with real files, real TLS handshakes and mTLS against Node https servers.
 */
import { X509Certificate, createPrivateKey, generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import forge from 'node-forge';
import yargs from 'yargs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { registerCertCommands, type CertCliIo } from '../../relay/cert-cli.js';
import { DAY_MS } from '../../shared/clock.js';
import { describeCertificate, normalizeFingerprint } from '../../shared/certs.js';

interface CertRun {
  out: string[];
  err: string[];
  exitCode: number;
}

/** Runs `relay cert <args>` in-process; `now` moves the clock the commands read. */
async function cert(args: string[], now: () => number = Date.now): Promise<CertRun> {
  const result: CertRun = { out: [], err: [], exitCode: 0 };
  const io: CertCliIo = {
    out: (line) => result.out.push(line),
    err: (line) => result.err.push(line),
    now,
    setExitCode: (code) => {
      result.exitCode = code;
    },
  };
  await registerCertCommands(yargs(['cert', ...args]), io)
    .strict()
    .exitProcess(false)
    .fail((msg, err) => {
      throw err ?? new Error(msg);
    })
    .parseAsync();
  return result;
}

const tempDirs: string[] = [];
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'relay-cert-cli-'));
  tempDirs.push(dir);
  return dir;
}
afterAll(() => {
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

function mode(file: string): number {
  return statSync(file).mode & 0o777;
}

function certsOf(file: string): X509Certificate[] {
  return readFileSync(file, 'utf8')
    .match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)!
    .map((pem) => new X509Certificate(pem));
}

function fingerprintLine(out: string[]): string {
  const line = out.find((l) => l.startsWith('SHA-256 fingerprint: '));
  expect(line).toBeDefined();
  return line!.slice('SHA-256 fingerprint: '.length);
}

async function httpsServer(options: https.ServerOptions): Promise<number> {
  const server = https.createServer(options, (req, res) => {
    const peer = (req.socket as tls.TLSSocket).getPeerCertificate();
    res.end(peer?.subject ? `hello ${peer.subject.CN}` : 'hello');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => new Promise((resolve) => server.close(resolve)));
  cleanups.push(() => server.closeAllConnections());
  return (server.address() as AddressInfo).port;
}

/** A TLS connection that must complete the handshake; resolves with the socket's view of the peer. */
function tlsConnect(options: tls.ConnectionOptions): Promise<tls.PeerCertificate> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect(options, () => {
      const peer = socket.getPeerCertificate();
      socket.end();
      resolve(peer);
    });
    socket.on('error', reject);
  });
}

function get(options: https.RequestOptions): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = https.get({ agent: false, ...options }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve(body));
      res.on('error', reject);
    });
    req.on('error', reject);
  });
}

describe('relay cert init', () => {
  let dir: string;
  let init: CertRun;

  beforeAll(async () => {
    dir = join(tempDir(), 'certs');
    init = await cert(['init', '--cn', 'relay.test', '--dir', dir]);
  });

  it('writes ca.crt, ca.key, relay.crt (leaf and CA) and relay.key, keys with mode 0600', () => {
    expect(init.exitCode).toBe(0);
    expect(init.err).toEqual([]);
    for (const name of ['ca.crt', 'ca.key', 'relay.crt', 'relay.key']) expect(existsSync(join(dir, name))).toBe(true);
    expect(mode(join(dir, 'ca.key'))).toBe(0o600);
    expect(mode(join(dir, 'relay.key'))).toBe(0o600);
    expect(mode(dir)).toBe(0o700);
    expect(init.out.join('\n')).toContain(join(dir, 'relay.crt'));
  });

  it('makes a CA and a server certificate that verifies against it', () => {
    const [ca] = certsOf(join(dir, 'ca.crt'));
    const [leaf, chained, ...more] = certsOf(join(dir, 'relay.crt'));
    expect(more).toEqual([]);
    expect(ca!.ca).toBe(true);
    expect(ca!.publicKey.asymmetricKeyDetails?.modulusLength).toBe(4096);
    expect(leaf!.ca).toBe(false);
    expect(leaf!.publicKey.asymmetricKeyDetails?.modulusLength).toBe(2048);
    expect(chained!.raw.equals(ca!.raw)).toBe(true);
    expect(leaf!.checkIssued(ca!)).toBe(true);
    expect(leaf!.verify(ca!.publicKey)).toBe(true);
    expect(leaf!.keyUsage).toEqual(['1.3.6.1.5.5.7.3.1']);
    expect(leaf!.serialNumber).not.toBe(ca!.serialNumber);
    const days = (new Date(leaf!.validTo).getTime() - Date.now()) / DAY_MS;
    expect(days).toBeGreaterThan(824);
    expect(days).toBeLessThanOrEqual(825);
  });

  it('defaults the SANs to the CN, localhost, 127.0.0.1 and ::1', () => {
    expect(describeCertificate(readFileSync(join(dir, 'relay.crt'), 'utf8')).sans).toEqual([
      'DNS:relay.test',
      'DNS:localhost',
      'IP:127.0.0.1',
      'IP:::1',
    ]);
  });

  it('serves TLS that a client trusting only ca.crt accepts for its names, and refuses for another name', async () => {
    const port = await httpsServer({ cert: readFileSync(join(dir, 'relay.crt')), key: readFileSync(join(dir, 'relay.key')) });
    const ca = readFileSync(join(dir, 'ca.crt'));
    expect(await get({ host: '127.0.0.1', port, servername: 'localhost', ca, path: '/' })).toBe('hello');
    // An IP SAN: no servername, the client checks the address it connected to.
    expect(await get({ host: '127.0.0.1', port, ca, path: '/' })).toBe('hello');
    await expect(get({ host: '127.0.0.1', port, servername: 'elsewhere.example', ca, path: '/' })).rejects.toMatchObject({
      code: 'ERR_TLS_CERT_ALTNAME_INVALID',
    });
    // Without the CA the chain is not trusted.
    await expect(get({ host: '127.0.0.1', port, servername: 'localhost', path: '/' })).rejects.toMatchObject({
      code: 'SELF_SIGNED_CERT_IN_CHAIN',
    });
    // The IPv6 SAN, checked by the function TLS clients call, on the certificate the server sent.
    const peer = await tlsConnect({ host: '127.0.0.1', port, servername: 'relay.test', ca });
    expect(tls.checkServerIdentity('::1', peer)).toBeUndefined();
    expect(tls.checkServerIdentity('10.9.9.9', peer)).toBeInstanceOf(Error);
  });

  it('show prints a fingerprint that --relay-fingerprint accepts as is and that matches the live connection', async () => {
    const show = await cert(['show', '--dir', dir]);
    expect(show.exitCode).toBe(0);
    const fingerprint = fingerprintLine(show.out);
    expect(normalizeFingerprint(fingerprint)).toBe(fingerprint);
    expect(fingerprintLine(init.out)).toBe(fingerprint);
    const text = show.out.join('\n');
    expect(text).toContain('Subject: CN=relay.test');
    expect(text).toContain('Issuer: CN=relay.test CA');
    expect(text).toContain('SANs: DNS:relay.test, DNS:localhost, IP:127.0.0.1, IP:::1');
    expect(text).toMatch(/Valid until: \d{4}-\d\d-\d\dT/);
    expect(text).toMatch(/Days left: 82[45]/);

    const port = await httpsServer({ cert: readFileSync(join(dir, 'relay.crt')), key: readFileSync(join(dir, 'relay.key')) });
    const peer = await tlsConnect({ host: '127.0.0.1', port, servername: 'localhost', ca: readFileSync(join(dir, 'ca.crt')) });
    expect(peer.fingerprint256).toBe(fingerprint);
  });

  it('show --json gives the same facts for scripts, and --file reads another certificate of the folder', async () => {
    const show = await cert(['show', '--dir', dir, '--file', 'ca.crt', '--json']);
    expect(show.exitCode).toBe(0);
    const json = JSON.parse(show.out.join('\n')) as Record<string, unknown>;
    expect(json).toMatchObject({ subject: 'CN=relay.test CA', isCa: true, selfSigned: true, keyType: 'RSA 4096' });
    expect(normalizeFingerprint(json.fingerprint as string)).toBe(json.fingerprint);
    expect(json.daysLeft).toBeGreaterThanOrEqual(3649);
  });

  it('refuses to overwrite without --force, naming the file and the flag', async () => {
    const before = readFileSync(join(dir, 'ca.key'), 'utf8');
    const again = await cert(['init', '--cn', 'relay.test', '--dir', dir]);
    expect(again.exitCode).toBe(1);
    expect(again.err).toEqual([
      `relay: ${join(dir, 'ca.crt')} already exists; pass --force to overwrite it (the old CA then issues nothing more)`,
    ]);
    expect(readFileSync(join(dir, 'ca.key'), 'utf8')).toBe(before);
  });

  describe('issue-agent', () => {
    it('makes a client certificate that a server asking for certificates from that CA accepts (mTLS)', async () => {
      const issued = await cert(['issue-agent', '--name', 'plant-7.a_b', '--dir', dir]);
      expect(issued.exitCode).toBe(0);
      const certFile = join(dir, 'agent-plant-7.a_b.crt');
      const keyFile = join(dir, 'agent-plant-7.a_b.key');
      expect(mode(keyFile)).toBe(0o600);
      const [leaf] = certsOf(certFile);
      expect(leaf!.subject).toBe('CN=plant-7.a_b');
      expect(leaf!.keyUsage).toEqual(['1.3.6.1.5.5.7.3.2']);
      expect(leaf!.verify(certsOf(join(dir, 'ca.crt'))[0]!.publicKey)).toBe(true);

      const ca = readFileSync(join(dir, 'ca.crt'));
      const port = await httpsServer({
        cert: readFileSync(join(dir, 'relay.crt')),
        key: readFileSync(join(dir, 'relay.key')),
        ca,
        requestCert: true,
        rejectUnauthorized: true,
      });
      const base = { host: '127.0.0.1', port, servername: 'localhost', ca, path: '/' };
      expect(await get({ ...base, cert: readFileSync(certFile), key: readFileSync(keyFile) })).toBe('hello plant-7.a_b');
      // No client certificate, and a server certificate (serverAuth only) used as a client one: refused.
      await expect(get(base)).rejects.toThrow();
      await expect(
        get({ ...base, cert: readFileSync(join(dir, 'relay.crt')), key: readFileSync(join(dir, 'relay.key')) }),
      ).rejects.toThrow();
    });

    it('refuses an id outside [A-Za-z0-9._-]{1,64} as a usage error', async () => {
      for (const name of ['../x', 'a b', 'x'.repeat(65), '']) {
        const run = await cert(['issue-agent', '--name', name, '--dir', dir]);
        expect(run.exitCode).toBe(2);
        expect(run.err[0]).toMatch(/^relay: --name: /);
      }
    });

    it('tells the operator to run init first when the folder has no CA', async () => {
      const run = await cert(['issue-agent', '--name', 'a1', '--dir', tempDir()]);
      expect(run.exitCode).toBe(1);
      expect(run.err).toHaveLength(1);
      expect(run.err[0]).toMatch(/^relay: no CA in .*run relay cert init first$/);
    });
  });

  describe('import', () => {
    function makePfx(passphrase: string): string {
      const certs = certsOf(join(dir, 'relay.crt')).map((c) => forge.pki.certificateFromPem(c.toString()));
      const key = forge.pki.privateKeyFromPem(readFileSync(join(dir, 'relay.key'), 'utf8'));
      const asn1 = forge.pkcs12.toPkcs12Asn1(key, certs, passphrase, { algorithm: 'aes256', friendlyName: 'relay' });
      const file = join(tempDir(), 'relay.pfx');
      writeFileSync(file, Buffer.from(forge.asn1.toDer(asn1).getBytes(), 'binary'));
      return file;
    }

    it('installs a PKCS#12 file opened with the passphrase file', async () => {
      const pfx = makePfx('correct horse battery');
      const passFile = join(tempDir(), 'pass.txt');
      writeFileSync(passFile, 'correct horse battery\n', { mode: 0o600 });
      const target = join(tempDir(), 'imported');
      const run = await cert(['import', '--pfx', pfx, '--passphrase-file', passFile, '--dir', target]);
      expect(run.err).toEqual([]);
      expect(run.exitCode).toBe(0);
      expect(mode(join(target, 'relay.key'))).toBe(0o600);
      const imported = certsOf(join(target, 'relay.crt'));
      const original = certsOf(join(dir, 'relay.crt'));
      expect(imported.map((c) => c.fingerprint256)).toEqual(original.map((c) => c.fingerprint256));
      expect(imported[0]!.checkPrivateKey(createPrivateKey(readFileSync(join(target, 'relay.key'))))).toBe(true);
      expect(fingerprintLine(run.out)).toBe(original[0]!.fingerprint256);
      // The installed pair serves TLS.
      const port = await httpsServer({ cert: readFileSync(join(target, 'relay.crt')), key: readFileSync(join(target, 'relay.key')) });
      expect(await get({ host: '127.0.0.1', port, servername: 'relay.test', ca: readFileSync(join(dir, 'ca.crt')), path: '/' })).toBe(
        'hello',
      );
    });

    it('refuses a wrong passphrase with a clear error and writes nothing', async () => {
      const pfx = makePfx('right');
      const passFile = join(tempDir(), 'pass.txt');
      writeFileSync(passFile, 'wrong\n');
      const target = join(tempDir(), 'imported');
      const run = await cert(['import', '--pfx', pfx, '--passphrase-file', passFile, '--dir', target]);
      expect(run.exitCode).toBe(1);
      expect(run.err).toEqual(['relay: the PKCS#12 file cannot be opened with that passphrase']);
      expect(existsSync(join(target, 'relay.crt'))).toBe(false);
    });

    it('installs PEM with its chain, leaf first whatever the order given', async () => {
      const bundle = join(tempDir(), 'bundle.pem');
      writeFileSync(bundle, readFileSync(join(dir, 'ca.crt'), 'utf8') + certsOf(join(dir, 'relay.crt'))[0]!.toString());
      const target = tempDir();
      const run = await cert(['import', '--cert', bundle, '--key', join(dir, 'relay.key'), '--dir', target]);
      expect(run.exitCode).toBe(0);
      expect(certsOf(join(target, 'relay.crt')).map((c) => c.subject)).toEqual(['CN=relay.test', 'CN=relay.test CA']);
    });

    it('refuses a key that does not belong to the certificate', async () => {
      const target = tempDir();
      const other = join(tempDir(), 'other.key');
      writeFileSync(other, generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }));
      const run = await cert(['import', '--cert', join(dir, 'relay.crt'), '--key', other, '--dir', target]);
      expect(run.exitCode).toBe(1);
      expect(run.err).toEqual(['relay: the private key does not belong to any of the 2 certificates']);
      expect(existsSync(join(target, 'relay.crt'))).toBe(false);
      expect(existsSync(join(target, 'relay.key'))).toBe(false);
    });

    it('refuses the CA key given with a chain: the CA does not become the server certificate', async () => {
      const target = tempDir();
      const run = await cert(['import', '--cert', join(dir, 'relay.crt'), '--key', join(dir, 'ca.key'), '--dir', target]);
      expect(run.exitCode).toBe(1);
      expect(run.err).toEqual([
        'relay: the private key belongs to "CN=relay.test CA", which issued another certificate in the chain, not to the server certificate',
      ]);
      expect(existsSync(join(target, 'relay.crt'))).toBe(false);
    });

    it('warns when fewer than 30 days are left and refuses an expired certificate', async () => {
      const notAfter = new Date(certsOf(join(dir, 'relay.crt'))[0]!.validTo).getTime();
      const args = ['import', '--cert', join(dir, 'relay.crt'), '--key', join(dir, 'relay.key'), '--dir', tempDir()];
      const soon = await cert(args, () => notAfter - 10 * DAY_MS - 1000);
      expect(soon.exitCode).toBe(0);
      expect(soon.err).toEqual([expect.stringMatching(/^relay: warning: the certificate expires in 10 days/)]);
      const late = await cert(args, () => notAfter + 1000);
      expect(late.exitCode).toBe(1);
      expect(late.err).toEqual([expect.stringMatching(/^relay: the certificate \(CN=relay\.test\) expired on /)]);
    });

    it('wants --pfx, or --cert with --key (usage error)', async () => {
      const run = await cert(['import', '--cert', join(dir, 'relay.crt'), '--dir', tempDir()]);
      expect(run.exitCode).toBe(2);
      expect(run.err).toEqual(['relay: give --pfx <file>, or --cert <PEM with chain> and --key <PEM key>']);
    });
  });
});

describe('relay cert init with --san and --force', () => {
  it('refuses while any of the files exists, then with --force writes the given names (IPv4 and IPv6) and the CN', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'relay.key'), 'old key\n', { mode: 0o644 });
    const san = 'DNS:relay.example.com,IP:10.0.0.5,IP:FD00:0:0::5';
    const refused = await cert(['init', '--cn', 'edge-1.example.com', '--san', san, '--dir', dir]);
    expect(refused.exitCode).toBe(1);
    expect(refused.err).toEqual([
      `relay: ${join(dir, 'relay.key')} already exists; pass --force to overwrite it (the old CA then issues nothing more)`,
    ]);
    expect(existsSync(join(dir, 'ca.crt'))).toBe(false);

    const forced = await cert(['init', '--cn', 'edge-1.example.com', '--san', san, '--dir', dir, '--force']);
    expect(forced.exitCode).toBe(0);
    // An existing file keeps its mode through a plain write; this one was replaced with 0600.
    expect(mode(join(dir, 'relay.key'))).toBe(0o600);
    expect(describeCertificate(readFileSync(join(dir, 'relay.crt'), 'utf8')).sans).toEqual([
      'DNS:edge-1.example.com',
      'DNS:relay.example.com',
      'IP:10.0.0.5',
      'IP:fd00::5',
    ]);
    const leaf = certsOf(join(dir, 'relay.crt'))[0]!;
    expect(
      tls.checkServerIdentity('fd00::5', { subject: { CN: '' }, subjectaltname: leaf.subjectAltName } as tls.PeerCertificate),
    ).toBeUndefined();
  });

  it('refuses a malformed --san as a usage error before making any key', async () => {
    const dir = tempDir();
    const run = await cert(['init', '--cn', 'relay.test', '--san', 'DNS:ok.example,10.0.0.5', '--dir', dir]);
    expect(run.exitCode).toBe(2);
    expect(run.err[0]).toMatch(/^relay: --san: "10\.0\.0\.5" is not valid; expected DNS:<host name> or IP:/);
    expect(existsSync(join(dir, 'ca.key'))).toBe(false);
  });
});
