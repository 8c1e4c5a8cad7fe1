package webhook_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/rimon-dev/rimon/fleet/webhook"
)

// A receiver checks each message before trusting it, and uses webhook-id
// to drop repeats (delivery is at least once).
func ExampleVerify() {
	key, err := webhook.ParseSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if err != nil {
		panic(err)
	}
	seen := map[string]bool{}
	receiver := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, "unreadable body", http.StatusBadRequest)
			return
		}
		if err := webhook.Verify(key, r.Header, body, time.Unix(1614265330, 0), 5*time.Minute); err != nil {
			http.Error(w, "not verified", http.StatusUnauthorized)
			return
		}
		id := r.Header.Get(webhook.HeaderID)
		if !seen[id] {
			seen[id] = true
			fmt.Printf("accepted %s: %s\n", id, body)
		}
		w.WriteHeader(http.StatusNoContent)
	})

	body := `{"test": 2432232314}`
	for range 2 { // the message, then a retry of it
		req := httptest.NewRequest(http.MethodPost, "/hook", strings.NewReader(body))
		req.Header.Set(webhook.HeaderID, "msg_p5jXN8AQM9LWM0D4loKWxJek")
		req.Header.Set(webhook.HeaderTimestamp, "1614265330")
		req.Header.Set(webhook.HeaderSignature, webhook.Sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", time.Unix(1614265330, 0), []byte(body)))
		rec := httptest.NewRecorder()
		receiver.ServeHTTP(rec, req)
		fmt.Println(rec.Code)
	}
	// Output:
	// accepted msg_p5jXN8AQM9LWM0D4loKWxJek: {"test": 2432232314}
	// 204
	// 204
}
