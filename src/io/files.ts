// Opening the files of a checkpoint (config.json, tokenizer files, safetensors, GGUF) without
// ever blocking: a FIFO, socket or device where a file should be is refused at once instead of
// waiting for a writer that never comes, and a folder is named as one.

import { closeSync, constants, fstatSync, openSync, readFileSync } from 'node:fs';

/** Why a path could not be opened as a regular file; `missing` when there is nothing there. */
export type OpenFailure = (why: string, missing: boolean) => never;

/**
 * Open `path` for reading, O_NONBLOCK so that opening a FIFO returns at once (the flag has no
 * effect on reads of regular files), and make sure it is a regular file. Calls `fail` with the
 * reason otherwise; the caller turns it into its own error.
 */
export function openRegularFile(path: string, fail: OpenFailure): number {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | (constants.O_NONBLOCK ?? 0));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') fail('does not exist', true);
    fail(`cannot be opened (${code ?? String(e)})`, false);
  }
  const st = fstatSync(fd);
  if (!st.isFile()) {
    closeSync(fd);
    fail(st.isDirectory() ? 'is a folder, not a file' : 'is not a regular file (a FIFO, socket or device?)', false);
  }
  return fd;
}

/** The whole text of a regular file (see openRegularFile). */
export function readRegularText(path: string, fail: OpenFailure): string {
  const fd = openRegularFile(path, fail);
  try {
    return readFileSync(fd, 'utf8');
  } finally {
    closeSync(fd);
  }
}
