// Command rimon measures files into a TPM PCR, keeps a replayable log of
// every measurement, and checks log and TPM against each other.
//
// Exit codes:
//
//	0  success
//	1  a check failed: log and TPM disagree
//	2  error: bad input, unreadable file, TPM or log trouble
//	3  usage error: unknown command or flag, wrong arguments
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// Exit codes; each means one thing.
const (
	exitOK    = 0
	exitCheck = 1
	exitError = 2
	exitUsage = 3
)

// exitErr carries an exit code with the error that causes it.
type exitErr struct {
	code int
	err  error
}

func (e *exitErr) Error() string { return e.err.Error() }
func (e *exitErr) Unwrap() error { return e.err }

func usageErr(format string, a ...any) error {
	return &exitErr{code: exitUsage, err: fmt.Errorf(format, a...)}
}

func checkErr(err error) error { return &exitErr{code: exitCheck, err: err} }

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes the command line and returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	stderr = newTermSafe(stderr) // messages name files from monitored machines
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRootCmd(stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	for _, line := range strings.Split(err.Error(), "\n") {
		fmt.Fprintf(stderr, "rimon: %s\n", line)
	}
	var ee *exitErr
	if errors.As(err, &ee) {
		return ee.code
	}
	if isUsage(err) {
		return exitUsage
	}
	return exitError
}
