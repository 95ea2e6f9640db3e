package rescue

import (
	"bufio"
	"io"
	"strings"
)

// AliasTable maps device modaliases to module names, as modules.alias does.
type AliasTable struct {
	exact    map[string][]string
	patterns []aliasPattern
}

type aliasPattern struct {
	prefix  string // literal text before the first wildcard, for a quick reject
	pattern string
	module  string
}

// ParseAliases reads a modules.alias file ("alias PATTERN MODULE" lines).
func ParseAliases(r io.Reader) (*AliasTable, error) {
	t := &AliasTable{exact: map[string][]string{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 || f[0] != "alias" {
			continue
		}
		pat, mod := f[1], moduleName(f[2])
		i := strings.IndexAny(pat, "*?[")
		if i < 0 {
			t.exact[pat] = append(t.exact[pat], mod)
			continue
		}
		t.patterns = append(t.patterns, aliasPattern{prefix: pat[:i], pattern: pat, module: mod})
	}
	return t, sc.Err()
}

// Match returns the modules whose alias patterns match modalias, in file
// order, without duplicates.
func (t *AliasTable) Match(modalias string) []string {
	var out []string
	seen := map[string]bool{}
	add := func(m string) {
		if !seen[m] {
			seen[m] = true
			out = append(out, m)
		}
	}
	for _, m := range t.exact[modalias] {
		add(m)
	}
	for _, p := range t.patterns {
		if strings.HasPrefix(modalias, p.prefix) && globMatch(p.pattern, modalias) {
			add(p.module)
		}
	}
	return out
}

// moduleName normalizes a module name: '-' and '_' are the same to the kernel.
func moduleName(s string) string { return strings.ReplaceAll(s, "-", "_") }

// globMatch matches s against an fnmatch(3) pattern without flags, as
// modprobe does: '*' matches any run of characters (including '/'), '?'
// any one character, and [...] a class ('!' or '^' negates, ranges allowed).
func globMatch(pattern, s string) bool {
	// Iterative matching with backtracking to the last '*'.
	px, sx := 0, 0
	starP, starS := -1, 0
	for sx < len(s) {
		if px < len(pattern) {
			switch c := pattern[px]; c {
			case '*':
				starP, starS = px, sx
				px++
				continue
			case '?':
				px++
				sx++
				continue
			case '[':
				if ok, next, valid := matchClass(pattern, px, s[sx]); valid {
					if ok {
						px, sx = next, sx+1
						continue
					}
				} else if s[sx] == '[' { // an unterminated '[' is literal
					px++
					sx++
					continue
				}
			default:
				if c == s[sx] {
					px++
					sx++
					continue
				}
			}
		}
		if starP < 0 {
			return false
		}
		starS++
		px, sx = starP+1, starS
	}
	for px < len(pattern) && pattern[px] == '*' {
		px++
	}
	return px == len(pattern)
}

// matchClass matches c against the class starting at pattern[i] == '['.
// It returns whether c matched, the index after the class, and whether the
// class was well formed.
func matchClass(pattern string, i int, c byte) (bool, int, bool) {
	j := i + 1
	neg := false
	if j < len(pattern) && (pattern[j] == '!' || pattern[j] == '^') {
		neg = true
		j++
	}
	matched := false
	first := true
	for j < len(pattern) && (first || pattern[j] != ']') {
		first = false
		lo := pattern[j]
		hi := lo
		if j+2 < len(pattern) && pattern[j+1] == '-' && pattern[j+2] != ']' {
			hi = pattern[j+2]
			j += 2
		}
		if lo <= c && c <= hi {
			matched = true
		}
		j++
	}
	if j >= len(pattern) {
		return false, 0, false
	}
	return matched != neg, j + 1, true
}
