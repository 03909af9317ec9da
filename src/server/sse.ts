// Server-sent events as a web-standard Response: `data: <json>\n\n` per event and
// `data: [DONE]` at the end, as OpenAI streams. The body is a ReadableStream whose cancel()
// (the client went away) reaches the caller, so generation can stop at once.
//
// Backpressure: the HTTP layer reads the body only as fast as the socket takes it
// (@hono/node-server waits for 'drain' once the socket's buffer is full), so events the client
// has not taken queue up here. Past SSE_BUFFER_BYTES the producer is paused (the scheduler
// stops decoding the sequence) until the client reads again, so a client that does not read
// costs a bounded amount of memory. If it takes nothing for the write timeout, it is cut off.

const enc = new TextEncoder();

/** Where a handler writes its events. Writes after the stream closed are dropped. */
export interface SseSink {
  send(data: unknown): void;
  /** Writes `data: [DONE]` and ends the stream. */
  done(): void;
  readonly closed: boolean;
}

/** Bytes of events queued for a client that is not reading before the producer is paused. */
export const SSE_BUFFER_BYTES = 16 * 1024;

/** Flow control for a stream's producer, and the write timeout. */
export interface SseFlow {
  /** The client is not taking what is written: stop producing. */
  pause(): void;
  /** It reads again: go on. */
  resume(): void;
  /** How long the client may take nothing while events wait (0 or absent: forever). */
  writeTimeoutMs?: number;
  /**
   * The write timeout passed: stop producing and cut the client off. Returns whether its
   * connection was closed; if not, the stream is ended with an error.
   */
  onWriteTimeout?(): boolean;
}

export const SSE_HEADERS: Record<string, string> = {
  'content-type': 'text/event-stream; charset=utf-8',
  'cache-control': 'no-cache',
  'x-accel-buffering': 'no', // proxies: do not buffer the stream
};

/**
 * A streaming response: `run` gets the sink at once; `onCancel` runs if the client leaves;
 * `flow` pauses and resumes the producer as the client reads (see above).
 */
export function sseResponse(
  run: (sink: SseSink) => void,
  onCancel: () => void,
  headers: Record<string, string> = {},
  flow?: SseFlow,
): Response {
  let closed = false;
  let paused = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  // The client took nothing for the write timeout. The timer runs on after done(): events
  // it never took are still held.
  const timedOut = (controller: ReadableStreamDefaultController<Uint8Array>) => {
    timer = undefined;
    closed = true;
    if (flow?.onWriteTimeout?.()) return;
    try {
      controller.error(new Error(`write timeout: the client read nothing for ${flow?.writeTimeoutMs} ms`));
    } catch {
      // already torn down
    }
  };
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      const write = (s: string) => {
        if (closed) return;
        try {
          controller.enqueue(enc.encode(s));
        } catch {
          closed = true; // the stream was torn down under us
          return;
        }
        if (flow && !paused && (controller.desiredSize ?? 1) <= 0) {
          paused = true;
          flow.pause();
          if (flow.writeTimeoutMs) {
            timer = setTimeout(() => timedOut(controller), flow.writeTimeoutMs);
            timer.unref?.();
          }
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
    // Called when the client has taken enough that the queue is below its bound again.
    pull() {
      if (!paused) return;
      paused = false;
      clearTimeout(timer);
      timer = undefined;
      if (!closed) flow?.resume();
    },
    cancel() {
      closed = true;
      clearTimeout(timer);
      onCancel();
    },
  }, { highWaterMark: SSE_BUFFER_BYTES, size: (chunk) => chunk.byteLength });
  return new Response(body, { status: 200, headers: { ...SSE_HEADERS, ...headers } });
}
