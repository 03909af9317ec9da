// The `dsv3` command line: picks the subcommand and turns errors into one clear line on
// stderr and a non-zero exit code (stack traces only with DSV3_DEBUG=1). Each command lives
// in its own file and stays thin.

import { readFileSync } from 'node:fs';
import { DsError } from '../errors.ts';
import { UsageError, didYouMean } from './args.ts';
import { logitsCommand } from './logits.ts';
import { generateCommand } from './generate.ts';
import { convertCommand } from './convert.ts';
import { chatCommand } from './chat.ts';
import { tokenizeCommand } from './tokenize.ts';
import { serveCommand } from './serve.ts';
import { trainStepCommand } from './train-step.ts';
import { evalCommand } from './eval.ts';
import { trainCommand } from './train.ts';
import { benchCommand } from './bench.ts';

const COMMANDS: Record<string, { run: (argv: string[]) => Promise<number> | number; help: string }> = {
  logits: { run: logitsCommand, help: 'print the logits of a token sequence as JSON' },
  generate: { run: generateCommand, help: 'generate a continuation of a prompt' },
  convert: { run: convertCommand, help: 'convert a checkpoint: FP8 to BF16, or to GGUF for llama.cpp' },
  chat: { run: chatCommand, help: 'talk to a model in the terminal' },
  tokenize: { run: tokenizeCommand, help: 'text or a chat (JSON messages) to token ids' },
  serve: { run: serveCommand, help: 'OpenAI-compatible HTTP server with a web chat page' },
  train: { run: trainCommand, help: 'train a DeepSeek-V3-architecture model (MTP, aux-loss-free balancing, FP8)' },
  eval: { run: evalCommand, help: 'perplexity and bits per byte on a text file' },
  bench: { run: benchCommand, help: 'how fast a model runs here: prefill, decode, memory, roofline' },
  'train-step': { run: trainStepCommand, help: 'one forward + backward pass: losses and gradients (JSON)' },
};

function usage(): string {
  const lines = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(10)} ${c.help}`);
  return ['usage: dsv3 <command> [options]', '', 'commands:', ...lines, '', 'dsv3 <command> --help for options'].join('\n');
}

/** The version in package.json. */
export function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

const debug = () => process.env.DSV3_DEBUG === '1';

/** A message on one line (an error's message may hold newlines). */
const oneLine = (s: string) => s.replace(/\s*\n\s*/g, ' ').trim();

let pipeHandled = false;
/**
 * stdout closed by its reader (`dsv3 logits … | head`): writes fail with EPIPE, reported as an
 * 'error' event; the output is no longer wanted, so leave quietly (exit 0), as other tools do.
 */
function quietOnClosedPipe(): void {
  if (pipeHandled) return;
  pipeHandled = true;
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(0);
    process.stderr.write(`dsv3: cannot write the output: ${e.message}\n`);
    process.exit(1);
  });
}

export async function main(argv: string[]): Promise<number> {
  quietOnClosedPipe();
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    process.stdout.write(usage() + '\n');
    return cmd ? 0 : 2;
  }
  if (cmd === '--version' || cmd === '-V' || cmd === 'version') {
    process.stdout.write(`dsv3 ${version()}\n`);
    return 0;
  }
  const c = COMMANDS[cmd];
  if (!c) {
    const guess = didYouMean(cmd.replace(/^-+/, ''), Object.keys(COMMANDS));
    const what = cmd.startsWith('-') ? `unknown option ${cmd}` : `unknown command "${cmd}"`;
    process.stderr.write(`dsv3: ${what}${guess ? ` (did you mean "${guess}"?)` : ''}; dsv3 --help lists the commands\n`);
    return 2;
  }
  try {
    return await c.run(rest);
  } catch (e) {
    if (debug()) process.stderr.write(`${(e as Error)?.stack ?? String(e)}\n`);
    if (e instanceof UsageError) {
      process.stderr.write(`dsv3 ${cmd}: ${oneLine(e.message)}\n`);
      return 2;
    }
    if (e instanceof DsError) {
      process.stderr.write(`dsv3 ${cmd}: error [${e.code}]: ${oneLine(e.message)}\n`);
      return 1;
    }
    // Anything else (a system error, a bug): still one line; DSV3_DEBUG=1 shows the stack.
    const msg = e instanceof Error ? e.message : String(e);
    const hint = debug() ? '' : ' (DSV3_DEBUG=1 shows where)';
    process.stderr.write(`dsv3 ${cmd}: error: ${oneLine(msg.replace(/^dsv3: /, ''))}${hint}\n`);
    return 1;
  }
}
