package deploy

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"strings"
	"unicode"
)

// A small Dockerfile reader: enough of the syntax for this repository's Dockerfile
// (line continuations, comments, --flags, exec form, ARG/ENV/LABEL key=value lists,
// ${VAR} and ${VAR:-default} substitution). It fails on what it does not understand
// rather than guessing, so a construct added to the Dockerfile that it cannot read makes
// the test say so.

// instruction is one Dockerfile instruction after continuation lines are joined.
type instruction struct {
	cmd   string   // upper case: FROM, RUN, COPY, ...
	flags []string // leading --name=value options, as written
	args  string   // the rest, unexpanded
	line  int      // 1-based line of the instruction's first line
}

// flag returns the value of --name=value, and whether the flag is present.
func (in instruction) flag(name string) (string, bool) {
	for _, f := range in.flags {
		if v, ok := strings.CutPrefix(f, "--"+name+"="); ok {
			return v, true
		}
		if f == "--"+name {
			return "", true
		}
	}
	return "", false
}

// execForm returns the JSON array form of args, and whether args is in that form.
func (in instruction) execForm() ([]string, bool, error) {
	s := strings.TrimSpace(in.args)
	if !strings.HasPrefix(s, "[") {
		return nil, false, nil
	}
	var argv []string
	if err := json.Unmarshal([]byte(s), &argv); err != nil {
		return nil, true, fmt.Errorf("line %d: %s exec form: %w", in.line, in.cmd, err)
	}
	return argv, true, nil
}

// stage is one FROM ... section.
type stage struct {
	base   string // image reference, global ARGs substituted
	name   string // AS name, lower case; "" when unnamed
	from   instruction
	instrs []instruction // after FROM
}

// last returns the last instruction cmd in the stage, or false.
func (s *stage) last(cmd string) (instruction, bool) {
	for i := len(s.instrs) - 1; i >= 0; i-- {
		if s.instrs[i].cmd == cmd {
			return s.instrs[i], true
		}
	}
	return instruction{}, false
}

// all returns every instruction cmd in the stage, in order.
func (s *stage) all(cmd string) []instruction {
	var out []instruction
	for _, in := range s.instrs {
		if in.cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

// dockerfile is a parsed Dockerfile.
type dockerfile struct {
	globalArgs map[string]string // ARGs before the first FROM, with defaults
	stages     []*stage
}

func (d *dockerfile) stage(name string) *stage {
	for _, s := range d.stages {
		if s.name == strings.ToLower(name) {
			return s
		}
	}
	return nil
}

func (d *dockerfile) final() *stage { return d.stages[len(d.stages)-1] }

func parseDockerfileFile(path string) (*dockerfile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parseDockerfile(string(b))
}

func parseDockerfile(text string) (*dockerfile, error) {
	var instrs []instruction
	sc := bufio.NewScanner(strings.NewReader(text))
	lineNo := 0
	var cur strings.Builder
	start := 0
	for sc.Scan() {
		lineNo++
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur.Len() == 0) {
			// Comments (and parser directives such as "# syntax=") are dropped, also
			// inside a continuation, as Docker does.
			continue
		}
		if cur.Len() == 0 {
			start = lineNo
		}
		if body, ok := strings.CutSuffix(strings.TrimRightFunc(line, unicode.IsSpace), `\`); ok {
			cur.WriteString(body)
			continue
		}
		cur.WriteString(line)
		in, err := splitInstruction(cur.String(), start)
		if err != nil {
			return nil, err
		}
		instrs = append(instrs, in)
		cur.Reset()
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if cur.Len() != 0 {
		return nil, fmt.Errorf("line %d: continuation at end of file", start)
	}

	d := &dockerfile{globalArgs: map[string]string{}}
	for _, in := range instrs {
		switch {
		case in.cmd == "FROM":
			fields := strings.Fields(in.args)
			st := &stage{from: in}
			switch {
			case len(fields) == 1:
			case len(fields) == 3 && strings.EqualFold(fields[1], "AS"):
				st.name = strings.ToLower(fields[2])
			default:
				return nil, fmt.Errorf("line %d: cannot read FROM %q", in.line, in.args)
			}
			st.base = expand(fields[0], d.globalArgs)
			d.stages = append(d.stages, st)
		case len(d.stages) == 0:
			if in.cmd != "ARG" {
				return nil, fmt.Errorf("line %d: %s before the first FROM", in.line, in.cmd)
			}
			kv, err := keyValues(in.args, true)
			if err != nil {
				return nil, fmt.Errorf("line %d: %w", in.line, err)
			}
			for _, p := range kv {
				d.globalArgs[p[0]] = p[1]
			}
		default:
			st := d.stages[len(d.stages)-1]
			st.instrs = append(st.instrs, in)
		}
	}
	if len(d.stages) == 0 {
		return nil, fmt.Errorf("no FROM")
	}
	return d, nil
}

func splitInstruction(s string, line int) (instruction, error) {
	s = strings.TrimSpace(s)
	cmd, rest, _ := strings.Cut(s, " ")
	in := instruction{cmd: strings.ToUpper(cmd), line: line}
	rest = strings.TrimLeftFunc(rest, unicode.IsSpace)
	for strings.HasPrefix(rest, "--") {
		f, r, _ := strings.Cut(rest, " ")
		in.flags = append(in.flags, f)
		rest = strings.TrimLeftFunc(r, unicode.IsSpace)
	}
	in.args = rest
	if in.cmd == "" {
		return in, fmt.Errorf("line %d: empty instruction", line)
	}
	return in, nil
}

// keyValues reads `k=v k2="v 2"` (ENV, LABEL, ARG). With allowBare, a bare `k` (ARG
// without default) yields an empty value.
func keyValues(s string, allowBare bool) ([][2]string, error) {
	words, err := shellWords(s)
	if err != nil {
		return nil, err
	}
	var out [][2]string
	for _, w := range words {
		k, v, ok := strings.Cut(w, "=")
		if !ok && !allowBare {
			return nil, fmt.Errorf("%q is not key=value (the legacy `ENV k v` form is not read)", w)
		}
		out = append(out, [2]string{k, v})
	}
	return out, nil
}

// shellWords splits on unquoted white space and removes quotes and backslash escapes.
func shellWords(s string) ([]string, error) {
	var words []string
	var w strings.Builder
	inWord := false
	var quote rune
	rs := []rune(s)
	for i := 0; i < len(rs); i++ {
		r := rs[i]
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != '\'' && r == '\\' && i+1 < len(rs):
			i++
			w.WriteRune(rs[i])
			inWord = true
		case quote != 0:
			w.WriteRune(r)
		case r == '"' || r == '\'':
			quote = r
			inWord = true
		case unicode.IsSpace(r):
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		default:
			w.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unterminated quote in %q", s)
	}
	if inWord {
		words = append(words, w.String())
	}
	return words, nil
}

// expand substitutes $VAR, ${VAR} and ${VAR:-default} from vars (unknown: empty).
func expand(s string, vars map[string]string) string {
	return os.Expand(s, func(name string) string {
		if n, def, ok := strings.Cut(name, ":-"); ok {
			if v := vars[n]; v != "" {
				return v
			}
			return def
		}
		return vars[name]
	})
}

// stageState is what a stage's instructions have set so far.
type stageState struct {
	d         *dockerfile
	buildArgs map[string]string
	args, env map[string]string
	workdir   string // absolute, as in the image; "/" at start
}

func (d *dockerfile) newState(buildArgs map[string]string) *stageState {
	return &stageState{d: d, buildArgs: buildArgs, args: map[string]string{}, env: map[string]string{}, workdir: "/"}
}

// vars is what ${VAR} sees in Dockerfile instructions: ARGs, then ENV over them.
func (s *stageState) vars() map[string]string {
	m := map[string]string{}
	for k, v := range s.args {
		m[k] = v
	}
	for k, v := range s.env {
		m[k] = v
	}
	return m
}

// apply records ARG, ENV and WORKDIR; other instructions are left to the caller. A stage
// ARG without a default inherits the global ARG's default, as Docker does; buildArgs
// override defaults.
func (s *stageState) apply(in instruction) error {
	switch in.cmd {
	case "ARG":
		kv, err := keyValues(in.args, true)
		if err != nil {
			return fmt.Errorf("line %d: %w", in.line, err)
		}
		for _, p := range kv {
			v := expand(p[1], s.vars())
			if g, ok := s.d.globalArgs[p[0]]; ok && !strings.Contains(in.args, p[0]+"=") {
				v = g
			}
			if b, ok := s.buildArgs[p[0]]; ok {
				v = b
			}
			s.args[p[0]] = v
		}
	case "ENV":
		kv, err := keyValues(in.args, false)
		if err != nil {
			return fmt.Errorf("line %d: %w", in.line, err)
		}
		for _, p := range kv {
			s.env[p[0]] = expand(p[1], s.vars())
		}
	case "WORKDIR":
		w := expand(strings.TrimSpace(in.args), s.vars())
		if !path.IsAbs(w) {
			w = path.Join(s.workdir, w)
		}
		s.workdir = path.Clean(w)
	}
	return nil
}

// stageVars returns the state at the end of a stage.
func (d *dockerfile) stageVars(st *stage, buildArgs map[string]string) (*stageState, error) {
	s := d.newState(buildArgs)
	for _, in := range st.instrs {
		if err := s.apply(in); err != nil {
			return nil, err
		}
	}
	return s, nil
}
