package policy

import (
	"fmt"
	"path"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// OnError says what the OCI hook does when it cannot measure or record a
// container.
type OnError string

// What the hook does on an error.
const (
	// Deny makes the hook fail, so that the runtime does not start the
	// container (the default).
	Deny OnError = "deny"
	// Allow logs the failure and lets the container start unmeasured.
	Allow OnError = "allow"
)

// Containers is the policy's containers section, for `rimon oci-hook`:
//
//	containers:
//	  when:                      # which containers; as oci-hooks(5) "when"
//	    always: false
//	    annotations:             # regexp of a key: regexp of its value
//	      '^io\.kubernetes\.pod\.namespace$': '^prod-'
//	    commands: ['^/usr/sbin/nginx$']   # regexps of process.args[0]
//	  rootfs: true               # measure the root file system (default)
//	  on_error: deny             # or allow (default deny)
//
// Its zero value is not the default: use [DefaultContainers].
type Containers struct {
	// When selects the containers measured; nil means every container.
	When *When
	// Rootfs measures the root file system as a tree digest.
	Rootfs bool
	// OnError is Deny or Allow.
	OnError OnError
}

// When selects containers as the "when" object of oci-hooks(5) does: a
// container is selected when Always is set, when any annotation's key and
// value match one of the Annotations pairs, or when process.args[0]
// matches one of Commands. Regexps are Go's (RE2), unanchored, as podman
// and CRI-O match them.
type When struct {
	Always      bool
	Annotations []AnnotationMatch
	Commands    []*regexp.Regexp
}

// AnnotationMatch is one pair of a When's annotations.
type AnnotationMatch struct {
	Key, Value *regexp.Regexp
}

// DefaultContainers is what the hook does without a policy or a
// containers section: every container, root file system included, and
// errors deny the start.
func DefaultContainers() Containers {
	return Containers{Rootfs: true, OnError: Deny}
}

// Selects reports whether the container with these annotations and
// process.args[0] is to be measured.
func (c Containers) Selects(annotations map[string]string, command string) bool {
	w := c.When
	if w == nil || w.Always {
		return true
	}
	for _, am := range w.Annotations {
		for k, v := range annotations {
			if am.Key.MatchString(k) && am.Value.MatchString(v) {
				return true
			}
		}
	}
	for _, re := range w.Commands {
		if re.MatchString(command) {
			return true
		}
	}
	return false
}

// HookWhen returns the "when" object of an oci-hooks(5) file that selects
// the same containers as c.
func (c Containers) HookWhen() map[string]any {
	w := c.When
	if w == nil || w.Always || (len(w.Annotations) == 0 && len(w.Commands) == 0) {
		return map[string]any{"always": true}
	}
	out := map[string]any{}
	if len(w.Annotations) > 0 {
		a := map[string]string{}
		for _, am := range w.Annotations {
			a[am.Key.String()] = am.Value.String()
		}
		out["annotations"] = a
	}
	if len(w.Commands) > 0 {
		cmds := make([]string, len(w.Commands))
		for i, re := range w.Commands {
			cmds[i] = re.String()
		}
		out["commands"] = cmds
	}
	return out
}

func (p *parser) containers(n *yaml.Node, pol *Policy) error {
	c := DefaultContainers()
	err := p.mapping(n, "containers", func(key string, v *yaml.Node) error {
		field := "containers." + key
		var err error
		switch key {
		case "rootfs":
			c.Rootfs, err = p.boolean(v, field)
		case "on_error":
			var s string
			if s, err = p.str(v, field); err == nil && s != string(Deny) && s != string(Allow) {
				err = p.errf(v, field, "want deny or allow, have %q", s)
			}
			c.OnError = OnError(s)
		case "when":
			c.When, err = p.when(v, field)
		default:
			err = p.errf(v, field, "unknown key (want when, rootfs or on_error)")
		}
		return err
	})
	if err != nil {
		return err
	}
	pol.Containers = &c
	return nil
}

func (p *parser) when(n *yaml.Node, field string) (*When, error) {
	w := &When{}
	err := p.mapping(n, field, func(key string, v *yaml.Node) error {
		f := field + "." + key
		switch key {
		case "always":
			var err error
			w.Always, err = p.boolean(v, f)
			return err
		case "annotations":
			var pairs []AnnotationMatch
			err := p.mapping(v, f, func(k string, vv *yaml.Node) error {
				kre, err := regexp.Compile(k)
				if err != nil {
					return p.errf(vv, f, "key %q is not a regular expression: %v", k, err)
				}
				s, err := p.str(vv, f+"."+k)
				if err != nil {
					return err
				}
				vre, err := regexp.Compile(s)
				if err != nil {
					return p.errf(vv, f+"."+k, "%q is not a regular expression: %v", s, err)
				}
				pairs = append(pairs, AnnotationMatch{Key: kre, Value: vre})
				return nil
			})
			w.Annotations = pairs
			return err
		case "commands":
			if v.Kind != yaml.SequenceNode {
				return p.errf(v, f, "want a list of regular expressions, have %s", describe(v))
			}
			for _, e := range v.Content {
				s, err := p.str(e, f)
				if err != nil {
					return err
				}
				re, err := regexp.Compile(s)
				if err != nil {
					return p.errf(e, f, "%q is not a regular expression: %v", s, err)
				}
				w.Commands = append(w.Commands, re)
			}
			return nil
		}
		return p.errf(v, f, "unknown key (want always, annotations or commands, as in oci-hooks(5))")
	})
	if err != nil {
		return nil, err
	}
	if !w.Always && len(w.Annotations) == 0 && len(w.Commands) == 0 {
		return nil, p.errf(n, field, "selects no container: give always: true, annotations or commands (or leave when out to measure every container)")
	}
	return w, nil
}

// ContainerRef is one entry of a reference file's containers section: the
// digests a container whose name matches Name may start with. An empty
// list is not checked.
//
//	containers:
//	  web:                 # a container name, or a pattern (*, ?, [...]; \ escapes)
//	    launch: [<64 hex>]         # allowed launch digests
//	    rootfs: [<64 hex>]         # allowed root file system tree digests
//	    image: ["sha256:<64 hex>"] # allowed image ids or manifest digests
type ContainerRef struct {
	Name    string
	Pattern bool
	Launch  []string
	Rootfs  []string
	Image   []string
	Line    int
}

// Match reports whether the entry covers a container name.
func (e *ContainerRef) Match(name string) bool {
	if !e.Pattern {
		return e.Name == name
	}
	ok, _ := path.Match(e.Name, name)
	return ok
}

// LookupContainer returns the entry for a container name: an exact entry
// first, then the first pattern (in the file's order) that matches.
func LookupContainer(entries []ContainerRef, name string) (*ContainerRef, bool) {
	for i := range entries {
		if !entries[i].Pattern && entries[i].Name == name {
			return &entries[i], true
		}
	}
	for i := range entries {
		if entries[i].Pattern && entries[i].Match(name) {
			return &entries[i], true
		}
	}
	return nil, false
}

func (p *parser) containerRefs(n *yaml.Node, field string) ([]ContainerRef, error) {
	var out []ContainerRef
	err := p.mapping(n, field, func(key string, v *yaml.Node) error {
		f := field + "." + key
		e := ContainerRef{Name: key, Line: v.Line, Pattern: strings.ContainsAny(key, "*?[")}
		if key == "" {
			return p.errf(v, f, "empty container name")
		}
		if e.Pattern {
			if _, err := path.Match(key, ""); err != nil {
				return p.errf(v, f, "%q is not a valid pattern: %v", key, err)
			}
		}
		err := p.mapping(v, f, func(k string, w *yaml.Node) error {
			ff := f + "." + k
			var dst *[]string
			switch k {
			case "launch":
				dst = &e.Launch
			case "rootfs":
				dst = &e.Rootfs
			case "image":
				dst = &e.Image
			default:
				return p.errf(w, ff, "unknown key (want launch, rootfs or image)")
			}
			if w.Kind != yaml.SequenceNode || len(w.Content) == 0 {
				return p.errf(w, ff, "want a list of allowed digests, have %s", describe(w))
			}
			for _, d := range w.Content {
				s, err := p.str(d, ff)
				if err != nil {
					return err
				}
				norm, err := normDigest(s, k == "image")
				if err != nil {
					return p.errf(d, ff, "%v", err)
				}
				*dst = append(*dst, norm)
			}
			return nil
		})
		if err != nil {
			return err
		}
		if len(e.Launch)+len(e.Rootfs)+len(e.Image) == 0 {
			return p.errf(v, f, "lists no digest: give launch, rootfs or image")
		}
		out = append(out, e)
		return nil
	})
	sort.SliceStable(out, func(i, j int) bool { return !out[i].Pattern && out[j].Pattern })
	return out, err
}

// String names the entry for people.
func (e *ContainerRef) String() string {
	return fmt.Sprintf("containers.%s (line %d)", e.Name, e.Line)
}

// ContainerDigests are the digests a generated reference allows for one
// container name.
type ContainerDigests struct {
	Launch, Rootfs, Image []string
	// Pattern writes the name as a pattern; otherwise it is escaped to
	// stay a literal name.
	Pattern bool
}

func addOnce(list []string, s string) []string {
	if s == "" || slices.Contains(list, s) {
		return list
	}
	return append(list, s)
}

// writeContainers writes a reference file's containers section; names
// holding pattern characters are escaped so that they stay literal.
func writeContainers(b *strings.Builder, cs map[string]*ContainerDigests) error {
	if len(cs) == 0 {
		return nil
	}
	b.WriteString("containers:\n")
	names := make([]string, 0, len(cs))
	for n := range cs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if !utf8.ValidString(n) {
			return fmt.Errorf("reference: the container name %q is not valid UTF-8", n)
		}
		d := cs[n]
		key := n
		if !d.Pattern {
			key = EscapePath(n)
		}
		fmt.Fprintf(b, "  %s:\n", strconv.Quote(key))
		for _, l := range []struct {
			key  string
			list []string
		}{{"launch", d.Launch}, {"rootfs", d.Rootfs}, {"image", d.Image}} {
			if len(l.list) == 0 {
				continue
			}
			fmt.Fprintf(b, "    %s:\n", l.key)
			for _, v := range slices.Sorted(slices.Values(l.list)) {
				fmt.Fprintf(b, "      - %s\n", strconv.Quote(v))
			}
		}
	}
	return nil
}
