package main

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/rimon-dev/rimon/attest"
	attestagent "github.com/rimon-dev/rimon/attest/agent"
	"github.com/rimon-dev/rimon/attest/azure"
	"github.com/rimon-dev/rimon/eventlog"
	"github.com/rimon-dev/rimon/monitor"
	"github.com/rimon-dev/rimon/policy"
	"github.com/rimon-dev/rimon/tpm"
	"github.com/spf13/cobra"
)

// sdNotifier sends sd_notify messages to systemd.
type sdNotifier struct{}

func (sdNotifier) Notify(state string) error {
	_, err := daemon.SdNotify(false, state)
	return err
}

var _ monitor.Notifier = sdNotifier{}

func newWatchCmd(g *globals) *cobra.Command {
	var policyPath, logFormat string
	var jobs int
	var srv serveFlags
	var af azureFlags
	c := &cobra.Command{
		Use:   "watch [--policy FILE]",
		Short: "Run the agent: measure what the policy lists, then keep measuring changes",
		Long: `watch is rimon's agent. It reconciles the log with the TPM, measures
everything the policy lists (see packaging/examples/), records it in the log and
the PCR, and then watches those paths: each change is measured once the file
has settled, and recorded when its digest changed.

Under systemd (Type=notify) it reports READY=1 once the initial measurement is
recorded and the watches are in place, STATUS= with counts, and watchdog pings
when WatchdogSec= is set. SIGHUP reloads the policy; SIGTERM finishes the
record in flight and exits. Logs go to stderr.

watch stops with an error that says what happened when the ground it records
on is lost: the log deleted, replaced or truncated, or the PCR no longer the
replay of the log (reset, or a TPM restarted without its state). While it
cannot record for now (the TPM unreachable, the log not writable: a full disk,
chattr +i) it logs why, reconnects to a socket TPM as soon as it answers, and
sends no watchdog pings, so that systemd restarts it if the fault lasts.

With --push URL --token-file F, a machine the verifier cannot reach (NAT, a
firewall that allows only outgoing connections) attests itself: it asks the
fleet verifier at URL for a challenge (POST URL/v1/push/NAME/challenge, NAME
from --push-name, default the host name), quotes for its nonce, posts the
records the verifier does not hold yet, and comes back when the verifier's
reply says (longer after errors). The token, the file's first line, is sent
as a bearer token and never logged; a token file others may read is refused.

The log path comes from the policy's settings.log unless --log is given.`,
		Example: `  rimon watch --tpm sim --policy packaging/examples/minimal.yaml --log /tmp/rimon.log
  rimon watch --push https://verifier.example:8443 --token-file /etc/rimon/push.token
  systemctl start rimon   # packaging/systemd/rimon.service`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if logFormat != "text" && logFormat != "json" {
				return usageErr("--log-format %q: want text or json", logFormat)
			}
			if err := srv.push.check(); err != nil {
				return err
			}
			pol, err := policy.Load(policyPath)
			if err != nil {
				return err
			}
			if !cmd.Flags().Changed("log") && os.Getenv("RIMON_LOG") == "" {
				g.log = pol.Log
			}
			if (srv.cert == "") != (srv.key == "") {
				return usageErr("--tls-cert and --tls-key go together")
			}
			if srv.akOut != "" && srv.listen == "" && srv.push.url == "" {
				return usageErr("--ak-out goes with --listen or --push")
			}
			srv.azure = af
			return runWatchServe(cmd.Context(), g, pol, policyPath, logFormat, jobs, srv)
		},
	}
	c.Flags().StringVar(&policyPath, "policy", envOr("RIMON_POLICY", policy.DefaultPath), "policy file ($RIMON_POLICY)")
	c.Flags().StringVar(&logFormat, "log-format", "text", "format of the agent's own logs on stderr: text or json")
	c.Flags().IntVar(&jobs, "jobs", 0, "files hashed in parallel (0: one per core)")
	c.Flags().StringVar(&srv.listen, "listen", "", "serve evidence at ADDR (GET /v1/evidence?nonce=HEX); off by default")
	c.Flags().StringVar(&srv.cert, "tls-cert", "", "TLS certificate for --listen (PEM)")
	c.Flags().StringVar(&srv.key, "tls-key", "", "TLS key for --listen (PEM)")
	c.Flags().StringVar(&srv.akOut, "ak-out", "", "with --listen or --push, write the attestation key's public part (PEM) here at start, for verifiers to pin")
	srv.push.flags(c)
	af.attesterFlags(c)
	return c
}

type serveFlags struct {
	listen, cert, key string
	akOut             string // write the AK (PEM) here once it exists
	azure             azureFlags
	push              pushFlags
}

func runWatch(ctx context.Context, g *globals, pol *policy.Policy, policyPath, logFormat string, jobs int) error {
	return runWatchServe(ctx, g, pol, policyPath, logFormat, jobs, serveFlags{})
}

func runWatchServe(ctx context.Context, g *globals, pol *policy.Policy, policyPath, logFormat string, jobs int, srv serveFlags) error {
	var h slog.Handler = slog.NewTextHandler(g.stderr, nil)
	if logFormat == "json" {
		h = slog.NewJSONHandler(g.stderr, nil)
	}
	logger := slog.New(h)

	t, active, err := g.openTPM(ctx, pol.PCR)
	if err != nil {
		return err
	}
	defer t.Close()
	banks, err := chooseBanks(pol, active)
	if err != nil {
		return err
	}
	known := monitor.KnownSet{}
	w, err := g.openWriterSeeing(ctx, t, banks, pol.PCR, known.Add)
	if err != nil {
		return err
	}
	defer w.Close()
	// The guard stops the agent (runCtx) when the log or the TPM is lost.
	runCtx, stopRun := context.WithCancelCause(ctx)
	defer stopRun(nil)
	gd := newGuard(w, stopRun, logger)
	cfg := monitor.Config{
		Policy:   pol,
		Reload:   func() (*policy.Policy, error) { return policy.Load(policyPath) },
		Recorder: gd,
		Known:    known,
		Logger:   logger,
		Workers:  jobs,
	}
	if os.Getenv("NOTIFY_SOCKET") != "" {
		cfg.Notify = gatedNotifier{sdNotifier{}, gd} // no watchdog pings while it cannot record
		if d, err := daemon.SdWatchdogEnabled(false); err == nil {
			cfg.Watchdog = d
		}
	}
	if f, ok := g.stderr.(*os.File); ok && isTerminal(f) {
		cfg.Progress = f
	}
	m, err := monitor.New(cfg)
	if err != nil {
		return err
	}
	if srv.listen != "" || srv.push.url != "" {
		if _, err := t.ReadAK(ctx); errors.Is(err, tpm.ErrNoAK) && t.Ephemeral() {
			// The simulator starts empty: give it an AK, as rimon provision would.
			if _, _, err := t.ProvisionAK(ctx); err != nil {
				return err
			}
		} else if err != nil {
			return fmt.Errorf("--listen/--push: %w", err)
		}
		if srv.akOut != "" {
			ak, err := t.ReadAK(ctx)
			if err != nil {
				return err
			}
			pemb, err := attest.PublicKeyPEM(ak.Key)
			if err != nil {
				return err
			}
			if err := os.WriteFile(srv.akOut, pemb, 0o644); err != nil {
				return fmt.Errorf("--ak-out: %w", err)
			}
		}
		ho := attestagent.HandlerOptions{TPM: t, LogPath: g.log, PCRs: []int{pol.PCR}, Banks: banks,
			Unrecorded: func() []attest.Unrecorded { return unrecorded(m) }}
		hw, err := srv.azure.hardware(ctx, t) // the VCEK is fetched once; the report is read per request
		if err != nil {
			return err
		}
		if hw != nil {
			vcek := hw.VCEK
			ho.Decorate = func(ctx context.Context, ev *attest.Evidence) error {
				rep, err := t.ReadNV(ctx, azure.NVIndex)
				if err != nil {
					return err
				}
				ev.Azure = &attest.AzureBlob{HCLReport: rep, VCEK: vcek}
				return nil
			}
			logger.Info("serving Azure SEV-SNP evidence with each quote")
		}
		if srv.listen != "" {
			stop, err := serveEvidence(ctx, logger, srv, ho)
			if err != nil {
				return err
			}
			defer stop()
		}
		if srv.push.url != "" {
			stop, err := srv.push.start(ctx, logger, ho)
			if err != nil {
				return err
			}
			defer stop()
		}
	}
	logger.Info("starting", "policy", policyPath, "tpm", g.tpm, "log", g.log, "pcr", pol.PCR, "banks", bankNames(banks))
	every, retry := checkIntervals(cfg.Watchdog)
	checked := make(chan struct{})
	go func() { gd.check(runCtx, every, retry); close(checked) }()
	defer func() { stopRun(nil); <-checked }()
	if err := m.Run(runCtx); err != nil {
		return err
	}
	if cause := context.Cause(runCtx); errors.Is(cause, errLostGround) {
		return asCheckFailure(cause)
	}
	// A last look: the log and the TPM must agree when the agent stops.
	vctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := gd.Verify(vctx); err != nil {
		return checkErr(err)
	}
	st := w.State()
	for _, b := range banks {
		logger.Info("log and TPM agree", "records", w.Records(), "pcr", pol.PCR, "bank", eventlog.BankName(b), "value", fmt.Sprintf("%x", st.Value(pol.PCR, b)))
	}
	return nil
}

// unrecorded is the agent's unrecorded set as the evidence header lists it.
func unrecorded(m *monitor.Monitor) []attest.Unrecorded {
	var out []attest.Unrecorded
	for _, u := range m.Unrecorded() {
		out = append(out, attest.Unrecorded{Path: u.Path, Cause: u.Cause, Since: eventlog.FormatTime(u.Since), Tries: u.Tries})
	}
	return out
}

// serveEvidence starts the evidence endpoint; stop shuts it down. Its
// connections are capped well below the open-file limit (connBudget), so
// that clients, idle or not, never take the descriptors measuring needs.
func serveEvidence(ctx context.Context, logger *slog.Logger, f serveFlags, o attestagent.HandlerOptions) (stop func(), err error) {
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return nil, fmt.Errorf("--listen %s: %w", f.listen, err)
	}
	maxConns, perClient := connBudget()
	ln = attestagent.LimitListener(ln, maxConns, perClient)
	s := &http.Server{
		Handler:           attestagent.Handler(o),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		// The handler sets each evidence response's deadline from its size;
		// this bounds the rest (errors, HEAD).
		WriteTimeout:   60 * time.Second,
		IdleTimeout:    5 * time.Second,
		MaxHeaderBytes: 8 << 10,
		ErrorLog:       slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	go func() {
		var err error
		if f.cert != "" {
			err = s.ServeTLS(ln, f.cert, f.key)
		} else {
			err = s.Serve(ln)
		}
		if err != nil && err != http.ErrServerClosed {
			logger.Error("evidence endpoint stopped", "err", err)
		}
	}()
	scheme := "http"
	if f.cert != "" {
		scheme = "https"
	}
	logger.Info("serving evidence", "url", scheme+"://"+ln.Addr().String()+"/v1/evidence",
		"max_connections", maxConns, "max_connections_per_client", perClient)
	return func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		s.Shutdown(sctx)
	}, nil
}

// connBudget is how many connections the evidence endpoint holds at once
// (a quarter of the open-file limit, at most 256, at least 4) and from one
// client. Go raises the soft limit to one below the hard one when a
// program starts (package syscall's init, go.dev/issue/46279), so the limit
// read here is the one the process lives with.
func connBudget() (total, perClient int) {
	total = 256
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err == nil && rl.Cur/4 < uint64(total) {
		total = int(rl.Cur / 4)
	}
	total = max(total, 4)
	return total, max(total/8, 2)
}

// chooseBanks returns the policy's banks, which must be active, or every active bank.
func chooseBanks(pol *policy.Policy, active []crypto.Hash) ([]crypto.Hash, error) {
	if pol.Banks == nil {
		return active, nil
	}
	for _, b := range pol.Banks {
		found := false
		for _, a := range active {
			found = found || a == b
		}
		if !found {
			return nil, fmt.Errorf("policy %s: settings.banks names %s, which the TPM has not allocated for PCR %d (active: %v)",
				pol.Source, eventlog.BankName(b), pol.PCR, bankNames(active))
		}
	}
	return pol.Banks, nil
}

func bankNames(hs []crypto.Hash) []string {
	var out []string
	for _, h := range hs {
		out = append(out, eventlog.BankName(h))
	}
	return out
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func newPolicyCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "policy", Short: "Work with agent policies"}
	check := &cobra.Command{
		Use:   "check FILE",
		Short: "Validate a policy and list what it would measure",
		Long: `check parses and validates FILE, touching neither TPM nor log, and prints
the settings and every target the policy covers on this machine now: one line
per target, KIND PATH.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pol, err := policy.Load(args[0])
			if err != nil {
				return err
			}
			banks := "every active bank"
			if pol.Banks != nil {
				banks = fmt.Sprint(bankNames(pol.Banks))
			}
			fmt.Fprintf(g.stdout, "# policy %s: pcr %d, banks %s, log %s, debounce %v, rescan %v, symlinks %s\n",
				pol.Source, pol.PCR, banks, pol.Log, pol.Debounce, pol.Rescan, pol.Symlinks)
			ts := policy.Expand(pol)
			for _, t := range ts {
				fmt.Fprintf(g.stdout, "%s %s\n", t.Kind, t.Path)
			}
			fmt.Fprintf(g.stdout, "# %d targets\n", len(ts))
			return nil
		},
	}
	c.AddCommand(check)
	return c
}
