package main

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestVerifierServesWebView: rimon verifier serves /ui/ behind its tokens.
func TestVerifierServesWebView(t *testing.T) {
	v := startVerifier(t, t.TempDir())
	get := func(path, token string) (int, string) {
		req, _ := http.NewRequest("GET", v.url+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/ui/", ""); code != http.StatusUnauthorized || !strings.Contains(body, `action="/ui/signin"`) {
		t.Errorf("GET /ui/ without a token: %d, want 401 with the sign-in form:\n%s", code, body)
	}
	if code, body := get("/ui/", testReadToken); code != http.StatusOK || !strings.Contains(body, "No agent matches.") {
		t.Errorf("GET /ui/ with a read token: %d, want 200 with the fleet page:\n%s", code, body)
	}
	if code, _ := get("/ui/style.css", ""); code != http.StatusOK {
		t.Errorf("GET /ui/style.css: %d", code)
	}
}
