package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/rimon-dev/rimon/attest/enroll"
)

// FetchIdentity asks an agent for its identity (GET base/v1/identity) and
// parses it; nothing in it is trusted yet ([enroll.Enroll] decides).
func FetchIdentity(ctx context.Context, c *http.Client, base string) (*enroll.Identity, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(base, "/")+"/v1/identity", nil)
	if err != nil {
		return nil, err
	}
	b, err := roundTrip(c, req, enroll.MaxIdentity)
	if err != nil {
		return nil, fmt.Errorf("GET /v1/identity: %w", err)
	}
	return enroll.ParseIdentity(b)
}

// HTTPActivator returns an [enroll.Activator] that POSTs the request to
// base/v1/activate.
func HTTPActivator(c *http.Client, base string) enroll.Activator {
	return func(ctx context.Context, ar *enroll.ActivationRequest) (*enroll.ActivationResponse, error) {
		body, err := json.Marshal(ar)
		if err != nil {
			return nil, err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(base, "/")+"/v1/activate", bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Content-Type", "application/json")
		b, err := roundTrip(c, req, enroll.MaxActivation)
		if err != nil {
			return nil, fmt.Errorf("POST /v1/activate: %w", err)
		}
		return enroll.ParseActivationResponse(b)
	}
}

// roundTrip sends req and reads a 200 answer of at most limit bytes; any
// other status is an error carrying the agent's message.
func roundTrip(c *http.Client, req *http.Request, limit int64) ([]byte, error) {
	rsp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer rsp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(rsp.Body, limit+1))
	if err != nil {
		return nil, err
	}
	if rsp.StatusCode != http.StatusOK {
		msg := strings.TrimSpace(string(b[:min(len(b), 512)]))
		return nil, fmt.Errorf("the agent answered %s: %s", rsp.Status, msg)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("answer larger than %d bytes", limit)
	}
	return b, nil
}
