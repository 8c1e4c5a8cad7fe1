package api_test

import (
	"os"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// TestOpenAPIMatchesRoutes holds docs/fleet-api.yaml and the handler to
// each other: every operation the document lists is served (neither the
// catch-all 404 nor 405), and on its paths every method it does not list
// is refused with 405.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	b, err := os.ReadFile("../../docs/fleet-api.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Paths map[string]map[string]any `yaml:"paths"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Paths) < 10 {
		t.Fatalf("the document lists %d paths", len(doc.Paths))
	}
	e := newEnv(t, nil)
	for path, ops := range doc.Paths {
		concrete := strings.NewReplacer("{name}", "some-name").Replace(path)
		for _, m := range []string{"get", "post", "put", "delete", "patch"} {
			_, listed := ops[m]
			r := e.do(strings.ToUpper(m), concrete, adminToken, nil)
			switch {
			case listed && r.status == 405:
				t.Errorf("%s %s is in the document, and refused with 405: %s", m, path, r.body)
			case listed && r.status == 404 && strings.Contains(r.body, "no such resource"):
				t.Errorf("%s %s is in the document, and not served", m, path)
			case !listed && !strings.HasPrefix(path, "/v1/push/") && r.status != 405:
				t.Errorf("%s %s is not in the document, and answered %d %s", m, path, r.status, r.body)
			}
		}
	}
	if !slices.Contains(e.engine.pushAuth, "Bearer "+adminToken) {
		t.Error("the push paths did not reach the engine")
	}
}
