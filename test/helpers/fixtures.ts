// Temporary random checkpoints for tests: any config, any storage dtype, optional shards.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import { tinyConfig, writeRandomCheckpoint, type InitOptions } from '../../src/model/init.ts';

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** A fresh temp folder, removed when the test file ends. */
export function tempDir(prefix = 'dsv3-test-'): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  dirs.push(d);
  return d;
}

/** Write a random checkpoint of tinyConfig(overrides) and return its folder. */
export function randomCheckpoint(overrides: Record<string, unknown> = {}, opts: InitOptions = {}): string {
  const dir = tempDir();
  writeRandomCheckpoint(dir, tinyConfig(overrides), opts);
  return dir;
}
