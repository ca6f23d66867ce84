/**
 * `--proxy-protocol-from`: the load balancers whose connections start with a PROXY protocol
 * header. Kept apart from the listeners so that the CLI can check the option without loading the
 * edge.
 */
import { parseIpRules, type IpRuleSet } from '../../shared/ip-rules.js';

/**
 * The entries (the IP rules' format: an address, a CIDR block or a range) as one rule set.
 * Throws a message naming the first bad entry.
 */
export function parseProxyProtocolFrom(entries: readonly string[]): IpRuleSet {
  const { rules, problems } = parseIpRules(entries.join('\n'), '--proxy-protocol-from');
  const problem = problems[0];
  if (problem) throw new Error(`${JSON.stringify(problem.text)}: ${problem.reason}`);
  return rules;
}
