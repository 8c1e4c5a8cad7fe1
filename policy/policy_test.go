package policy

import (
	"crypto"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const full = `version: 1
settings:
  pcr: 16
  banks: [sha384, sha256]
  log: /var/run/rimon/../rimon/m.log
  debounce: 50ms
  rescan: 0
  symlinks: skip
measure:
  - file: /usr/bin/myapp
  - glob: /etc/myapp/**/*.conf
  - dir: /opt/myapp
    exclude: ["*.pyc", "/opt/myapp/cache/**"]
  - tree: /srv/static
  - image: /var/lib/images/web.tar
exclude:
  - "*.swp"
`

func TestParseFull(t *testing.T) {
	p, err := Parse("policy.yaml", strings.NewReader(full))
	if err != nil {
		t.Fatal(err)
	}
	if p.PCR != 16 || p.Log != "/var/run/rimon/m.log" || p.Debounce != 50*time.Millisecond || p.Rescan != 0 || p.Symlinks != Skip {
		t.Errorf("settings = %+v", p)
	}
	if diff := cmp.Diff([]crypto.Hash{crypto.SHA256, crypto.SHA384}, p.Banks); diff != "" {
		t.Errorf("banks (-want +got):\n%s", diff)
	}
	var kinds []string
	for _, r := range p.Rules {
		kinds = append(kinds, string(r.Kind)+" "+r.Path)
	}
	want := []string{"file /usr/bin/myapp", "glob /etc/myapp/**/*.conf", "dir /opt/myapp", "tree /srv/static", "image /var/lib/images/web.tar"}
	if diff := cmp.Diff(want, kinds); diff != "" {
		t.Errorf("rules (-want +got):\n%s", diff)
	}
	if p.Rules[2].Line != 12 {
		t.Errorf("dir rule line = %d, want 12", p.Rules[2].Line)
	}
}

func TestDefaults(t *testing.T) {
	p, err := Parse("p.yaml", strings.NewReader("measure:\n  - file: /bin/sh\n"))
	if err != nil {
		t.Fatal(err)
	}
	if p.PCR != 23 || p.Banks != nil || p.Log != "/run/rimon/measurements.log" || p.Debounce != DefaultDebounce || p.Rescan != DefaultRescan || p.Symlinks != Follow {
		t.Errorf("defaults = %+v", p)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ name, yaml, want string }{
		{"empty", "", "p.yaml: the policy is empty: it needs a measure list"},
		{"not_yaml", "measure: [", "p.yaml: line 1: did not find expected node content"},
		{"not_mapping", "- file: /a\n", "p.yaml:1: want a mapping with settings, measure and exclude"},
		{"unknown_top", "measure:\n  - file: /a\nmeasures: []\n", "p.yaml:3: measures: unknown key (want version, settings, measure, exclude or containers)"},
		{"no_measure", "settings:\n  pcr: 23\n", "p.yaml:1: measure: missing or empty: list what to measure"},
		{"empty_measure", "measure: []\n", "p.yaml:1: measure: missing or empty: list what to measure"},
		{"measure_not_list", "measure:\n  file: /a\n", "p.yaml:2: measure: want a list of entries such as '- file: /usr/bin/myapp', have a mapping"},
		{"unknown_rule_key", "measure:\n  - file: /a\n    recursive: true\n", "p.yaml:3: measure[0].recursive: unknown key (want one of file, glob, dir, tree, image, and optionally exclude)"},
		{"two_kinds", "measure:\n  - file: /a\n    dir: /b\n", "p.yaml:3: measure[0]: has both file and dir: one kind per entry"},
		{"no_kind", "measure:\n  - exclude: ['*.x']\n", "p.yaml:2: measure[0]: says nothing to measure: want one of file, glob, dir, tree or image"},
		{"relative", "measure:\n  - file: usr/bin/a\n", `p.yaml:2: measure[0].file: "usr/bin/a" is not an absolute path`},
		{"null_path", "measure:\n  - file:\n", "p.yaml:2: measure[0].file: want a string, have \"\""},
		{"list_path", "measure:\n  - dir: [/a]\n", "p.yaml:2: measure[0].dir: want a string, have a list"},
		{"bad_glob", "measure:\n  - glob: /etc/[a\n", `p.yaml:2: measure[0].glob: bad pattern "/etc/[a": syntax error in pattern`},
		{"relative_glob", "measure:\n  - glob: '*.conf'\n", `p.yaml:2: measure[0].glob: "*.conf": a glob to measure must be absolute`},
		{"half_doublestar", "measure:\n  - glob: /etc/a**/x\n", `p.yaml:2: measure[0].glob: bad pattern "/etc/a**/x": ** must be a whole path segment`},
		{"dotdot_pattern", "measure:\n  - dir: /a\nexclude: ['/a/../b']\n", `p.yaml:3: exclude: bad pattern "/a/../b": . and .. are not allowed`},
		{"exclude_on_file", "measure:\n  - file: /a\n    exclude: ['x']\n", "p.yaml:2: measure[0].exclude: exclude applies to glob, dir and tree entries only"},
		{"pcr_range", "settings:\n  pcr: 24\nmeasure:\n  - file: /a\n", "p.yaml:2: settings.pcr: 24 is out of range 0-23"},
		{"pcr_locality", "settings:\n  pcr: 17\nmeasure:\n  - file: /a\n", "p.yaml:2: settings.pcr: PCR 17 cannot be extended at locality 0 (PCRs 17-22 are reserved for dynamic launch): use 23, or 0-16"},
		{"pcr_string", "settings:\n  pcr: twenty\nmeasure:\n  - file: /a\n", `p.yaml:2: settings.pcr: want a whole number, have "twenty"`},
		{"bad_bank", "settings:\n  banks: [md5]\nmeasure:\n  - file: /a\n", `p.yaml:2: settings.banks: unknown PCR bank "md5" (rimon supports sha1, sha256, sha384, sha512)`},
		{"dup_bank", "settings:\n  banks: [sha256, sha256]\nmeasure:\n  - file: /a\n", "p.yaml:2: settings.banks: sha256 appears twice"},
		{"bad_duration", "settings:\n  debounce: soon\nmeasure:\n  - file: /a\n", `p.yaml:2: settings.debounce: want a duration such as 200ms or 5m, have "soon"`},
		{"duration_range", "settings:\n  debounce: 2h\nmeasure:\n  - file: /a\n", "p.yaml:2: settings.debounce: 2h0m0s is out of range 1ms to 1m0s"},
		{"bad_symlinks", "settings:\n  symlinks: maybe\nmeasure:\n  - file: /a\n", `p.yaml:2: settings.symlinks: want follow or skip, have "maybe"`},
		{"unknown_setting", "settings:\n  interval: 5m\nmeasure:\n  - file: /a\n", "p.yaml:2: settings.interval: unknown setting (want pcr, banks, log, debounce, rescan, symlinks, max_file_size or max_file_time)"},
		{"duplicate_key", "measure:\n  - file: /a\nmeasure:\n  - file: /b\n", "p.yaml:3: measure: appears twice"},
		{"bad_version", "version: 2\nmeasure:\n  - file: /a\n", "p.yaml:1: version: only version 1 is known"},
		{"second_document", "measure:\n  - file: /a\n---\nexclude: ['*']\n", "p.yaml:3: a second YAML document (after ---): the file must hold exactly one; merge them or remove the ---"},
		{"bad_second_document", "measure:\n  - file: /a\n---\nmeasure: [\n", "p.yaml: line 4: did not find expected node content"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("p.yaml", strings.NewReader(tc.yaml))
			if err == nil || err.Error() != tc.want {
				t.Errorf("Parse error =\n  %v\nwant\n  %s", err, tc.want)
			}
		})
	}
}

func TestPatterns(t *testing.T) {
	for _, tc := range []struct {
		pat, name string
		want      bool
	}{
		{"*.swp", "/a/b/.x.swp", true},
		{"*.swp", "/a/b/x.swo", false},
		{"/etc/*.conf", "/etc/a.conf", true},
		{"/etc/*.conf", "/etc/sub/a.conf", false},
		{"/etc/**/*.conf", "/etc/a.conf", true},
		{"/etc/**/*.conf", "/etc/x/y/a.conf", true},
		{"/etc/**", "/etc/x/y", true},
		{"/etc/**", "/etcx/y", false},
		{"**/cache/*", "/var/lib/cache/f", true},
		{"/opt/a?c/[xy]", "/opt/abc/x", true},
		{"/opt/a?c/[xy]", "/opt/abc/z", false},
	} {
		p, err := CompilePattern(tc.pat)
		if err != nil {
			t.Fatal(err)
		}
		if got := p.Match(tc.name); got != tc.want {
			t.Errorf("%q.Match(%q) = %v, want %v", tc.pat, tc.name, got, tc.want)
		}
	}
	p, _ := CompilePattern("/etc/*/conf.d/*.conf")
	for dir, want := range map[string]bool{"/etc": true, "/etc/nginx": true, "/etc/nginx/conf.d": true, "/var": false, "/etc/nginx/conf.d/x": false} {
		if got := p.CouldContain(dir); got != want {
			t.Errorf("CouldContain(%q) = %v, want %v", dir, got, want)
		}
	}
	if got := p.StaticPrefix(); got != "/etc" {
		t.Errorf("StaticPrefix = %q, want /etc", got)
	}
}

func TestTargetFor(t *testing.T) {
	p, err := Parse("policy.yaml", strings.NewReader(full))
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"/usr/bin/myapp":             "file /usr/bin/myapp",
		"/usr/bin/other":             "",
		"/etc/myapp/a/b.conf":        "file /etc/myapp/a/b.conf",
		"/etc/myapp/a/b.txt":         "",
		"/opt/myapp/bin/run":         "file /opt/myapp/bin/run",
		"/opt/myapp/x.pyc":           "",
		"/opt/myapp/cache/blob":      "",
		"/opt/myapp/.x.swp":          "",
		"/srv/static/css/site.css":   "tree /srv/static",
		"/srv/static/.x.swp":         "tree /srv/static",
		"/var/lib/images/web.tar":    "image /var/lib/images/web.tar",
		"/var/lib/images/web.tar.gz": "",
	} {
		got := ""
		if tg, ok := p.TargetFor(name); ok {
			got = string(tg.Kind) + " " + tg.Path
		}
		if got != want {
			t.Errorf("TargetFor(%q) = %q, want %q", name, got, want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add(full)
	f.Add("measure:\n  - file: /a\n")
	f.Add("settings: {pcr: 1}\nmeasure: [{glob: '/a/**/b*'}]\n")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := Parse("f.yaml", strings.NewReader(s))
		if err != nil {
			if _, ok := err.(*Error); !ok {
				t.Fatalf("Parse error %T %v is not a *Error", err, err)
			}
			return
		}
		if len(p.Rules) == 0 || p.PCR < 0 || p.PCR > 23 {
			t.Fatalf("accepted an invalid policy: %+v", p)
		}
		for _, r := range p.Rules {
			if !strings.HasPrefix(r.Path, "/") {
				t.Fatalf("accepted a relative path %q", r.Path)
			}
		}
	})
}

// TestExamplesParse keeps the shipped example policies valid.
func TestExamplesParse(t *testing.T) {
	paths, err := filepath.Glob("../packaging/examples/*.yaml")
	if err != nil || len(paths) < 3 {
		t.Fatalf("example policies: %v, %v", paths, err)
	}
	for _, p := range paths {
		if _, err := Load(p); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
}

func FuzzParseReference(f *testing.F) {
	f.Add("files:\n  /a: [" + strings.Repeat("ab", 32) + "]\nrequired: [/a]\nunlisted: warn\n")
	f.Add("images:\n  /i.tar: ['sha256:" + strings.Repeat("0", 64) + "']\n")
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseReference("r.yaml", strings.NewReader(s))
		if err != nil {
			if _, ok := err.(*Error); !ok {
				t.Fatalf("error %T %v is not a *Error", err, err)
			}
			return
		}
		for _, e := range r.Files {
			for _, d := range e.Allowed {
				if len(d) != 64 {
					t.Fatalf("accepted digest %q", d)
				}
			}
		}
	})
}

func TestReferenceErrors(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"files:\n  /a: [abc]\n", `r.yaml:2: files./a: "abc" is not a SHA-256 digest (64 hex characters, optionally after sha256:)`},
		{"files:\n  a: [" + strings.Repeat("0", 64) + "]\n", `r.yaml:2: files.a: "a" is not an absolute path or pattern`},
		{"unlisted: maybe\n", `r.yaml:1: unlisted: want fail or warn, have "maybe"`},
		{"unmeasured: allow\n", `r.yaml:1: unmeasured: want fail or warn, have "allow"`},
		{"file:\n  /a: []\n", "r.yaml:2: file: unknown key (want version, unlisted, deletions, unmeasured, files, required, images, containers, ignore or azure)"},
		{"files:\n  /a: []\n", "r.yaml:2: files./a: want a list of allowed digests, have a list"},
		{"required: [rel]\n", `r.yaml:1: required: "rel" is not an absolute path`},
		{"files:\n  /a: [" + strings.Repeat("0", 64) + "]\n---\nfiles:\n  /b: [" + strings.Repeat("0", 64) + "]\n", "r.yaml:3: a second YAML document (after ---): the file must hold exactly one; merge them or remove the ---"},
	} {
		if _, err := ParseReference("r.yaml", strings.NewReader(tc.yaml)); err == nil || err.Error() != tc.want {
			t.Errorf("ParseReference(%q) = %v, want %s", tc.yaml, err, tc.want)
		}
	}
}

func TestReferenceAzureSection(t *testing.T) {
	r, err := ParseReference("r.yaml", strings.NewReader("azure:\n  vmpl: 0\n  minimum_tcb: {bootloader: 3, tee: 0, snp: 8, microcode: 115}\n  measurement: "+strings.Repeat("ab", 48)+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if r.SNP.MinimumTCB == nil || r.SNP.MinimumTCB[3] != 115 || len(r.SNP.Measurement) != 48 || r.SNP.AllowDebug {
		t.Errorf("SNP policy = %+v", r.SNP)
	}
	for _, tc := range []struct{ yaml, want string }{
		{"azure:\n  allow_debug: yes please\n", `r.yaml:2: azure.allow_debug: want true or false, have "yes please"`},
		{"azure:\n  vmpl: 4\n", "r.yaml:2: azure.vmpl: 4 is out of range 0-3"},
		{"azure:\n  measurement: abcd\n", "r.yaml:2: azure.measurement: want 96 hex characters (a SHA-384 launch measurement)"},
		{"azure:\n  minimum_tcb: {fw: 1}\n", "r.yaml:2: azure.minimum_tcb.fw: unknown key (want bootloader, tee, snp, microcode)"},
		{"azure:\n  vm_id: x\n", "r.yaml:2: azure.vm_id: unknown key (want allow_debug, allow_migration_agent, vmpl, minimum_tcb, measurement, vm_unique_id)"},
	} {
		if _, err := ParseReference("r.yaml", strings.NewReader(tc.yaml)); err == nil || err.Error() != tc.want {
			t.Errorf("ParseReference(%q) = %v, want %s", tc.yaml, err, tc.want)
		}
	}
}

func TestFileBudgets(t *testing.T) {
	p, err := Parse("p.yaml", strings.NewReader("measure:\n  - file: /a\n"))
	if err != nil {
		t.Fatal(err)
	}
	if p.MaxFileSize != 4<<30 || p.MaxFileTime != 2*time.Minute {
		t.Errorf("default budgets = %d bytes, %v; want 4 GiB, 2m", p.MaxFileSize, p.MaxFileTime)
	}
	for _, tc := range []struct {
		setting string
		size    int64
		time    time.Duration
		err     string
	}{
		{"max_file_size: 512MiB", 512 << 20, 0, ""},
		{"max_file_size: 1048576", 1 << 20, 0, ""},
		{"max_file_size: 2 TiB", 2 << 40, 0, ""},
		{"max_file_time: 10s", 0, 10 * time.Second, ""},
		{"max_file_size: 0", 0, 0, "p.yaml:2: settings.max_file_size: 0 bytes is below the minimum of 1024"},
		{"max_file_size: -1", 0, 0, `p.yaml:2: settings.max_file_size: want a size such as 4GiB, 512MiB or 1048576 (bytes) from 1024 to 1125899906842624 bytes, have "-1"`},
		{"max_file_size: 9999999TiB", 0, 0, `p.yaml:2: settings.max_file_size: want a size such as 4GiB, 512MiB or 1048576 (bytes) from 1024 to 1125899906842624 bytes, have "9999999TiB"`},
		{"max_file_size: 4GB", 0, 0, `p.yaml:2: settings.max_file_size: want a size such as 4GiB, 512MiB or 1048576 (bytes) from 1024 to 1125899906842624 bytes, have "4GB"`},
		{"max_file_time: 0", 0, 0, "p.yaml:2: settings.max_file_time: 0 would let one file hold a worker forever: give a duration such as 2m"},
		{"max_file_time: 48h", 0, 0, "p.yaml:2: settings.max_file_time: 48h0m0s is out of range 1s to 24h0m0s"},
	} {
		t.Run(tc.setting, func(t *testing.T) {
			p, err := Parse("p.yaml", strings.NewReader("settings:\n  "+tc.setting+"\nmeasure:\n  - file: /a\n"))
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Errorf("Parse error =\n  %v\nwant\n  %s", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (tc.size != 0 && p.MaxFileSize != tc.size) || (tc.time != 0 && p.MaxFileTime != tc.time) {
				t.Errorf("budgets = %d bytes, %v; want %d, %v", p.MaxFileSize, p.MaxFileTime, tc.size, tc.time)
			}
		})
	}
}
