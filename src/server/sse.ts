// Server-sent events as a web-standard Response: `data: <json>\n\n` per event and
// `data: [DONE]` at the end, as OpenAI streams. The body is a ReadableStream whose cancel()
// (the client went away) reaches the caller, so generation can stop at once.

const enc = new TextEncoder();

/** Where a handler writes its events. Writes after the stream closed are dropped. */
export interface SseSink {
  send(data: unknown): void;
  /** Writes `data: [DONE]` and ends the stream. */
  done(): void;
  readonly closed: boolean;
}

export const SSE_HEADERS: Record<string, string> = {
  'content-type': 'text/event-stream; charset=utf-8',
  'cache-control': 'no-cache',
  'x-accel-buffering': 'no', // proxies: do not buffer the stream
};

/** A streaming response: `run` gets the sink at once; `onCancel` runs if the client leaves. */
export function sseResponse(
  run: (sink: SseSink) => void,
  onCancel: () => void,
  headers: Record<string, string> = {},
): Response {
  let closed = false;
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      const write = (s: string) => {
        if (closed) return;
        try {
          controller.enqueue(enc.encode(s));
        } catch {
          closed = true; // the stream was torn down under us
        }
      };
      run({
        send: (data) => write(`data: ${JSON.stringify(data)}\n\n`),
        done: () => {
          write('data: [DONE]\n\n');
          if (!closed) controller.close();
          closed = true;
        },
        get closed() {
          return closed;
        },
      });
    },
    cancel() {
      closed = true;
      onCancel();
    },
  });
  return new Response(body, { status: 200, headers: { ...SSE_HEADERS, ...headers } });
}
