// Stable error codes for everything dsv3 reports to users. Every layer may import this
// file; it imports nothing. Messages name the file, tensor or field at fault.

export const ERROR_CODES = {
  MISSING_FILE: 'a file the checkpoint needs is not there',
  BAD_CONFIG: 'config.json is missing a field or holds an invalid value',
  BAD_SAFETENSORS: 'a safetensors file is truncated, corrupt or inconsistent',
  BAD_DTYPE: 'a tensor has a dtype dsv3 cannot use there',
  BAD_SHAPE: 'a tensor shape disagrees with the config',
  MISSING_TENSOR: 'the checkpoint lacks a tensor the config requires',
  UNUSED_TENSOR: 'the checkpoint holds tensors the config does not account for (more layers, stray tensors)',
  BAD_WEIGHTS: 'a weight of the model holds NaN or infinite values',
  BAD_INPUT: 'token ids, options or other user input are invalid',
  CONTEXT_OVERFLOW: 'the sequence is longer than the model or cache allows',
  QUEUE_FULL: 'the server is at capacity; retry later',
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

/** An error meant for users: a stable code plus a message naming what is wrong. */
export class DsError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string) {
    super(message);
    this.name = 'DsError';
    this.code = code;
  }
}
