// HTTP client helpers for the end-to-end tests: JSON posts, strict server-sent-event parsing,
// polling. No node:test import here, so the load clients' process can use them too.

/** POSTs JSON (or a raw string) and returns status and parsed body. */
export async function post(url: string, body: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let json: any = null;
  try {
    json = JSON.parse(text);
  } catch {
    // not JSON: leave null, the caller checks
  }
  return { status: res.status, headers: res.headers, json, text };
}

/** Splits an SSE body into its `data:` payloads; throws on anything malformed. */
export function parseSse(body: string): { events: any[]; done: boolean } {
  if (!body.endsWith('\n\n')) throw new Error(`stream does not end with a blank line: ${JSON.stringify(body.slice(-40))}`);
  const blocks = body.slice(0, -2).split('\n\n');
  const events: any[] = [];
  let done = false;
  for (const b of blocks) {
    if (!b.startsWith('data: ') || b.includes('\n')) throw new Error(`malformed event: ${JSON.stringify(b)}`);
    if (done) throw new Error('an event after [DONE]');
    const data = b.slice(6);
    if (data === '[DONE]') done = true;
    else events.push(JSON.parse(data));
  }
  return { events, done };
}

/** Resolves when `cond()` holds, polling every 10 ms; rejects after `ms`. */
export async function waitFor(cond: () => boolean, ms = 5000, what = 'condition'): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
