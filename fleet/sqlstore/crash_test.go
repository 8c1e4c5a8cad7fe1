package sqlstore

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rimon-dev/rimon/fleet"
)

const (
	crashEnvDSN  = "RIMON_SQLSTORE_CRASH_DSN"
	crashAgents  = 4
	crashKills   = 20
	crashRebootN = 7
)

var crashEndpoints = []string{"https://one.example/h", "https://two.example/h"}

// crashStatus is the state the crash child stores at its n-th result of
// an agent: it alternates, so that every result is a change of state.
func crashStatus(n int) fleet.Status {
	if n%2 == 1 {
		return fleet.Trusted
	}
	return fleet.Untrusted
}

// TestCrashChild is the process TestCrash kills: it stores results for
// every agent in a loop (one goroutine per agent) and prints "AGENT N"
// after each SaveResult returned. Failures counts the results stored.
func TestCrashChild(t *testing.T) {
	dsn := os.Getenv(crashEnvDSN)
	if dsn == "" {
		t.Skip("run by TestCrash")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute) // a bound if nobody kills it
	defer cancel()
	s, err := Open(ctx, dsn)
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(3)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := 0; i < crashAgents; i++ {
		wg.Add(1)
		go func(name string) {
			defer wg.Done()
			for ctx.Err() == nil {
				a, err := s.Agent(ctx, name)
				if err != nil {
					fmt.Println("agent:", err)
					os.Exit(3)
				}
				n := a.Failures + 1
				at := t0.Add(time.Duration(n) * time.Second)
				r := fleet.Result{AgentID: a.ID, Version: a.Version, At: at, Status: crashStatus(n), Reason: "round " + strconv.Itoa(n),
					Findings: []byte(`[{"path":"/f"}]`), Failures: n, NextDue: at.Add(time.Second),
					Boot: &fleet.Boot{Known: true, ResetCount: uint32(n / crashRebootN), State: []byte(`{"round":` + strconv.Itoa(n) + `}`)}}
				if n%crashRebootN == 0 {
					r.NewBoot = true
					r.Events = []fleet.Transition{{Event: "reboot", Reason: "round " + strconv.Itoa(n)}}
				}
				for j := 0; j < 10; j++ {
					r.Observations = append(r.Observations, fleet.Observation{Path: fmt.Sprintf("/f%d", (n*10+j)%200), Kind: "file",
						SHA256: fmt.Sprintf("%064x", n), Record: uint64(n*10 + j), Latest: true})
				}
				if err := s.SaveResult(ctx, r); err != nil {
					fmt.Println("save:", err)
					os.Exit(3)
				}
				mu.Lock()
				fmt.Printf("%s %d\n", name, n)
				mu.Unlock()
			}
		}(fmt.Sprintf("agent-%d", i))
	}
	wg.Wait()
}

// TestCrash kills a process storing results 20 times at random moments;
// after each kill the database opens, passes PRAGMA integrity_check, and
// holds exactly one state transition per stored change of state (with one
// delivery per endpoint), none lost and none twice, and every result the
// child saw stored.
func TestCrash(t *testing.T) {
	if os.Getenv(crashEnvDSN) != "" {
		t.Skip("in the child")
	}
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			dsn := b.dsn(t)
			s := openStore(t, dsn)
			if err := s.SetEndpoints(bg, crashEndpoints); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < crashAgents; i++ {
				if _, err := s.AddAgent(bg, spec(fmt.Sprintf("agent-%d", i)), t0); err != nil {
					t.Fatal(err)
				}
			}
			s.Close()
			rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
			seen := map[string]int{}
			for k := 0; k < crashKills; k++ {
				lines := 1 + rng.IntN(60)
				crashOnce(t, dsn, lines, seen)
				checkCrashInvariants(t, dsn, seen)
				if t.Failed() {
					t.Fatalf("after kill %d", k+1)
				}
			}
			t.Logf("results stored per agent after %d kills: %v", crashKills, seen)
		})
	}
}

// crashOnce runs the child until it printed lines results, then kills it
// with SIGKILL; seen records the highest result the child printed per
// agent.
func crashOnce(t *testing.T, dsn string, lines int, seen map[string]int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnvDSN+"="+dsn)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	got := 0
	for got < lines && sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 || !strings.HasPrefix(f[0], "agent-") {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("crash child: %s", sc.Text())
		}
		n, _ := strconv.Atoi(f[1])
		if n > seen[f[0]] {
			seen[f[0]] = n
		}
		got++
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Lines printed before the kill landed count as seen too.
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 {
			if n, err := strconv.Atoi(f[1]); err == nil && n > seen[f[0]] {
				seen[f[0]] = n
			}
		}
	}
	err = cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
		t.Fatalf("crash child ended before it was killed: %v (read %d of %d lines)", err, got, lines)
	}
}

func checkCrashInvariants(t *testing.T, dsn string, seen map[string]int) {
	t.Helper()
	s := openStore(t, dsn)
	defer s.Close()
	if s.d.name == "sqlite" {
		var res string
		if err := s.r.QueryRow(`PRAGMA integrity_check`).Scan(&res); err != nil || res != "ok" {
			t.Errorf("PRAGMA integrity_check = %q, %v", res, err)
		}
		var fk int
		rows, err := s.r.Query(`PRAGMA foreign_key_check`)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			fk++
		}
		rows.Close()
		if fk != 0 {
			t.Errorf("PRAGMA foreign_key_check: %d violations", fk)
		}
	}
	for i := 0; i < crashAgents; i++ {
		name := fmt.Sprintf("agent-%d", i)
		a := mustAgent(t, s, name)
		n := a.Failures
		if n < seen[name] {
			t.Errorf("%s: %d results stored, but the child saw %d stored: a committed result was lost", name, n, seen[name])
		}
		if n > 0 && (a.Status != crashStatus(n) || a.Reason != "round "+strconv.Itoa(n) || string(a.Boot.State) != `{"round":`+strconv.Itoa(n)+`}`) {
			t.Errorf("%s: result %d half stored: state %s reason %q boot %s", name, n, a.Status, a.Reason, a.Boot.State)
		}
		h, err := s.History(bg, name, 0)
		if err != nil {
			t.Fatal(err)
		}
		var states, reboots int
		prev := fleet.Pending
		for j := len(h) - 1; j >= 0; j-- { // oldest first
			switch x := h[j]; x.Event {
			case "state":
				states++
				if x.From != prev || x.To != crashStatus(states) || x.Reason != "round "+strconv.Itoa(states) {
					t.Errorf("%s: transition %d: %s → %s (%s), want %s → %s (round %d)", name, states, x.From, x.To, x.Reason, prev, crashStatus(states), states)
				}
				prev = x.To
			case "reboot":
				reboots++
			}
		}
		if states != n {
			t.Errorf("%s: %d state transitions for %d changes of state", name, states, n)
		}
		if reboots != n/crashRebootN {
			t.Errorf("%s: %d reboot events, want %d", name, reboots, n/crashRebootN)
		}
		if n > 0 && prev != a.Status {
			t.Errorf("%s: last transition to %s, state %s", name, prev, a.Status)
		}
		var obs int
		if err := s.r.QueryRow(`SELECT COUNT(*) FROM observations WHERE agent_id = $1`, a.ID).Scan(&obs); err != nil {
			t.Fatal(err)
		}
		if obs > 200 {
			t.Errorf("%s: %d observations, at most 200 distinct", name, obs)
		}
	}
	// Every state transition has exactly one delivery per endpoint.
	var bad, total, transitions int
	if err := s.r.QueryRow(`SELECT COUNT(*) FROM (SELECT t.id FROM transitions t LEFT JOIN deliveries d ON d.transition = t.id
WHERE t.event = 'state' GROUP BY t.id HAVING COUNT(d.id) <> $1) x`, len(crashEndpoints)).Scan(&bad); err != nil {
		t.Fatal(err)
	}
	if err := s.r.QueryRow(`SELECT COUNT(*) FROM deliveries`).Scan(&total); err != nil {
		t.Fatal(err)
	}
	if err := s.r.QueryRow(`SELECT COUNT(*) FROM transitions WHERE event = 'state'`).Scan(&transitions); err != nil {
		t.Fatal(err)
	}
	if bad != 0 || total != transitions*len(crashEndpoints) {
		t.Errorf("%d transitions without one delivery per endpoint; %d deliveries for %d transitions", bad, total, transitions)
	}
}
