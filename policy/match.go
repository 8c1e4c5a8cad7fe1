package policy

import "strings"

// Excluded reports whether name is left out by the policy's exclude list
// or by rule r's own.
func (p *Policy) Excluded(r *Rule, name string) bool {
	for _, e := range p.Exclude {
		if e.Match(name) {
			return true
		}
	}
	if r != nil {
		for _, e := range r.Exclude {
			if e.Match(name) {
				return true
			}
		}
	}
	return false
}

// Under reports whether name is dir or inside it.
func Under(name, dir string) bool {
	if dir == "/" {
		return true
	}
	return name == dir || strings.HasPrefix(name, dir+"/")
}

// Target is something the agent measures: a file, a tree or an image.
type Target struct {
	Kind Kind // File (for file, glob and dir rules), Tree or Image
	Path string
	Rule *Rule
}

// TargetFor returns what a change at the absolute, clean path name means
// for the policy: the file itself, or the tree or image it belongs to.
// ok is false when the policy does not cover name. name is treated as a
// file: directories are not targets of file, glob or dir rules.
func (p *Policy) TargetFor(name string) (t Target, ok bool) {
	for i := range p.Rules {
		r := &p.Rules[i]
		switch r.Kind {
		case Tree, Image:
			if Under(name, r.Path) {
				return Target{Kind: r.Kind, Path: r.Path, Rule: r}, true
			}
		}
	}
	for i := range p.Rules {
		r := &p.Rules[i]
		var hit bool
		switch r.Kind {
		case File:
			hit = name == r.Path
		case Glob:
			hit = r.Pattern.Match(name)
		case Dir:
			hit = name != r.Path && Under(name, r.Path)
		}
		if hit && (r.Kind == File || !p.Excluded(r, name)) {
			return Target{Kind: File, Path: name, Rule: r}, true
		}
	}
	return Target{}, false
}
