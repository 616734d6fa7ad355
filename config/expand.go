package config

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// envRef matches ${VAR} and ${VAR:-default}.
var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}`)

// decodeDocument parses raw as YAML into out (a pointer to a struct),
// expanding environment references in scalar values only — after parsing,
// so that a variable's value is always one scalar and can never add keys
// or structure — and refusing keys that out does not know, at any depth.
// A reference to an unset variable is a problem naming it and where it is,
// unless it has a default or optional(path) holds for its top-level key.
//
// Every problem is collected, not only the first: unset variables,
// unknown keys and values of the wrong type, each with its key and line,
// while the rest of the document is decoded into out. Only a YAML syntax
// error, after which nothing can be read, ends it (fatal).
func decodeDocument(raw []byte, getenv func(string) string, optional func(top string) bool, out any) ([]problem, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("config: %s", yamlError(err))
	}
	if len(doc.Content) == 0 {
		return nil, nil
	}
	root := doc.Content[0]
	var probs []problem
	expandValues(root, "", getenv, optional, &probs)
	idx := pathIndex{at: map[int][]string{}, all: map[string]bool{}}
	knownKeys(root, reflect.TypeOf(out).Elem(), "", &probs, &idx)
	if err := root.Decode(out); err != nil {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return nil, fmt.Errorf("config: %s", yamlError(err))
		}
		for _, e := range te.Errors {
			probs = append(probs, idx.problem(e))
		}
	}
	return probs, nil
}

// problem is one thing wrong in a config file: the key it is about, its
// line (0 when unknown) and what is wrong.
type problem struct {
	path string
	line int
	msg  string
}

func (p problem) Error() string {
	switch {
	case p.path == "":
		return fmt.Sprintf("config: line %d: %s", p.line, p.msg)
	case p.line == 0:
		return fmt.Sprintf("config: %s: %s", p.path, p.msg)
	}
	return fmt.Sprintf("config: %s (line %d): %s", p.path, p.line, p.msg)
}

// pathIndex maps the lines of a document to the keys written on them, so
// that a decoding error, which yaml.v3 reports by line, names its key.
type pathIndex struct {
	at  map[int][]string
	all map[string]bool
}

func (x *pathIndex) add(line int, path string) {
	if path != "" {
		x.at[line] = append(x.at[line], path)
		x.all[path] = true
	}
}

var typeErrLine = regexp.MustCompile(`^line (\d+): (.*)$`)

// problem turns one of yaml.v3's "line N: what" errors into a problem
// naming its key: the one the message starts with (the limits name
// theirs), else the key written on that line — or, when several are (a
// flow mapping), the one holding them all.
func (x *pathIndex) problem(e string) problem {
	m := typeErrLine.FindStringSubmatch(e)
	if m == nil {
		return problem{msg: e}
	}
	line, _ := strconv.Atoi(m[1])
	msg := notFound.ReplaceAllString(m[2], `unknown key "$1"`)
	if key, rest, ok := strings.Cut(msg, ": "); ok && x.all[key] {
		return problem{path: key, line: line, msg: rest}
	}
	// The keys on that line that hold no other key on it, and the
	// nearest key holding them all.
	var leaves []string
	for _, p := range x.at[line] {
		if !slices.ContainsFunc(x.at[line], func(q string) bool { return q != p && related(p, q) && len(q) > len(p) }) {
			leaves = append(leaves, p)
		}
	}
	if len(leaves) == 0 {
		return problem{line: line, msg: msg}
	}
	common := leaves[0]
	for _, p := range leaves[1:] {
		for !related(common, p) || len(p) < len(common) {
			common = parent(common)
		}
	}
	return problem{path: common, line: line, msg: msg}
}

// parent is the key holding path ("a.b[2]" → "a.b", "a.b" → "a").
func parent(path string) string {
	i := strings.LastIndexAny(path, ".[")
	if i < 0 {
		return ""
	}
	return path[:i]
}

// related reports whether one key is the other or holds it.
func related(a, b string) bool {
	if len(a) > len(b) {
		a, b = b, a
	}
	return a == "" || a == b || strings.HasPrefix(b, a) && (b[len(a)] == '.' || b[len(a)] == '[')
}

// joinProblems reports the problems of decoding and then those of
// validation, leaving out a validation problem about a key that decoding
// already found wrong (an unset variable's empty value, a value of the
// wrong type left zero): it is the same problem seen again.
func joinProblems(probs []problem, validation error) error {
	var errs []error
	for _, p := range probs {
		errs = append(errs, p)
	}
	if validation != nil {
		for _, l := range strings.Split(validation.Error(), "\n") {
			key := strings.TrimPrefix(l, "config: ")
			if i := strings.IndexAny(key, ": ,"); i >= 0 {
				key = key[:i]
			}
			seen := false
			for _, p := range probs {
				seen = seen || sameProblem(p.path, key, l)
			}
			if !seen {
				errs = append(errs, errors.New(l))
			}
		}
	}
	return errors.Join(errs...)
}

// sameProblem reports whether the validation problem line, about key, is
// the decoding problem at path seen again: key is path or within it, or
// key holds path and line names the part of path below key ("issuers[1]:
// url and audience are required" after issuers[1].url's variable was
// unset), not a sibling of it.
func sameProblem(path, key, line string) bool {
	if path == "" || !related(path, key) {
		return false
	}
	if len(key) >= len(path) {
		return true
	}
	below := strings.TrimLeft(path[len(key):], ".")
	if strings.HasPrefix(below, "[") {
		return true // an entry of a list the problem is about
	}
	below, _, _ = strings.Cut(below, "[")
	below, _, _ = strings.Cut(below, ".")
	return strings.Contains(line, below)
}

// expandValues replaces the references in every scalar value under n,
// adding a problem for each unset variable without a default.
func expandValues(n *yaml.Node, path string, getenv func(string) string, optional func(string) bool, probs *[]problem) {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			expandValues(n.Content[i+1], join(path, n.Content[i].Value), getenv, optional, probs)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			expandValues(c, path+"["+strconv.Itoa(i)+"]", getenv, optional, probs)
		}
	case yaml.ScalarNode:
		if !envRef.MatchString(n.Value) {
			return
		}
		whole := envRef.FindString(n.Value) == n.Value
		n.Value = envRef.ReplaceAllStringFunc(n.Value, func(m string) string {
			sub := envRef.FindStringSubmatch(m)
			if v := getenv(sub[1]); v != "" {
				return v
			}
			if strings.Contains(m, ":-") {
				return sub[2]
			}
			top, _, _ := strings.Cut(path, ".")
			top, _, _ = strings.Cut(top, "[")
			if !optional(top) {
				*probs = append(*probs, problem{path: path, line: n.Line,
					msg: fmt.Sprintf("environment variable %s is not set (write ${%s:-default} where a default is meant)", sub[1], sub[1])})
			}
			return ""
		})
		if whole && n.Style == 0 {
			n.Tag = "" // a plain value that was one reference: typed by what it holds
		} else {
			n.Tag = "!!str"
		}
	}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// knownKeys adds a problem for each mapping key that the struct type t
// (through pointers and slices) has no field for, naming it and its line:
// the check yaml.v3 makes with KnownFields, which a node's Decode and
// custom unmarshalers skip. It indexes the keys by line on the way.
func knownKeys(n *yaml.Node, t reflect.Type, path string, probs *[]problem, idx *pathIndex) {
	idx.add(n.Line, path)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case n.Kind == yaml.SequenceNode && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array):
		for i, c := range n.Content {
			knownKeys(c, t.Elem(), path+"["+strconv.Itoa(i)+"]", probs, idx)
		}
	case n.Kind == yaml.MappingNode && t.Kind() == reflect.Struct:
		fields := map[string]reflect.Type{}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "-" || !f.IsExported() {
				continue
			}
			if name == "" {
				name = strings.ToLower(f.Name)
			}
			fields[name] = f.Type
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			ft, ok := fields[k.Value]
			if !ok {
				*probs = append(*probs, problem{path: join(path, k.Value), line: k.Line, msg: "unknown key"})
				continue
			}
			knownKeys(n.Content[i+1], ft, join(path, k.Value), probs, idx)
		}
	}
}
