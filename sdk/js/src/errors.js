// Errors the client hands out. A server refusal keeps the server's stable
// code (ERROR_CODE_…); failures of the client itself use the codes below.

/** The connection the request went out on dropped before its answer: it
 * may or may not have taken effect (a command retried with the same
 * clientMsgId lands once). */
export const CONNECTION_LOST = 'CONNECTION_LOST';
/** No connection, and the request was not to wait for one. */
export const NOT_CONNECTED = 'NOT_CONNECTED';
/** No answer in time. */
export const TIMEOUT = 'TIMEOUT';
/** The client is closed (close(), or a failure it does not retry). */
export const CLOSED = 'CLOSED';
/** The server refused the token on a reconnect, twice in a row with a
 * token provider: the client ends. `cause` is the server's error. */
export const AUTH_REJECTED = 'AUTH_REJECTED';
/** A gap in a conversation that history could not fill. */
export const GAP = 'GAP';

export class ParleyError extends Error {
  /**
   * @param {string} code a server code (ERROR_CODE_…) or one of the client's
   * @param {string} message
   * @param {object} [extra] clientMsgId, conversationId, retryAfterMs,
   *   requestId, closeCode, cause
   */
  constructor(code, message, extra) {
    super(message ? `${code}: ${message}` : code, extra && extra.cause ? { cause: extra.cause } : undefined);
    this.name = 'ParleyError';
    this.code = code || 'ERROR_CODE_UNSPECIFIED';
    this.serverMessage = message || '';
    this.clientMsgId = (extra && extra.clientMsgId) || '';
    this.conversationId = (extra && extra.conversationId) || '';
    this.retryAfterMs = (extra && extra.retryAfterMs) || 0;
    this.requestId = (extra && extra.requestId) || '';
    this.closeCode = (extra && extra.closeCode) || 0;
  }

  /** fromFrame turns a server `error` body into a ParleyError. */
  static fromFrame(e, requestId) {
    return new ParleyError(e.code || 'ERROR_CODE_UNSPECIFIED', e.message || '', {
      clientMsgId: e.clientMsgId,
      conversationId: e.conversationId,
      retryAfterMs: Number(e.retryAfterMs || 0),
      requestId,
    });
  }

  /** server: the error is the server's answer, not a client failure. */
  get server() { return this.code.startsWith('ERROR_CODE_'); }
}
