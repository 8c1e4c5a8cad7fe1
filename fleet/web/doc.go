// Package web serves the fleet verifier's read-only web view at /ui/:
// server-rendered HTML (html/template, every value escaped), one embedded
// style sheet, no JavaScript; it works with scripts disabled.
//
// # Pages
//
//   - /ui/: the fleet: counts by state and a table of agents (name, state,
//     since when, last poll, reason), worst first, filtered by state and
//     name through a GET form.
//   - /ui/agents/NAME: one agent: its registration, the findings of its
//     last result (the failing files with the digest seen and the digests
//     allowed), the checks of its last evidence (signature, nonce, PCRs,
//     replay, reference, the Azure chain step by step), its continuity
//     events (reboots, compromise) and its state history.
//
// Both refresh themselves every [Options.Refresh] (meta refresh;
// ?refresh=off stops it).
//
// # Who may see it
//
// The same credentials as the API (package fleet/api): a request with
// "Authorization: Bearer TOKEN" (a token of the verifier's token file, any
// role, checked by [api.Tokens.Check]), a verified client certificate when
// [Options.ClientCerts] is set, or a session cookie. A person signs in once
// through the form at /ui/signin with a token; the cookie then holds a
// session signed with HMAC-SHA256 (expiry, role, the token file's line,
// a random id), never the token itself. The signing key is derived from
// the tokens ([api.Tokens.DeriveKey]): a session is good on every replica
// that reads the same token file and survives a restart, and any change
// to the token file (a token removed, added or changed) signs everyone out.
// Sign-out deletes the cookie and forgets the session id in this process
// until it would expire.
//
// The cookie is __Host- prefixed, Secure, HttpOnly and SameSite=Strict;
// sign-in and sign-out are POSTs refused when a browser says they come
// from another origin ([http.CrossOriginProtection]). Without credentials
// only the sign-in page is shown: no agent data.
//
// Every page carries a strict Content-Security-Policy (no script at all,
// styles only from /ui/style.css), frame-ancestors 'none' and
// X-Frame-Options DENY, Referrer-Policy no-referrer, and Cache-Control
// no-store.
package web
