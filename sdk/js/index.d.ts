// Types of @parley/sdk. Written by hand beside the JavaScript (src/), and
// checked by `npm test` (tsc -p types) against types/usage.ts. Frames and
// events are the protobuf JSON mapping of proto/parley/client/v1 and
// proto/parley/chat/v1, whose types protoc-gen-es generates (gen/).

import type {
  AcceptedJson, AuthenticatedJson, ClientFrameJson, HistoryPageJson, ResumedJson, ServerFrameJson,
  TokenRefreshedJson, SendMessageJson, CursorJson,
} from './gen/parley/client/v1/client_pb.js';
import type {
  ContactJson, ConversationFlagsJson, ConversationJson, EventJson, PresenceJson, ReceiptJson, TypingJson,
} from './gen/parley/chat/v1/chat_pb.js';

export type {
  AcceptedJson, AuthenticatedJson, ClientFrameJson, HistoryPageJson, ResumedJson, ServerFrameJson,
  ContactJson, ConversationFlagsJson, ConversationJson, EventJson, PresenceJson, ReceiptJson, TypingJson, CursorJson,
};

/** One ClientFrame member, without requestId: e.g. `{ ping: {} }`. */
export type FrameBody = Omit<ClientFrameJson, 'requestId'>;

export interface ReconnectPolicy {
  /** Wait before the first redial (250); doubles per failed attempt. */
  minDelayMs?: number;
  /** Longest wait (30000). Each wait is drawn in [d/2, d]. */
  maxDelayMs?: number;
  /** End the client after this many failed redials in a row (0: never). */
  maxAttempts?: number;
  /** Ping period and pong deadline (30000; negative: no keepalive). */
  keepAliveMs?: number;
  /** Bound on one attempt: token, dial, authenticate (20000). */
  attemptTimeoutMs?: number;
}

export type TokenReason = 'connect' | 'reconnect' | 'rejected' | 'expiring';

export interface ClientOptions {
  /** The edge's WebSocket endpoint, e.g. ws://127.0.0.1:8080/ws, or a function asked at every dial. */
  url: string | (() => string);
  /** A fixed token; or getToken. */
  token?: string;
  /**
   * Asked for a token before every connection and when the server warns
   * that the connection's token expires soon (answered with
   * refreshToken). reason 'rejected': the server refused the last one.
   */
  getToken?: (info: { reason: TokenReason }) => string | Promise<string>;
  /** This device across connections; empty: the server picks, and reconnects reuse it. */
  deviceId?: string;
  /** 'json' (default, parley.v1.json) or 'binary' (parley.v1.proto, loads @bufbuild/protobuf). */
  subprotocol?: 'json' | 'binary';
  /** The WebSocket class (default globalThis.WebSocket; on Node 20 pass the ws package's). */
  WebSocket?: new (url: string, protocols: string[]) => WebSocket;
  /** Redial after a drop (the default), or false for one connection. */
  reconnect?: ReconnectPolicy | false;
  /** Resume these conversations from the given seqs on the first connection. */
  resume?: CursorJson[];
  /** Positions the app holds (from storage or history), raised into the resume list at every dial. */
  cursors?: () => CursorJson[];
  /** Default request timeout (20000). */
  requestTimeoutMs?: number;
  /** How long a command is retried under its clientMsgId (60000). */
  sendTimeoutMs?: number;
  /** How long a gap waits for history to hold it (10000). */
  gapWaitMs?: number;
  /** Follow the status of sent messages ('status' events, status()). */
  trackStatus?: boolean;
}

export type State = 'idle' | 'connecting' | 'connected' | 'resumed' | 'reconnecting' | 'closed';

export interface StateChange {
  state: State;
  /** connecting: why a token is asked (see TokenReason). */
  reason?: TokenReason;
  /** connected. */
  authenticated?: AuthenticatedJson;
  sessionId?: string;
  /** connected: a resume was asked; a 'resumed' change follows. */
  resuming?: boolean;
  /** resumed. */
  resumed?: ResumedJson;
  /** reconnecting: why; closed: why the client ended. */
  error?: ParleyError;
  attempt?: number;
  delayMs?: number;
}

export interface MessageStatus {
  conversationId: string;
  seq: number;
  /** Devices of other members that have it. */
  delivered: number;
  /** Other members who read it. */
  read: number;
}

export interface HistoryPage {
  conversationId: string;
  events: EventJson[];
  hasMore: boolean;
}

export interface RequestOptions {
  timeoutMs?: number;
  /** Wait for a connection while reconnecting (true), or fail with NOT_CONNECTED. */
  wait?: boolean;
  /** RATE_LIMITED answers waited out (5). */
  rateLimitRetries?: number;
}

export interface CommandOptions {
  /** The client message id (default: a new UUIDv7). */
  clientMsgId?: string;
  /** How long to retry (sendTimeoutMs). */
  timeoutMs?: number;
}

export interface ClientEvents {
  events: EventJson[];
  receipts: ReceiptJson[];
  typing: TypingJson[];
  presence: PresenceJson[];
  flags: ConversationFlagsJson[];
  status: MessageStatus[];
  error: ParleyError;
  state: StateChange;
  tokenRefreshed: { expires: string };
}

export declare class Client {
  constructor(opts: ClientOptions);
  readonly userId: string;
  readonly deviceId: string;
  readonly sessionId: string;
  /** The token's expiry, ms since the epoch (0: unknown). */
  readonly tokenExpires: number;
  readonly state: State;
  readonly connected: boolean;
  /** Why the client ended, or null. */
  readonly error: ParleyError | null;

  on<K extends keyof ClientEvents>(name: K, fn: (value: ClientEvents[K]) => void): () => void;
  /** Delivered events (of one conversation), in seq order, none twice; ends at close. */
  events(conversationId?: string): AsyncIterableIterator<EventJson>;

  connect(): Promise<AuthenticatedJson>;
  close(): Promise<void>;
  reconnectNow(): void;

  request(body: FrameBody, options?: RequestOptions): Promise<ServerFrameJson>;
  command(name: string, body: Record<string, unknown>, options?: CommandOptions): Promise<AcceptedJson>;
  send(conversationId: string, message: string | Omit<SendMessageJson, 'conversationId'>, options?: CommandOptions): Promise<AcceptedJson>;
  edit(conversationId: string, targetSeq: number | string, text: string, options?: CommandOptions): Promise<AcceptedJson>;
  deleteMessage(conversationId: string, targetSeq: number | string, options?: CommandOptions): Promise<AcceptedJson>;
  react(conversationId: string, targetSeq: number | string, emoji: string, options?: CommandOptions & { remove?: boolean }): Promise<AcceptedJson>;
  openDirect(userId: string, options?: CommandOptions): Promise<AcceptedJson>;
  createGroup(title: string, memberIds?: string[], options?: CommandOptions & { channel?: boolean; public?: boolean; consent?: boolean; conversationId?: string }): Promise<AcceptedJson>;
  addMember(conversationId: string, userId: string, options?: CommandOptions): Promise<AcceptedJson>;

  listConversations(options?: { limit?: number; changedSince?: string }): Promise<{ conversations: ConversationJson[]; syncToken: string }>;
  history(conversationId: string, options?: { afterSeq?: number | string; beforeSeq?: number | string; limit?: number }): Promise<HistoryPage>;
  historyPages(conversationId: string, options?: { direction?: 'backward' | 'forward'; afterSeq?: number | string; beforeSeq?: number | string; limit?: number }): AsyncGenerator<HistoryPage, void, void>;

  mark(conversationId: string, positions: { deliveredSeq?: number | string; readSeq?: number | string }): Promise<ReceiptJson | undefined>;
  getReceipts(conversationId: string): Promise<ReceiptJson[]>;
  status(conversationId: string, seq: number | string): MessageStatus | undefined;
  seenBy(conversationId: string, seq: number | string): Promise<string[]>;
  typing(conversationId: string, stopped?: boolean): Promise<void>;
  getPresence(userIds: string[]): Promise<PresenceJson[]>;
  watchPresence(userIds: string[]): Promise<PresenceJson[]>;
  setIdle(idle: boolean): Promise<void>;
  setFlags(conversationId: string, flags: { muted?: boolean; pinned?: boolean }): Promise<ConversationFlagsJson | undefined>;
  refreshToken(token: string): Promise<TokenRefreshedJson>;
  ping(): Promise<void>;

  /** The caller's view of the pair after it: a ContactState name, '' for none. */
  requestContact(userId: string): Promise<ContactStateName>;
  respondContact(userId: string, accept: boolean): Promise<ContactStateName>;
  cancelContact(userId: string): Promise<ContactStateName>;
  listContacts(): Promise<ContactJson[]>;
  respondInvitation(conversationId: string, accept: boolean): Promise<{ conversationId: string; joined: boolean; seq: string }>;
  setContactsOnly(on: boolean): Promise<{ contactsOnly: boolean }>;
  getSettings(): Promise<{ contactsOnly: boolean }>;
}

export type ContactStateName = '' | 'CONTACT_STATE_OUTGOING' | 'CONTACT_STATE_INCOMING' | 'CONTACT_STATE_CONTACT';

export declare class ParleyError extends Error {
  constructor(code: string, message?: string, extra?: { clientMsgId?: string; conversationId?: string; retryAfterMs?: number; requestId?: string; closeCode?: number; cause?: unknown });
  /** A server code (ERROR_CODE_…) or one of CONNECTION_LOST, NOT_CONNECTED, TIMEOUT, CLOSED, AUTH_REJECTED, GAP. */
  readonly code: string;
  readonly serverMessage: string;
  readonly clientMsgId: string;
  readonly conversationId: string;
  readonly retryAfterMs: number;
  readonly requestId: string;
  /** The WebSocket close code, when a close ended the connection. */
  readonly closeCode: number;
  /** The error is the server's answer. */
  readonly server: boolean;
}

export declare const CONNECTION_LOST: 'CONNECTION_LOST';
export declare const NOT_CONNECTED: 'NOT_CONNECTED';
export declare const TIMEOUT: 'TIMEOUT';
export declare const CLOSED: 'CLOSED';
export declare const AUTH_REJECTED: 'AUTH_REJECTED';
export declare const GAP: 'GAP';
export declare const JSON_SUBPROTOCOL: 'parley.v1.json';
export declare const PROTO_SUBPROTOCOL: 'parley.v1.proto';

export interface Codec {
  subprotocol: string;
  binary: boolean;
  encode(frame: ClientFrameJson): string | Uint8Array;
  decode(data: string | ArrayBuffer | Uint8Array): ServerFrameJson;
}
export declare function loadCodec(kind?: 'json' | 'binary'): Promise<Codec>;
export declare function newClientMsgId(): string;
export declare function backoffDelay(policy: Required<ReconnectPolicy>, attempt: number, random?: () => number): number;
export declare function reconnectDefaults(policy?: ReconnectPolicy): Required<ReconnectPolicy>;

export declare class StatusTracker {
  constructor(userId: string);
  load(conversationId: string, receipts: ReceiptJson[]): MessageStatus[];
  apply(receipts: ReceiptJson[]): MessageStatus[];
  event(ev: EventJson): MessageStatus[];
  sent(conversationId: string, seq: number | string): MessageStatus;
  status(conversationId: string, seq: number | string): MessageStatus | undefined;
}

export declare class TypingTracker {
  constructor(now?: () => number);
  apply(indicators: TypingJson[]): void;
  typing(conversationId: string): string[];
}
