// Package ocihook measures a container as an OCI runtime hook sees it before
// its process runs: the launch description (what config.json says the
// container will do, in a normal form that runtime-generated values do not
// change), the root file system as a tree digest, and the image identity the
// container manager left in annotations or in podman's storage files.
//
// # What is trusted
//
// The state on stdin and config.json come from the runtime (runc, crun),
// which runs the hook as root in its own namespaces: they are read strictly
// (valid UTF-8, no key twice, integers only, bounded sizes and depth) so
// that a hostile config.json gives a clear error, never a digest that two
// different configurations share. The image identity is the container
// manager's word (CRI-O and containerd annotations, podman's
// containers.json and images.json), recorded as such: it is not checked
// against the image's blobs.
//
// Like package measure, it does not log; its only goroutines are those of
// [measure.TreeWith], which end before it returns.
package ocihook

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"unicode/utf8"
)

// Limits on what the hook reads.
const (
	// MaxStateSize is the largest state document read from stdin.
	MaxStateSize = 1 << 20
	// MaxConfigSize is the largest config.json read (podman's, with its
	// seccomp profile, is about 50 KiB).
	MaxConfigSize = 8 << 20
)

// ErrInput marks state or config.json that cannot be read as the OCI
// runtime specification says: the hook cannot measure the container.
var ErrInput = errors.New("invalid OCI hook input")

// State is the container's state that the runtime writes to a hook's stdin
// (OCI runtime specification, runtime.md "State").
type State struct {
	OCIVersion string
	ID         string
	Status     string
	PID        int64
	// Bundle is the absolute path of the container's bundle directory.
	Bundle      string
	Annotations map[string]string
}

// ReadState reads the state from r (at most [MaxStateSize] bytes).
func ReadState(r io.Reader) (*State, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxStateSize+1))
	if err != nil {
		return nil, fmt.Errorf("%w: read the state from stdin: %v", ErrInput, err)
	}
	if len(b) > MaxStateSize {
		return nil, fmt.Errorf("%w: the state on stdin is larger than %d bytes", ErrInput, MaxStateSize)
	}
	return ParseState(b)
}

// ParseState parses the state document. id and bundle are required; fields
// it does not know are ignored, as the specification allows.
func ParseState(b []byte) (*State, error) {
	if len(bytesTrimSpace(b)) == 0 {
		return nil, fmt.Errorf("%w: the state on stdin is empty (is this run by an OCI runtime as a hook?)", ErrInput)
	}
	v, err := parseJSON("state", b)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInput, err)
	}
	obj, ok := v.(object)
	if !ok {
		return nil, fmt.Errorf("%w: state: want a JSON object, have %s", ErrInput, typeName(v))
	}
	st := &State{}
	for _, f := range []struct {
		key string
		dst *string
	}{{"ociVersion", &st.OCIVersion}, {"id", &st.ID}, {"status", &st.Status}, {"bundle", &st.Bundle}} {
		if *f.dst, err = optString(obj, "state", f.key); err != nil {
			return nil, err
		}
	}
	if n, ok := obj["pid"]; ok && n != nil {
		num, isNum := n.(json.Number)
		if !isNum {
			return nil, fmt.Errorf("%w: state.pid: want an integer, have %s", ErrInput, typeName(n))
		}
		if st.PID, err = num.Int64(); err != nil || st.PID < 0 {
			return nil, fmt.Errorf("%w: state.pid: %s is not a process number", ErrInput, num)
		}
	}
	if st.Annotations, err = stringMap(obj, "state", "annotations"); err != nil {
		return nil, err
	}
	if err := CheckID(st.ID); err != nil {
		return nil, fmt.Errorf("%w: state.id: %v", ErrInput, err)
	}
	if st.Bundle == "" || !filepath.IsAbs(st.Bundle) {
		return nil, fmt.Errorf("%w: state.bundle: want the bundle's absolute path, have %q", ErrInput, st.Bundle)
	}
	if !utf8.ValidString(st.Bundle) || strings.ContainsRune(st.Bundle, 0) {
		return nil, fmt.Errorf("%w: state.bundle: not a valid path", ErrInput)
	}
	st.Bundle = filepath.Clean(st.Bundle)
	return st, nil
}

func bytesTrimSpace(b []byte) []byte { return []byte(strings.TrimSpace(string(b))) }

// CheckID accepts a container id as runc does: 1 to 1024 characters from
// A-Z, a-z, 0-9, '_', '+', '-' and '.', not "." or "..".
func CheckID(id string) error {
	if id == "" || len(id) > 1024 {
		return fmt.Errorf("want 1 to 1024 characters, have %d", len(id))
	}
	if id == "." || id == ".." {
		return fmt.Errorf("%q is not a container id", id)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '+' || c == '-' || c == '.') {
			return fmt.Errorf("%q: only A-Z, a-z, 0-9, _, +, - and . are allowed", id)
		}
	}
	return nil
}

func optString(obj object, at, key string) (string, error) {
	v, ok := obj[key]
	if !ok || v == nil {
		return "", nil
	}
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("%w: %s.%s: want a string, have %s", ErrInput, at, key, typeName(v))
	}
	return s, nil
}

func stringMap(obj object, at, key string) (map[string]string, error) {
	v, ok := obj[key]
	if !ok || v == nil {
		return map[string]string{}, nil
	}
	m, ok := v.(object)
	if !ok {
		return nil, fmt.Errorf("%w: %s.%s: want an object of strings, have %s", ErrInput, at, key, typeName(v))
	}
	out := make(map[string]string, len(m))
	for k, e := range m {
		s, ok := e.(string)
		if !ok {
			return nil, fmt.Errorf("%w: %s.%s.%s: want a string, have %s", ErrInput, at, key, k, typeName(e))
		}
		out[k] = s
	}
	return out, nil
}

// Config is a bundle's config.json (OCI runtime specification, config.md),
// read strictly.
type Config struct {
	// RootPath is root.path as written: relative to the bundle, or absolute.
	RootPath string
	// Args is process.args (empty when the config has no process).
	Args []string
	// Annotations are the config's annotations.
	Annotations map[string]string
	// Mounts are the destinations of the config's mounts, in order.
	Mounts []string
	tree   object
}

// ReadConfig reads config.json from the bundle directory (at most
// [MaxConfigSize] bytes; it must be a regular file).
func ReadConfig(bundle string) (*Config, error) {
	p := filepath.Join(bundle, "config.json")
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInput, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInput, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file (%v)", ErrInput, p, fi.Mode().Type())
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxConfigSize+1))
	if err != nil {
		return nil, fmt.Errorf("%w: read %s: %v", ErrInput, p, err)
	}
	if len(b) > MaxConfigSize {
		return nil, fmt.Errorf("%w: %s is larger than %d MiB", ErrInput, p, MaxConfigSize>>20)
	}
	return ParseConfig(p, b)
}

// ParseConfig parses a config.json; name is used in errors. It checks the
// types of the fields the hook uses (root.path, process.args, annotations,
// mounts) and reads every other field only as JSON, for the launch
// description.
func ParseConfig(name string, b []byte) (*Config, error) {
	v, err := parseJSON(name, b)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInput, err)
	}
	obj, ok := v.(object)
	if !ok {
		return nil, fmt.Errorf("%w: %s: want a JSON object, have %s", ErrInput, name, typeName(v))
	}
	c := &Config{tree: obj}
	root, ok := obj["root"].(object)
	if !ok {
		return nil, fmt.Errorf("%w: %s: root: want an object with the root file system's path, have %s", ErrInput, name, typeName(obj["root"]))
	}
	if c.RootPath, err = optString(root, name+": root", "path"); err != nil {
		return nil, err
	}
	if c.RootPath == "" || strings.ContainsRune(c.RootPath, 0) {
		return nil, fmt.Errorf("%w: %s: root.path: want the root file system's path, have %q", ErrInput, name, c.RootPath)
	}
	if ro, ok := root["readonly"]; ok {
		if _, isBool := ro.(bool); !isBool {
			return nil, fmt.Errorf("%w: %s: root.readonly: want true or false, have %s", ErrInput, name, typeName(ro))
		}
	}
	if p, ok := obj["process"]; ok {
		proc, isObj := p.(object)
		if !isObj {
			return nil, fmt.Errorf("%w: %s: process: want an object, have %s", ErrInput, name, typeName(p))
		}
		if c.Args, err = stringList(proc, name+": process", "args"); err != nil {
			return nil, err
		}
		if _, err := stringList(proc, name+": process", "env"); err != nil {
			return nil, err
		}
	}
	if c.Annotations, err = stringMap(obj, name+":", "annotations"); err != nil {
		return nil, err
	}
	if ms, ok := obj["mounts"]; ok {
		list, isList := ms.([]any)
		if !isList {
			return nil, fmt.Errorf("%w: %s: mounts: want a list, have %s", ErrInput, name, typeName(ms))
		}
		for i, m := range list {
			mo, isObj := m.(object)
			if !isObj {
				return nil, fmt.Errorf("%w: %s: mounts[%d]: want an object, have %s", ErrInput, name, i, typeName(m))
			}
			d, err := optString(mo, fmt.Sprintf("%s: mounts[%d]", name, i), "destination")
			if err != nil {
				return nil, err
			}
			c.Mounts = append(c.Mounts, d)
		}
		if len(list) > MaxMounts {
			return nil, fmt.Errorf("%w: %s: mounts: %d mounts, more than %d", ErrInput, name, len(list), MaxMounts)
		}
	}
	return c, nil
}

func stringList(obj object, at, key string) ([]string, error) {
	v, ok := obj[key]
	if !ok || v == nil {
		return nil, nil
	}
	list, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("%w: %s.%s: want a list of strings, have %s", ErrInput, at, key, typeName(v))
	}
	out := make([]string, len(list))
	for i, e := range list {
		s, ok := e.(string)
		if !ok {
			return nil, fmt.Errorf("%w: %s.%s[%d]: want a string, have %s", ErrInput, at, key, i, typeName(e))
		}
		out[i] = s
	}
	return out, nil
}

// Rootfs returns the root file system's absolute path for a bundle.
func (c *Config) Rootfs(bundle string) (string, error) {
	p := c.RootPath
	if !filepath.IsAbs(p) {
		p = filepath.Join(bundle, p)
	}
	p = filepath.Clean(p)
	if !utf8.ValidString(p) {
		return "", fmt.Errorf("%w: root.path %q is not valid UTF-8, which the log cannot record", ErrInput, p)
	}
	return p, nil
}

// LaunchHeader opens the bytes whose SHA-256 is the launch digest.
const LaunchHeader = "rimon-launch-v1\n"

// shortIDLen is the length of the id prefix podman and docker use as a
// container's host name.
const shortIDLen = 12

// minIDLen is the shortest id replaced in the launch description: the
// 64-hex-digit ids that podman, CRI-O, containerd and docker generate
// qualify; a short id chosen by hand ("web") would match too much.
const minIDLen = 32

// procPID matches a process's /proc directory, but init's (/proc/1/, the
// host's namespaces, which a container joining them must not hide).
var procPID = regexp.MustCompile(`^/proc/([2-9]|[1-9][0-9]+)/`)

// Launch returns the normal form of the launch description of the
// container id (docs/FORMAT.md, "The launch description") and its launch
// digest, SHA-256([LaunchHeader] || normal form), in lowercase hex.
func (c *Config) Launch(id string) (normal []byte, digest string) {
	t := normalize(c.tree, id)
	normal = appendCanonical(nil, t)
	h := sha256.New()
	h.Write([]byte(LaunchHeader))
	h.Write(normal)
	return normal, hex.EncodeToString(h.Sum(nil))
}

// normalize returns a normalized copy of a config tree:
//
//  1. hooks, linux.cgroupsPath, process.consoleSize and root.path are
//     left out, and every annotation but those whose key starts with
//     "run.oci." (crun's settings);
//  2. when id has at least [minIDLen] characters, every occurrence of it
//     in a string value, then of its first [shortIDLen] characters,
//     becomes "{id}";
//  3. a namespace path /proc/PID/... becomes /proc/{pid}/... unless PID
//     is 1;
//  4. process.env is sorted by variable name (the part before the first
//     '='), stably, so that a name given twice keeps its order;
//     every list of process.capabilities is sorted;
//  5. mounts are put in a canonical order that keeps the order of every
//     two mounts whose destinations are the same or one below the other
//     (which decides what shadows what), see [orderMounts].
func normalize(tree object, id string) object {
	t := deepCopy(tree).(object)
	delete(t, "hooks")
	if r, ok := t["root"].(object); ok {
		delete(r, "path")
	}
	if l, ok := t["linux"].(object); ok {
		delete(l, "cgroupsPath")
	}
	if a, ok := t["annotations"].(object); ok {
		for k := range a {
			if !strings.HasPrefix(k, "run.oci.") {
				delete(a, k)
			}
		}
		if len(a) == 0 {
			delete(t, "annotations")
		}
	}
	p, _ := t["process"].(object)
	if p != nil {
		delete(p, "consoleSize")
	}
	if len(id) >= minIDLen {
		t = replaceID(t, id).(object)
		p, _ = t["process"].(object)
	}
	if l, ok := t["linux"].(object); ok {
		if ns, ok := l["namespaces"].([]any); ok {
			for _, n := range ns {
				if no, ok := n.(object); ok {
					if s, ok := no["path"].(string); ok {
						no["path"] = procPID.ReplaceAllLiteralString(s, "/proc/{pid}/")
					}
				}
			}
		}
	}
	if ms, ok := t["mounts"].([]any); ok {
		t["mounts"] = orderMounts(ms)
	}
	if p != nil {
		if env, ok := p["env"].([]any); ok {
			sort.SliceStable(env, func(i, j int) bool { return envName(env[i]) < envName(env[j]) })
		}
		if caps, ok := p["capabilities"].(object); ok {
			for _, v := range caps {
				if list, ok := v.([]any); ok && allStrings(list) {
					sort.SliceStable(list, func(i, j int) bool { return list[i].(string) < list[j].(string) })
				}
			}
		}
	}
	return t
}

func envName(v any) string {
	s, _ := v.(string)
	name, _, _ := strings.Cut(s, "=")
	return name
}

func allStrings(list []any) bool {
	for _, v := range list {
		if _, ok := v.(string); !ok {
			return false
		}
	}
	return true
}

func deepCopy(v any) any {
	switch v := v.(type) {
	case object:
		o := make(object, len(v))
		for k, e := range v {
			o[k] = deepCopy(e)
		}
		return o
	case []any:
		l := make([]any, len(v))
		for i, e := range v {
			l[i] = deepCopy(e)
		}
		return l
	}
	return v
}

func replaceID(v any, id string) any {
	switch v := v.(type) {
	case object:
		for k, e := range v {
			v[k] = replaceID(e, id)
		}
	case []any:
		for i, e := range v {
			v[i] = replaceID(e, id)
		}
	case string:
		s := strings.ReplaceAll(v, id, "{id}")
		return strings.ReplaceAll(s, id[:shortIDLen], "{id}")
	}
	return v
}

// MaxMounts is the most mounts a config.json may have.
const MaxMounts = 4096

// orderMounts returns the mounts in canonical order: repeatedly, of the
// mounts not yet placed that no earlier unplaced mount is related to, the
// one whose destination is smallest bytewise (the earliest among equals).
// Two mounts are related when their destinations are equal, one is "/",
// or one lies below the other (it starts with the other and "/"); a
// destination that is not a clean absolute path ([cleanDest]) is related
// to every mount. Container
// managers emit unrelated mounts in varying order (podman's /etc/hosts,
// /etc/hostname and /run/.containerenv); related ones keep theirs.
func orderMounts(ms []any) []any {
	n := len(ms)
	dest := make([]string, n)
	known := make([]bool, n)
	for i, m := range ms {
		if mo, ok := m.(object); ok {
			dest[i], known[i] = mo["destination"].(string)
			known[i] = known[i] && cleanDest(dest[i])
		}
	}
	related := func(i, j int) bool {
		a, b := dest[i], dest[j]
		if !known[i] || !known[j] || a == b || a == "/" || b == "/" {
			return true
		}
		return strings.HasPrefix(b, a+"/") || strings.HasPrefix(a, b+"/")
	}
	indeg := make([]int, n)
	for j := 0; j < n; j++ {
		for i := 0; i < j; i++ {
			if related(i, j) {
				indeg[j]++
			}
		}
	}
	placed := make([]bool, n)
	out := make([]any, 0, n)
	for len(out) < n {
		best := -1
		for i := 0; i < n; i++ {
			if !placed[i] && indeg[i] == 0 && (best < 0 || dest[i] < dest[best]) {
				best = i
			}
		}
		placed[best] = true
		out = append(out, ms[best])
		for j := best + 1; j < n; j++ {
			if !placed[j] && related(best, j) {
				indeg[j]--
			}
		}
	}
	return out
}

// cleanDest reports whether a mount destination is "/" or "/" followed by
// segments separated by single slashes, none empty, "." or "..".
func cleanDest(d string) bool {
	if d == "/" {
		return true
	}
	if !strings.HasPrefix(d, "/") {
		return false
	}
	for _, seg := range strings.Split(d[1:], "/") {
		if seg == "" || seg == "." || seg == ".." {
			return false
		}
	}
	return true
}
