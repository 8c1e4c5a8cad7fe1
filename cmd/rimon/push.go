package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	attestagent "github.com/rimon-dev/rimon/attest/agent"
	"github.com/spf13/cobra"
)

// pushFlags are rimon watch's --push flags.
type pushFlags struct {
	url, tokenFile, name string
	token                string // read by check
}

func (p *pushFlags) flags(c *cobra.Command) {
	c.Flags().StringVar(&p.url, "push", "", "push evidence to the fleet verifier at URL (POST URL/v1/push/NAME/...); off by default")
	c.Flags().StringVar(&p.tokenFile, "token-file", "", "with --push, the file holding this agent's push token (not readable by others)")
	c.Flags().StringVar(&p.name, "push-name", "", "with --push, the name the agent is registered under (default: the host name)")
}

// check validates the flags together and reads the token.
func (p *pushFlags) check() error {
	if p.url == "" {
		if p.tokenFile != "" || p.name != "" {
			return usageErr("--token-file and --push-name go with --push")
		}
		return nil
	}
	u, err := url.Parse(p.url)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return usageErr("--push %q: want http:// or https://HOST[:PORT] (no user information)", p.url)
	}
	if p.tokenFile == "" {
		return usageErr("--push needs --token-file")
	}
	p.token, err = readPushToken(p.tokenFile)
	return err
}

// readPushToken reads the token (the file's first line), refusing a file
// that others may read or write.
func readPushToken(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("--token-file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("--token-file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("--token-file %s: not a regular file", path)
	}
	if m := fi.Mode().Perm(); m&0o007 != 0 {
		return "", fmt.Errorf("--token-file %s: others may read or write it (mode %04o): chmod o-rwx %s", path, m, path)
	}
	b := make([]byte, 4097)
	n, _ := f.Read(b)
	if n > 4096 {
		return "", fmt.Errorf("--token-file %s: longer than 4096 bytes", path)
	}
	line, _, _ := bytes.Cut(b[:n], []byte("\n"))
	tok := strings.TrimSpace(string(line))
	if tok == "" {
		return "", fmt.Errorf("--token-file %s: no token on its first line", path)
	}
	return tok, nil
}

// start runs the push loop until ctx ends or stop is called. Rounds are
// logged with the verifier's verdict; the token never is.
func (p *pushFlags) start(ctx context.Context, logger *slog.Logger, ho attestagent.HandlerOptions) (stop func(), err error) {
	tok := p.token
	name := p.name
	if name == "" {
		if name, err = os.Hostname(); err != nil {
			return nil, fmt.Errorf("--push-name not given, and the host name is unknown: %w", err)
		}
	}
	o := attestagent.PushOptions{URL: p.url, Name: name, Token: tok, Evidence: ho.Evidence,
		Report: func(r attestagent.PushRound) {
			if r.Err != nil {
				logger.Warn("push failed", "verifier", p.url, "name", name, "err", r.Err, "failures", r.Failures, "retry_in", r.Wait.Round(time.Millisecond))
				return
			}
			logger.Info("pushed evidence", "verifier", p.url, "name", name, "records", r.Records, "since", r.Since,
				"state", r.Reply.State, "reason", r.Reply.Reason, "next_in", r.Wait.Round(time.Millisecond))
		}}
	if err := o.Check(); err != nil {
		return nil, usageErr("%v", err)
	}
	pctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { attestagent.Push(pctx, o); close(done) }()
	logger.Info("pushing evidence", "verifier", p.url, "name", name)
	return func() { cancel(); <-done }, nil
}
