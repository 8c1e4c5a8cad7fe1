package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rimon-dev/rimon/fleet"
	"github.com/rimon-dev/rimon/fleet/api"
	"github.com/rimon-dev/rimon/fleet/engine"
	"github.com/rimon-dev/rimon/fleet/metrics"
	"github.com/rimon-dev/rimon/fleet/sqlstore"
	"github.com/rimon-dev/rimon/fleet/web"
	"github.com/rimon-dev/rimon/fleet/webhook"
	"github.com/spf13/cobra"
)

// DefaultVerifierDB is where rimon verifier keeps its state by default.
const DefaultVerifierDB = "/var/lib/rimon/verifier.db"

type verifierFlags struct {
	db, listen, tokenFile        string
	tlsCert, tlsKey, clientCA    string
	webhooks, webhookSecrets     []string
	owner, logFormat             string
	concurrency                  int
	insecurePlainHTTP            bool
	timeout, pushGrace, shutdown time.Duration
	lease                        time.Duration
	maxEvidence                  string
}

func newVerifierCmd(g *globals) *cobra.Command {
	var f verifierFlags
	c := &cobra.Command{
		Use:   "verifier --db DSN --listen ADDR --token-file FILE (--tls-cert F --tls-key F | --insecure-plain-http) [--client-ca F] [--webhook URL --webhook-secret-file F]...",
		Short: "Run the fleet verifier: attest many agents continuously, keep their history, send alerts",
		Long: `verifier is rimon's fleet verifier. It attests every agent registered with
rimon fleet add, each at its interval: it asks the agent for the records it has
not seen with a fresh nonce (or takes what a pushing agent posts), verifies
them from the state it keeps of the agent's boot, and stores each agent's
state (pending, trusted, untrusted, invalid, compromised, unreachable) with
its history. Every change of state is sent to each --webhook, signed per the
Standard Webhooks convention, from an outbox in the database that survives
restarts. docs/FLEET.md describes it all.

--db is a path or sqlite:PATH (default ` + DefaultVerifierDB + `), or
postgres://... (docs/FLEET-STORAGE.md); the schema is created or migrated at
start. --listen serves the API (docs/fleet-api.yaml),
/metrics (Prometheus, behind a token) and /healthz, over HTTPS with --tls-cert
and --tls-key; plain HTTP only with --insecure-plain-http, which sends API
tokens, push tokens and evidence in the clear (tests, or a loopback address
behind a TLS proxy).

--token-file lists the API tokens, one per line; "TOKEN read" makes a
read-only token (GET only). With --client-ca, a client certificate signed by
one of those CAs is an admin, as an admin token is. --webhook-secret-file
holds a Standard Webhooks secret (whsec_ followed by base64), one per
--webhook, in the same order.

Under systemd (Type=notify) it reports READY=1 once the database is migrated
and the listener is up. SIGTERM stops taking agents, lets the rounds in
progress end (or gives their agents back), and closes the database.`,
		Example: `  rimon verifier --db /var/lib/rimon/verifier.db --listen :8443 --token-file /etc/rimon/verifier-tokens \
      --tls-cert /etc/rimon/verifier.crt --tls-key /etc/rimon/verifier.key
  rimon verifier --db /tmp/v.db --listen 127.0.0.1:8443 --token-file tokens --insecure-plain-http`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runVerifier(cmd.Context(), g, f)
		},
	}
	fl := c.Flags()
	fl.StringVar(&f.db, "db", envOr("RIMON_VERIFIER_DB", DefaultVerifierDB), "the database: a path, sqlite:PATH or postgres://... ($RIMON_VERIFIER_DB)")
	fl.StringVar(&f.listen, "listen", ":8443", "serve the API, push, /metrics and /healthz at ADDR")
	fl.StringVar(&f.tokenFile, "token-file", "", `API tokens, one per line ("TOKEN read" for a read-only one) (required)`)
	fl.StringVar(&f.tlsCert, "tls-cert", "", "TLS certificate (PEM) for --listen")
	fl.StringVar(&f.tlsKey, "tls-key", "", "TLS key (PEM) for --listen")
	fl.StringVar(&f.clientCA, "client-ca", "", "CA certificates (PEM): a client certificate they sign is an admin")
	fl.BoolVar(&f.insecurePlainHTTP, "insecure-plain-http", false, "INSECURE: serve plain HTTP without --tls-cert (tokens and evidence in the clear)")
	fl.StringArrayVar(&f.webhooks, "webhook", nil, "POST every change of state to this URL (repeatable)")
	fl.StringArrayVar(&f.webhookSecrets, "webhook-secret-file", nil, "the signing secret (whsec_...) of the --webhook in the same position (repeatable)")
	fl.StringVar(&f.owner, "owner", "", "this replica's name, under which it leases agents (default: the host name)")
	fl.IntVar(&f.concurrency, "concurrency", 64, "attestations in progress at once")
	fl.DurationVar(&f.timeout, "timeout", 30*time.Second, "bound of one attestation, fetch and verification")
	fl.DurationVar(&f.lease, "lease", 0, "how long a claimed agent stays this replica's; another replica takes it over after that (default twice --timeout plus 30s)")
	fl.StringVar(&f.maxEvidence, "max-evidence", "256MiB", "the largest evidence taken from one agent, polled or pushed (the agent serves at most 256 MiB of log)")
	fl.DurationVar(&f.pushGrace, "push-grace", 30*time.Second, "how long past its interval a pushing agent may stay silent before it is unreachable")
	fl.DurationVar(&f.shutdown, "shutdown-timeout", 20*time.Second, "how long SIGTERM waits for requests and attestations in progress")
	fl.StringVar(&f.logFormat, "log-format", "text", "format of the verifier's logs on stderr: text or json")
	c.MarkFlagRequired("token-file")
	return c
}

// verifierSetup is what the flags give, checked before anything starts.
type verifierSetup struct {
	tokens   *api.Tokens
	tls      *tls.Config
	secrets  map[string][]byte
	webhooks []string
}

// check validates the flags and reads their files; a usage error for the
// command line, an error for a file.
func (f *verifierFlags) check() (*verifierSetup, error) {
	s := &verifierSetup{secrets: map[string][]byte{}}
	if f.logFormat != "text" && f.logFormat != "json" {
		return nil, usageErr("--log-format %q: want text or json", f.logFormat)
	}
	if f.concurrency < 1 || f.concurrency > 4096 {
		return nil, usageErr("--concurrency %d: want 1 to 4096", f.concurrency)
	}
	if f.timeout < time.Second || f.pushGrace < time.Second || f.shutdown < time.Second {
		return nil, usageErr("--timeout, --push-grace and --shutdown-timeout: want at least 1s")
	}
	if n, err := parseSize(f.maxEvidence); err != nil || n < 1<<20 {
		return nil, usageErr("--max-evidence %q: want a size of at least 1MiB, such as 256MiB", f.maxEvidence)
	}
	if f.lease != 0 && f.lease <= f.timeout {
		return nil, usageErr("--lease %v: want more than --timeout (%v), or a round could outlive its lease", f.lease, f.timeout)
	}
	if (f.tlsCert == "") != (f.tlsKey == "") {
		return nil, usageErr("--tls-cert and --tls-key go together")
	}
	switch {
	case f.tlsCert == "" && !f.insecurePlainHTTP:
		return nil, usageErr("--tls-cert and --tls-key are required: the API carries tokens and evidence (--insecure-plain-http serves plain HTTP, for tests or a loopback address behind a TLS proxy)")
	case f.tlsCert != "" && f.insecurePlainHTTP:
		return nil, usageErr("--insecure-plain-http and --tls-cert exclude each other")
	case f.clientCA != "" && f.tlsCert == "":
		return nil, usageErr("--client-ca needs TLS (--tls-cert and --tls-key)")
	}
	if len(f.webhooks) != len(f.webhookSecrets) {
		return nil, usageErr("each --webhook needs its --webhook-secret-file, in the same order (%d webhooks, %d secret files)", len(f.webhooks), len(f.webhookSecrets))
	}
	for i, w := range f.webhooks {
		u, err := url.Parse(w)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, usageErr("--webhook %q: want an http or https URL", w)
		}
		if _, dup := s.secrets[w]; dup {
			return nil, usageErr("--webhook %q given twice", w)
		}
		b, err := os.ReadFile(f.webhookSecrets[i])
		if err != nil {
			return nil, fmt.Errorf("--webhook-secret-file: %w", err)
		}
		key, err := webhook.ParseSecret(strings.TrimSpace(string(b)))
		if err != nil {
			return nil, fmt.Errorf("--webhook-secret-file %s: %w", f.webhookSecrets[i], err)
		}
		s.secrets[w] = key
		s.webhooks = append(s.webhooks, w)
	}
	var err error
	if s.tokens, err = api.ParseTokens(f.tokenFile); err != nil {
		return nil, fmt.Errorf("--token-file: %w", err)
	}
	if f.tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(f.tlsCert, f.tlsKey)
		if err != nil {
			return nil, fmt.Errorf("--tls-cert %s, --tls-key %s: %w", f.tlsCert, f.tlsKey, err)
		}
		s.tls = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		if f.clientCA != "" {
			pemb, err := os.ReadFile(f.clientCA)
			if err != nil {
				return nil, fmt.Errorf("--client-ca: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pemb) {
				return nil, fmt.Errorf("--client-ca %s: no PEM certificate", f.clientCA)
			}
			s.tls.ClientCAs, s.tls.ClientAuth = pool, tls.VerifyClientCertIfGiven
		}
	}
	if f.owner == "" {
		if f.owner, err = os.Hostname(); err != nil || f.owner == "" {
			f.owner = "rimon"
		}
	}
	return s, nil
}

func runVerifier(ctx context.Context, g *globals, f verifierFlags) error {
	setup, err := f.check()
	if err != nil {
		return err
	}
	var h slog.Handler = slog.NewTextHandler(g.stderr, nil)
	if f.logFormat == "json" {
		h = slog.NewJSONHandler(g.stderr, nil)
	}
	logger := slog.New(h)

	store, err := sqlstore.Open(ctx, f.db)
	if err != nil {
		return fmt.Errorf("--db: %w", err)
	}
	defer func() {
		if err := store.Close(); err != nil {
			logger.Error("closing the database", "err", err)
		}
	}()
	if err := store.SetEndpoints(ctx, setup.webhooks); err != nil {
		return fmt.Errorf("webhooks: %w", err)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m, err := metrics.Register(reg, store)
	if err != nil {
		return err
	}
	maxEvidence, _ := parseSize(f.maxEvidence) // checked with the flags
	eng := engine.New(store, engine.Options{Owner: f.owner, Concurrency: f.concurrency, Timeout: f.timeout, Lease: f.lease, MaxEvidence: maxEvidence,
		PushGrace: f.pushGrace, Metrics: m, Logger: logger.With("part", "engine")})
	sender, err := webhook.NewSender(webhook.Options{Store: store, Secrets: setup.secrets, Metrics: m, Logger: logger.With("part", "webhook")})
	if err != nil {
		return err
	}
	ui := web.Handler(web.Options{Store: store, Tokens: setup.tokens, ClientCerts: setup.tls != nil && setup.tls.ClientCAs != nil})
	handler := api.Handler(api.Options{Store: store, Engine: eng, Tokens: setup.tokens, ClientCertAdmin: setup.tls != nil && setup.tls.ClientCAs != nil, UI: ui,
		Logger: logger.With("part", "api"), Metrics: promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)})})

	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return fmt.Errorf("--listen %s: %w", f.listen, err)
	}
	srv := &http.Server{
		Handler:           handler,
		TLSConfig:         setup.tls,
		ReadHeaderTimeout: 10 * time.Second,
		// Pushed evidence can be a long log; a replaced reference is
		// answered after its agents are re-evaluated.
		ReadTimeout:    5 * time.Minute,
		WriteTimeout:   api.ReferenceTimeout + time.Minute,
		IdleTimeout:    2 * time.Minute,
		MaxHeaderBytes: 16 << 10,
		ErrorLog:       slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	if setup.tls != nil {
		ln = tls.NewListener(ln, setup.tls)
	}
	scheme := "https"
	if setup.tls == nil {
		scheme = "http"
		logger.Warn("INSECURE: serving plain HTTP (--insecure-plain-http): API tokens, push tokens and evidence travel in the clear")
	}

	runCtx, stopRun := context.WithCancelCause(context.WithoutCancel(ctx))
	defer stopRun(nil)
	var wg sync.WaitGroup
	errc := make(chan error, 3)
	wg.Add(3)
	go func() {
		defer wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("serving %s: %w", f.listen, err)
		}
	}()
	go func() {
		defer wg.Done()
		if err := eng.Run(runCtx); err != nil && runCtx.Err() == nil {
			errc <- fmt.Errorf("engine: %w", err)
		}
	}()
	go func() {
		defer wg.Done()
		if err := sender.Run(runCtx); err != nil && runCtx.Err() == nil {
			errc <- fmt.Errorf("webhook sender: %w", err)
		}
	}()

	counts, _ := store.CountByStatus(ctx)
	total := 0
	for _, n := range counts {
		total += n
	}
	logger.Info("serving API", "url", scheme+"://"+ln.Addr().String(), "db", redactDSN(f.db), "agents", total,
		"webhooks", len(setup.webhooks), "client_certificates", setup.tls != nil && setup.tls.ClientCAs != nil, "owner", f.owner)
	if os.Getenv("NOTIFY_SOCKET") != "" {
		if _, err := daemon.SdNotify(false, "READY=1\nSTATUS="+statusLine(counts)); err != nil {
			logger.Warn("sd_notify", "err", err)
		}
		// systemctl status shows the counts by state, refreshed.
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(15 * time.Second)
			defer tick.Stop()
			for {
				select {
				case <-runCtx.Done():
					return
				case <-tick.C:
				}
				if c, err := store.CountByStatus(runCtx); err == nil {
					daemon.SdNotify(false, "STATUS="+statusLine(c))
				}
			}
		}()
	}
	logger.Info("ready")

	var failed error
	select {
	case <-ctx.Done():
		logger.Info("stopping: no new attestations; waiting for those in progress", "timeout", f.shutdown)
	case failed = <-errc:
		logger.Error("stopping", "err", failed)
	}
	if os.Getenv("NOTIFY_SOCKET") != "" {
		daemon.SdNotify(false, "STOPPING=1")
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), f.shutdown)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	stopRun(errors.New("stopping"))
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-sctx.Done():
		return errors.Join(failed, errors.New("the attestations in progress did not end within --shutdown-timeout; their leases expire on their own"))
	}
	logger.Info("stopped")
	return failed
}

var _ fleet.Engine = (*engine.Engine)(nil)

// redactDSN hides a password in a database URL (postgres://user:PASSWORD@...).
func redactDSN(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && u.User != nil {
		return u.Redacted()
	}
	return dsn
}

// statusLine is the counts by state, worst first, for systemd's STATUS=.
func statusLine(counts map[fleet.Status]int) string {
	total := 0
	var parts []string
	for _, st := range fleet.Statuses {
		total += counts[st]
		if counts[st] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[st], st))
		}
	}
	if total == 0 {
		return "no agents registered"
	}
	return fmt.Sprintf("%d agents: %s", total, strings.Join(parts, ", "))
}
