// Streaming answers as async iterators. Breaking out of a `for await` loop (or calling `abort()`,
// or aborting the caller's signal) aborts the fetch: the connection closes, the edge sees the client
// leave, and the cancellation travels down to the upstream request (DESIGN.md, "a client that leaves
// costs nothing more").

import { APIConnectionError, APIError, APIUserAbortError, errorFromStream } from "./errors.js";
import type { ErrorBody } from "./types.js";

/** An opened streaming answer: its response, and what aborts it. */
export interface OpenedStream {
  /** The answer (status 2xx, body unread). */
  response: Response;
  /** The request id the gateway answered with. */
  requestId: string;
  /** Aborts the fetch (and closes the connection). */
  abort: () => void;
  /** True when the caller's own signal aborted it. */
  userAborted: () => boolean;
  /** Releases the listeners the call added to the caller's signal. */
  release: () => void;
}

/** Turns an answer's body into items. */
export type StreamParser<T> = (body: ReadableStream<Uint8Array>, requestId: string) => AsyncGenerator<T>;

/**
 * A streaming answer: `for await (const item of stream)`. The request is sent when iteration starts
 * (or on `start()`, which throws the typed error of a call refused before its first item).
 */
export class Stream<T> implements AsyncIterable<T> {
  #open: () => Promise<OpenedStream>;
  #parse: StreamParser<T>;
  #opened: Promise<OpenedStream> | undefined;
  #iterated = false;
  #aborted = false;

  constructor(open: () => Promise<OpenedStream>, parse: StreamParser<T>) {
    this.#open = open;
    this.#parse = parse;
  }

  /** Sends the request and waits for the answer's headers; throws when the gateway refused it. */
  async start(): Promise<this> {
    await this.#start();
    return this;
  }

  /** The id the gateway logged the request under (once started). */
  async requestId(): Promise<string> {
    return (await this.#start()).requestId;
  }

  /** Stops the stream and closes its connection; harmless when it already ended. */
  abort(): void {
    this.#aborted = true;
    void this.#opened?.then(
      (opened) => opened.abort(),
      () => undefined,
    );
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    if (this.#iterated) throw new TypeError("A stream can be iterated only once.");
    this.#iterated = true;
    return this.#iterate();
  }

  #start(): Promise<OpenedStream> {
    this.#opened ??= this.#open();
    return this.#opened;
  }

  async *#iterate(): AsyncGenerator<T> {
    // Aborted before it started: nothing is sent.
    if (this.#aborted && this.#opened === undefined) throw new APIUserAbortError("The stream was aborted.");
    const opened = await this.#start();
    try {
      const body = opened.response.body;
      if (body === null) return;
      try {
        yield* this.#parse(body, opened.requestId);
      } catch (error) {
        if (error instanceof APIError) throw error;
        if (opened.userAborted() || this.#aborted) {
          throw new APIUserAbortError("The stream was aborted.", { requestId: opened.requestId, cause: error });
        }
        throw new APIConnectionError("The connection broke during the stream.", {
          requestId: opened.requestId,
          cause: error,
        });
      }
    } finally {
      // Reached on the stream's end, on an error, and when the loop breaks (the iterator's return).
      opened.abort();
      opened.release();
    }
  }
}

/** The lines of a body, decoded as UTF-8 (a line may arrive in several reads). */
export async function* lines(body: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end: number;
      while ((end = buffer.indexOf("\n")) >= 0) {
        yield buffer.slice(0, end).replace(/\r$/, "");
        buffer = buffer.slice(end + 1);
      }
    }
    buffer += decoder.decode();
    if (buffer) yield buffer;
  } finally {
    reader.cancel().catch(() => undefined);
  }
}

/**
 * NDJSON items (`POST /v1/chat:stream`): one JSON value a line. A line `{"error": …}` is the gateway's
 * in-band error after the first chunk (the HTTP status was committed already): it is thrown.
 */
export async function* ndjson<T>(body: ReadableStream<Uint8Array>, requestId: string): AsyncGenerator<T> {
  for await (const line of lines(body)) {
    if (!line.trim()) continue;
    const item = JSON.parse(line) as { error?: Partial<ErrorBody> };
    if (item.error !== undefined && typeof item.error === "object") throw errorFromStream(item.error, requestId);
    yield item as T;
  }
}

/**
 * Server-sent events' data as JSON (`POST /v1/responses/stream`); the event name fills in `type`
 * when the data has none. An `error` event is thrown as the typed error it names.
 */
export async function* sse<T extends { type: string }>(
  body: ReadableStream<Uint8Array>,
  requestId: string,
): AsyncGenerator<T> {
  let event = "";
  let data: string[] = [];
  for await (const line of lines(body)) {
    if (line === "") {
      if (data.length) {
        const text = data.join("\n");
        if (text === "[DONE]") return;
        const value = JSON.parse(text) as Record<string, unknown>;
        const item = { ...value, type: typeof value.type === "string" ? value.type : event || "message" } as T;
        if (item.type === "error") {
          const error = (value.error ?? value) as Partial<ErrorBody>;
          throw errorFromStream(error, requestId);
        }
        yield item;
      }
      event = "";
      data = [];
    } else if (line.startsWith("data:")) {
      data.push(line.slice(5).replace(/^ /, ""));
    } else if (line.startsWith("event:")) {
      event = line.slice(6).trim();
    }
  }
}
