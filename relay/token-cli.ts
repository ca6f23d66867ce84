/**
 * `relay token create`: a new agent token, printed once, with the credential line to store in
 * the relay's `--agent-credentials` file (which keeps only the token's SHA-256).
 */
import type { Argv } from 'yargs';
import { createToken, DEFAULT_PLATFORM } from './tunnel/agent-credentials.js';

export interface TokenCommandOutput {
  out: (text: string) => void;
}

export function registerTokenCommands(y: Argv, io: TokenCommandOutput = { out: (t) => process.stdout.write(t) }): Argv {
  return y.command(
    'token <action>',
    'agent tokens: relay token create --id <name> [--platform <id>]',
    (t) =>
      t
        .positional('action', { choices: ['create'] as const, describe: 'create: print a new token once, and the line to store' })
        .option('id', { type: 'string', demandOption: true, describe: 'a name for the credential (logs and status show it)' })
        .option('platform', { type: 'string', default: DEFAULT_PLATFORM, describe: 'the platform id this agent serves' })
        .option('json', { type: 'boolean', default: false, describe: 'print {"token": …, "credential": …} only' }),
    (argv) => {
      const { token, line } = createToken(String(argv.id), String(argv.platform));
      if (argv.json) {
        io.out(`${JSON.stringify({ token, credential: line })}\n`);
        return;
      }
      io.out(
        [
          `Agent token (shown only now; give it to the agent as --token-file or PLATFORM_AGENT_TOKEN):`,
          `  ${token}`,
          `Add this entry to the relay's --agent-credentials file (a JSON array), then send the relay SIGHUP:`,
          `  ${JSON.stringify(line)}`,
          '',
        ].join('\n'),
      );
    },
  );
}
