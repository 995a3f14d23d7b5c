// The console's only way to pgplane: the public /v2 API with the signed-in bearer token. The
// token lives in memory and in sessionStorage (gone when the browser session ends), never in a
// URL or in the browser's local storage. Errors come back as ApiError with a message in plain words.

const KEY = 'pgplane.token';
let token = sessionStorage.getItem(KEY);
/** What GET /v2/account said about the token (its scopes and team). */
let account = null;

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** The API's own message, in a sentence that says what to do about it. */
function plainWords(status, message, retryAfter) {
  switch (status) {
    case 401:
      return 'Your API token was not accepted: it is wrong, expired or revoked. Sign out and sign in with a valid token.';
    case 403:
      return 'Your API token\'s scopes do not allow this action. Ask for a token with the scope it needs.';
    case 404:
      return message && !message.startsWith('The resource') ? message : 'It was not found: it may have been deleted, or it belongs to another team.';
    case 408:
      return 'pgplane took too long to answer. Try again.';
    case 409:
      return `Conflict: ${message || 'the object is in a state that does not allow this'}`;
    case 429:
      return `Too many requests: this token's rate limit was reached. Try again in ${retryAfter || 'a few'} seconds.`;
    case 503:
      return message || 'pgplane cannot reach a database it needs right now. Try again shortly.';
    default:
      if (status >= 500) return `pgplane failed to answer (HTTP ${status}). Try again; if it persists, ask the operator to check its log.`;
      return message || `The request was refused (HTTP ${status}).`;
  }
}

/** Calls the API; resolves to the JSON answer (null for 204), rejects with an ApiError. */
export async function api(method, path, body, withToken = token) {
  const headers = { Accept: 'application/json' };
  if (withToken) headers.Authorization = `Bearer ${withToken}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      credentials: 'omit',
      referrerPolicy: 'no-referrer',
    });
  } catch {
    throw new ApiError(0, 'pgplane cannot be reached: check that it is running and your network connection.');
  }
  if (response.status === 204) return null;
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const message = data && typeof data.message === 'string' ? data.message : '';
    throw new ApiError(response.status, plainWords(response.status, message, response.headers.get('Retry-After')));
  }
  return data;
}

/** Checks a token against the API at once; keeps it for the browser session when it works. */
export async function signIn(candidate) {
  const found = await api('GET', '/v2/account', undefined, candidate);
  token = candidate;
  account = found;
  sessionStorage.setItem(KEY, candidate);
  return found;
}

/** The account of the kept token (asked once per page load); null when not signed in. */
export async function currentAccount() {
  if (!token) return null;
  if (!account) account = await api('GET', '/v2/account');
  return account;
}

/** Forgets the token. */
export function signOut() {
  token = null;
  account = null;
  sessionStorage.removeItem(KEY);
}

/** The scopes the console's actions need. */
export const CREATE = 'database:create';
export const UPDATE = 'database:update';
export const DELETE = 'database:delete';
export const CREDENTIALS = 'database:view_credentials';

/** Whether the signed-in token holds `scope` (e.g. "database:create"). */
export function can(scope) {
  const scopes = (account && account.pgplane && account.pgplane.scopes) || [];
  return scopes.includes('*') || scopes.includes(scope);
}

/** A path of the API with each segment escaped. */
export function path(...segments) {
  return `/v2/${segments.map((s) => encodeURIComponent(s)).join('/')}`;
}
