package policy

import (
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// Reference is a set of reference values for a verifier: which digests
// each path may have.
//
//	version: 1
//	unlisted: fail          # or warn: a measured path no entry covers
//	deletions: allow        # or fail: a covered path that was deleted
//	unmeasured: fail        # or warn: a path whose latest record says it could not be measured
//	files:                  # path or pattern -> allowed SHA-256 digests (files and trees)
//	  /usr/bin/myapp: [5891b5b5..., 0f1e2d3c...]
//	  /opt/app/bin/*: [...]
//	required:               # paths that must have been measured, and be present
//	  - /usr/bin/myapp
//	images:                 # image path -> allowed manifest or config digests
//	  /var/lib/images/web.tar: ["sha256:..."]
//	ignore:                 # paths or patterns accepted with any digest
//	  - /var/log/**
type Reference struct {
	Source string
	// FailUnlisted makes a measured path that no entry covers a failure
	// rather than a warning.
	FailUnlisted bool
	// AllowDeletions accepts a covered path that was deleted.
	AllowDeletions bool
	// WarnUnmeasured makes a path whose latest record is an "unmeasured"
	// record (the agent could not measure it) a warning rather than a failure.
	WarnUnmeasured bool
	Files          []RefEntry
	Required       []string
	Images         []RefEntry
	// SNP is what an Azure SEV-SNP report must satisfy (the "azure" key).
	SNP SNPPolicy
	// Ignore are paths and patterns whose measurements are accepted with
	// any digest, as Keylime's excludes are (see [Reference.Ignored]).
	Ignore []Pattern
	// Containers are the digests each container may start with (the
	// "containers" key, see [ContainerRef]); exact names first.
	Containers []ContainerRef
}

// Ignored reports whether a measurement of path is accepted with any
// digest. A path holding a newline is never ignored: Keylime's "."
// does not match one, and a rimon pattern cannot say so.
func (r *Reference) Ignored(path string) bool {
	if strings.ContainsRune(path, '\n') {
		return false
	}
	for _, p := range r.Ignore {
		if p.Match(path) {
			return true
		}
	}
	return false
}

// SNPPolicy is the reference file's "azure" section:
//
//	azure:
//	  allow_debug: false            # the default; true is insecure
//	  allow_migration_agent: false  # the default
//	  vmpl: 0                       # the default
//	  minimum_tcb: {bootloader: 3, tee: 0, snp: 8, microcode: 115}
//	  measurement: <96 hex characters>
//	  vm_unique_id: 911B0EF8-9DBA-48B0-B275-4E4DF2D39252   # which VM, from its runtime claims
type SNPPolicy struct {
	AllowDebug, AllowMigrationAgent bool
	// VMUniqueID, when set, is the vmUniqueId the runtime claims must carry:
	// without it, any Azure confidential VM that meets the policy passes.
	VMUniqueID string
	VMPL       int
	// MinimumTCB is nil when not set: bootloader, tee, snp, microcode.
	MinimumTCB  *[4]uint8
	Measurement []byte
}

// RefEntry is one path (or pattern) and the digests it may have.
type RefEntry struct {
	Path    string
	Pattern *Pattern // set when Path has wildcards
	Allowed []string // lowercase hex for files; "sha256:<hex>" for images
	Line    int
}

// Match reports whether the entry covers path.
func (e *RefEntry) Match(path string) bool {
	if e.Pattern != nil {
		return e.Pattern.Match(path)
	}
	return e.Path == path
}

// Lookup returns the entry for path: an exact entry first, then the first
// pattern that matches.
func Lookup(entries []RefEntry, path string) (*RefEntry, bool) {
	for i := range entries {
		if entries[i].Pattern == nil && entries[i].Path == path {
			return &entries[i], true
		}
	}
	for i := range entries {
		if entries[i].Pattern != nil && entries[i].Pattern.Match(path) {
			return &entries[i], true
		}
	}
	return nil, false
}

// LoadReference reads and validates a reference file.
func LoadReference(path string) (*Reference, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reference: %w", err)
	}
	defer f.Close()
	return ParseReference(path, f)
}

// ParseReference reads and validates reference values; name is used in errors.
func ParseReference(name string, r io.Reader) (*Reference, error) {
	doc, err := readDoc(name, r, 64<<20)
	if err != nil {
		return nil, err
	}
	p := &parser{file: name}
	ref := &Reference{Source: name, FailUnlisted: true}
	if len(doc.Content) == 0 {
		return nil, p.errf(doc, "", "the reference file is empty")
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, p.errf(root, "", "want a mapping with files, required, images, unlisted, deletions and unmeasured")
	}
	err = p.mapping(root, "", func(key string, v *yaml.Node) error {
		switch key {
		case "version":
			n, err := p.integer(v, key)
			if err == nil && n != 1 {
				err = p.errf(v, key, "only version 1 is known")
			}
			return err
		case "unlisted":
			s, err := p.str(v, key)
			if err != nil {
				return err
			}
			if s != "fail" && s != "warn" {
				return p.errf(v, key, "want fail or warn, have %q", s)
			}
			ref.FailUnlisted = s == "fail"
		case "deletions":
			s, err := p.str(v, key)
			if err != nil {
				return err
			}
			if s != "allow" && s != "fail" {
				return p.errf(v, key, "want allow or fail, have %q", s)
			}
			ref.AllowDeletions = s == "allow"
		case "unmeasured":
			s, err := p.str(v, key)
			if err != nil {
				return err
			}
			if s != "fail" && s != "warn" {
				return p.errf(v, key, "want fail or warn, have %q", s)
			}
			ref.WarnUnmeasured = s == "warn"
		case "files":
			ref.Files, err = p.refEntries(v, key, false)
			return err
		case "images":
			ref.Images, err = p.refEntries(v, key, true)
			return err
		case "azure":
			return p.snpPolicy(v, &ref.SNP)
		case "containers":
			ref.Containers, err = p.containerRefs(v, key)
			return err
		case "ignore":
			if v.Kind != yaml.SequenceNode {
				return p.errf(v, key, "want a list of paths or patterns, have %s", describe(v))
			}
			for _, n := range v.Content {
				s, err := p.str(n, key)
				if err != nil {
					return err
				}
				if !strings.HasPrefix(s, "/") {
					return p.errf(n, key, "%q is not an absolute path or pattern", s)
				}
				pat, err := CompilePattern(s)
				if err != nil {
					return p.errf(n, key, "%v", err)
				}
				ref.Ignore = append(ref.Ignore, pat)
			}
		case "required":
			if v.Kind != yaml.SequenceNode {
				return p.errf(v, key, "want a list of paths, have %s", describe(v))
			}
			for _, n := range v.Content {
				s, err := p.absPath(n, key)
				if err != nil {
					return err
				}
				ref.Required = append(ref.Required, s)
			}
		default:
			return p.errf(v, key, "unknown key (want version, unlisted, deletions, unmeasured, files, required, images, containers, ignore or azure)")
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return ref, nil
}

func (p *parser) refEntries(n *yaml.Node, field string, images bool) ([]RefEntry, error) {
	var out []RefEntry
	err := p.mapping(n, field, func(key string, v *yaml.Node) error {
		f := field + "." + key
		e := RefEntry{Path: key, Line: v.Line}
		if !strings.HasPrefix(key, "/") {
			return p.errf(v, f, "%q is not an absolute path or pattern", key)
		}
		if strings.ContainsAny(key, "*?[") {
			pat, err := CompilePattern(key)
			if err != nil {
				return p.errf(v, f, "%v", err)
			}
			e.Pattern = &pat
		}
		if v.Kind != yaml.SequenceNode || len(v.Content) == 0 {
			return p.errf(v, f, "want a list of allowed digests, have %s", describe(v))
		}
		for _, d := range v.Content {
			s, err := p.str(d, f)
			if err != nil {
				return err
			}
			norm, err := normDigest(s, images)
			if err != nil {
				return p.errf(d, f, "%v", err)
			}
			e.Allowed = append(e.Allowed, norm)
		}
		out = append(out, e)
		return nil
	})
	sort.SliceStable(out, func(i, j int) bool { return (out[i].Pattern == nil) && (out[j].Pattern != nil) })
	return out, err
}

func normDigest(s string, images bool) (string, error) {
	hexd := strings.ToLower(strings.TrimPrefix(s, "sha256:"))
	if len(hexd) != 64 {
		return "", fmt.Errorf("%q is not a SHA-256 digest (64 hex characters, optionally after sha256:)", s)
	}
	if _, err := hex.DecodeString(hexd); err != nil {
		return "", fmt.Errorf("%q is not a SHA-256 digest: %v", s, err)
	}
	if images {
		return "sha256:" + hexd, nil
	}
	return hexd, nil
}

func (p *parser) boolean(n *yaml.Node, field string) (bool, error) {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
		return false, p.errf(n, field, "want true or false, have %s", describe(n))
	}
	return n.Value == "true", nil
}

func (p *parser) snpPolicy(n *yaml.Node, out *SNPPolicy) error {
	return p.mapping(n, "azure", func(key string, v *yaml.Node) error {
		field := "azure." + key
		var err error
		switch key {
		case "allow_debug":
			out.AllowDebug, err = p.boolean(v, field)
		case "allow_migration_agent":
			out.AllowMigrationAgent, err = p.boolean(v, field)
		case "vmpl":
			if out.VMPL, err = p.integer(v, field); err == nil && (out.VMPL < 0 || out.VMPL > 3) {
				err = p.errf(v, field, "%d is out of range 0-3", out.VMPL)
			}
		case "vm_unique_id":
			out.VMUniqueID, err = p.str(v, field)
		case "measurement":
			var s string
			if s, err = p.str(v, field); err != nil {
				return err
			}
			if out.Measurement, err = hex.DecodeString(s); err != nil || len(out.Measurement) != 48 {
				return p.errf(v, field, "want 96 hex characters (a SHA-384 launch measurement)")
			}
		case "minimum_tcb":
			var tcb [4]uint8
			err = p.mapping(v, field, func(k string, w *yaml.Node) error {
				idx := map[string]int{"bootloader": 0, "tee": 1, "snp": 2, "microcode": 3}
				i, ok := idx[k]
				if !ok {
					return p.errf(w, field+"."+k, "unknown key (want bootloader, tee, snp, microcode)")
				}
				n, err := p.integer(w, field+"."+k)
				if err == nil && (n < 0 || n > 255) {
					err = p.errf(w, field+"."+k, "%d is out of range 0-255", n)
				}
				tcb[i] = uint8(n)
				return err
			})
			out.MinimumTCB = &tcb
		default:
			return p.errf(v, field, "unknown key (want allow_debug, allow_migration_agent, vmpl, minimum_tcb, measurement, vm_unique_id)")
		}
		return err
	})
}
