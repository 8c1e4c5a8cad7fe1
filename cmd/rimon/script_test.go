package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
)

// TestScript runs the sessions in testdata/script/*.txtar. Each script reads
// like a terminal session from the README: the commands a user types and what
// rimon prints. Every rimon in a script is a separate process, started from
// this test binary through TestMain's RIMON_AS_MAIN switch, so a script sees
// exactly what a user sees: stdout, stderr and the exit code, nothing more.
//
// Besides testscript's own commands (see the testscript package), a script
// can use:
//
//	rimon ARGS...          run rimon; "! rimon" expects a non-zero exit
//	status N               the last rimon exited with code N
//	lines stdout|stderr N  the last command printed exactly N lines there
//	mkfifo PATH            make a named pipe
//	replace FILE OLD NEW   replace every OLD in FILE with NEW
//	envsubst IN OUT        write IN to OUT with $VARS (such as $WORK) expanded
//
// Every rimon run is also held to the contract in the README, whatever the
// script checks: the exit code is 0, 1, 2 or 3, every line it writes to
// stderr starts with "rimon: ", and a failure says why on stderr.
//
// $VECTORS is testdata/vectors, the logs whose replay an independent
// implementation (testdata/vectors/gen.py) computed.
func TestScript(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	vectors, err := filepath.Abs(filepath.Join("..", "..", "testdata", "vectors"))
	if err != nil {
		t.Fatal(err)
	}
	testscript.Run(t, testscript.Params{
		Dir:                "testdata/script",
		RequireUniqueNames: true,
		Setup: func(e *testscript.Env) error {
			// The environment testscript starts from holds neither
			// RIMON_TPM nor RIMON_LOG, so nothing reaches a real TPM or
			// /run/rimon unless a script asks for it.
			e.Setenv("RIMON_AS_MAIN", "1")
			e.Setenv("VECTORS", vectors)
			noneYet := -1
			e.Values[lastExitKey{}] = &noneYet
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"rimon":    func(ts *testscript.TestScript, neg bool, args []string) { cmdRimon(ts, neg, exe, args) },
			"status":   cmdStatus,
			"lines":    cmdLines,
			"mkfifo":   cmdMkfifo,
			"replace":  cmdReplace,
			"envsubst": cmdEnvsubst,
		},
	})
}

// lastExitKey keys the exit code of a script's last rimon in its Values.
type lastExitKey struct{}

// cmdRimon runs rimon as its own process, in the script's directory and
// environment, and checks the contract every rimon command keeps.
func cmdRimon(ts *testscript.TestScript, neg bool, exe string, args []string) {
	err := ts.Exec(exe, args...)
	code := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			ts.Fatalf("rimon did not run: %v", err)
		}
		code = ee.ExitCode()
	}
	*ts.Value(lastExitKey{}).(*int) = code
	if code < exitOK || code > exitUsage {
		ts.Fatalf("rimon exited %d: the only exit codes are 0, 1, 2 and 3", code)
	}
	if stderr := ts.ReadFile("stderr"); stderr != "" {
		if !strings.HasSuffix(stderr, "\n") {
			ts.Fatalf("stderr does not end with a newline: %q", stderr)
		}
		for i, line := range strings.Split(strings.TrimSuffix(stderr, "\n"), "\n") {
			if !strings.HasPrefix(line, "rimon: ") {
				ts.Fatalf("stderr line %d does not start with \"rimon: \": %q", i+1, line)
			}
		}
	} else if code != 0 {
		ts.Fatalf("rimon exited %d and said nothing on stderr", code)
	}
	switch {
	case code != 0 && !neg:
		ts.Fatalf("rimon exited %d, want success", code)
	case code == 0 && neg:
		ts.Fatalf("rimon succeeded, want failure")
	}
}

// cmdStatus checks the exit code of the script's last rimon.
func cmdStatus(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: status N")
	}
	want, err := strconv.Atoi(args[0])
	if err != nil {
		ts.Fatalf("usage: status N: %v", err)
	}
	got := *ts.Value(lastExitKey{}).(*int)
	if got < 0 {
		ts.Fatalf("status: no rimon has run yet")
	}
	if got != want {
		ts.Fatalf("rimon exited %d, want %d", got, want)
	}
}

// cmdLines checks how many lines the last command printed on stdout or stderr.
func cmdLines(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 || (args[0] != "stdout" && args[0] != "stderr") {
		ts.Fatalf("usage: lines stdout|stderr N")
	}
	want, err := strconv.Atoi(args[1])
	if err != nil {
		ts.Fatalf("usage: lines stdout|stderr N: %v", err)
	}
	text := ts.ReadFile(args[0])
	got := strings.Count(text, "\n")
	if text != "" && !strings.HasSuffix(text, "\n") {
		got++
	}
	if got != want {
		ts.Fatalf("%s has %d lines, want %d:\n%s", args[0], got, want, text)
	}
}

// cmdMkfifo makes named pipes.
func cmdMkfifo(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) == 0 {
		ts.Fatalf("usage: mkfifo PATH...")
	}
	for _, p := range args {
		ts.Check(syscall.Mkfifo(ts.MkAbs(p), 0o600))
	}
}

// cmdReplace edits a file in place, as a user with sed would; it fails when
// OLD is not in the file, so a script cannot edit nothing by mistake.
func cmdReplace(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 3 {
		ts.Fatalf("usage: replace FILE OLD NEW")
	}
	name := ts.MkAbs(args[0])
	text := ts.ReadFile(args[0])
	if !strings.Contains(text, args[1]) {
		ts.Fatalf("replace: %q is not in %s", args[1], args[0])
	}
	fi, err := os.Stat(name)
	ts.Check(err)
	ts.Check(os.WriteFile(name, []byte(strings.ReplaceAll(text, args[1], args[2])), fi.Mode().Perm()))
}

// cmdEnvsubst writes IN to OUT with $VAR and ${VAR} replaced by their values,
// as gettext's envsubst does: policies need absolute paths, and a script's
// directory ($WORK) is only known when it runs.
func cmdEnvsubst(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: envsubst IN OUT")
	}
	var missing []string
	out := os.Expand(ts.ReadFile(args[0]), func(name string) string {
		v := ts.Getenv(name)
		if v == "" {
			missing = append(missing, name)
		}
		return v
	})
	if len(missing) > 0 {
		ts.Fatalf("envsubst: %s: unset variable(s) %v", args[0], missing)
	}
	ts.Check(os.WriteFile(ts.MkAbs(args[1]), []byte(out), 0o644))
}
