package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/rimon-dev/rimon/attest"
	"github.com/rimon-dev/rimon/attest/enroll"
	"github.com/rimon-dev/rimon/attest/verifier"
	"github.com/rimon-dev/rimon/fleet"
	"github.com/rimon-dev/rimon/fleet/api"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

// fleetNow is the clock of rimon fleet's relative times; tests pin it.
var fleetNow = time.Now

// fleetFlags are the flags every rimon fleet command shares.
type fleetFlags struct {
	g                      *globals
	server, tokenFile, ca  string
	cert, key              string
	asJSON                 bool
	client                 *api.Client
	terminal               bool
	width                  int
	stateFilter, nameMatch string
}

func newFleetCmd(g *globals) *cobra.Command {
	f := &fleetFlags{g: g}
	c := &cobra.Command{
		Use:   "fleet --server URL --token-file FILE [--ca PEM] COMMAND",
		Short: "Manage the agents a fleet verifier (rimon verifier) attests, and see their states",
		Long: `fleet talks to a fleet verifier's API (rimon verifier): it registers agents
and references, and shows each agent's state: pending, trusted, untrusted
(content not approved: which files), invalid (evidence failed a check: which),
compromised (continuity broken within a boot: stays until cleared) or
unreachable.

--server is the verifier's URL ($RIMON_SERVER); --token-file a file whose first
token is sent as Authorization: Bearer ($RIMON_TOKEN_FILE), the same format as
the verifier's --token-file; or --cert and --key, a client certificate signed
by a CA of the verifier's --client-ca (an admin). --ca ($RIMON_CA) pins the CA
of the verifier's certificate.

Exit codes: 0 done, 1 wait ran out of time, 2 error (the verifier
unreachable, or its refusal with its message), 3 usage error.`,
		Example: `  export RIMON_SERVER=https://verifier:8443 RIMON_TOKEN_FILE=~/.config/rimon/token
  rimon fleet reference add prod reference.yaml
  rimon fleet add web-1 --agent https://web-1:8443 --ak web-1.pem --reference prod
  rimon fleet list
  rimon fleet show web-1`,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			// Reasons and file names come from monitored machines.
			f.g.stdout = newTermSafe(f.g.stdout)
			if cmd.HasSubCommands() {
				return nil // a group: it prints its help
			}
			return f.connect()
		},
	}
	pf := c.PersistentFlags()
	pf.StringVar(&f.server, "server", os.Getenv("RIMON_SERVER"), "the verifier's URL, https://HOST:PORT ($RIMON_SERVER)")
	pf.StringVar(&f.tokenFile, "token-file", os.Getenv("RIMON_TOKEN_FILE"), "file holding the API token ($RIMON_TOKEN_FILE)")
	pf.StringVar(&f.ca, "ca", os.Getenv("RIMON_CA"), "CA certificates (PEM) that sign the verifier's TLS certificate (default: the system's) ($RIMON_CA)")
	pf.StringVar(&f.cert, "cert", "", "a client certificate (PEM) to present instead of a token (the verifier's --client-ca signs it)")
	pf.StringVar(&f.key, "key", "", "the client certificate's key (PEM)")
	c.AddCommand(f.addCmd(), f.updateCmd(), f.listCmd(), f.showCmd(), f.historyCmd(), f.waitCmd(), f.clearCmd(), f.enrollCmd(), f.removeCmd(), f.referenceCmd())
	return c
}

// connect makes the API client from the shared flags.
func (f *fleetFlags) connect() error {
	if f.server == "" {
		return usageErr("--server (or $RIMON_SERVER) is required: the verifier's URL, https://HOST:PORT")
	}
	u, err := url.Parse(f.server)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return usageErr("--server %q: want the verifier's URL, https://HOST:PORT", f.server)
	}
	if (f.cert == "") != (f.key == "") {
		return usageErr("--cert and --key go together")
	}
	if f.cert != "" && u.Scheme != "https" {
		return usageErr("--cert needs an https --server")
	}
	if f.tokenFile == "" && f.cert == "" {
		return usageErr("--token-file (or $RIMON_TOKEN_FILE) is required: a file holding the API token (or a client certificate: --cert, --key)")
	}
	var tok string
	if f.tokenFile != "" {
		var err error
		if tok, err = readClientToken(f.tokenFile); err != nil {
			return err
		}
	}
	hc := &http.Client{Timeout: 10 * time.Minute} // a reference replaced re-evaluates its agents before the reply
	if f.ca != "" || f.cert != "" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if f.ca != "" {
			pemb, err := os.ReadFile(f.ca)
			if err != nil {
				return fmt.Errorf("--ca: %w", err)
			}
			tc.RootCAs = x509.NewCertPool()
			if !tc.RootCAs.AppendCertsFromPEM(pemb) {
				return fmt.Errorf("--ca %s: no PEM certificate", f.ca)
			}
		}
		if f.cert != "" {
			c, err := tls.LoadX509KeyPair(f.cert, f.key)
			if err != nil {
				return fmt.Errorf("--cert %s, --key %s: %w", f.cert, f.key, err)
			}
			tc.Certificates = []tls.Certificate{c}
		}
		hc.Transport = &http.Transport{TLSClientConfig: tc, Proxy: http.ProxyFromEnvironment}
	}
	f.client = &api.Client{Base: f.server, Token: tok, HTTP: hc}
	if o, ok := f.g.stdout.(*os.File); ok && isTerminal(o) {
		f.terminal = true
		if ws, err := unix.IoctlGetWinsize(int(o.Fd()), unix.TIOCGWINSZ); err == nil && ws.Col > 0 {
			f.width = int(ws.Col)
		}
	}
	return nil
}

// readClientToken reads the first token of a token file (the verifier's
// format: blank lines and # comments skipped, a role after the token
// ignored). The error never quotes the file's content.
func readClientToken(path string) (string, error) {
	fh, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("--token-file: %w", err)
	}
	defer fh.Close()
	sc := bufio.NewScanner(io.LimitReader(fh, 1<<20))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		return strings.Fields(line)[0], nil
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("--token-file %s: %w", path, err)
	}
	return "", fmt.Errorf("--token-file %s: no token in the file", path)
}

// apiErr turns a client error into the exit code that means it: every
// failure to talk to the verifier, and every refusal, is an error (2).
func apiErr(err error) error {
	if err == nil {
		return nil
	}
	return &exitErr{code: exitError, err: err}
}

func (f *fleetFlags) jsonOut(v any) error {
	enc := json.NewEncoder(f.g.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (f *fleetFlags) addCmd() *cobra.Command {
	var agentURL, akFile, agentCA, reference, pcrs, vmID, interval, tokenOut string
	var banks []string
	var azureAK, push bool
	var en enrollFlags
	c := &cobra.Command{
		Use:   "add NAME (--agent URL | --push) (--ak PEM | --azure [--vm-id ID] | --ek-ca CA | --ak-ca CA) [--agent-ca PEM] [--reference NAME] [--pcrs 23] [--interval 60s]",
		Short: "Register an agent: polled at --agent URL, or pushing its evidence (--push)",
		Long: `add registers an agent. The verifier polls an agent started with rimon watch
--listen at --agent URL, or, with --push, the agent posts its evidence itself
(rimon watch --push, for machines the verifier cannot reach): the reply holds
the agent's push token, printed once on stdout (or written to --push-token-out,
mode 0600), and never shown again.

The AK is pinned (--ak, the PEM rimon provision or rimon watch --ak-out
writes), or vouched for by the Azure SEV-SNP chain (--azure; --vm-id pins the
VM's vmUniqueId), or enrolled once with nothing but CA certificates: with
--ek-ca (TPM vendor CAs: a file or a directory such as Keylime's
tpm_cert_store), the agent's EK certificate must chain to one of them and
credential activation prove the AK is in that TPM; with --ak-ca (cloud roots),
the AK certificate of a cloud vTPM must chain to one of them. The verifier
then attests with the enrolled AK alone; if the agent later shows another AK
or EK it is invalid until rimon fleet enroll NAME. --reference names a reference stored with rimon fleet
reference add; without one only the evidence's authenticity is checked.
--interval is at least 1s (default 60s; the verifier jitters it).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if (agentURL == "") == !push {
				return usageErr("give either --agent URL (the verifier polls the agent) or --push (the agent pushes)")
			}
			if n := btoi(akFile != "") + btoi(azureAK) + btoi(en.set()); n != 1 {
				return usageErr("give either --ak PEM (the agent's pinned attestation key), --azure, or --ek-ca/--ak-ca (to enroll the AK)")
			}
			if en.set() && push {
				return usageErr("--ek-ca and --ak-ca go with --agent: enrollment asks the agent for its identity")
			}
			if vmID != "" && !azureAK {
				return usageErr("--vm-id goes with --azure")
			}
			if agentCA != "" && push {
				return usageErr("--agent-ca goes with --agent")
			}
			if tokenOut != "" && !push {
				return usageErr("--push-token-out goes with --push")
			}
			spec := api.AgentSpec{Name: args[0], URL: agentURL, Azure: azureAK, VMID: vmID, Reference: reference, Banks: banks, Push: push}
			d, err := time.ParseDuration(interval)
			if err != nil || d < fleet.MinInterval {
				return usageErr("--interval %q: want a duration of at least 1s, such as 60s", interval)
			}
			spec.Interval = api.Duration(d)
			if spec.PCRs, err = parsePCRList(pcrs); err != nil {
				return err
			}
			if akFile != "" {
				b, err := os.ReadFile(akFile)
				if err != nil {
					return fmt.Errorf("--ak: %w", err)
				}
				if _, err := attest.ParsePublicKey(b); err != nil {
					return fmt.Errorf("--ak %s: %w", akFile, err)
				}
				spec.AK = string(b)
			}
			if len(en.ekCA) > 0 {
				pool, err := enroll.LoadCAPool(en.ekCA...)
				if err != nil {
					return fmt.Errorf("--ek-ca: %w", err)
				}
				spec.EKCA = string(pool.PEM())
			}
			if len(en.akCA) > 0 {
				pool, err := enroll.LoadCAPool(en.akCA...)
				if err != nil {
					return fmt.Errorf("--ak-ca: %w", err)
				}
				spec.AKCA = string(pool.PEM())
			}
			if agentCA != "" {
				b, err := os.ReadFile(agentCA)
				if err != nil {
					return fmt.Errorf("--agent-ca: %w", err)
				}
				spec.AgentCA = string(b)
			}
			if tokenOut != "" {
				// Made before the agent is registered: the token is shown once.
				fh, err := os.OpenFile(tokenOut, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
				if err != nil {
					return fmt.Errorf("--push-token-out: %w", err)
				}
				fh.Close()
			}
			a, err := f.client.AddAgent(cmd.Context(), spec)
			if err != nil {
				if tokenOut != "" {
					os.Remove(tokenOut)
				}
				return apiErr(err)
			}
			if push {
				if a.PushToken == "" {
					return &exitErr{code: exitError, err: errors.New("the verifier registered the agent but sent no push token")}
				}
				if tokenOut != "" {
					if err := os.WriteFile(tokenOut, []byte(a.PushToken+"\n"), 0o600); err != nil {
						return fmt.Errorf("--push-token-out: %w (the agent is registered: remove and add it again for a new token)", err)
					}
					fmt.Fprintf(f.g.stdout, "added %s (%s, pushes); its push token is in %s\n", a.Name, a.State, tokenOut)
					return nil
				}
				fmt.Fprintf(f.g.stderr, "rimon: added %s (%s, pushes); its push token, shown once, follows on stdout: give it to the agent's rimon watch --push --token-file\n", a.Name, a.State)
				fmt.Fprintln(f.g.stdout, a.PushToken)
				return nil
			}
			fmt.Fprintf(f.g.stdout, "added %s (%s), polled at %s every %v\n", a.Name, a.State, a.URL, time.Duration(a.Interval))
			return nil
		},
	}
	en.register(c)
	fl := c.Flags()
	fl.StringVar(&agentURL, "agent", "", "the agent's evidence endpoint, http(s)://HOST:PORT (rimon watch --listen)")
	fl.BoolVar(&push, "push", false, "the agent pushes its evidence (rimon watch --push): no --agent")
	fl.StringVar(&tokenOut, "push-token-out", "", "with --push, write the push token to this new file (mode 0600) instead of stdout")
	fl.StringVar(&akFile, "ak", "", "the agent's attestation key to pin (PEM)")
	fl.BoolVar(&azureAK, "azure", false, "the AK is vouched for by the Azure SEV-SNP chain")
	fl.StringVar(&vmID, "vm-id", "", "with --azure, the VM's vmUniqueId to pin")
	fl.StringVar(&agentCA, "agent-ca", "", "CA certificates (PEM) to pin for the agent's TLS certificate")
	fl.StringVar(&reference, "reference", "", "the stored reference to check the agent against")
	fl.StringVar(&pcrs, "pcrs", "23", "PCRs to quote, comma-separated")
	fl.StringArrayVar(&banks, "bank", nil, "bank to quote (repeatable; default sha256)")
	fl.StringVar(&interval, "interval", "60s", "time between attestations (at least 1s)")
	return c
}

func (f *fleetFlags) listCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "list [--state STATE] [--name SUBSTRING] [--json]",
		Short: "The fleet at a glance: counts by state, then every agent, worst first",
		Long: `list shows how many agents are in each state, worst first, then one line per
agent: name, state, for how long, the last attestation and the reason. With
--json it prints an array of objects (name, state, reason, since, last_poll,
next_due, url, reference, interval, ...) for scripts.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if f.stateFilter != "" && !fleet.Status(f.stateFilter).Valid() {
				return usageErr("--state %q: want one of %v", f.stateFilter, fleet.Statuses)
			}
			agents, err := f.client.ListAgents(cmd.Context(), f.stateFilter, f.nameMatch)
			if err != nil {
				return apiErr(err)
			}
			if f.asJSON {
				return f.jsonOut(agents)
			}
			sum, err := f.client.Summary(cmd.Context())
			if err != nil {
				return apiErr(err)
			}
			f.dashboard(sum, agents, fleetNow())
			return nil
		},
	}
	c.Flags().StringVar(&f.stateFilter, "state", "", "only agents in this state: "+statusList())
	c.Flags().StringVar(&f.nameMatch, "name", "", "only agents whose name contains this")
	c.Flags().BoolVar(&f.asJSON, "json", false, "print JSON")
	return c
}

func statusList() string {
	var s []string
	for _, st := range fleet.Statuses {
		s = append(s, string(st))
	}
	return strings.Join(s, ", ")
}

// dashboard prints the counts by state (worst first) and the agents,
// worst first, in aligned columns with relative times.
func (f *fleetFlags) dashboard(sum *api.Summary, agents []api.Agent, now time.Time) {
	w := f.g.stdout
	var parts []string
	for _, st := range fleet.Statuses {
		if n := sum.States[st]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, st))
		}
	}
	noun := "agents"
	if sum.Agents == 1 {
		noun = "agent"
	}
	if len(parts) == 0 {
		fmt.Fprintf(w, "0 agents (add one: rimon fleet add NAME --agent URL --ak AK.pem)\n")
		return
	}
	fmt.Fprintf(w, "%d %s: %s", sum.Agents, noun, strings.Join(parts, ", "))
	if (f.stateFilter != "" || f.nameMatch != "") && len(agents) > 0 {
		fmt.Fprintf(w, " (showing %d)", len(agents))
	}
	fmt.Fprintln(w)
	if len(agents) == 0 {
		filter := []string{}
		if f.stateFilter != "" {
			filter = append(filter, "state "+f.stateFilter)
		}
		if f.nameMatch != "" {
			filter = append(filter, fmt.Sprintf("name containing %q", f.nameMatch))
		}
		fmt.Fprintf(w, "no agent with %s\n", strings.Join(filter, " and "))
		return
	}
	fmt.Fprintln(w)
	agents = slices.Clone(agents)
	slices.SortStableFunc(agents, func(a, b api.Agent) int {
		if d := a.State.Severity() - b.State.Severity(); d != 0 {
			return d
		}
		return strings.Compare(a.Name, b.Name)
	})
	rows := [][]string{{"NAME", "STATE", "SINCE", "LAST CHECK", "REASON"}}
	for _, a := range agents {
		last := "never"
		if !a.LastPoll.IsZero() {
			last = ago(now, a.LastPoll)
		}
		rows = append(rows, []string{a.Name, strings.ToUpper(string(a.State)), ago(now, a.Since), last, oneLine(a.Reason)})
	}
	f.table(rows)
}

// table prints rows in aligned columns; on a terminal the last column is
// cut to the terminal's width.
func (f *fleetFlags) table(rows [][]string) {
	widths := make([]int, len(rows[0]))
	for _, r := range rows {
		for i, c := range r[:len(r)-1] {
			widths[i] = max(widths[i], len([]rune(c)))
		}
	}
	for _, r := range rows {
		var b strings.Builder
		for i, c := range r[:len(r)-1] {
			b.WriteString(c)
			b.WriteString(strings.Repeat(" ", widths[i]-len([]rune(c))+2))
		}
		last := r[len(r)-1]
		if f.terminal && f.width > 0 {
			room := f.width - len([]rune(b.String()))
			if rs := []rune(last); room > 1 && len(rs) > room {
				last = string(rs[:room-1]) + "…"
			}
		}
		b.WriteString(last)
		fmt.Fprintln(f.g.stdout, strings.TrimRight(b.String(), " "))
	}
}

// ago says how long before now t was: "12s ago", "5m ago", "3h ago", "2d ago".
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	switch {
	case d < 0:
		return "in " + short(-d)
	case d < time.Second:
		return "just now"
	}
	return short(d) + " ago"
}

// short is a duration in its largest unit: 12s, 5m, 3h, 2d.
func short(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	}
	return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func (f *fleetFlags) showCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "show NAME [--json]",
		Short: "One agent: state, reason, findings, the last checks and continuity events",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := f.client.Agent(cmd.Context(), args[0])
			if err != nil {
				return apiErr(err)
			}
			if f.asJSON {
				return f.jsonOut(a)
			}
			f.show(a, fleetNow())
			return nil
		},
	}
	c.Flags().BoolVar(&f.asJSON, "json", false, "print JSON")
	return c
}

func (f *fleetFlags) show(a *api.Agent, now time.Time) {
	w := tabwriter.NewWriter(f.g.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "agent\t%s\n", a.Name)
	fmt.Fprintf(w, "state\t%s since %s (%s)\n", strings.ToUpper(string(a.State)), a.Since.UTC().Format(time.RFC3339), ago(now, a.Since))
	if a.Reason != "" {
		fmt.Fprintf(w, "reason\t%s\n", oneLine(a.Reason))
	}
	if a.Push {
		fmt.Fprintf(w, "evidence\tpushed by the agent\n")
	} else {
		pin := ""
		if a.AgentCA != "" {
			pin = " (TLS CA pinned)"
		}
		fmt.Fprintf(w, "evidence\tpolled at %s%s\n", a.URL, pin)
	}
	switch {
	case a.EKCA != "" || a.AKCA != "":
		fmt.Fprintf(w, "ak\t%s\n", enrollmentLine(a.Enrollment))
	case a.Azure && a.VMID != "":
		fmt.Fprintf(w, "ak\tvouched for by the Azure SEV-SNP chain, vmUniqueId %s\n", a.VMID)
	case a.Azure:
		fmt.Fprintf(w, "ak\tvouched for by the Azure SEV-SNP chain\n")
	default:
		desc := "pinned"
		if k, err := attest.ParsePublicKey([]byte(a.AK)); err == nil {
			if fp, err := attest.Fingerprint(k); err == nil {
				desc = "pinned, sha256:" + fp
			}
		}
		fmt.Fprintf(w, "ak\t%s\n", desc)
	}
	ref := a.Reference
	if ref == "" {
		ref = "none (authenticity only)"
	}
	fmt.Fprintf(w, "reference\t%s\n", ref)
	fmt.Fprintf(w, "quotes\tPCRs %v, banks %s, every %v\n", a.PCRs, strings.Join(a.Banks, ", "), time.Duration(a.Interval))
	last := "never"
	if !a.LastPoll.IsZero() {
		last = fmt.Sprintf("%s (%s)", a.LastPoll.UTC().Format(time.RFC3339), ago(now, a.LastPoll))
	}
	fmt.Fprintf(w, "last check\t%s\n", last)
	if !a.NextDue.IsZero() {
		fmt.Fprintf(w, "next check\t%s\n", ago(now, a.NextDue))
	}
	if a.Failures > 0 {
		fmt.Fprintf(w, "failures\t%d in a row\n", a.Failures)
	}
	if a.Boot != nil {
		fmt.Fprintf(w, "boot\tresetCount %d, restartCount %d, %d records accepted\n", a.Boot.ResetCount, a.Boot.RestartCount, a.Boot.Records)
	}
	w.Flush()
	if e := a.Enrollment; e != nil && len(e.Steps) > 0 {
		fmt.Fprintln(f.g.stdout, "\nchain of trust of the AK:")
		for _, st := range e.Steps {
			fmt.Fprintf(f.g.stdout, "  %-22s %s\n", st.Name, oneLine(st.Detail))
		}
	}
	var checks []verifier.Check
	if len(a.Checks) > 0 && json.Unmarshal(a.Checks, &checks) == nil && len(checks) > 0 {
		fmt.Fprintln(f.g.stdout, "\nchecks of the last attestation:")
		for _, c := range checks {
			mark := "ok  "
			if !c.Passed {
				mark = "FAIL"
			}
			fmt.Fprintf(f.g.stdout, "  %s %-16s %s\n", mark, c.Name, oneLine(c.Detail))
		}
	}
	if fs := findings(a.Findings); len(fs) > 0 {
		fmt.Fprintln(f.g.stdout, "\nfindings:")
		for _, x := range fs {
			fmt.Fprintf(f.g.stdout, "  %s\n", x)
		}
	}
	if len(a.Events) > 0 {
		fmt.Fprintln(f.g.stdout, "\nevents:")
		for _, e := range a.Events {
			fmt.Fprintf(f.g.stdout, "  %s  %-9s %s\n", e.Time.UTC().Format(time.RFC3339), e.Event, oneLine(e.Reason))
		}
	}
}

// findings renders the findings JSON ([]attest.Finding) one per line.
func findings(raw json.RawMessage) []string {
	if len(raw) == 0 {
		return nil
	}
	var fs []attest.Finding
	if err := json.Unmarshal(raw, &fs); err != nil {
		return []string{string(raw)}
	}
	out := make([]string, 0, len(fs))
	for _, x := range fs {
		out = append(out, x.String())
	}
	return out
}

func (f *fleetFlags) historyCmd() *cobra.Command {
	var limit int
	c := &cobra.Command{
		Use:   "history NAME [--limit N] [--json]",
		Short: "An agent's changes of state and continuity events, newest first",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if limit < 1 || limit > api.MaxHistory {
				return usageErr("--limit %d: want 1 to %d", limit, api.MaxHistory)
			}
			evs, err := f.client.History(cmd.Context(), args[0], limit)
			if err != nil {
				return apiErr(err)
			}
			if f.asJSON {
				return f.jsonOut(evs)
			}
			if len(evs) == 0 {
				fmt.Fprintf(f.g.stdout, "no history for %s yet\n", args[0])
				return nil
			}
			rows := [][]string{{"TIME", "EVENT", "CHANGE", "REASON"}}
			for _, e := range evs {
				change := ""
				if e.OldState != "" || e.NewState != "" {
					change = fmt.Sprintf("%s -> %s", orDash(string(e.OldState)), orDash(string(e.NewState)))
				}
				reason := oneLine(e.Reason)
				if fs := findings(e.Findings); len(fs) > 0 && !strings.Contains(reason, fs[0]) {
					reason += " [" + strings.Join(fs, "; ") + "]"
				}
				rows = append(rows, []string{e.Time.UTC().Format(time.RFC3339), e.Event, change, reason})
			}
			f.table(rows)
			return nil
		},
	}
	c.Flags().IntVar(&limit, "limit", api.DefaultHistory, "at most this many entries")
	c.Flags().BoolVar(&f.asJSON, "json", false, "print JSON")
	return c
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (f *fleetFlags) waitCmd() *cobra.Command {
	var state string
	var timeout time.Duration
	c := &cobra.Command{
		Use:   "wait NAME --state STATE [--timeout 60s]",
		Short: "Wait until an agent is in a state (for scripts): exit 0, or 1 when the time runs out",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !fleet.Status(state).Valid() {
				return usageErr("--state %q: want one of %v", state, fleet.Statuses)
			}
			if timeout <= 0 {
				return usageErr("--timeout %v: want a positive duration", timeout)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			for {
				a, err := f.client.Agent(ctx, args[0])
				if err != nil && ctx.Err() == nil {
					return apiErr(err)
				}
				if err == nil && a.State == fleet.Status(state) {
					fmt.Fprintf(f.g.stdout, "%s is %s: %s\n", a.Name, a.State, oneLine(a.Reason))
					return nil
				}
				select {
				case <-ctx.Done():
					if cmd.Context().Err() != nil {
						return cmd.Context().Err()
					}
					now := "unknown"
					if a != nil {
						now = fmt.Sprintf("%s (%s)", a.State, oneLine(a.Reason))
					}
					return checkErr(fmt.Errorf("%s is not %s after %v: it is %s", args[0], state, timeout, now))
				case <-time.After(500 * time.Millisecond):
				}
			}
		},
	}
	c.Flags().StringVar(&state, "state", "", "the state to wait for (required)")
	c.Flags().DurationVar(&timeout, "timeout", 60*time.Second, "how long to wait")
	c.MarkFlagRequired("state")
	return c
}

func (f *fleetFlags) clearCmd() *cobra.Command {
	var reason string
	c := &cobra.Command{
		Use:   "clear NAME [--reason TEXT]",
		Short: "Acknowledge an agent's state (compromised): it is attested again from its whole log",
		Long: `clear is an operator's acknowledgement, recorded in the agent's history with
--reason: the agent leaves its state (compromised stays until cleared) for
pending, the verifier forgets what it had accepted of the agent's boot, and
attests it again at once from its whole log.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := f.client.Clear(cmd.Context(), args[0], reason)
			if err != nil {
				return apiErr(err)
			}
			fmt.Fprintf(f.g.stdout, "cleared %s: %s, attested again from its whole log\n", a.Name, a.State)
			return nil
		},
	}
	c.Flags().StringVar(&reason, "reason", "", "why, for the agent's history")
	return c
}

// enrollmentLine says what vouched for an enrolled agent's AK.
func enrollmentLine(e *api.Enrollment) string {
	if e == nil {
		return "not enrolled yet (enrolled at the next attestation, through its EK or AK certificate)"
	}
	how := e.Path
	switch e.Path {
	case enroll.PathActivation:
		how = fmt.Sprintf("vouched for by a TPM vendor CA through the EK certificate at NV 0x%08X and credential activation", e.EKIndex)
	case enroll.PathAKCert:
		how = "vouched for by a cloud root through the AK certificate"
	}
	return fmt.Sprintf("%s (%s), enrolled %s, name %s", how, e.Path, e.Time.UTC().Format(time.RFC3339), e.AKName)
}

func (f *fleetFlags) enrollCmd() *cobra.Command {
	var reason string
	c := &cobra.Command{
		Use:   "enroll NAME [--reason TEXT]",
		Short: "Enroll an agent's AK again (after it showed another AK or EK)",
		Long: `enroll is an operator's decision, recorded in the agent's history with
--reason: the verifier forgets the agent's enrollment (the AK it attests with,
and the EK certificate that vouched for it) and enrolls it again at once with
the CAs it was added with (--ek-ca, --ak-ca). The verifier never does this by
itself: an agent that shows another AK or EK than the enrolled ones stays
invalid until enrolled again. rimon fleet wait NAME --state trusted waits for
the outcome.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := f.client.Enroll(cmd.Context(), args[0], reason)
			if err != nil {
				return apiErr(err)
			}
			fmt.Fprintf(f.g.stdout, "%s: %s, enrolled again at its next attestation\n", a.Name, a.State)
			return nil
		},
	}
	c.Flags().StringVar(&reason, "reason", "", "why, for the agent's history")
	return c
}

func (f *fleetFlags) removeCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "remove NAME",
		Short: "Stop attesting an agent and forget it, with its history",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := f.client.RemoveAgent(cmd.Context(), args[0]); err != nil {
				return apiErr(err)
			}
			fmt.Fprintf(f.g.stdout, "removed %s\n", args[0])
			return nil
		},
	}
}

func (f *fleetFlags) referenceCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "reference",
		Short: "Store, replace and list the references agents are checked against",
		Long: `A reference is a reference values file (rimon reference generate writes one),
stored under a name that many agents can share. Replacing it re-evaluates
every agent that uses it from what the verifier holds of their logs, without
asking the agents again.`,
	}
	put := func(replace bool) func(cmd *cobra.Command, args []string) error {
		return func(cmd *cobra.Command, args []string) error {
			body, err := os.ReadFile(args[1])
			if err != nil {
				return err
			}
			var ref *api.Reference
			verb := "added"
			if replace {
				verb = "replaced"
				ref, err = f.client.ReplaceReference(cmd.Context(), args[0], body)
			} else {
				ref, err = f.client.AddReference(cmd.Context(), args[0], body)
			}
			if err != nil {
				return apiErr(err)
			}
			fmt.Fprintf(f.g.stdout, "%s reference %s (fingerprint %s), used by %d agents\n", verb, ref.Name, ref.Fingerprint, ref.Agents)
			return nil
		}
	}
	add := &cobra.Command{Use: "add NAME FILE", Short: "Store a new reference", Args: cobra.ExactArgs(2), RunE: put(false)}
	replace := &cobra.Command{
		Use:   "replace NAME FILE",
		Short: "Replace a reference; the agents using it are re-evaluated before this returns",
		Args:  cobra.ExactArgs(2),
		RunE:  put(true),
	}
	list := &cobra.Command{
		Use:   "list [--json]",
		Short: "List the references",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			refs, err := f.client.References(cmd.Context())
			if err != nil {
				return apiErr(err)
			}
			if f.asJSON {
				return f.jsonOut(refs)
			}
			if len(refs) == 0 {
				fmt.Fprintln(f.g.stdout, "no references (add one: rimon fleet reference add NAME FILE)")
				return nil
			}
			rows := [][]string{{"NAME", "AGENTS", "UPDATED", "FINGERPRINT"}}
			now := fleetNow()
			for _, r := range refs {
				rows = append(rows, []string{r.Name, fmt.Sprint(r.Agents), ago(now, r.Updated), r.Fingerprint})
			}
			f.table(rows)
			return nil
		},
	}
	list.Flags().BoolVar(&f.asJSON, "json", false, "print JSON")
	show := &cobra.Command{
		Use:   "show NAME",
		Short: "Print a stored reference file",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := f.client.Reference(cmd.Context(), args[0])
			if err != nil {
				return apiErr(err)
			}
			_, err = io.WriteString(f.g.stdout, ref.Body)
			return err
		},
	}
	c.AddCommand(add, replace, list, show)
	return c
}

// updateCmd changes an agent's registration: what is given replaces what
// is stored, the rest is kept.
func (f *fleetFlags) updateCmd() *cobra.Command {
	var agentURL, akFile, agentCA, reference, pcrs, interval string
	var noReference bool
	c := &cobra.Command{
		Use:   "update NAME [--agent URL] [--ak PEM] [--agent-ca PEM] [--reference NAME | --no-reference] [--pcrs 23] [--interval 60s]",
		Short: "Change an agent's registration (its AK, URL, reference, interval)",
		Long: `update changes what is given and keeps the rest. A new AK or URL starts the
agent's attestation over: its accepted history is forgotten and the next
evidence is verified from record 0 (a new AK after re-provisioning is an
operator's decision, so it is made here, never on the agent's word).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			fl := cmd.Flags()
			if !fl.Changed("agent") && !fl.Changed("ak") && !fl.Changed("agent-ca") && !fl.Changed("reference") && !noReference &&
				!fl.Changed("pcrs") && !fl.Changed("interval") {
				return usageErr("nothing to change: give --agent, --ak, --agent-ca, --reference, --no-reference, --pcrs or --interval")
			}
			if noReference && fl.Changed("reference") {
				return usageErr("give --reference NAME or --no-reference, not both")
			}
			a, err := f.client.Agent(cmd.Context(), args[0])
			if err != nil {
				return apiErr(err)
			}
			spec := a.AgentSpec
			if fl.Changed("agent") {
				spec.URL = agentURL
			}
			if fl.Changed("ak") {
				b, err := os.ReadFile(akFile)
				if err != nil {
					return fmt.Errorf("--ak: %w", err)
				}
				if _, err := attest.ParsePublicKey(b); err != nil {
					return fmt.Errorf("--ak %s: %w", akFile, err)
				}
				spec.AK, spec.Azure, spec.VMID, spec.EKCA, spec.AKCA = string(b), false, "", "", ""
			}
			if fl.Changed("agent-ca") {
				b, err := os.ReadFile(agentCA)
				if err != nil {
					return fmt.Errorf("--agent-ca: %w", err)
				}
				spec.AgentCA = string(b)
			}
			switch {
			case noReference:
				spec.Reference = ""
			case fl.Changed("reference"):
				spec.Reference = reference
			}
			if fl.Changed("pcrs") {
				if spec.PCRs, err = parsePCRList(pcrs); err != nil {
					return err
				}
			}
			if fl.Changed("interval") {
				d, err := time.ParseDuration(interval)
				if err != nil || d < fleet.MinInterval {
					return usageErr("--interval %q: want a duration of at least 1s, such as 60s", interval)
				}
				spec.Interval = api.Duration(d)
			}
			u, err := f.client.UpdateAgent(cmd.Context(), args[0], spec)
			if err != nil {
				return apiErr(err)
			}
			if fl.Changed("ak") || fl.Changed("agent") {
				// Another key or machine: the history accepted under the old
				// one proves nothing of the new; recorded in the history.
				what := []string{}
				if fl.Changed("ak") {
					what = append(what, "a new AK")
				}
				if fl.Changed("agent") {
					what = append(what, "a new URL")
				}
				if u, err = f.client.Clear(cmd.Context(), args[0], "registration changed: "+strings.Join(what, " and ")); err != nil {
					return apiErr(err)
				}
			}
			fmt.Fprintf(f.g.stdout, "updated %s (%s)\n", u.Name, u.State)
			return nil
		},
	}
	c.Flags().StringVar(&agentURL, "agent", "", "the agent's URL")
	c.Flags().StringVar(&akFile, "ak", "", "a new pinned attestation key (PEM)")
	c.Flags().StringVar(&agentCA, "agent-ca", "", "CA certificates (PEM) to pin for the agent's TLS certificate")
	c.Flags().StringVar(&reference, "reference", "", "the stored reference to check against")
	c.Flags().BoolVar(&noReference, "no-reference", false, "check authenticity only")
	c.Flags().StringVar(&pcrs, "pcrs", "23", "PCRs to quote")
	c.Flags().StringVar(&interval, "interval", "60s", "interval between attestations (at least 1s)")
	return c
}
