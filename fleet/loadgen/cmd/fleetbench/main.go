// Command fleetbench is a TEST-ONLY benchmark harness for the fleet
// verifier (bench/fleet.sh runs it): a load generator of simulated agents
// (package fleet/loadgen) in one process, and the verifier's engine on a
// SQLite store in another, side by side on one machine, so that each
// one's memory and CPU are its own.
//
//	fleetbench loadgen -agents N -dir DIR [-initial K] [-per-poll 10]
//	    serves N simulated agents on a loopback port, writes DIR/agents.json
//	    (name, URL, AK of each) and DIR/loadgen.url, and answers
//	    GET /stats with what the agents hold (POST /freeze stops the logs
//	    growing); runs until SIGINT or SIGTERM.
//	fleetbench verifier -db PATH -dir DIR -interval 60s -duration 5m [-warmup 90s]
//	    registers the agents of DIR/agents.json with the loadgen's reference,
//	    runs the engine for the duration, and prints one JSON result:
//	    attestations per second, schedule lag percentiles, the store's
//	    operation times, peak RSS, CPU time, and whether every agent ended
//	    trusted with the verifier holding every record its agent has.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rimon-dev/rimon/attest/verifier"
	"github.com/rimon-dev/rimon/fleet"
	"github.com/rimon-dev/rimon/fleet/engine"
	"github.com/rimon-dev/rimon/fleet/loadgen"
	"github.com/rimon-dev/rimon/fleet/sqlstore"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "fleetbench: usage: fleetbench loadgen|verifier [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "loadgen":
		err = runLoadgen(os.Args[2:])
	case "verifier":
		err = runVerifier(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q (want loadgen or verifier)", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "fleetbench:", err)
		os.Exit(1)
	}
}

// agentInfo is one line of agents.json.
type agentInfo struct {
	Name string `json:"name"`
	URL  string `json:"url"`
	AK   string `json:"ak"`
}

// stats is the loadgen's GET /stats.
type stats struct {
	Polls    int            `json:"polls"`
	Overlaps int            `json:"overlaps"`
	Records  map[string]int `json:"records"`
	CPU      float64        `json:"cpu_seconds"`
	RSSMiB   float64        `json:"peak_rss_mib"`
}

func runLoadgen(args []string) error {
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	n := fs.Int("agents", 1000, "simulated agents")
	dir := fs.String("dir", "", "directory for agents.json and loadgen.url")
	initial := fs.Int("initial", 10, "records each agent starts with")
	perPoll := fs.Int("per-poll", 10, "records an agent adds before each evidence it serves (0: none)")
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("-dir is needed")
	}
	if *initial < 1 {
		return errors.New("-initial must be at least 1")
	}
	f, err := loadgen.New(loadgen.Options{Agents: *n, Initial: *initial, PerRound: max(*perPoll, 1), GrowOnPoll: *perPoll > 0})
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/agents/", f.Handler())
	mux.HandleFunc("GET /reference", func(w http.ResponseWriter, r *http.Request) { w.Write(f.Reference()) })
	mux.HandleFunc("POST /freeze", func(w http.ResponseWriter, r *http.Request) { f.SetGrowOnPoll(false) })
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		st := stats{Polls: len(f.Polls()), Overlaps: len(f.Overlaps()), Records: map[string]int{}, CPU: cpuSeconds(), RSSMiB: peakRSS()}
		for _, a := range f.Agents() {
			st.Records[a.Name] = int(a.Records())
		}
		json.NewEncoder(w).Encode(st)
	})
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	base := "http://" + ln.Addr().String()
	var infos []agentInfo
	for i, a := range f.Agents() {
		infos = append(infos, agentInfo{Name: a.Name, URL: loadgen.BaseURL(base, i), AK: a.AKPEM()})
	}
	b, _ := json.Marshal(infos)
	if err := os.WriteFile(filepath.Join(*dir, "agents.json"), b, 0o644); err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	if err := os.WriteFile(filepath.Join(*dir, "loadgen.url"), []byte(base+"\n"), 0o644); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	return srv.Close()
}

// collector implements fleet.Metrics, keeping what the result needs.
type collector struct {
	mu       sync.Mutex
	from     time.Time // samples before it are the warm-up's
	outcomes map[string]int
	durs     []time.Duration
	lags     []time.Duration
	allLags  []time.Duration
	records  int
	db       map[string]*opStat
	first    []time.Duration // durations of the first attestations (warm-up included)
}

type opStat struct {
	N   int           `json:"n"`
	Sum time.Duration `json:"-"`
	Max time.Duration `json:"-"`
}

func (c *collector) measuring() bool { return !time.Now().Before(c.from) }

func (c *collector) Attestation(o fleet.Status, d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.first) < 10 {
		c.first = append(c.first, d)
	}
	if c.measuring() {
		c.outcomes[string(o)]++
		c.durs = append(c.durs, d)
	}
}

func (c *collector) Lag(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.allLags = append(c.allLags, d)
	if c.measuring() {
		c.lags = append(c.lags, d)
	}
}

func (c *collector) Records(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.measuring() {
		c.records += n
	}
}

func (c *collector) Delivery(bool) {}

func (c *collector) DB(op string, d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.measuring() {
		return
	}
	s := c.db[op]
	if s == nil {
		s = &opStat{}
		c.db[op] = s
	}
	s.N++
	s.Sum += d
	s.Max = max(s.Max, d)
}

// result is what the verifier run prints.
type result struct {
	Date            string             `json:"date"`
	Agents          int                `json:"agents"`
	Interval        string             `json:"interval"`
	Concurrency     int                `json:"concurrency"`
	Measured        string             `json:"measured"`
	Attestations    int                `json:"attestations"`
	PerSecond       float64            `json:"attestations_per_second"`
	RecordsPerPoll  float64            `json:"records_per_attestation"`
	Outcomes        map[string]int     `json:"outcomes"`
	AttestMs        map[string]float64 `json:"attestation_ms"`
	LagMs           map[string]float64 `json:"lag_ms"`
	LagAllMs        map[string]float64 `json:"lag_ms_including_warmup"`
	DBMs            map[string]any     `json:"db_ms"`
	FirstMs         []float64          `json:"first_attestations_ms"`
	PeakRSSMiB      float64            `json:"verifier_peak_rss_mib"`
	CPUSeconds      float64            `json:"verifier_cpu_seconds"`
	RegisterSeconds float64            `json:"register_seconds"`
	States          map[string]int     `json:"states_at_end"`
	Behind          int                `json:"agents_behind_at_end"`
	Overlaps        int                `json:"loadgen_overlaps"`
	LoadgenCPU      float64            `json:"loadgen_cpu_seconds"`
	LoadgenRSSMiB   float64            `json:"loadgen_peak_rss_mib"`
	Correct         bool               `json:"every_agent_correct"`
	Problems        []string           `json:"problems,omitempty"`
}

func runVerifier(args []string) error {
	fs := flag.NewFlagSet("verifier", flag.ContinueOnError)
	db := fs.String("db", "", "SQLite file (created) or postgres://... DSN")
	owner := fs.String("owner", "bench", "this replica's name (several fleetbench verifiers may share a PostgreSQL database)")
	register := fs.Bool("register", true, "register the reference and the agents first (false: another replica does)")
	registerOnly := fs.Bool("register-only", false, "register, then exit (for replicas started with -register=false)")
	dir := fs.String("dir", "", "the loadgen's directory")
	interval := fs.Duration("interval", 60*time.Second, "each agent's interval")
	duration := fs.Duration("duration", 5*time.Minute, "how long to run after registering")
	warmup := fs.Duration("warmup", 0, "leave the first part of the run out of the figures")
	conc := fs.Int("concurrency", 0, "engine concurrency (0: the engine's default)")
	verbose := fs.Bool("v", false, "the engine's warnings and errors on stderr")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the measured part here")
	settle := fs.Duration("settle", 0, "after the run, keep attesting (no figures) until every agent is current, at most this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *db == "" || *dir == "" {
		return errors.New("-db and -dir are needed")
	}
	b, err := os.ReadFile(filepath.Join(*dir, "agents.json"))
	if err != nil {
		return err
	}
	var infos []agentInfo
	if err := json.Unmarshal(b, &infos); err != nil {
		return err
	}
	ub, err := os.ReadFile(filepath.Join(*dir, "loadgen.url"))
	if err != nil {
		return err
	}
	lg := strings.TrimSpace(string(ub))
	ref, err := get(lg + "/reference")
	if err != nil {
		return err
	}
	ctx := context.Background()
	st, err := sqlstore.Open(ctx, *db)
	if err != nil {
		return err
	}
	defer st.Close()
	regStart := time.Now()
	if *register || *registerOnly {
		if err := st.PutReference(ctx, fleet.Reference{Name: "fleet", Body: ref}, false); err != nil {
			return err
		}
		for _, a := range infos {
			if _, err := st.AddAgent(ctx, fleet.Spec{Name: a.Name, URL: a.URL, AK: a.AK, Reference: "fleet", PCRs: []int{23},
				Banks: []string{"sha256"}, Interval: *interval}, time.Now()); err != nil {
				return fmt.Errorf("register %s: %w", a.Name, err)
			}
		}
		if *registerOnly {
			return nil
		}
	}
	reg := time.Since(regStart)
	col := &collector{from: time.Now().Add(*warmup), outcomes: map[string]int{}, db: map[string]*opStat{}}
	tr := &http.Transport{MaxIdleConns: 4096, MaxIdleConnsPerHost: 4096, IdleConnTimeout: 2 * time.Minute}
	client := &http.Client{Transport: tr}
	logger := slog.New(slog.DiscardHandler)
	if *verbose {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	e := engine.New(st, engine.Options{Owner: *owner, Concurrency: *conc, Metrics: col, Logger: logger,
		Client: func(fleet.Spec) (*http.Client, error) { return client, nil }})
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	cpu0 := cpuSeconds()
	go func() { done <- e.Run(rctx) }()
	if *cpuprofile != "" {
		time.Sleep(*warmup)
		pf, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		pprof.StartCPUProfile(pf)
		time.Sleep(*duration - *warmup)
		pprof.StopCPUProfile()
		pf.Close()
	} else {
		time.Sleep(*duration)
	}
	col.mu.Lock()
	end := time.Now()
	res := result{Date: end.UTC().Format(time.RFC3339), Agents: len(infos), Interval: interval.String(), Concurrency: *conc,
		Measured: end.Sub(col.from).Round(time.Second).String(), Outcomes: col.outcomes, RegisterSeconds: reg.Seconds()}
	for _, n := range col.outcomes {
		res.Attestations += n
	}
	res.PerSecond = float64(res.Attestations) / end.Sub(col.from).Seconds()
	if res.Attestations > 0 {
		res.RecordsPerPoll = float64(col.records) / float64(res.Attestations)
	}
	res.AttestMs = percentiles(col.durs)
	res.LagMs = percentiles(col.lags)
	res.LagAllMs = percentiles(col.allLags)
	res.DBMs = map[string]any{}
	for op, s := range col.db {
		res.DBMs[op] = map[string]float64{"n": float64(s.N), "mean": ms(s.Sum / time.Duration(max(s.N, 1))), "max": ms(s.Max)}
	}
	for _, d := range col.first {
		res.FirstMs = append(res.FirstMs, ms(d))
	}
	col.from = time.Now().Add(time.Hour) // stop measuring
	col.mu.Unlock()
	res.CPUSeconds = cpuSeconds() - cpu0

	// Settle: the logs stop growing; every agent must end trusted, with
	// the verifier holding every record its agent has.
	if rsp, err := http.Post(lg+"/freeze", "", nil); err == nil {
		rsp.Body.Close()
	}
	deadline := time.Now().Add(*settle)
	for {
		res.Problems, res.States, res.Behind = nil, map[string]int{}, 0
		var sb []byte
		sb, err = get(lg + "/stats")
		if err != nil {
			break
		}
		var ls stats
		if err = json.Unmarshal(sb, &ls); err != nil {
			break
		}
		res.Overlaps, res.LoadgenCPU, res.LoadgenRSSMiB = ls.Overlaps, ls.CPU, ls.RSSMiB
		agents, err2 := st.ListAgents(ctx, fleet.Filter{})
		if err = err2; err != nil {
			break
		}
		for _, a := range agents {
			res.States[string(a.Status)]++
			if a.Status != fleet.Trusted {
				res.Problems = appendLimited(res.Problems, fmt.Sprintf("%s: %s (%s)", a.Name, a.Status, a.Reason))
				continue
			}
			full, err := st.Agent(ctx, a.Name) // lists leave the boot state out
			if err != nil {
				res.Problems = appendLimited(res.Problems, fmt.Sprintf("%s: %v", a.Name, err))
				continue
			}
			s, err := verifier.ParseState(full.Boot.State)
			if err != nil {
				res.Problems = appendLimited(res.Problems, fmt.Sprintf("%s: state: %v", a.Name, err))
				continue
			}
			if int(s.Records()) != ls.Records[a.Name] {
				res.Behind++
			}
		}
		if len(res.Problems) == 0 && res.Behind == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	cancel()
	if rerr := <-done; rerr != nil && !errors.Is(rerr, context.Canceled) && err == nil {
		err = rerr
	}
	if err != nil {
		return err
	}
	if res.Behind > 0 {
		res.Problems = appendLimited(res.Problems, fmt.Sprintf("%d agents hold records the verifier has not verified yet", res.Behind))
	}
	if res.Overlaps > 0 {
		res.Problems = appendLimited(res.Problems, fmt.Sprintf("%d polls overlapped another of the same agent", res.Overlaps))
	}
	res.Correct = len(res.Problems) == 0 && res.States["trusted"] == len(infos)
	runtime.GC()
	res.PeakRSSMiB = peakRSS()
	out, _ := json.MarshalIndent(res, "", "  ")
	fmt.Println(string(out))
	return nil
}

func appendLimited(l []string, s string) []string {
	if len(l) < 20 {
		return append(l, s)
	}
	return l
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func percentiles(ds []time.Duration) map[string]float64 {
	if len(ds) == 0 {
		return nil
	}
	s := slices.Clone(ds)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	at := func(p float64) float64 { return ms(s[min(len(s)-1, int(p*float64(len(s))))]) }
	return map[string]float64{"n": float64(len(s)), "p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": ms(s[len(s)-1])}
}

func get(u string) ([]byte, error) {
	rsp, err := http.Get(u)
	if err != nil {
		return nil, err
	}
	defer rsp.Body.Close()
	if rsp.StatusCode != 200 {
		return nil, fmt.Errorf("GET %s: %s", u, rsp.Status)
	}
	return io.ReadAll(rsp.Body)
}

// peakRSS is the process's peak resident set (VmHWM), in MiB.
func peakRSS() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			return kb / 1024
		}
	}
	return 0
}

// cpuSeconds is the process's user and system CPU time.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}
