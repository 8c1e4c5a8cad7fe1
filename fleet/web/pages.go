package web

import (
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/rimon-dev/rimon/attest"
	"github.com/rimon-dev/rimon/attest/verifier"
	"github.com/rimon-dev/rimon/fleet"
)

// page is what every template gets.
type page struct {
	Title   string
	Message string
	// Next is where the sign-in form leads.
	Next string
	// Refresh is the reload interval in seconds; AutoRefresh says this
	// page reloads itself (a page with agent data, unless ?refresh=off).
	Refresh     int
	AutoRefresh bool
	// RefreshMeta is the meta refresh element (html/template refuses a
	// value in a meta element's content attribute).
	RefreshMeta template.HTML
	// Self is this page's path and query, without refresh=off; Toggle
	// the link that turns refreshing off or on.
	Toggle string
	Who    string
	// Session says a sign-out button is shown.
	Session bool
	Now     time.Time
	Fleet   *fleetView
	Agent   *agentView
}

type fleetView struct {
	Total   int
	Counts  []countView
	States  []fleet.Status
	State   fleet.Status
	Name    string
	Rows    []*fleet.Agent
	Matched int
}

// moment is a time shown relative to the page's.
type moment struct{ Now, T time.Time }

type countView struct {
	State fleet.Status
	N     int
}

type agentView struct {
	*fleet.Agent
	Findings    []attest.Finding
	FindingsErr string
	Checks      []verifier.Check
	AzureSteps  []verifier.Check
	ChecksErr   string
	History     []fleet.Transition
	Continuity  []fleet.Transition
}

func parseTemplates() map[string]*template.Template {
	funcs := template.FuncMap{
		"symbol": symbol,
		"ts": func(t time.Time) string {
			if t.IsZero() {
				return ""
			}
			return t.UTC().Format(time.RFC3339)
		},
		"ago":   ago,
		"at":    func(now, t time.Time) moment { return moment{Now: now, T: t} },
		"trim":  func(s, prefix string) string { return strings.TrimPrefix(s, prefix) },
		"short": shortDigest,
	}
	out := map[string]*template.Template{}
	for _, name := range []string{"signin", "error", "fleet", "agent"} {
		out[name] = template.Must(template.New(name).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+name+".html"))
	}
	return out
}

// symbol is a state's glyph, shown next to its name (the state is never
// told by color alone).
func symbol(s fleet.Status) string {
	switch s {
	case fleet.Compromised:
		return "‼"
	case fleet.Invalid:
		return "✖"
	case fleet.Untrusted:
		return "⚠"
	case fleet.Unreachable:
		return "⌁"
	case fleet.Pending:
		return "…"
	case fleet.Trusted:
		return "✔"
	}
	return "?"
}

// ago tells how long before now t was, for people.
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now.Sub(t)
	if d < 0 {
		return "in " + round(-d)
	}
	return round(d) + " ago"
}

func round(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh %dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
	}
	return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
}

// shortDigest is a digest's first and last characters, for narrow
// screens (the whole digest is in the title and the text to copy).
func shortDigest(d string) string {
	if len(d) <= 20 {
		return d
	}
	return d[:12] + "…" + d[len(d)-6:]
}

// base fills what every signed-in page shows.
func (s *server) base(r *http.Request, v *viewer, title string) page {
	p := page{Title: title, Who: v.desc, Session: v.session != nil, Now: s.o.Now(), AutoRefresh: r.URL.Query().Get("refresh") != "off"}
	q := r.URL.Query()
	if p.AutoRefresh {
		q.Set("refresh", "off")
	} else {
		q.Del("refresh")
	}
	p.Toggle = (&url.URL{Path: r.URL.Path, RawQuery: q.Encode()}).RequestURI()
	return p
}

func (s *server) fleetPage(w http.ResponseWriter, r *http.Request, v *viewer) {
	p := s.base(r, v, "Fleet")
	q := r.URL.Query()
	f := fleet.Filter{Status: fleet.Status(q.Get("state")), Name: strings.TrimSpace(q.Get("name"))}
	if f.Status != "" && !f.Status.Valid() {
		s.render(w, http.StatusBadRequest, "error", page{Title: "Bad filter", Message: fmt.Sprintf("state %q: want one of %v", f.Status, fleet.Statuses)})
		return
	}
	counts, err := s.o.Store.CountByStatus(r.Context())
	if err != nil {
		s.storeFailed(w, err, "")
		return
	}
	agents, err := s.o.Store.ListAgents(r.Context(), f)
	if err != nil {
		s.storeFailed(w, err, "")
		return
	}
	sort.SliceStable(agents, func(i, j int) bool {
		a, b := agents[i], agents[j]
		if a.Status.Severity() != b.Status.Severity() {
			return a.Status.Severity() < b.Status.Severity()
		}
		if !a.Since.Equal(b.Since) {
			return a.Since.Before(b.Since) // longest in its state first
		}
		return a.Name < b.Name
	})
	fv := &fleetView{States: fleet.Statuses, State: f.Status, Name: f.Name, Matched: len(agents), Rows: agents}
	if len(fv.Rows) > MaxRows {
		fv.Rows = fv.Rows[:MaxRows]
	}
	for _, st := range fleet.Statuses {
		fv.Counts = append(fv.Counts, countView{State: st, N: counts[st]})
		fv.Total += counts[st]
	}
	p.Fleet = fv
	s.render(w, http.StatusOK, "fleet", p)
}

func (s *server) agentPage(w http.ResponseWriter, r *http.Request, v *viewer) {
	name := r.PathValue("name")
	a, err := s.o.Store.Agent(r.Context(), name)
	if err != nil {
		s.storeFailed(w, err, "Agent "+name)
		return
	}
	hist, err := s.o.Store.History(r.Context(), name, MaxHistory)
	if err != nil {
		s.storeFailed(w, err, "Agent "+name)
		return
	}
	av := &agentView{Agent: a, History: hist}
	if len(a.Findings) > 0 && string(a.Findings) != "null" {
		if err := json.Unmarshal(a.Findings, &av.Findings); err != nil {
			av.FindingsErr = "The stored findings do not parse: " + err.Error()
		}
	}
	if len(a.Checks) > 0 && string(a.Checks) != "null" {
		var checks []verifier.Check
		if err := json.Unmarshal(a.Checks, &checks); err != nil {
			av.ChecksErr = "The stored checks do not parse: " + err.Error()
		}
		for _, c := range checks {
			if c.Name == "azure" || strings.HasPrefix(c.Name, verifier.CheckAzure) {
				av.AzureSteps = append(av.AzureSteps, c)
			} else {
				av.Checks = append(av.Checks, c)
			}
		}
	}
	for _, t := range hist {
		if t.Event == "reboot" || (t.Event == "state" && t.To == fleet.Compromised) || (t.Event == "clear" && t.From == fleet.Compromised) {
			av.Continuity = append(av.Continuity, t)
		}
	}
	p := s.base(r, v, "Agent "+a.Name)
	p.Agent = av
	s.render(w, http.StatusOK, "agent", p)
}
