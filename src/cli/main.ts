// The `dsv3` command line: picks the subcommand and turns errors into one clear line on
// stderr and a non-zero exit code. Each command lives in its own file and stays thin.

import { DsError } from '../errors.ts';
import { UsageError } from './args.ts';
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

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    process.stdout.write(usage() + '\n');
    return cmd ? 0 : 2;
  }
  const c = COMMANDS[cmd];
  if (!c) {
    process.stderr.write(`dsv3: unknown command "${cmd}"\n${usage()}\n`);
    return 2;
  }
  try {
    return await c.run(rest);
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`dsv3 ${cmd}: ${e.message}\n`);
      return 2;
    }
    if (e instanceof DsError) {
      process.stderr.write(`dsv3 ${cmd}: error [${e.code}]: ${e.message}\n`);
      return 1;
    }
    throw e;
  }
}
