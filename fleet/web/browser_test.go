package web_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/rimon-dev/rimon/fleet"
)

// chromium finds the browser: $RIMON_CHROMIUM, else Debian's chromium.
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("RIMON_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return "/usr/bin/chromium"
}

// browser starts a private headless Chromium (its own profile in a
// temporary directory). It fails the test when Chromium cannot start:
// CI installs it (make deps); only -short skips the browser tests.
func browser(t *testing.T) context.Context {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: the browser tests need headless Chromium")
	}
	path := chromium(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.UserDataDir(t.TempDir()),
		// The test server's certificate is httptest's own.
		chromedp.Flag("ignore-certificate-errors", true),
		chromedp.WindowSize(1280, 900),
	)
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox) // Chromium refuses to run its sandbox as root
	}
	// A bound on a hung browser, not a timed assertion.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	alloc, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	t.Cleanup(cancelAlloc)
	bctx, cancelBrowser := chromedp.NewContext(alloc)
	t.Cleanup(cancelBrowser)
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("headless Chromium (%s) does not start: %v; install Debian's chromium (make deps installs it) or set RIMON_CHROMIUM", path, err)
	}
	return bctx
}

// artifacts is where screenshots go: $RIMON_TEST_ARTIFACTS/fleet-web,
// else a temporary directory.
func artifacts(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if a := os.Getenv("RIMON_TEST_ARTIFACTS"); a != "" {
		dir = filepath.Join(a, "fleet-web")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// screenshots saves the page at desktop and phone widths, and checks that
// at the phone's width nothing is wider than the screen.
func screenshots(t *testing.T, ctx context.Context, dir, name string) {
	t.Helper()
	for _, v := range []struct {
		suffix string
		w, h   int64
		phone  bool
	}{{"desktop", 1280, 900, false}, {"phone", 390, 844, true}} {
		var png []byte
		var overflow bool
		emulate := chromedp.EmulateViewport(v.w, v.h)
		if v.phone {
			emulate = chromedp.EmulateViewport(v.w, v.h, chromedp.EmulateScale(2), chromedp.EmulateMobile, chromedp.EmulateTouch)
		}
		if err := chromedp.Do(ctx, emulate, chromedp.Reload(), chromedp.WaitReady(chromedp.CSS("main")),
			eval(`document.documentElement.scrollWidth > window.innerWidth + 1`, &overflow),
			into(chromedp.FullScreenshot(100), &png)); err != nil {
			t.Fatalf("screenshot %s %s: %v", name, v.suffix, err)
		}
		if v.phone && overflow {
			t.Errorf("%s: wider than a %dpx phone screen", name, v.w)
		}
		p := filepath.Join(dir, name+"-"+v.suffix+".png")
		if err := os.WriteFile(p, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot %s", p)
	}
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 900)); err != nil {
		t.Fatal(err)
	}
}

// pageText is what a person reads on the page (no attribute, no hidden
// input).
func pageText(t *testing.T, ctx context.Context) string {
	t.Helper()
	var s string
	if err := chromedp.Do(ctx, eval(`document.body.innerText`, &s)); err != nil {
		t.Fatal(err)
	}
	return s
}

// accessible checks the page's form fields have labels and its column
// headers a scope.
func accessible(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	var unlabelled, unscoped []string
	if err := chromedp.Do(ctx,
		eval(`[...document.querySelectorAll('input:not([type=hidden]), select')].filter(e => e.labels.length == 0).map(e => e.id || e.name)`, &unlabelled),
		eval(`[...document.querySelectorAll('th')].filter(e => !['col','row'].includes(e.getAttribute('scope'))).map(e => e.textContent)`, &unscoped),
	); err != nil {
		t.Fatal(err)
	}
	if len(unlabelled) > 0 || len(unscoped) > 0 {
		t.Errorf("%s: fields without a label %v, headers without a scope %v", name, unlabelled, unscoped)
	}
	// WCAG 2.x contrast of every element that holds text of its own
	// against the first opaque background behind it: at least 4.5:1.
	var low []string
	if err := chromedp.Do(ctx, eval(contrastJS, &low)); err != nil {
		t.Fatal(err)
	}
	if len(low) > 0 {
		t.Errorf("%s: text below the AA contrast of 4.5:1: %v", name, low)
	}
}

const contrastJS = `(() => {
  const rgb = s => s.match(/[\d.]+/g).map(Number);
  const lum = c => { const [r, g, b] = c.slice(0, 3).map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
  const bg = e => { for (; e; e = e.parentElement) { const c = rgb(getComputedStyle(e).backgroundColor); if (c.length < 4 || c[3] > 0) return c; } return [255, 255, 255]; };
  const out = [];
  for (const e of document.body.querySelectorAll('*')) {
    if (![...e.childNodes].some(n => n.nodeType === 3 && n.textContent.trim())) continue;
    const st = getComputedStyle(e);
    if (st.display === 'none' || st.visibility === 'hidden' || e.getClientRects().length === 0) continue;
    const a = lum(rgb(st.color)), b = lum(bg(e));
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    if (ratio < 4.5) out.push(e.tagName + '.' + e.className + ' ' + ratio.toFixed(2));
  }
  return out;
})()`

type row struct {
	ID     string `json:"id"`
	State  string `json:"state"`
	Reason string `json:"reason"`
}

func TestBrowser(t *testing.T) {
	ctx := browser(t)
	f := newFixture(t)
	dir := artifacts(t)
	names := []string{"web-markup"}
	for _, a := range f.agents {
		names = append(names, a.name)
	}
	noAgents := func(where string) {
		t.Helper()
		text := pageText(t, ctx)
		for _, n := range names {
			if strings.Contains(text, n) {
				t.Errorf("%s: agent %s shown without signing in", where, n)
			}
		}
		if !strings.Contains(text, "API token") {
			t.Errorf("%s: no sign-in form:\n%s", where, text)
		}
		var refresh int
		chromedp.Do(ctx, eval(`document.querySelectorAll('meta[http-equiv=refresh]').length`, &refresh))
		if refresh != 0 {
			t.Errorf("%s: the sign-in page reloads itself", where)
		}
	}

	// Without a session: the sign-in page, no agent data.
	for _, p := range []string{"/ui/", "/ui/agents/web-untrusted", "/ui/?state=compromised"} {
		if err := chromedp.Do(ctx, chromedp.Navigate(f.srv.URL+p), chromedp.WaitVisible(chromedp.ID("token"))); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		noAgents(p + " before sign-in")
	}
	accessible(t, ctx, "sign-in")
	screenshots(t, ctx, dir, "signin")

	// A wrong token is refused.
	if err := chromedp.Do(ctx, chromedp.SendKeys(chromedp.ID("token"), "wrong-token-0123456789"), chromedp.Submit(chromedp.ID("token")),
		chromedp.WaitVisible(chromedp.CSS(".message"))); err != nil {
		t.Fatal(err)
	}
	noAgents("after a wrong token")

	// Sign in through the form, with the keyboard: the form returns to
	// the page asked for last.
	if err := chromedp.Do(ctx, chromedp.Navigate(f.srv.URL+"/ui/"), chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.Focus(chromedp.ID("token")), chromedp.SendKeys(chromedp.ID("token"), readToken+kb.Enter),
		chromedp.WaitVisible(chromedp.ID("agents"))); err != nil {
		t.Fatalf("signing in: %v", err)
	}
	var rows []row
	if err := chromedp.Do(ctx, eval(`[...document.querySelectorAll('#agents tbody tr')].map(r => ({id: r.id,
		state: r.querySelector('.st').textContent.trim(), reason: r.querySelector('.reason').textContent}))`, &rows)); err != nil {
		t.Fatal(err)
	}
	got := map[string]row{}
	var order []string
	for _, r := range rows {
		got[strings.TrimPrefix(r.ID, "agent-")] = r
		order = append(order, strings.TrimPrefix(r.ID, "agent-"))
	}
	for _, a := range f.agents {
		r, ok := got[a.name]
		if !ok {
			t.Errorf("fleet page: no row for %s (rows %v)", a.name, order)
			continue
		}
		if !strings.HasSuffix(r.State, string(a.state)) {
			t.Errorf("fleet page: %s state %q, want %s", a.name, r.State, a.state)
		}
		if r.Reason != a.reason {
			t.Errorf("fleet page: %s reason %q, want %q", a.name, r.Reason, a.reason)
		}
	}
	if len(order) == 0 || order[0] != "web-compromised" || order[len(order)-1] != "web-trusted" {
		t.Errorf("fleet page order %v: want the worst (compromised) first, trusted last", order)
	}
	var counts map[string]string
	if err := chromedp.Do(ctx, eval(`Object.fromEntries([...document.querySelectorAll('.counts li')].map(li =>
		[li.className.replace('count count-','').replace('count',''), li.querySelector('.n').textContent]))`, &counts)); err != nil {
		t.Fatal(err)
	}
	for st, want := range map[fleet.Status]string{fleet.Compromised: "1", fleet.Invalid: "1", fleet.Untrusted: "2", fleet.Unreachable: "1", fleet.Pending: "1", fleet.Trusted: "1"} {
		if counts[string(st)] != want {
			t.Errorf("count of %s = %q, want %s (counts %v)", st, counts[string(st)], want, counts)
		}
	}
	var refresh string
	chromedp.Do(ctx, eval(`(document.querySelector('meta[http-equiv=refresh]') || {}).content || ''`, &refresh))
	if refresh != "30" {
		t.Errorf("fleet page refresh %q, want 30", refresh)
	}
	accessible(t, ctx, "fleet")
	screenshots(t, ctx, dir, "fleet")

	// The filter form (a GET).
	if err := chromedp.Do(ctx, chromedp.SetValue(chromedp.ID("state"), "untrusted"), chromedp.SendKeys(chromedp.ID("name"), "web-un"),
		chromedp.Submit(chromedp.ID("name")), chromedp.WaitVisible(chromedp.ID("agents"))); err != nil {
		t.Fatal(err)
	}
	var filtered []string
	var loc string
	chromedp.Do(ctx, eval(`[...document.querySelectorAll('#agents tbody tr')].map(r => r.id)`, &filtered), into(chromedp.Location(), &loc))
	if strings.Join(filtered, " ") != "agent-web-untrusted" || !strings.Contains(loc, "state=untrusted") {
		t.Errorf("filter state=untrusted name=web-un: rows %v at %s, want agent-web-untrusted", filtered, loc)
	}

	// Every agent's page: its state and reason.
	for _, a := range f.agents {
		var state, reason string
		if err := chromedp.Do(ctx, chromedp.Navigate(f.srv.URL+"/ui/agents/"+a.name), chromedp.WaitVisible(chromedp.ID("state")),
			into(chromedp.Text(chromedp.ID("state")), &state), eval(`document.getElementById('reason').textContent`, &reason)); err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(strings.TrimSpace(state), string(a.state)) || reason != a.reason {
			t.Errorf("page of %s: state %q reason %q, want %s %q", a.name, state, reason, a.state, a.reason)
		}
	}

	// The untrusted agent: the failing file, the digest seen, those allowed.
	var finding struct {
		Path, Seen string
		Allowed    []string
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(f.srv.URL+"/ui/agents/web-untrusted"), chromedp.WaitVisible(chromedp.ID("findings")),
		eval(`(() => { const r = document.querySelector('#findings tbody tr');
			return {Path: r.querySelector('.path').firstChild.textContent, Seen: r.querySelector('.seen').textContent,
				Allowed: [...r.querySelectorAll('.allowed li')].map(li => li.textContent)}; })()`, &finding)); err != nil {
		t.Fatal(err)
	}
	if finding.Path != "/usr/sbin/sshd" || finding.Seen != seenDigest || strings.Join(finding.Allowed, " ") != allowedDigest+" "+allowedOther {
		t.Errorf("failing file %+v, want /usr/sbin/sshd seen %s allowed %s %s", finding, seenDigest, allowedDigest, allowedOther)
	}
	var checks []string
	chromedp.Do(ctx, eval(`[...document.querySelectorAll('#checks tbody tr')].map(r => r.querySelector('th').textContent + ': ' + r.querySelector('.result').textContent.trim())`, &checks))
	if len(checks) != 7 || checks[0] != "signature: ✔ passed" || checks[2] != "nonce: ✔ passed" || checks[6] != "reference values: ✔ passed" {
		t.Errorf("checks of web-untrusted: %q", checks)
	}
	accessible(t, ctx, "agent")
	screenshots(t, ctx, dir, "agent-untrusted")

	// The invalid agent: the Azure chain step by step, the failed step last.
	var steps []string
	if err := chromedp.Do(ctx, chromedp.Navigate(f.srv.URL+"/ui/agents/web-invalid"), chromedp.WaitVisible(chromedp.ID("azure")),
		eval(`[...document.querySelectorAll('#azure li')].map(li => li.textContent.trim())`, &steps)); err != nil {
		t.Fatal(err)
	}
	if len(steps) != 5 || steps[0] != "✔ passed: AMD root" || steps[4] != "✖ FAILED: report policy: the SNP report's policy allows debugging" {
		t.Errorf("Azure steps %q", steps)
	}
	screenshots(t, ctx, dir, "agent-invalid")

	// Continuity events: the reboot, the compromise.
	for name, want := range map[string]string{"web-trusted": "reboot: the TPM was reset", "web-compromised": "compromise: continuity: the log's record 3"} {
		var ev string
		if err := chromedp.Do(ctx, chromedp.Navigate(f.srv.URL+"/ui/agents/"+name), chromedp.WaitVisible(chromedp.ID("continuity")),
			into(chromedp.Text(chromedp.ID("continuity")), &ev)); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(ev, want) {
			t.Errorf("continuity of %s: %q, want %q", name, ev, want)
		}
	}
	screenshots(t, ctx, dir, "agent-compromised")

	// Keyboard: the first Tab reaches the skip link, which is then shown.
	var focused string
	if err := chromedp.Do(ctx, chromedp.Navigate(f.srv.URL+"/ui/"), chromedp.WaitVisible(chromedp.ID("agents")),
		chromedp.KeyEvent(kb.Tab), eval(`document.activeElement.className + ' ' + getComputedStyle(document.activeElement).outlineStyle`, &focused)); err != nil {
		t.Fatal(err)
	}
	if focused != "skip solid" {
		t.Errorf("first Tab: focus on %q, want the skip link with a visible outline", focused)
	}

	// Sign out: the session is gone.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(".who button")), chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.Navigate(f.srv.URL+"/ui/"), chromedp.WaitVisible(chromedp.ID("token"))); err != nil {
		t.Fatalf("signing out: %v", err)
	}
	noAgents("after sign-out")
}

// TestBrowserEscaping feeds markup through a file name, a reason and a
// check's detail: the page must hold it as text, with no element made of it.
func TestBrowserEscaping(t *testing.T) {
	ctx := browser(t)
	f := newFixture(t)
	var out struct {
		Title                string
		Imgs, Scripts, Bolds int
		Injected             bool
		Path, Reason, Detail string
		Allowed              string
	}
	var fleetReason string
	if err := chromedp.Do(ctx, chromedp.Navigate(f.srv.URL+"/ui/"), chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), adminToken), chromedp.Submit(chromedp.ID("token")), chromedp.WaitVisible(chromedp.ID("agents")),
		eval(`document.querySelector('#agent-web-markup .reason').textContent`, &fleetReason),
		chromedp.Navigate(f.srv.URL+"/ui/agents/web-markup"), chromedp.WaitVisible(chromedp.ID("findings")),
		eval(`({Title: document.title, Imgs: document.images.length, Scripts: document.scripts.length,
			Bolds: document.querySelectorAll('b').length, Injected: document.getElementById('injected') !== null,
			Path: document.querySelector('#findings .path').firstChild.textContent,
			Reason: document.getElementById('reason').textContent,
			Detail: document.querySelector('#checks .detail').textContent,
			Allowed: document.querySelector('#findings .allowed li').textContent})`, &out)); err != nil {
		t.Fatal(err)
	}
	if out.Imgs != 0 || out.Scripts != 0 || out.Bolds != 0 || out.Injected || strings.Contains(out.Title, "pwned") {
		t.Errorf("markup became elements: %+v", out)
	}
	if out.Path != markupPath || out.Reason != markupReason || out.Detail != markupDetail || fleetReason != markupReason ||
		out.Allowed != `"><img src=x onerror=alert(2)>` {
		t.Errorf("markup not kept as text: %+v, fleet page reason %q", out, fleetReason)
	}
	screenshots(t, ctx, artifacts(t), "agent-markup")
}

// eval is a step that stores a JavaScript expression's value in *v.
func eval[T any](expr string, v *T) chromedp.Action[chromedp.Void] {
	return into(chromedp.Evaluate[T](expr), v)
}

// into is a step that stores an action's value in *v.
func into[T any](a chromedp.Action[T], v *T) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		r, err := a(ctx, t)
		*v = r
		return chromedp.Void{}, err
	}
}
