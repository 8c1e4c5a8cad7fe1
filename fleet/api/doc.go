// Package api is the fleet verifier's REST API ([Handler]) and its client
// ([Client], which rimon fleet is built on). The API is specified in
// docs/fleet-api.yaml (OpenAPI 3).
//
// # Authentication
//
// Every request but GET /healthz and the agents' own /v1/push/ needs an
// API token (Authorization: Bearer TOKEN) from the verifier's token file
// ([ParseTokens]: one token per line, "TOKEN read" for a read-only token,
// which may only GET), or, when [Options.ClientCertAdmin] is set, a
// client certificate the TLS server verified against its client CAs,
// which makes the request an admin's. Tokens are held as SHA-256 digests
// and compared in constant time against every one; a token never appears
// in a log line or an error (logs name the token file's line instead).
//
// # What is trusted
//
// Nothing a request says is stored before it is checked: an agent's name,
// URL, AK (parsed), agent CA (parsed), reference (it must exist), PCRs,
// banks and interval; a reference's body is parsed as a reference file.
// Request bodies are bounded ([Options.MaxBody], [Options.MaxReference]),
// and every error is JSON, {"error": "...", "field": "..."}, naming the
// field at fault.
//
// The handler holds no goroutines of its own and reads the clock only
// through [Options.Now].
package api
