import { isIP } from 'node:net';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { canonicalIp, decideIp, IpRuleSet, maxProblemTextChars, parseIpRules } from '../../shared/ip-rules.js';

/** The rules of `text`, failing the test if any line was refused. */
function rulesOf(text: string): IpRuleSet {
  const { rules, problems } = parseIpRules(text);
  expect(problems).toEqual([]);
  return rules;
}

function v4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

describe('IP rules: entries', () => {
  it('matches a single IPv4 or IPv6 address and nothing next to it', () => {
    const rules = rulesOf('10.1.2.3\n2001:db8::1\n');
    expect(rules.size).toBe(2);
    expect(rules.matches('10.1.2.3')).toBe(true);
    expect(rules.matches('10.1.2.2')).toBe(false);
    expect(rules.matches('10.1.2.4')).toBe(false);
    expect(rules.matches('2001:db8::1')).toBe(true);
    expect(rules.matches('2001:0DB8:0000:0000:0000:0000:0000:0001')).toBe(true);
    expect(rules.matches('2001:db8::2')).toBe(false);
    expect(rules.matches('2001:db8::')).toBe(false);
  });

  it('matches an IPv4 CIDR block up to its edges', () => {
    const rules = rulesOf('10.0.0.0/8\n192.168.1.7/32');
    expect(rules.matches('10.0.0.0')).toBe(true);
    expect(rules.matches('10.255.255.255')).toBe(true);
    expect(rules.matches('9.255.255.255')).toBe(false);
    expect(rules.matches('11.0.0.0')).toBe(false);
    expect(rules.matches('192.168.1.7')).toBe(true);
    expect(rules.matches('192.168.1.8')).toBe(false);
  });

  it('matches an IPv6 CIDR block up to its edges', () => {
    const rules = rulesOf('2001:db8::/32\nfe80::1/128');
    expect(rules.matches('2001:db8::')).toBe(true);
    expect(rules.matches('2001:db8:ffff:ffff:ffff:ffff:ffff:ffff')).toBe(true);
    expect(rules.matches('2001:db7:ffff:ffff:ffff:ffff:ffff:ffff')).toBe(false);
    expect(rules.matches('2001:db9::')).toBe(false);
    expect(rules.matches('fe80::1')).toBe(true);
    expect(rules.matches('fe80::2')).toBe(false);
  });

  it('treats /0 as the whole family and only that family', () => {
    const any4 = rulesOf('0.0.0.0/0');
    expect(any4.matches('0.0.0.0')).toBe(true);
    expect(any4.matches('255.255.255.255')).toBe(true);
    expect(any4.matches('::1')).toBe(false);
    const any6 = rulesOf('::/0');
    expect(any6.matches('::')).toBe(true);
    expect(any6.matches('ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff')).toBe(true);
    expect(any6.matches('10.1.2.3')).toBe(false);
    expect(any6.matches('::ffff:10.1.2.3')).toBe(false);
  });

  it('masks host bits set in a CIDR block instead of refusing it', () => {
    const { rules, problems } = parseIpRules('10.1.2.3/8\n2001:db8:1:2::5/32');
    expect(problems).toEqual([]);
    expect(rules.matches('10.0.0.0')).toBe(true);
    expect(rules.matches('10.255.255.255')).toBe(true);
    expect(rules.matches('2001:db8::')).toBe(true);
    expect(rules.matches('2001:db8:ffff::')).toBe(true);
  });

  it('matches an inclusive range, with or without spaces around the dash', () => {
    const rules = rulesOf('10.0.0.1-10.0.0.50\n192.168.0.10 - 192.168.0.20\n2001:db8::10 -2001:db8::1:0\n172.16.0.9-172.16.0.9');
    for (const ip of [
      '10.0.0.1',
      '10.0.0.50',
      '192.168.0.10',
      '192.168.0.20',
      '2001:db8::10',
      '2001:db8::ffff',
      '2001:db8::1:0',
      '172.16.0.9',
    ]) {
      expect(rules.matches(ip), ip).toBe(true);
    }
    for (const ip of ['10.0.0.0', '10.0.0.51', '192.168.0.9', '192.168.0.21', '2001:db8::f', '2001:db8::1:1', '172.16.0.10']) {
      expect(rules.matches(ip), ip).toBe(false);
    }
  });

  it('matches ranges spanning octet and group boundaries', () => {
    const rules = rulesOf('10.0.255.250-10.1.0.5\n2001:db8::ffff:fffe-2001:db8::1:0:1');
    expect(rules.matches('10.0.255.255')).toBe(true);
    expect(rules.matches('10.1.0.0')).toBe(true);
    expect(rules.matches('10.1.0.6')).toBe(false);
    expect(rules.matches('2001:db8::1:0:0')).toBe(true);
    expect(rules.matches('2001:db8::1:0:2')).toBe(false);
  });

  it('says which entry matched, with its source and line', () => {
    const { rules } = parseIpRules('# staff\n10.0.0.0/8\n10.1.0.0/16 # lab\n', 'blacklist.dat');
    expect(rules.lookup('10.1.2.3')).toMatchObject({ source: 'blacklist.dat', line: 2, text: '10.0.0.0/8' });
    expect(rules.lookup('11.0.0.1')).toBeUndefined();
  });

  it('finds a small block after a wide one that starts earlier', () => {
    // The wide block reaches past many later, smaller entries: a lookup must not stop at them.
    const rules = rulesOf(['10.0.0.0/8', ...Array.from({ length: 50 }, (_, i) => `10.${i}.0.0/24`), '10.200.0.0/16'].join('\n'));
    expect(rules.matches('10.100.1.1')).toBe(true);
    expect(rules.lookup('10.100.1.1')?.text).toBe('10.0.0.0/8');
    expect(rules.matches('11.0.0.0')).toBe(false);
  });
});

describe('IP rules: IPv4-mapped IPv6 addresses', () => {
  it('matches a client reported as ::ffff:a.b.c.d against IPv4 rules', () => {
    const rules = rulesOf('10.0.0.0/8\n192.168.0.1-192.168.0.9\n172.16.5.4');
    for (const ip of [
      '::ffff:10.1.2.3',
      '::FFFF:10.1.2.3',
      '::ffff:a01:203',
      '0:0:0:0:0:ffff:10.1.2.3',
      '::ffff:192.168.0.9',
      '::ffff:172.16.5.4',
    ]) {
      expect(rules.matches(ip), ip).toBe(true);
    }
    expect(rules.matches('::ffff:11.0.0.0')).toBe(false);
    expect(rules.matches('::ffff:192.168.0.10')).toBe(false);
  });

  it('treats a rule written in mapped form as an IPv4 rule', () => {
    const rules = rulesOf('::ffff:10.0.0.0/104\n::ffff:192.168.0.1-::ffff:192.168.0.3\n::ffff:172.16.5.4');
    expect(rules.matches('10.9.9.9')).toBe(true);
    expect(rules.matches('::ffff:10.9.9.9')).toBe(true);
    expect(rules.matches('11.0.0.0')).toBe(false);
    expect(rules.matches('192.168.0.2')).toBe(true);
    expect(rules.matches('192.168.0.4')).toBe(false);
    expect(rules.matches('172.16.5.4')).toBe(true);
  });

  it('does not confuse IPv4-compatible or NAT64 addresses with IPv4', () => {
    const rules = rulesOf('10.1.2.3');
    expect(rules.matches('::10.1.2.3')).toBe(false);
    expect(rules.matches('64:ff9b::10.1.2.3')).toBe(false);
    expect(rules.matches('::fffe:10.1.2.3')).toBe(false);
  });

  it('ignores the zone index of a link-local client address', () => {
    const rules = rulesOf('fe80::/10');
    expect(rules.matches('fe80::1%eth0')).toBe(true);
    expect(rules.matches('fe80::1%')).toBe(true);
  });
});

describe('IP rules: file format', () => {
  it('skips comments and blank lines and trims whitespace', () => {
    const text = [
      '# whitelist',
      '',
      '   ',
      '  10.0.0.1  ',
      '\t10.0.0.2\t# office',
      '10.0.0.3#no space',
      '# 10.0.0.4',
      '  # indented comment',
    ].join('\n');
    const rules = rulesOf(text);
    expect(rules.size).toBe(3);
    expect(rules.matches('10.0.0.3')).toBe(true);
    expect(rules.matches('10.0.0.4')).toBe(false);
  });

  it('reads CRLF and CR line endings and a byte-order mark, counting lines as an editor does', () => {
    const { rules, problems } = parseIpRules('\uFEFF10.0.0.1\r\nnope\r\n10.0.0.2\rbad\n10.0.0.3');
    expect(rules.size).toBe(3);
    expect(rules.matches('10.0.0.1')).toBe(true);
    expect(problems.map((p) => p.line)).toEqual([2, 4]);
  });

  it('reports every kind of bad line with its 1-based line number and keeps the good ones', () => {
    const lines = [
      '10.0.0.1', // 1 ok
      'hello', // 2
      '10.0.0.256', // 3
      '010.0.0.1', // 4 leading zero: octal to some parsers
      '10.0.0.0/33', // 5
      '2001:db8::/129', // 6
      '10.0.0.0/', // 7
      '10.0.0.0/-1', // 8
      '10.0.0.0/8x', // 9
      '10.0.0.1-2001:db8::1', // 10
      '10.0.0.9-10.0.0.1', // 11
      '2001:db8::9-2001:db8::1', // 12
      '10.0.0.1-', // 13
      '-10.0.0.1', // 14
      '10.0.0.1-10.0.0.2-10.0.0.3', // 15
      'fe80::1%eth0', // 16
      '10.0.0.1 10.0.0.2', // 17
      '1:2:3:4:5:6:7:8:9', // 18
      '1::2::3', // 19
      '/8', // 20
      '2001:db8::1 # fine', // 21 ok
    ];
    const { rules, problems } = parseIpRules(lines.join('\n'));
    expect(rules.size).toBe(2);
    expect(problems.map((p) => p.line)).toEqual([2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]);
    const reason = (line: number): string => problems.find((p) => p.line === line)?.reason ?? '';
    expect(reason(2)).toMatch(/not an IP address/);
    expect(reason(5)).toMatch(/prefix length .* 0 to 32/);
    expect(reason(6)).toMatch(/prefix length .* 0 to 128/);
    expect(reason(10)).toMatch(/mixes IPv4 and IPv6/);
    expect(reason(11)).toMatch(/start is after its end/);
    expect(reason(12)).toMatch(/start is after its end/);
    expect(reason(13)).toMatch(/range end is empty/);
    expect(reason(14)).toMatch(/range start is empty/);
    expect(reason(16)).toMatch(/zone index/);
    expect(problems[0]).toEqual({ line: 2, text: 'hello', reason: expect.any(String) });
  });

  it('quotes a bad line without its comment and cuts a long one short', () => {
    const { problems } = parseIpRules(`nope # why\n${'x'.repeat(10_000)}`);
    expect(problems[0]?.text).toBe('nope');
    expect(problems[1]?.text.length).toBeLessThanOrEqual(maxProblemTextChars + 1);
    expect(problems[1]?.line).toBe(2);
  });

  it('gives the empty set for an empty or comment-only file', () => {
    expect(parseIpRules('').rules).toBe(IpRuleSet.empty);
    expect(parseIpRules('# nothing\n\n').rules.size).toBe(0);
    expect(IpRuleSet.empty.matches('10.0.0.1')).toBe(false);
    expect(IpRuleSet.empty.size).toBe(0);
  });

  it('matches nothing for a string that is not an address', () => {
    const rules = rulesOf('0.0.0.0/0\n::/0');
    for (const ip of [
      '',
      'localhost',
      '10.0.0.256',
      '10.0.0',
      '10.0.0.1.2',
      ' 10.0.0.1',
      '10.0.0.1/8',
      '::ffff:10.1.2.3.4',
      ':::',
      'g::1',
      '%eth0',
    ]) {
      expect(rules.matches(ip), JSON.stringify(ip)).toBe(false);
    }
    expect(rules.matches(undefined as unknown as string)).toBe(false);
  });
});

describe('IP rules: decisions', () => {
  const whitelist = rulesOf('10.1.0.0/16\n2001:db8:1::/48');
  const blacklist = rulesOf('10.0.0.0/8\n2001:db8::/32\n192.168.0.66');

  it('lets the whitelist win over the blacklist', () => {
    expect(decideIp('10.1.2.3', { whitelist, blacklist })).toBe('whitelisted');
    expect(decideIp('::ffff:10.1.2.3', { whitelist, blacklist })).toBe('whitelisted');
    expect(decideIp('2001:db8:1::5', { whitelist, blacklist })).toBe('whitelisted');
  });

  it('blacklists what only the blacklist covers and leaves the rest neutral', () => {
    expect(decideIp('10.2.0.1', { whitelist, blacklist })).toBe('blacklisted');
    expect(decideIp('::ffff:192.168.0.66', { whitelist, blacklist })).toBe('blacklisted');
    expect(decideIp('2001:db8:2::1', { whitelist, blacklist })).toBe('blacklisted');
    expect(decideIp('192.168.0.67', { whitelist, blacklist })).toBe('neutral');
    expect(decideIp('not an ip', { whitelist, blacklist })).toBe('neutral');
    expect(decideIp('10.2.0.1', { whitelist: IpRuleSet.empty, blacklist: IpRuleSet.empty })).toBe('neutral');
  });
});

describe('IP rules: properties', () => {
  it('never throws on random input, and accounts for every non-blank line', () => {
    const ipChars = fc.constantFrom(...'0123456789abcdefABCDEF:.-/%# \t\r\n'.split(''));
    const text = fc.oneof(fc.string({ unit: 'binary', maxLength: 400 }), fc.string({ unit: ipChars, maxLength: 400 }));
    fc.assert(
      fc.property(text, (input) => {
        const { rules, problems } = parseIpRules(input);
        const entries = input
          .replace(/^\uFEFF/, '')
          .split(/\r\n|\n|\r/)
          .filter((line) => line.replace(/#.*/, '').trim() !== '');
        expect(rules.size + problems.length).toBe(entries.length);
        rules.matches(input);
        decideIp(input, { whitelist: rules, blacklist: rules });
      }),
      { numRuns: 2000 },
    );
  });

  it('accepts exactly the addresses node:net accepts', () => {
    const ipish = fc.string({ unit: fc.constantFrom(...'0123456789abfF:.'.split('')), maxLength: 45 });
    const near = fc.oneof(fc.ipV4(), fc.ipV6(), fc.ipV4Extended());
    fc.assert(
      fc.property(fc.oneof(ipish, near), (candidate) => {
        const accepted = parseIpRules(candidate).rules.size === 1;
        expect(accepted, candidate).toBe(isIP(candidate) !== 0);
        if (accepted) expect(parseIpRules(candidate).rules.matches(candidate)).toBe(true);
      }),
      { numRuns: 5000 },
    );
  });

  it('agrees with a linear scan over random IPv4 ranges and blocks', () => {
    const block = fc.tuple(fc.nat(0xffff_ffff), fc.integer({ min: 0, max: 32 })).map(([base, prefix]) => {
      const size = 2 ** (32 - prefix);
      const start = Math.floor(base / size) * size;
      return { text: `${v4(base)}/${prefix}`, start, end: start + size - 1 };
    });
    const range = fc.tuple(fc.nat(0xffff_ffff), fc.nat(0xffff_ffff)).map(([a, b]) => {
      const [start, end] = a <= b ? [a, b] : [b, a];
      return { text: `${v4(start)} - ${v4(end)}`, start, end };
    });
    const entries = fc.array(
      fc.oneof(
        block,
        range,
        block.filter((b) => b.end - b.start < 4096),
      ),
      { maxLength: 40 },
    );
    fc.assert(
      fc.property(entries, fc.array(fc.nat(0xffff_ffff), { maxLength: 40 }), (list, probes) => {
        const rules = rulesOf(list.map((e) => e.text).join('\n'));
        // Probe the edges of every entry too: that is where an off-by-one would hide.
        for (const ip of [...probes, ...list.flatMap((e) => [e.start - 1, e.start, e.end, e.end + 1])]) {
          if (ip < 0 || ip > 0xffff_ffff) continue;
          const expected = list.some((e) => e.start <= ip && ip <= e.end);
          expect(rules.matches(v4(ip)), v4(ip)).toBe(expected);
          expect(rules.matches(`::ffff:${v4(ip)}`)).toBe(expected);
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe('IP rules: a large list', () => {
  it('parses 10k entries and matches each lookup in microseconds', () => {
    let seed = 12345;
    const random = (): number => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    const lines: string[] = [];
    for (let i = 0; i < 10_000; i++) {
      const base = Math.floor(random() * 2 ** 32);
      if (i % 10 === 9) lines.push(`2001:db8:${(i % 0xffff).toString(16)}::/48`);
      else if (i % 3 === 0) lines.push(`${v4(base)}/${24 + (i % 9)}`);
      else if (i % 3 === 1) lines.push(`${v4(base)}-${v4(Math.min(base + 100, 0xffff_ffff))}`);
      else lines.push(v4(base));
    }
    const started = performance.now();
    const { rules, problems } = parseIpRules(lines.join('\n'), 'big.dat');
    const parseMs = performance.now() - started;
    expect(problems).toEqual([]);
    expect(rules.size).toBe(10_000);
    expect(parseMs).toBeLessThan(2_000);

    const probes = Array.from({ length: 2_000 }, () => v4(Math.floor(random() * 2 ** 32)));
    probes.push('2001:db8:7::1', '::ffff:10.1.2.3');
    for (const line of lines.slice(0, 1000)) probes.push(line.split(/[/-]/)[0] as string);
    const rounds = 50;
    let hits = 0;
    const t0 = performance.now();
    for (let r = 0; r < rounds; r++) for (const ip of probes) if (rules.matches(ip)) hits++;
    const perLookupUs = ((performance.now() - t0) * 1000) / (rounds * probes.length);
    expect(hits).toBeGreaterThanOrEqual(rounds * 1000);
    // Typically well under 1 µs; the bound leaves room for a loaded CI machine.
    expect(perLookupUs).toBeLessThan(20);
  });
});

describe('canonicalIp', () => {
  it('gives one spelling per client address, so per-address counters cannot be split', () => {
    expect(canonicalIp('::ffff:10.1.2.3')).toBe('10.1.2.3');
    expect(canonicalIp('::FFFF:10.1.2.3')).toBe('10.1.2.3');
    expect(canonicalIp('10.1.2.3')).toBe('10.1.2.3');
    expect(canonicalIp('fe80::1%eth0')).toBe('fe80::1');
    expect(canonicalIp('2001:DB8::1')).toBe('2001:db8::1');
  });
});
