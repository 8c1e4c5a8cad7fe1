// Package sqltest hands tests a fresh fleet database: a SQLite file in the
// test's temporary directory, or a database on a private PostgreSQL
// cluster that the test process starts itself (initdb in a temporary
// directory, a free port on 127.0.0.1, its unix socket in that directory),
// shared by the tests of the process and stopped when they end.
//
// It is for tests only. A package whose tests use [Postgres] calls [Main]
// from its TestMain, which stops the cluster and removes its directory:
//
//	func TestMain(m *testing.M) { os.Exit(sqltest.Main(m)) }
//
// (If the process dies first, the server gets SIGQUIT from the kernel and
// stops; only its directory under $TMPDIR is left.)
//
// PostgreSQL's binaries are looked up under /usr/lib/postgresql/*/bin
// (Debian's packages; `make deps` installs them) or in $RIMON_PG_BIN; a
// test asking for PostgreSQL without them fails, saying so.
package sqltest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Backend is a database the fleet tests run on.
type Backend struct {
	Name string
	// DSN hands out a fresh, empty database.
	DSN func(t testing.TB) string
}

// Backends lists SQLite and PostgreSQL.
func Backends() []Backend {
	return []Backend{{"sqlite", SQLite}, {"postgres", Postgres}}
}

// SQLite returns the DSN of a new SQLite file in t's temporary directory.
func SQLite(t testing.TB) string {
	return "sqlite:" + filepath.Join(t.TempDir(), "verifier.db")
}

var (
	mu       sync.Mutex
	running  *Cluster
	startErr error
	dbs      atomic.Int64
)

// Postgres returns the DSN of a new database on the process's private
// PostgreSQL cluster, started on first use.
func Postgres(t testing.TB) string {
	t.Helper()
	c, err := shared()
	if err != nil {
		t.Fatalf("sqltest: %v", err)
	}
	dsn, err := c.CreateDatabase(context.Background(), fmt.Sprintf("rimon_test_%d", dbs.Add(1)))
	if err != nil {
		t.Fatalf("sqltest: %v", err)
	}
	return dsn
}

func shared() (*Cluster, error) {
	mu.Lock()
	defer mu.Unlock()
	if running == nil && startErr == nil {
		running, startErr = Start(context.Background())
	}
	return running, startErr
}

// Main runs the tests, then stops the shared cluster if one was started.
func Main(m *testing.M) int {
	code := m.Run()
	mu.Lock()
	defer mu.Unlock()
	if running != nil {
		if err := running.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "sqltest:", err)
		}
		running = nil
	}
	return code
}

// Cluster is a private PostgreSQL server.
type Cluster struct {
	// Dir holds the data directory, the socket and the log.
	Dir  string
	Port int
	cmd  *exec.Cmd
	done chan error
}

// ErrNoPostgres says PostgreSQL's binaries are missing.
var ErrNoPostgres = errors.New("PostgreSQL is not installed (no initdb under /usr/lib/postgresql/*/bin or $RIMON_PG_BIN): `make deps` installs it")

// BinDir finds PostgreSQL's binaries (the newest version installed).
func BinDir() (string, error) {
	if d := os.Getenv("RIMON_PG_BIN"); d != "" {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err != nil {
			return "", fmt.Errorf("%w: %v", ErrNoPostgres, err)
		}
		return d, nil
	}
	m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(m) == 0 {
		return "", ErrNoPostgres
	}
	sort.Slice(m, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(m[i]))))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(m[j]))))
		return vi < vj
	})
	return filepath.Dir(m[len(m)-1]), nil
}

// Start initializes and starts a cluster in a new temporary directory, on
// a free port of 127.0.0.1; as root, the server runs as the postgres user
// (initdb refuses root).
func Start(ctx context.Context) (*Cluster, error) {
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "rimon-pg-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{Dir: dir}
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("running as root, PostgreSQL needs the postgres user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
		if err := os.Chown(dir, uid, gid); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	data := filepath.Join(dir, "data")
	initdb := exec.CommandContext(ctx, filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync", "--no-instructions")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	initdb.Dir = dir
	if out, err := initdb.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %v\n%s", err, out)
	}
	c.Port, err = freePort()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "postgres.log"))
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	defer logf.Close()
	c.cmd = exec.Command(filepath.Join(bin, "postgres"), "-D", data, "-p", strconv.Itoa(c.Port), "-k", dir,
		"-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200", "-c", "shared_buffers=32MB")
	c.cmd.Dir = dir
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	// SIGQUIT is PostgreSQL's immediate shutdown: if this process dies,
	// the server does not outlive it.
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGQUIT, Setpgid: true}
	if err := c.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	c.done = make(chan error, 1)
	go func() { c.done <- c.cmd.Wait() }()
	if err := c.waitReady(ctx); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

// DSN is the URL of a database of the cluster.
func (c *Cluster) DSN(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.Port, db)
}

func (c *Cluster) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case err := <-c.done:
			log, _ := os.ReadFile(filepath.Join(c.Dir, "postgres.log"))
			return fmt.Errorf("postgres exited: %v\n%s", err, log)
		default:
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgx.Connect(cctx, c.DSN("postgres"))
		cancel()
		if err == nil {
			conn.Close(ctx)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres on port %d not ready: %w", c.Port, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// CreateDatabase creates a database and returns its DSN.
func (c *Cluster) CreateDatabase(ctx context.Context, name string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.DSN("postgres"))
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	return c.DSN(name), nil
}

// Stop stops the server (fast shutdown) and removes its directory.
func (c *Cluster) Stop() error {
	var err error
	if c.cmd != nil && c.cmd.Process != nil {
		select {
		case <-c.done:
		default:
			c.cmd.Process.Signal(syscall.SIGINT) // fast shutdown
			select {
			case <-c.done:
			case <-time.After(30 * time.Second):
				c.cmd.Process.Kill()
				<-c.done
				err = errors.New("postgres did not stop within 30 s: killed")
			}
		}
	}
	return errors.Join(err, os.RemoveAll(c.Dir))
}

// Restart stops the server and starts it again on the same port and data
// (for tests of a database restart under load).
func (c *Cluster) Restart(ctx context.Context, immediate bool) error {
	sig := syscall.SIGINT
	if immediate {
		sig = syscall.SIGQUIT
	}
	c.cmd.Process.Signal(sig)
	<-c.done
	logf, err := os.OpenFile(filepath.Join(c.Dir, "postgres.log"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(c.cmd.Path, c.cmd.Args[1:]...)
	cmd.Dir, cmd.Stdout, cmd.Stderr, cmd.SysProcAttr = c.cmd.Dir, logf, logf, c.cmd.SysProcAttr
	if err := cmd.Start(); err != nil {
		return err
	}
	c.cmd = cmd
	c.done = make(chan error, 1)
	go func() { c.done <- cmd.Wait() }()
	return c.waitReady(ctx)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
