package policy

import (
	"bytes"
	"crypto"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/rimon-dev/rimon/eventlog"
	"gopkg.in/yaml.v3"
)

// DefaultPath is where the agent looks for its policy.
const DefaultPath = "/etc/rimon/policy.yaml"

// DefaultLog is where rimon keeps its log. /run is emptied at boot, when the
// PCRs reset too.
const DefaultLog = "/run/rimon/measurements.log"

// Defaults for settings the policy leaves out.
const (
	DefaultPCR      = 23
	DefaultDebounce = 200 * time.Millisecond
	DefaultRescan   = 5 * time.Minute
	// DefaultMaxFileSize is the largest file the agent reads (settings:
	// max_file_size); a larger one is recorded as not measured (too_large).
	DefaultMaxFileSize = 4 << 30
	// DefaultMaxFileTime is how long the agent reads one file (settings:
	// max_file_time) before it records it as not measured (timeout).
	DefaultMaxFileTime = 2 * time.Minute
)

// Kind is the kind of a measurement rule.
type Kind string

// Rule kinds.
const (
	File  Kind = "file"
	Glob  Kind = "glob"
	Dir   Kind = "dir"
	Tree  Kind = "tree"
	Image Kind = "image"
)

var kinds = []Kind{File, Glob, Dir, Tree, Image}

// Symlinks says what to do with symbolic links.
type Symlinks string

// Symlink modes.
const (
	// Follow measures what a link points to, under the link's path, within
	// the symbolic link rule of docs/THREAT-MODEL.md (a link not owned by
	// root is followed only to what its owner could read).
	Follow Symlinks = "follow"
	// Skip ignores links met inside directories and globs (a file rule naming
	// a link still measures its target).
	Skip Symlinks = "skip"
)

// Rule is one entry of the measure list.
type Rule struct {
	Kind Kind
	// Path is the file, directory, tree or image; for a glob, the pattern.
	Path    string
	Exclude []Pattern
	// Pattern is the compiled Path of a glob rule.
	Pattern Pattern
	// Line is where the rule starts in the policy file.
	Line int
}

// Policy is a validated policy.
type Policy struct {
	// Source is the file the policy was read from.
	Source   string
	PCR      int
	Banks    []crypto.Hash // nil: every active bank
	Log      string
	Debounce time.Duration
	Rescan   time.Duration
	Symlinks Symlinks
	// MaxFileSize and MaxFileTime bound the work on one file (never 0).
	MaxFileSize int64
	MaxFileTime time.Duration
	Rules       []Rule
	Exclude     []Pattern
	// Containers is the containers section for `rimon oci-hook`; nil
	// when the policy has none ([DefaultContainers] applies).
	Containers *Containers
}

// Error is a policy error with its place.
type Error struct {
	File  string
	Line  int
	Field string
	Msg   string
}

// Error describes the failure.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	if e.Field != "" {
		fmt.Fprintf(&b, ": %s", e.Field)
	}
	b.WriteString(": ")
	b.WriteString(e.Msg)
	return b.String()
}

// Load reads and validates the policy file at path.
func Load(path string) (*Policy, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	defer f.Close()
	return Parse(path, f)
}

// readDoc reads at most limit bytes of YAML into a node tree.
func readDoc(name string, r io.Reader, limit int64) (*yaml.Node, error) {
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if int64(len(data)) > limit {
		return nil, &Error{File: name, Msg: fmt.Sprintf("larger than %d MiB", limit>>20)}
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil && err != io.EOF {
		return nil, &Error{File: name, Msg: strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	// yaml.Unmarshal reads the first document and ignores the rest: a
	// second one (after "---") would be silently left out.
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case err == io.EOF:
	case err != nil:
		return nil, &Error{File: name, Msg: strings.TrimPrefix(err.Error(), "yaml: ")}
	default:
		return nil, &Error{File: name, Line: extra.Line, Msg: "a second YAML document (after ---): the file must hold exactly one; merge them or remove the ---"}
	}
	return &doc, nil
}

// Parse reads and validates a policy; name is used in errors.
func Parse(name string, r io.Reader) (*Policy, error) {
	doc, err := readDoc(name, r, 4<<20)
	if err != nil {
		return nil, err
	}
	p := &parser{file: name}
	pol := &Policy{Source: name, PCR: DefaultPCR, Log: DefaultLog, Debounce: DefaultDebounce,
		Rescan: DefaultRescan, Symlinks: Follow, MaxFileSize: DefaultMaxFileSize, MaxFileTime: DefaultMaxFileTime}
	if len(doc.Content) == 0 {
		return nil, p.errf(doc, "", "the policy is empty: it needs a measure list")
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, p.errf(root, "", "want a mapping with settings, measure and exclude")
	}
	var haveMeasure bool
	err = p.mapping(root, "", func(key string, v *yaml.Node) error {
		switch key {
		case "version":
			n, err := p.integer(v, "version")
			if err != nil {
				return err
			}
			if n != 1 {
				return p.errf(v, "version", "only version 1 is known")
			}
			return nil
		case "settings":
			return p.settings(v, pol)
		case "measure":
			haveMeasure = true
			return p.measure(v, pol)
		case "exclude":
			pats, err := p.patterns(v, "exclude")
			pol.Exclude = pats
			return err
		case "containers":
			return p.containers(v, pol)
		}
		return p.errf(v, key, "unknown key (want version, settings, measure, exclude or containers)")
	})
	if err != nil {
		return nil, err
	}
	if (!haveMeasure || len(pol.Rules) == 0) && (haveMeasure || pol.Containers == nil) {
		return nil, p.errf(root, "measure", "missing or empty: list what to measure")
	}
	return pol, nil
}

type parser struct{ file string }

func (p *parser) errf(n *yaml.Node, field, format string, a ...any) error {
	return &Error{File: p.file, Line: n.Line, Field: field, Msg: fmt.Sprintf(format, a...)}
}

// mapping calls fn for each key of a mapping node, refusing duplicates.
func (p *parser) mapping(n *yaml.Node, field string, fn func(key string, v *yaml.Node) error) error {
	if n.Kind != yaml.MappingNode {
		return p.errf(n, field, "want a mapping, have %s", describe(n))
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		name := k.Value
		if field != "" {
			name = field + "." + k.Value
		}
		if seen[k.Value] {
			return p.errf(k, name, "appears twice")
		}
		seen[k.Value] = true
		if err := fn(k.Value, v); err != nil {
			return err
		}
	}
	return nil
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("%q", n.Value)
	case yaml.AliasNode:
		return "an alias"
	}
	return "nothing"
}

func (p *parser) str(n *yaml.Node, field string) (string, error) {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		return "", p.errf(n, field, "want a string, have %s", describe(n))
	}
	return n.Value, nil
}

func (p *parser) integer(n *yaml.Node, field string) (int, error) {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!int" {
		return 0, p.errf(n, field, "want a whole number, have %s", describe(n))
	}
	v, err := strconv.Atoi(n.Value)
	if err != nil {
		return 0, p.errf(n, field, "want a whole number, have %q", n.Value)
	}
	return v, nil
}

func (p *parser) duration(n *yaml.Node, field string, min, max time.Duration) (time.Duration, error) {
	s, err := p.str(n, field)
	if err != nil {
		return 0, err
	}
	if s == "0" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, p.errf(n, field, "want a duration such as 200ms or 5m, have %q", s)
	}
	if d < min || d > max {
		return 0, p.errf(n, field, "%v is out of range %v to %v", d, min, max)
	}
	return d, nil
}

func (p *parser) settings(n *yaml.Node, pol *Policy) error {
	return p.mapping(n, "settings", func(key string, v *yaml.Node) error {
		field := "settings." + key
		var err error
		switch key {
		case "pcr":
			if pol.PCR, err = p.integer(v, field); err != nil {
				return err
			}
			if pol.PCR < 0 || pol.PCR > 23 {
				return p.errf(v, field, "%d is out of range 0-23", pol.PCR)
			}
			if pol.PCR >= 17 && pol.PCR <= 22 {
				// TCG PC Client Platform TPM Profile: PCRs 17-22 are
				// extended only from localities 2 to 4, never from 0.
				return p.errf(v, field, "PCR %d cannot be extended at locality 0 (PCRs 17-22 are reserved for dynamic launch): use 23, or 0-16", pol.PCR)
			}
		case "banks":
			if v.Kind != yaml.SequenceNode || len(v.Content) == 0 {
				return p.errf(v, field, "want a list such as [sha256, sha384], have %s", describe(v))
			}
			for _, b := range v.Content {
				s, err := p.str(b, field)
				if err != nil {
					return err
				}
				h, err := eventlog.ParseBank(s)
				if err != nil {
					return p.errf(b, field, "%v", err)
				}
				for _, have := range pol.Banks {
					if have == h {
						return p.errf(b, field, "%s appears twice", s)
					}
				}
				pol.Banks = append(pol.Banks, h)
			}
			sort.Slice(pol.Banks, func(i, j int) bool { return pol.Banks[i] < pol.Banks[j] })
		case "log":
			if pol.Log, err = p.absPath(v, field); err != nil {
				return err
			}
		case "debounce":
			pol.Debounce, err = p.duration(v, field, time.Millisecond, time.Minute)
			return err
		case "rescan":
			pol.Rescan, err = p.duration(v, field, time.Second, 7*24*time.Hour)
			return err
		case "max_file_size":
			pol.MaxFileSize, err = p.size(v, field, 1<<10, 1<<50)
			return err
		case "max_file_time":
			pol.MaxFileTime, err = p.duration(v, field, time.Second, 24*time.Hour)
			if err == nil && pol.MaxFileTime == 0 {
				return p.errf(v, field, "0 would let one file hold a worker forever: give a duration such as 2m")
			}
			return err
		case "symlinks":
			s, err := p.str(v, field)
			if err != nil {
				return err
			}
			if s != string(Follow) && s != string(Skip) {
				return p.errf(v, field, "want follow or skip, have %q", s)
			}
			pol.Symlinks = Symlinks(s)
		default:
			return p.errf(v, field, "unknown setting (want pcr, banks, log, debounce, rescan, symlinks, max_file_size or max_file_time)")
		}
		return nil
	})
}

// size reads a byte count: a whole number, or one with a unit B, KiB,
// MiB, GiB or TiB (such as 4GiB).
func (p *parser) size(n *yaml.Node, field string, min, max int64) (int64, error) {
	s, err := p.str(n, field)
	if err != nil {
		return 0, err
	}
	num, mult := strings.TrimSpace(s), int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"B", 1}} {
		if strings.HasSuffix(num, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(num, u.suffix)), u.mult
			break
		}
	}
	v, err := strconv.ParseInt(num, 10, 64)
	if err != nil || v < 0 || v > max/mult {
		return 0, p.errf(n, field, "want a size such as 4GiB, 512MiB or 1048576 (bytes) from %d to %d bytes, have %q", min, max, s)
	}
	if v*mult < min {
		return 0, p.errf(n, field, "%d bytes is below the minimum of %d", v*mult, min)
	}
	return v * mult, nil
}

func (p *parser) absPath(n *yaml.Node, field string) (string, error) {
	s, err := p.str(n, field)
	if err != nil {
		return "", err
	}
	if !strings.HasPrefix(s, "/") {
		return "", p.errf(n, field, "%q is not an absolute path", s)
	}
	if strings.ContainsRune(s, 0) {
		return "", p.errf(n, field, "the path contains a NUL byte")
	}
	return path.Clean(s), nil
}

func (p *parser) measure(n *yaml.Node, pol *Policy) error {
	if n.Kind != yaml.SequenceNode {
		return p.errf(n, "measure", "want a list of entries such as '- file: /usr/bin/myapp', have %s", describe(n))
	}
	for i, e := range n.Content {
		field := fmt.Sprintf("measure[%d]", i)
		r := Rule{Line: e.Line}
		err := p.mapping(e, field, func(key string, v *yaml.Node) error {
			if key == "exclude" {
				pats, err := p.patterns(v, field+".exclude")
				r.Exclude = pats
				return err
			}
			for _, k := range kinds {
				if key != string(k) {
					continue
				}
				if r.Kind != "" {
					return p.errf(v, field, "has both %s and %s: one kind per entry", r.Kind, k)
				}
				r.Kind = k
				if k == Glob {
					pat, err := p.pattern(v, field+".glob")
					if err != nil {
						return err
					}
					if !strings.HasPrefix(pat.s, "/") {
						return p.errf(v, field+".glob", "%q: a glob to measure must be absolute", pat.s)
					}
					r.Path, r.Pattern = pat.s, pat
					return nil
				}
				var err error
				r.Path, err = p.absPath(v, field+"."+key)
				return err
			}
			return p.errf(v, field+"."+key, "unknown key (want one of file, glob, dir, tree, image, and optionally exclude)")
		})
		if err != nil {
			return err
		}
		if r.Kind == "" {
			return p.errf(e, field, "says nothing to measure: want one of file, glob, dir, tree or image")
		}
		if len(r.Exclude) > 0 && (r.Kind == File || r.Kind == Image) {
			return p.errf(e, field+".exclude", "exclude applies to glob, dir and tree entries only")
		}
		pol.Rules = append(pol.Rules, r)
	}
	return nil
}

func (p *parser) patterns(n *yaml.Node, field string) ([]Pattern, error) {
	if n.Kind != yaml.SequenceNode {
		return nil, p.errf(n, field, "want a list of patterns, have %s", describe(n))
	}
	var out []Pattern
	for _, v := range n.Content {
		pat, err := p.pattern(v, field)
		if err != nil {
			return nil, err
		}
		out = append(out, pat)
	}
	return out, nil
}

func (p *parser) pattern(n *yaml.Node, field string) (Pattern, error) {
	s, err := p.str(n, field)
	if err != nil {
		return Pattern{}, err
	}
	pat, err := CompilePattern(s)
	if err != nil {
		return Pattern{}, p.errf(n, field, "%v", err)
	}
	return pat, nil
}

// ErrBadPattern is returned for a malformed pattern.
var ErrBadPattern = errors.New("bad pattern")
