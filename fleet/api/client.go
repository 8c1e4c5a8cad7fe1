package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// MaxReply bounds what the client reads of a reply.
const MaxReply = 256 << 20

// Client talks to a fleet verifier's API; rimon fleet is built on it.
type Client struct {
	// Base is the verifier's URL, https://HOST:PORT.
	Base string
	// Token is sent as Authorization: Bearer TOKEN.
	Token string
	// HTTP is the client used (nil: one with a 60 s timeout).
	HTTP *http.Client
}

// StatusError is an error reply: the status and the verifier's message.
type StatusError struct {
	Status  int
	Message string
	Field   string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("the verifier answered %d %s: %s", e.Status, http.StatusText(e.Status), e.Message)
}

// ErrUnreachable wraps a request that got no reply (network, TLS, timeout).
var ErrUnreachable = errors.New("verifier unreachable")

func (c *Client) do(ctx context.Context, method, path string, query url.Values, in, out any) error {
	u := strings.TrimSuffix(c.Base, "/") + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return fmt.Errorf("verifier URL %q: %w", c.Base, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 60 * time.Second}
	}
	resp, err := hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is said once, below
		}
		return fmt.Errorf("%w: %s %s: %v", ErrUnreachable, method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxReply+1))
	if err != nil {
		return fmt.Errorf("%w: %s %s: reading the reply: %v", ErrUnreachable, method, u, err)
	}
	if len(b) > MaxReply {
		return fmt.Errorf("%s %s: the reply is larger than %d bytes", method, u, MaxReply)
	}
	if resp.StatusCode >= 300 {
		var e Error
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(b))
			if len(e.Error) > 200 {
				e.Error = e.Error[:200] + "..."
			}
			if e.Error == "" {
				e.Error = "(no message)"
			}
		}
		return &StatusError{Status: resp.StatusCode, Message: e.Error, Field: e.Field}
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: the reply is not what the API gives: %v", method, u, err)
	}
	return nil
}

func agentPath(name string) string { return "/v1/agents/" + url.PathEscape(name) }

// ListAgents lists the agents, filtered by state and a substring of the
// name when they are not empty.
func (c *Client) ListAgents(ctx context.Context, state, name string) ([]Agent, error) {
	q := url.Values{}
	if state != "" {
		q.Set("state", state)
	}
	if name != "" {
		q.Set("name", name)
	}
	var out []Agent
	return out, c.do(ctx, "GET", "/v1/agents", q, nil, &out)
}

// Agent gets one agent with its last result and events.
func (c *Client) Agent(ctx context.Context, name string) (*Agent, error) {
	var out Agent
	if err := c.do(ctx, "GET", agentPath(name), nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// AddAgent registers an agent; with Push the reply carries its push token.
func (c *Client) AddAgent(ctx context.Context, s AgentSpec) (*Agent, error) {
	var out Agent
	if err := c.do(ctx, "POST", "/v1/agents", nil, s, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// UpdateAgent replaces an agent's registration.
func (c *Client) UpdateAgent(ctx context.Context, name string, s AgentSpec) (*Agent, error) {
	var out Agent
	if err := c.do(ctx, "PUT", agentPath(name), nil, s, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RemoveAgent removes an agent and its history.
func (c *Client) RemoveAgent(ctx context.Context, name string) error {
	return c.do(ctx, "DELETE", agentPath(name), nil, nil, nil)
}

// History lists an agent's history, newest first (limit 0: the server's default).
func (c *Client) History(ctx context.Context, name string, limit int) ([]Event, error) {
	q := url.Values{}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out []Event
	return out, c.do(ctx, "GET", agentPath(name)+"/history", q, nil, &out)
}

// Clear acknowledges an agent's state (compromised, most often): it goes
// back to pending and is attested again from its whole log.
func (c *Client) Clear(ctx context.Context, name, reason string) (*Agent, error) {
	var out Agent
	if err := c.do(ctx, "POST", agentPath(name)+"/clear", nil, ClearRequest{Reason: reason}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Enroll asks for an agent to be enrolled again (an operator's decision,
// after it showed another AK or EK): its next round enrolls it.
func (c *Client) Enroll(ctx context.Context, name, reason string) (*Agent, error) {
	var out Agent
	if err := c.do(ctx, "POST", agentPath(name)+"/enroll", nil, EnrollRequest{Reason: reason}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// References lists the stored references.
func (c *Client) References(ctx context.Context) ([]Reference, error) {
	var out []Reference
	return out, c.do(ctx, "GET", "/v1/references", nil, nil, &out)
}

// Reference gets a reference with its body.
func (c *Client) Reference(ctx context.Context, name string) (*Reference, error) {
	var out Reference
	if err := c.do(ctx, "GET", "/v1/references/"+url.PathEscape(name), nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// AddReference stores a new reference.
func (c *Client) AddReference(ctx context.Context, name string, body []byte) (*Reference, error) {
	var out Reference
	if err := c.do(ctx, "POST", "/v1/references", nil, ReferenceRequest{Name: name, Body: string(body)}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ReplaceReference replaces a reference; the verifier re-evaluates the
// agents that use it before it answers.
func (c *Client) ReplaceReference(ctx context.Context, name string, body []byte) (*Reference, error) {
	var out Reference
	if err := c.do(ctx, "PUT", "/v1/references/"+url.PathEscape(name), nil, ReferenceRequest{Name: name, Body: string(body)}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Summary counts the agents per state.
func (c *Client) Summary(ctx context.Context) (*Summary, error) {
	var out Summary
	if err := c.do(ctx, "GET", "/v1/summary", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
