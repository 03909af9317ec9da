// Errors in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, with their HTTP
// status. ApiError is what request handling throws; toApiError maps anything else (DsError
// codes from the layers below, unexpected exceptions) onto it, so every failure the server
// reports looks the same to a client.

import { DsError, type ErrorCode } from '../errors.ts';

export type ApiErrorType =
  | 'invalid_request_error'
  | 'authentication_error'
  | 'not_found_error'
  | 'rate_limit_error'
  | 'server_error';

/** An error answered to the client as-is. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: ApiErrorType = 'invalid_request_error',
    readonly param: string | null = null,
    readonly code: string | null = null,
  ) {
    super(message);
    this.name = 'ApiError';
  }

  toJSON(): { error: { message: string; type: string; param: string | null; code: string | null } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

/** A 400 naming the request field at fault. */
export function badField(param: string, message: string): ApiError {
  return new ApiError(400, `${param}: ${message}`, 'invalid_request_error', param, 'invalid_value');
}

const FROM_DS: Partial<Record<ErrorCode, (e: DsError, param: string | null) => ApiError>> = {
  BAD_INPUT: (e, param) => new ApiError(400, e.message, 'invalid_request_error', param, 'invalid_value'),
  CONTEXT_OVERFLOW: (e) =>
    new ApiError(400, e.message, 'invalid_request_error', 'messages', 'context_length_exceeded'),
  QUEUE_FULL: (e) =>
    new ApiError(429, `the server is at capacity (${e.message}); retry later`, 'rate_limit_error', null,
      'queue_full'),
};

/**
 * Any thrown value as an ApiError. `param` names the field a BAD_INPUT from a lower layer
 * refers to (its message already says where exactly).
 */
export function toApiError(e: unknown, param: string | null = null): ApiError {
  if (e instanceof ApiError) return e;
  if (e instanceof DsError) {
    const map = FROM_DS[e.code];
    if (map) return map(e, param);
  }
  const message = e instanceof Error ? e.message : String(e);
  return new ApiError(500, `internal error: ${message}`, 'server_error', null, 'internal_error');
}

/** The JSON error response. */
export function errorResponse(e: ApiError, headers: Record<string, string> = {}): Response {
  const h = new Headers({ 'content-type': 'application/json', ...headers });
  if (e.status === 429) h.set('retry-after', '1');
  return new Response(JSON.stringify(e), { status: e.status, headers: h });
}
