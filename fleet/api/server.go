package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/rimon-dev/rimon/attest"
	"github.com/rimon-dev/rimon/attest/verifier"
	"github.com/rimon-dev/rimon/fleet"
	"github.com/rimon-dev/rimon/policy"
)

// Default request body limits.
const (
	// DefaultMaxBody bounds the body of agent and clear requests.
	DefaultMaxBody = 1 << 20
	// DefaultMaxReference bounds a reference request (the reference file
	// of a whole distribution, as JSON).
	DefaultMaxReference = 64 << 20
)

// ReferenceTimeout bounds the re-evaluation of the agents that use a
// replaced reference (it goes on if the client goes away).
const ReferenceTimeout = 5 * time.Minute

// Options configure [Handler]. Store and Tokens are required.
type Options struct {
	Store fleet.Store
	// Engine is woken after a change and serves /v1/push/; nil: nothing
	// is woken, and /v1/push/ is not served.
	Engine fleet.Engine
	// Tokens are the API tokens (admin and read-only).
	Tokens *Tokens
	// ClientCertAdmin makes a request that comes with a verified client
	// certificate an admin's: the TLS server's configuration
	// (tls.Config.ClientCAs with VerifyClientCertIfGiven) verifies it
	// before the handler sees the request.
	ClientCertAdmin bool
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Logger receives one line per request: method, path, status,
	// duration and who (the token file's line, never the token). Nil:
	// nothing is logged.
	Logger *slog.Logger
	// Metrics is served at GET /metrics to any token; nil: not served.
	Metrics http.Handler
	// UI serves /ui/ (package fleet/web), which checks its own
	// credentials; nil: not served.
	UI http.Handler
	// MaxBody and MaxReference bound request bodies (defaults
	// [DefaultMaxBody] and [DefaultMaxReference]).
	MaxBody, MaxReference int64
}

type server struct {
	o   Options
	log *slog.Logger
}

// Handler serves the fleet verifier's REST API (docs/fleet-api.yaml):
// /v1/agents, /v1/references, /v1/summary and /metrics for holders of a
// token or a verified client certificate, /healthz for anyone, and
// /v1/push/ delegated to the engine, whose agents present their own push
// tokens.
func Handler(o Options) http.Handler {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MaxBody <= 0 {
		o.MaxBody = DefaultMaxBody
	}
	if o.MaxReference <= 0 {
		o.MaxReference = DefaultMaxReference
	}
	s := &server{o: o, log: o.Logger}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	api := http.NewServeMux()
	route(api, "/v1/agents", methods{"GET": s.listAgents, "POST": s.addAgent})
	route(api, "/v1/agents/{name}", methods{"GET": s.getAgent, "PUT": s.putAgent, "DELETE": s.removeAgent})
	route(api, "/v1/agents/{name}/history", methods{"GET": s.history})
	route(api, "/v1/agents/{name}/clear", methods{"POST": s.clear})
	route(api, "/v1/agents/{name}/enroll", methods{"POST": s.enroll})
	route(api, "/v1/references", methods{"GET": s.listReferences, "POST": s.addReference})
	route(api, "/v1/references/{name}", methods{"GET": s.getReference, "PUT": s.putReference})
	route(api, "/v1/summary", methods{"GET": s.summary})
	if o.Metrics != nil {
		route(api, "/metrics", methods{"GET": o.Metrics.ServeHTTP})
	}
	api.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Errorf("no such resource: %s", r.URL.Path))
	})

	mux := http.NewServeMux()
	route(mux, "/healthz", methods{"GET": s.healthz})
	if o.Engine != nil {
		mux.Handle("/v1/push/", o.Engine.PushHandler())
	}
	if o.UI != nil {
		mux.Handle("/ui/", o.UI)
	}
	mux.Handle("/", s.authenticated(api))
	return s.logged(mux)
}

type methods map[string]http.HandlerFunc

// route serves pattern with a handler per method; GET's serves HEAD too,
// and any other method is refused with 405, as JSON.
func route(mux *http.ServeMux, pattern string, m methods) {
	allow := make([]string, 0, len(m))
	for k := range m {
		allow = append(allow, k)
	}
	if _, ok := m["GET"]; ok {
		m["HEAD"] = m["GET"]
	}
	mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		h, ok := m[r.Method]
		if !ok {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			writeError(w, http.StatusMethodNotAllowed, fmt.Errorf("method %s not allowed on %s (allowed: %s)", r.Method, r.URL.Path, strings.Join(allow, ", ")))
			return
		}
		h(w, r)
	})
}

// reqInfo is what the logging middleware learns from the handlers.
type reqInfo struct {
	who string
}

type infoKey struct{}

// statusWriter records the status a handler wrote.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the connection.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// logged logs each request once it is answered. What is logged: method,
// path, status, duration, size, the client's address and who it was (the
// token file's line, or the client certificate's subject); never a
// header, a query or a body, where tokens travel.
func (s *server) logged(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := s.o.Now()
		info := &reqInfo{who: "anonymous"}
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r.WithContext(context.WithValue(r.Context(), infoKey{}, info)))
		if sw.status == 0 {
			sw.status = http.StatusOK
		}
		level := slog.LevelInfo
		switch {
		case sw.status == http.StatusUnauthorized || sw.status == http.StatusForbidden:
			level = slog.LevelWarn
		case sw.status >= 500:
			level = slog.LevelError
		case strings.HasPrefix(r.URL.Path, "/v1/push/") || r.URL.Path == "/healthz":
			level = slog.LevelDebug // one per agent and interval: not worth a line each
		}
		s.log.Log(r.Context(), level, "request", "method", r.Method, "path", r.URL.Path, "status", sw.status,
			"duration", s.o.Now().Sub(start), "bytes", sw.bytes, "remote", r.RemoteAddr, "who", info.who)
	})
}

func whoFor(r *http.Request) *reqInfo {
	if i, ok := r.Context().Value(infoKey{}).(*reqInfo); ok {
		return i
	}
	return &reqInfo{}
}

// authenticated lets through a request with a verified client certificate
// (when allowed) or a token from the token file; a read-only token only
// for GET and HEAD.
func (s *server) authenticated(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info := whoFor(r)
		if s.o.ClientCertAdmin && r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.VerifiedChains[0]) > 0 {
			info.who = "client certificate " + r.TLS.VerifiedChains[0][0].Subject.String()
			next.ServeHTTP(w, r)
			return
		}
		h := r.Header.Get("Authorization")
		if h == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="rimon"`)
			writeError(w, http.StatusUnauthorized, errors.New("a token is required: Authorization: Bearer TOKEN"))
			return
		}
		scheme, tok, _ := strings.Cut(h, " ")
		if !strings.EqualFold(scheme, "Bearer") {
			w.Header().Set("WWW-Authenticate", `Bearer realm="rimon"`)
			writeError(w, http.StatusUnauthorized, errors.New("the Authorization header must be Bearer TOKEN"))
			return
		}
		role, line := s.o.Tokens.Check(strings.TrimSpace(tok))
		if role == RoleNone {
			w.Header().Set("WWW-Authenticate", `Bearer realm="rimon", error="invalid_token"`)
			writeError(w, http.StatusUnauthorized, errors.New("the token is not in the verifier's token file"))
			return
		}
		info.who = fmt.Sprintf("%s token (line %d)", role, line)
		if role == RoleRead && r.Method != http.MethodGet && r.Method != http.MethodHead {
			writeError(w, http.StatusForbidden, fmt.Errorf("a read-only token may only GET; %s %s needs an admin token", r.Method, r.URL.Path))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// writeJSON replies with v as JSON.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// writeError replies {"error": "...", "field": "..."}.
func writeError(w http.ResponseWriter, status int, err error) {
	e := Error{Error: err.Error()}
	var fe *fieldError
	if errors.As(err, &fe) {
		e.Field = fe.field
	}
	b, _ := json.Marshal(e)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Del("Content-Length")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// fail answers a store error: not found, exists and conflicts by name,
// anything else as the store's failure (500, logged).
func (s *server) fail(w http.ResponseWriter, r *http.Request, err error, notFound string) {
	switch {
	case errors.Is(err, fleet.ErrNotFound):
		writeError(w, http.StatusNotFound, errors.New(notFound))
	case errors.Is(err, fleet.ErrExists), errors.Is(err, fleet.ErrConflict), errors.Is(err, fleet.ErrInUse):
		writeError(w, http.StatusConflict, err)
	case errors.Is(err, fleet.ErrInvalid), errors.Is(err, fleet.ErrLimit):
		// What the API's own checks let through and the store refused.
		writeError(w, http.StatusBadRequest, err)
	default:
		var fe *fieldError
		if errors.As(err, &fe) {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		s.log.Error("store", "method", r.Method, "path", r.URL.Path, "err", err)
		writeError(w, http.StatusInternalServerError, fmt.Errorf("store: %v", err))
	}
}

// decode reads one JSON value of at most limit bytes into v, refusing
// unknown fields; an error names the field at fault.
func decode(w http.ResponseWriter, r *http.Request, limit int64, v any) (status int, err error) {
	r.Body = http.MaxBytesReader(w, r.Body, limit)
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	err = dec.Decode(v)
	if err == nil {
		if _, terr := dec.Token(); terr != io.EOF {
			err = errors.New("more than one JSON value")
		}
	}
	if err == nil {
		return 0, nil
	}
	var mbe *http.MaxBytesError
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	var de *durationError
	switch {
	case errors.As(err, &mbe):
		return http.StatusRequestEntityTooLarge, fmt.Errorf("body: larger than %d bytes", mbe.Limit)
	case errors.Is(err, io.EOF):
		return http.StatusBadRequest, errEmptyBody
	case errors.Is(err, io.ErrUnexpectedEOF):
		return http.StatusBadRequest, errors.New("body: JSON cut short")
	case errors.As(err, &se):
		return http.StatusBadRequest, fmt.Errorf("body: not JSON (byte %d): %v", se.Offset, se)
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			return http.StatusBadRequest, fmt.Errorf("body: want a JSON object, not %s", te.Value)
		}
		return http.StatusBadRequest, badField(field, "want %s, not %s", jsonType(te.Type.Kind().String()), te.Value)
	case errors.As(err, &de):
		return http.StatusBadRequest, badField("interval", "%s", de.msg)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		f, _ := strconv.Unquote(strings.TrimPrefix(err.Error(), "json: unknown field "))
		return http.StatusBadRequest, badField(f, "unknown field")
	}
	return http.StatusBadRequest, fmt.Errorf("body: %v", err)
}

func jsonType(kind string) string {
	switch kind {
	case "string":
		return "a string"
	case "bool":
		return "true or false"
	case "slice", "array":
		return "an array"
	case "struct", "map":
		return "an object"
	}
	return "a number"
}

func (s *server) healthz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	if _, err := s.o.Store.CountByStatus(ctx); err != nil {
		s.log.Error("health check: store", "err", err)
		writeError(w, http.StatusServiceUnavailable, errors.New("the store does not answer"))
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *server) listAgents(w http.ResponseWriter, r *http.Request) {
	var f fleet.Filter
	for k, v := range r.URL.Query() {
		switch k {
		case "state":
			f.Status = fleet.Status(v[0])
			if !f.Status.Valid() {
				writeError(w, http.StatusBadRequest, badField("state", "%q: want one of %v", v[0], fleet.Statuses))
				return
			}
		case "name":
			f.Name = v[0]
		default:
			writeError(w, http.StatusBadRequest, badField(k, "unknown query parameter (state, name)"))
			return
		}
	}
	agents, err := s.o.Store.ListAgents(r.Context(), f)
	if err != nil {
		s.fail(w, r, err, "")
		return
	}
	out := make([]Agent, 0, len(agents))
	for _, a := range agents {
		out = append(out, view(a, false))
	}
	writeJSON(w, http.StatusOK, out)
}

// newPushToken makes an agent's push token and the digest stored of it.
func newPushToken() (token, digest string, err error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", "", err
	}
	token = hex.EncodeToString(b)
	d := sha256.Sum256([]byte(token))
	return token, hex.EncodeToString(d[:]), nil
}

func (s *server) addAgent(w http.ResponseWriter, r *http.Request) {
	var req AgentSpec
	if code, err := decode(w, r, s.o.MaxBody, &req); err != nil {
		writeError(w, code, err)
		return
	}
	spec, err := specFrom(r.Context(), req, s.o.Store.Reference)
	if err != nil {
		s.fail(w, r, err, "")
		return
	}
	var token string
	if spec.Push {
		if token, spec.PushTokenHash, err = newPushToken(); err != nil {
			s.fail(w, r, err, "")
			return
		}
	}
	a, err := s.o.Store.AddAgent(r.Context(), spec, s.o.Now())
	if errors.Is(err, fleet.ErrExists) {
		writeError(w, http.StatusConflict, badField("name", "an agent named %q exists (change it with rimon fleet update %s, or PUT /v1/agents/%s)", spec.Name, spec.Name, spec.Name))
		return
	}
	if err != nil {
		s.fail(w, r, err, "")
		return
	}
	s.wake(spec.Name)
	v := view(a, true)
	v.PushToken = token
	w.Header().Set("Location", "/v1/agents/"+url.PathEscape(spec.Name))
	writeJSON(w, http.StatusCreated, v)
}

func (s *server) wake(name string) {
	if s.o.Engine != nil {
		s.o.Engine.Wake(name)
	}
}

// agentName is the {name} of the path, checked.
func agentName(w http.ResponseWriter, r *http.Request) (string, bool) {
	name := r.PathValue("name")
	if err := checkName("name", name); err != nil {
		writeError(w, http.StatusNotFound, fmt.Errorf("no agent named %q", name))
		return "", false
	}
	return name, true
}

func (s *server) getAgent(w http.ResponseWriter, r *http.Request) {
	name, ok := agentName(w, r)
	if !ok {
		return
	}
	a, err := s.o.Store.Agent(r.Context(), name)
	if err != nil {
		s.fail(w, r, err, fmt.Sprintf("no agent named %q", name))
		return
	}
	v := view(a, true)
	hist, err := s.o.Store.History(r.Context(), name, 200)
	if err != nil {
		s.fail(w, r, err, fmt.Sprintf("no agent named %q", name))
		return
	}
	for _, t := range hist {
		if t.Event != "state" && len(v.Events) < 20 {
			v.Events = append(v.Events, event(t))
		}
	}
	writeJSON(w, http.StatusOK, v)
}

func (s *server) putAgent(w http.ResponseWriter, r *http.Request) {
	name, ok := agentName(w, r)
	if !ok {
		return
	}
	var req AgentSpec
	if code, err := decode(w, r, s.o.MaxBody, &req); err != nil {
		writeError(w, code, err)
		return
	}
	if req.Name == "" {
		req.Name = name
	} else if req.Name != name {
		writeError(w, http.StatusBadRequest, badField("name", "the body names %q, the URL %q: an agent cannot be renamed", req.Name, name))
		return
	}
	old, err := s.o.Store.Agent(r.Context(), name)
	if err != nil {
		s.fail(w, r, err, fmt.Sprintf("no agent named %q", name))
		return
	}
	spec, err := specFrom(r.Context(), req, s.o.Store.Reference)
	if err != nil {
		s.fail(w, r, err, "")
		return
	}
	var token string
	switch {
	case spec.Push && old.Push && old.PushTokenHash != "":
		spec.PushTokenHash = old.PushTokenHash // the agent keeps its token
	case spec.Push:
		if token, spec.PushTokenHash, err = newPushToken(); err != nil {
			s.fail(w, r, err, "")
			return
		}
	}
	if err := s.o.Store.UpdateSpec(r.Context(), name, spec); err != nil {
		s.fail(w, r, err, fmt.Sprintf("no agent named %q", name))
		return
	}
	s.wake(name)
	a, err := s.o.Store.Agent(r.Context(), name)
	if err != nil {
		s.fail(w, r, err, fmt.Sprintf("no agent named %q", name))
		return
	}
	v := view(a, true)
	v.PushToken = token
	writeJSON(w, http.StatusOK, v)
}

func (s *server) removeAgent(w http.ResponseWriter, r *http.Request) {
	name, ok := agentName(w, r)
	if !ok {
		return
	}
	if err := s.o.Store.RemoveAgent(r.Context(), name); err != nil {
		s.fail(w, r, err, fmt.Sprintf("no agent named %q", name))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// DefaultHistory and MaxHistory: how many entries GET .../history gives
// without and with ?limit=N.
const (
	DefaultHistory = 100
	MaxHistory     = 10000
)

func (s *server) history(w http.ResponseWriter, r *http.Request) {
	name, ok := agentName(w, r)
	if !ok {
		return
	}
	limit := DefaultHistory
	for k, v := range r.URL.Query() {
		if k != "limit" {
			writeError(w, http.StatusBadRequest, badField(k, "unknown query parameter (limit)"))
			return
		}
		n, err := strconv.Atoi(v[0])
		if err != nil || n < 1 || n > MaxHistory {
			writeError(w, http.StatusBadRequest, badField("limit", "%q: want 1 to %d", v[0], MaxHistory))
			return
		}
		limit = n
	}
	if _, err := s.o.Store.Agent(r.Context(), name); err != nil {
		s.fail(w, r, err, fmt.Sprintf("no agent named %q", name))
		return
	}
	hist, err := s.o.Store.History(r.Context(), name, limit)
	if err != nil {
		s.fail(w, r, err, fmt.Sprintf("no agent named %q", name))
		return
	}
	out := make([]Event, 0, len(hist))
	for _, t := range hist {
		out = append(out, event(t))
	}
	writeJSON(w, http.StatusOK, out)
}

// MaxReason bounds an operator's reason for a clear.
const MaxReason = 1024

// readReason reads an operator's request (an optional body) into req and
// checks its reason: one line of at most MaxReason bytes.
func (s *server) readReason(w http.ResponseWriter, r *http.Request, req any, reason *string) bool {
	if r.ContentLength != 0 {
		if code, err := decode(w, r, s.o.MaxBody, req); err != nil && !errors.Is(err, errEmptyBody) {
			writeError(w, code, err)
			return false
		}
	}
	if len(*reason) > MaxReason || strings.ContainsAny(*reason, "\r\n") {
		writeError(w, http.StatusBadRequest, badField("reason", "one line of at most %d bytes", MaxReason))
		return false
	}
	return true
}

func (s *server) clear(w http.ResponseWriter, r *http.Request) {
	name, ok := agentName(w, r)
	if !ok {
		return
	}
	var req ClearRequest
	if !s.readReason(w, r, &req, &req.Reason) {
		return
	}
	if _, err := s.o.Store.Agent(r.Context(), name); err != nil {
		s.fail(w, r, err, fmt.Sprintf("no agent named %q", name))
		return
	}
	reason := "cleared by " + whoFor(r).who
	if req.Reason != "" {
		reason += ": " + req.Reason
	}
	if err := s.o.Store.Clear(r.Context(), name, reason, s.o.Now()); err != nil {
		s.fail(w, r, err, fmt.Sprintf("no agent named %q", name))
		return
	}
	s.wake(name)
	a, err := s.o.Store.Agent(r.Context(), name)
	if err != nil {
		s.fail(w, r, err, fmt.Sprintf("no agent named %q", name))
		return
	}
	writeJSON(w, http.StatusOK, view(a, true))
}

// enroll is an operator's decision to enroll an agent again (after it
// showed another AK or EK): its enrollment is forgotten, and its next
// round enrolls it with its CAs.
func (s *server) enroll(w http.ResponseWriter, r *http.Request) {
	name, ok := agentName(w, r)
	if !ok {
		return
	}
	var req EnrollRequest
	if !s.readReason(w, r, &req, &req.Reason) {
		return
	}
	a, err := s.o.Store.Agent(r.Context(), name)
	if err != nil {
		s.fail(w, r, err, fmt.Sprintf("no agent named %q", name))
		return
	}
	if !a.Enrolls() {
		writeError(w, http.StatusConflict, fmt.Errorf("agent %s is not enrolled: its AK is pinned or vouched for by Azure (give ek_ca or ak_ca with PUT /v1/agents/%s first)", name, name))
		return
	}
	reason := "enrollment asked for by " + whoFor(r).who
	if req.Reason != "" {
		reason += ": " + req.Reason
	}
	if err := s.o.Store.Unenroll(r.Context(), name, reason, s.o.Now()); err != nil {
		s.fail(w, r, err, fmt.Sprintf("no agent named %q", name))
		return
	}
	s.wake(name)
	if a, err = s.o.Store.Agent(r.Context(), name); err != nil {
		s.fail(w, r, err, fmt.Sprintf("no agent named %q", name))
		return
	}
	writeJSON(w, http.StatusOK, view(a, true))
}

func refView(ref *fleet.Reference, body bool) Reference {
	v := Reference{Name: ref.Name, Fingerprint: ref.Fingerprint, Updated: ref.Updated, Agents: ref.Agents}
	if body {
		v.Body = string(ref.Body)
	}
	return v
}

func (s *server) listReferences(w http.ResponseWriter, r *http.Request) {
	refs, err := s.o.Store.ListReferences(r.Context())
	if err != nil {
		s.fail(w, r, err, "")
		return
	}
	out := make([]Reference, 0, len(refs))
	for _, ref := range refs {
		out = append(out, refView(ref, false))
	}
	writeJSON(w, http.StatusOK, out)
}

// parseReference checks a reference request and makes what is stored.
func (s *server) parseReference(req ReferenceRequest) (fleet.Reference, error) {
	if err := checkName("name", req.Name); err != nil {
		return fleet.Reference{}, err
	}
	if strings.TrimSpace(req.Body) == "" {
		return fleet.Reference{}, badField("body", "required: the reference file (YAML), as rimon reference generate writes it")
	}
	ref, err := policy.ParseReference("reference "+req.Name, strings.NewReader(req.Body))
	if err != nil {
		return fleet.Reference{}, badField("body", "%v", err)
	}
	return fleet.Reference{Name: req.Name, Body: []byte(req.Body), Fingerprint: attest.ReferenceFingerprint(ref), Updated: s.o.Now()}, nil
}

func (s *server) addReference(w http.ResponseWriter, r *http.Request) {
	var req ReferenceRequest
	if code, err := decode(w, r, s.o.MaxReference, &req); err != nil {
		writeError(w, code, err)
		return
	}
	ref, err := s.parseReference(req)
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	if err := s.o.Store.PutReference(r.Context(), ref, false); errors.Is(err, fleet.ErrExists) {
		writeError(w, http.StatusConflict, badField("name", "a reference named %q exists (replace it with rimon fleet reference replace %s FILE, or PUT /v1/references/%s)", ref.Name, ref.Name, ref.Name))
		return
	} else if err != nil {
		s.fail(w, r, err, "")
		return
	}
	stored, err := s.o.Store.Reference(r.Context(), ref.Name)
	if err != nil {
		s.fail(w, r, err, fmt.Sprintf("no reference named %q", ref.Name))
		return
	}
	w.Header().Set("Location", "/v1/references/"+url.PathEscape(ref.Name))
	writeJSON(w, http.StatusCreated, refView(stored, false))
}

func (s *server) putReference(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := checkName("name", name); err != nil {
		writeError(w, http.StatusNotFound, fmt.Errorf("no reference named %q", name))
		return
	}
	var req ReferenceRequest
	if code, err := decode(w, r, s.o.MaxReference, &req); err != nil {
		writeError(w, code, err)
		return
	}
	if req.Name == "" {
		req.Name = name
	} else if req.Name != name {
		writeError(w, http.StatusBadRequest, badField("name", "the body names %q, the URL %q", req.Name, name))
		return
	}
	ref, err := s.parseReference(req)
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	if err := s.o.Store.PutReference(r.Context(), ref, true); err != nil {
		s.fail(w, r, err, fmt.Sprintf("no reference named %q (add it with POST /v1/references)", name))
		return
	}
	if s.o.Engine != nil {
		// Stored: its agents are re-evaluated even if the client goes away.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), ReferenceTimeout)
		defer cancel()
		if err := s.o.Engine.ReferenceReplaced(ctx, name); err != nil {
			s.log.Error("re-evaluating after a reference change", "reference", name, "err", err)
			writeError(w, http.StatusInternalServerError, fmt.Errorf("reference %q stored, but re-evaluating the agents that use it failed: %v", name, err))
			return
		}
	}
	stored, err := s.o.Store.Reference(r.Context(), name)
	if err != nil {
		s.fail(w, r, err, fmt.Sprintf("no reference named %q", name))
		return
	}
	writeJSON(w, http.StatusOK, refView(stored, false))
}

func (s *server) getReference(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := checkName("name", name); err != nil {
		writeError(w, http.StatusNotFound, fmt.Errorf("no reference named %q", name))
		return
	}
	ref, err := s.o.Store.Reference(r.Context(), name)
	if err != nil {
		s.fail(w, r, err, fmt.Sprintf("no reference named %q", name))
		return
	}
	writeJSON(w, http.StatusOK, refView(ref, true))
}

func (s *server) summary(w http.ResponseWriter, r *http.Request) {
	counts, err := s.o.Store.CountByStatus(r.Context())
	if err != nil {
		s.fail(w, r, err, "")
		return
	}
	out := Summary{States: map[fleet.Status]int{}}
	for _, st := range fleet.Statuses {
		out.States[st] = counts[st]
		out.Agents += counts[st]
	}
	writeJSON(w, http.StatusOK, out)
}

// stateRecords is the record count a saved verifier state accepted.
func stateRecords(b []byte) uint64 {
	if len(b) == 0 {
		return 0
	}
	st, err := verifier.ParseState(b)
	if err != nil {
		return 0
	}
	return st.Records()
}

func jsonValid(b []byte) bool { return json.Valid(b) }

// errEmptyBody: a request without a body where one is needed.
var errEmptyBody = errors.New("body: empty; want a JSON object")

// durationError is a Duration that could not be read.
type durationError struct{ msg string }

func (e *durationError) Error() string { return e.msg }
