package web

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/rimon-dev/rimon/fleet"
	"github.com/rimon-dev/rimon/fleet/api"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static/style.css
var styleCSS []byte

// Defaults of [Options].
const (
	// DefaultSessionTTL is how long a sign-in lasts.
	DefaultSessionTTL = 12 * time.Hour
	// DefaultRefresh is how often a page reloads itself.
	DefaultRefresh = 30 * time.Second
	// MaxRows bounds the fleet table (the counts are always complete).
	MaxRows = 1000
	// MaxHistory bounds the history shown on an agent's page.
	MaxHistory = 100
)

// ContentSecurityPolicy is sent with every response: no script at all,
// styles only from the embedded style sheet, forms only to this origin,
// never framed.
const ContentSecurityPolicy = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; " +
	"frame-ancestors 'none'; base-uri 'none'"

// Options configure [Handler]. Store and Tokens are required.
type Options struct {
	Store fleet.Store
	// Tokens are the API's tokens: any of them (read or admin) signs in.
	Tokens *api.Tokens
	// ClientCerts lets a request with a verified client certificate in
	// (the TLS server verifies it, as for the API's ClientCertAdmin).
	ClientCerts bool
	// SessionKey signs session cookies; nil: derived from Tokens
	// ([api.Tokens.DeriveKey]).
	SessionKey []byte
	// SessionTTL is how long a sign-in lasts (default [DefaultSessionTTL]).
	SessionTTL time.Duration
	// Refresh is how often pages reload themselves (default
	// [DefaultRefresh]).
	Refresh time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

type server struct {
	o        Options
	tmpl     map[string]*template.Template
	sessions *sessions
}

// Handler serves the web view under /ui/ (the paths it is given start
// with /ui/: mount it there without stripping the prefix).
func Handler(o Options) http.Handler {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.SessionTTL <= 0 {
		o.SessionTTL = DefaultSessionTTL
	}
	if o.Refresh <= 0 {
		o.Refresh = DefaultRefresh
	}
	key := o.SessionKey
	if key == nil {
		key = o.Tokens.DeriveKey("rimon ui sessions")
	}
	s := &server{o: o, sessions: newSessions(key), tmpl: parseTemplates()}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ui/style.css", s.style)
	mux.HandleFunc("GET /ui/signin", s.signinPage)
	csrf := http.NewCrossOriginProtection()
	mux.Handle("POST /ui/signin", csrf.Handler(http.HandlerFunc(s.signin)))
	mux.Handle("POST /ui/signout", csrf.Handler(http.HandlerFunc(s.signout)))
	mux.HandleFunc("GET /ui/{$}", s.signedIn(s.fleetPage))
	mux.HandleFunc("GET /ui/agents/{name}", s.signedIn(s.agentPage))
	mux.HandleFunc("/ui/", func(w http.ResponseWriter, r *http.Request) {
		s.render(w, http.StatusNotFound, "error", page{Title: "Not found", Message: "There is no page " + r.URL.Path + "."})
	})
	return headers(mux)
}

// headers sets the security headers every response carries.
func headers(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", ContentSecurityPolicy)
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		if r.URL.Path != "/ui/style.css" {
			h.Set("Cache-Control", "no-store")
		}
		next.ServeHTTP(w, r)
	})
}

func (s *server) style(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/css; charset=utf-8")
	w.Header().Set("Cache-Control", "private, max-age=300")
	w.Write(styleCSS)
}

// viewer is who a request comes from.
type viewer struct {
	desc    string
	session *session // nil: a token or a certificate, not a session
}

// authenticate finds a request's credentials: a client certificate (when
// allowed), a Bearer token, or a session cookie. ok false with a message
// when a credential was presented and refused; both empty when none.
func (s *server) authenticate(r *http.Request) (v *viewer, refused string) {
	if s.o.ClientCerts && r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.VerifiedChains[0]) > 0 {
		return &viewer{desc: "client certificate " + r.TLS.VerifiedChains[0][0].Subject.String()}, ""
	}
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, _ := strings.Cut(h, " ")
		if !strings.EqualFold(scheme, "Bearer") {
			return nil, "The Authorization header must be Bearer TOKEN."
		}
		role, line := s.o.Tokens.Check(strings.TrimSpace(tok))
		if role == api.RoleNone {
			return nil, "The token is not in the verifier's token file."
		}
		return &viewer{desc: fmt.Sprintf("%s token (line %d)", role, line)}, ""
	}
	if c, err := r.Cookie(CookieName); err == nil {
		se, err := s.sessions.check(c.Value, s.o.Now())
		if err != nil {
			return nil, "Your session ended: sign in again."
		}
		return &viewer{desc: fmt.Sprintf("%s token (line %d)", se.role, se.line), session: &se}, ""
	}
	return nil, ""
}

// signedIn serves h to a request with credentials, and the sign-in page
// (401, no agent data) to any other.
func (s *server) signedIn(h func(http.ResponseWriter, *http.Request, *viewer)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v, refused := s.authenticate(r)
		if v == nil {
			if refused == "" {
				refused = "Sign in with an API token to see the fleet."
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="rimon"`)
			s.render(w, http.StatusUnauthorized, "signin", page{Title: "Sign in", Message: refused, Next: r.URL.RequestURI()})
			return
		}
		h(w, r, v)
	}
}

func (s *server) signinPage(w http.ResponseWriter, r *http.Request) {
	s.render(w, http.StatusOK, "signin", page{Title: "Sign in", Next: safeNext(r.URL.Query().Get("next"))})
}

// safeNext is where to go after sign-in: a path under /ui/ of this site
// (never another host), else /ui/.
func safeNext(next string) string {
	u, err := url.Parse(next)
	if next == "" || err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || !strings.HasPrefix(u.Path, "/ui/") ||
		strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") || u.Path == "/ui/signin" {
		return "/ui/"
	}
	return u.RequestURI()
}

func (s *server) signin(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	if err := r.ParseForm(); err != nil {
		s.render(w, http.StatusBadRequest, "signin", page{Title: "Sign in", Message: "The form could not be read."})
		return
	}
	next := safeNext(r.PostForm.Get("next"))
	role, line := s.o.Tokens.Check(strings.TrimSpace(r.PostForm.Get("token")))
	if role == api.RoleNone {
		s.render(w, http.StatusUnauthorized, "signin", page{Title: "Sign in", Message: "The token is not in the verifier's token file.", Next: next})
		return
	}
	now := s.o.Now()
	exp := now.Add(s.o.SessionTTL)
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: s.sessions.issue(role, line, exp), Path: "/", Expires: exp,
		MaxAge: int(s.o.SessionTTL / time.Second), Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (s *server) signout(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(CookieName); err == nil {
		if se, err := s.sessions.check(c.Value, s.o.Now()); err == nil {
			s.sessions.revoke(se, s.o.Now())
		}
	}
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: "/", MaxAge: -1, Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/ui/signin", http.StatusSeeOther)
}

// render executes a page's template into a buffer first, so that a
// failure is a clean 500, not half a page.
func (s *server) render(w http.ResponseWriter, status int, name string, p page) {
	p.Refresh = int(s.o.Refresh / time.Second)
	if p.AutoRefresh {
		// An integer: nothing to escape.
		p.RefreshMeta = template.HTML(fmt.Sprintf(`<meta http-equiv="refresh" content="%d">`, p.Refresh))
	}
	var b bytes.Buffer
	if err := s.tmpl[name].ExecuteTemplate(&b, "layout", p); err != nil {
		http.Error(w, "rendering the page failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write(b.Bytes())
}

// storeFailed answers a store error.
func (s *server) storeFailed(w http.ResponseWriter, err error, what string) {
	if errors.Is(err, fleet.ErrNotFound) || errors.Is(err, fleet.ErrInvalid) {
		s.render(w, http.StatusNotFound, "error", page{Title: "Not found", Message: what + " is not registered."})
		return
	}
	s.render(w, http.StatusInternalServerError, "error", page{Title: "Store failure", Message: "The store failed: " + err.Error()})
}
