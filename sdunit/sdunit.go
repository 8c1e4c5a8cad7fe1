// Package sdunit finds what a systemd service runs: its unit file, its
// drop-ins and the binaries of its ExecStart= lines, read from the unit
// files on disk in systemd's search order.
package sdunit

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// SearchPath is systemd's system unit search path, highest priority first.
var SearchPath = []string{
	"/etc/systemd/system",
	"/run/systemd/system",
	"/usr/local/lib/systemd/system",
	"/usr/lib/systemd/system",
	"/lib/systemd/system",
}

// ErrNotFound means no unit file of that name exists in the search path.
var ErrNotFound = errors.New("unit not found")

// Unit is what a service is made of on disk.
type Unit struct {
	Name string
	// File is the unit file (after following a symlink alias).
	File string
	// DropIns are the *.conf files of NAME.d/ directories, in the order
	// systemd applies them.
	DropIns []string
	// Exec are the absolute paths of the ExecStart= binaries, after drop-ins.
	Exec []string
}

// Find reads the unit name from the directories of path (SearchPath when nil).
func Find(name string, path []string) (*Unit, error) {
	if path == nil {
		path = SearchPath
	}
	if !strings.Contains(name, ".") {
		name += ".service"
	}
	if strings.ContainsAny(name, "/\x00") {
		return nil, fmt.Errorf("unit name %q: must not contain /", name)
	}
	u := &Unit{Name: name}
	for _, dir := range path {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			if u.File, err = filepath.EvalSymlinks(p); err != nil {
				return nil, err
			}
			break
		}
	}
	if u.File == "" {
		return nil, fmt.Errorf("%w: %s in %s", ErrNotFound, name, strings.Join(path, ", "))
	}
	// Drop-ins: a file name in a higher-priority directory masks the same name below.
	byName := map[string]string{}
	for i := len(path) - 1; i >= 0; i-- {
		for _, d := range []string{name + ".d", typeDir(name)} {
			matches, _ := filepath.Glob(filepath.Join(path[i], d, "*.conf"))
			for _, m := range matches {
				byName[filepath.Base(m)] = m
			}
		}
	}
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		u.DropIns = append(u.DropIns, byName[n])
	}
	var execs []string
	for _, f := range append([]string{u.File}, u.DropIns...) {
		var err error
		if execs, err = execStart(f, execs); err != nil {
			return nil, err
		}
	}
	for _, e := range execs {
		bin, err := resolve(e)
		if err != nil {
			return nil, fmt.Errorf("%s: ExecStart=%s: %w", name, e, err)
		}
		u.Exec = append(u.Exec, bin)
	}
	if len(u.Exec) == 0 {
		return nil, fmt.Errorf("%s: no ExecStart= in %s or its drop-ins", name, u.File)
	}
	return u, nil
}

func typeDir(name string) string {
	return name[strings.LastIndex(name, ".")+1:] + ".d"
}

// execStart applies the ExecStart= lines of the [Service] section of file
// to execs: an empty assignment clears the list.
func execStart(file string, execs []string) ([]string, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	section := ""
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		for strings.HasSuffix(line, "\\") && sc.Scan() {
			line = strings.TrimSuffix(line, "\\") + " " + strings.TrimSpace(sc.Text())
		}
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[':
			section = strings.Trim(line, "[]")
		case section == "Service":
			k, v, ok := strings.Cut(line, "=")
			if !ok || strings.TrimSpace(k) != "ExecStart" {
				continue
			}
			v = strings.TrimSpace(v)
			if v == "" {
				execs = nil
				continue
			}
			execs = append(execs, firstWord(strings.TrimLeft(v, "@-:+!|")))
		}
	}
	return execs, sc.Err()
}

func firstWord(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 0 && (s[0] == '"' || s[0] == '\'') {
		if end := strings.IndexByte(s[1:], s[0]); end >= 0 {
			return s[1 : end+1]
		}
	}
	if i := strings.IndexAny(s, " \t"); i >= 0 {
		return s[:i]
	}
	return s
}

// resolve makes a binary path absolute as systemd does: absolute paths
// stay, bare names are looked up in the fixed search path.
func resolve(bin string) (string, error) {
	if filepath.IsAbs(bin) {
		return filepath.Clean(bin), nil
	}
	if strings.Contains(bin, "/") {
		return "", errors.New("a relative path with / is not allowed")
	}
	for _, d := range []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"} {
		p := filepath.Join(d, bin)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
	}
	return exec.LookPath(bin)
}
