//! Ignore rules with git's `.gitignore` semantics (CONTRACT section 5).
//!
//! `git check-ignore --no-index` is the oracle: each line is parsed the way
//! git's `dir.c` parses it (comments, `\r`, unescaped trailing spaces, `!`,
//! trailing `/`, anchoring by an inner `/`), and glob matching follows git's
//! `wildmatch` rules (`*`, `**`, `?`, bracket expressions with ranges, `!`/`^`
//! negation and `[:class:]` names, backslash escapes). A path is ignored when
//! the last pattern that matches it is not a negation; the tree walker prunes
//! ignored directories, which gives git's rule that nothing below an ignored
//! directory can be re-included.
//!
//! globset was the first candidate, but its syntax has `{a,b}` alternation and
//! lacks `[:class:]` names and git's `**` rules, so it gives different answers
//! than git on such patterns; this module matches git byte for byte instead.

/// One parsed ignore line.
#[derive(Clone, Debug)]
struct Pattern {
    /// The glob, without a leading `!` or trailing `/`.
    glob: Vec<u8>,
    /// Length of the leading part without glob characters.
    literal_prefix: usize,
    negated: bool,
    /// A trailing `/`: only directories match.
    dir_only: bool,
    /// No `/` in the glob: it is matched against the last path component.
    basename_only: bool,
}

/// A compiled set of ignore lines.
#[derive(Clone, Debug, Default)]
pub struct IgnoreRules {
    patterns: Vec<Pattern>,
}

/// Largest `.pteroignore` honoured, as in Wings.
pub const IGNORE_FILE_MAX: u64 = 32 * 1024;

impl IgnoreRules {
    /// Parses ignore text: one pattern per line, as in a `.gitignore` file.
    pub fn parse(text: &[u8]) -> IgnoreRules {
        let text = text.strip_prefix(b"\xef\xbb\xbf").unwrap_or(text);
        let mut patterns = Vec::new();
        for line in text.split(|b| *b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            // A NUL ends the pattern, as it does for git's C strings.
            let line = match line.iter().position(|b| *b == 0) {
                Some(nul) => &line[..nul],
                None => line,
            };
            if line.is_empty() || line[0] == b'#' {
                continue;
            }
            if let Some(p) = Pattern::parse(trim_trailing_spaces(line)) {
                patterns.push(p);
            }
        }
        IgnoreRules { patterns }
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether `path` (relative, `/`-separated) is ignored by its own patterns.
    /// Callers walking a tree prune ignored directories, so ancestors are
    /// already known not to be ignored.
    pub fn matches(&self, path: &[u8], is_dir: bool) -> bool {
        let basename = match path.iter().rposition(|b| *b == b'/') {
            Some(slash) => &path[slash + 1..],
            None => path,
        };
        for p in self.patterns.iter().rev() {
            if p.dir_only && !is_dir {
                continue;
            }
            let hit = if p.basename_only {
                p.matches_basename(basename)
            } else {
                p.matches_path(path)
            };
            if hit {
                return !p.negated;
            }
        }
        false
    }

    /// Whether `path` is ignored, itself or through an ignored parent
    /// directory: the answer `git check-ignore` gives.
    pub fn is_ignored(&self, path: &[u8], is_dir: bool) -> bool {
        for (i, b) in path.iter().enumerate() {
            if *b == b'/' && i > 0 && self.matches(&path[..i], true) {
                return true;
            }
        }
        self.matches(path, is_dir)
    }
}

/// Removes trailing spaces that are not escaped with a backslash.
fn trim_trailing_spaces(line: &[u8]) -> &[u8] {
    let mut end = line.len();
    let mut last_space = None;
    let mut i = 0;
    while i < line.len() {
        match line[i] {
            b' ' => {
                last_space.get_or_insert(i);
            }
            b'\\' => {
                i += 1;
                if i >= line.len() {
                    return line;
                }
                last_space = None;
            }
            _ => last_space = None,
        }
        i += 1;
    }
    if let Some(s) = last_space {
        end = s;
    }
    &line[..end]
}

fn is_glob_special(b: u8) -> bool {
    matches!(b, b'*' | b'?' | b'[' | b'\\')
}

impl Pattern {
    fn parse(line: &[u8]) -> Option<Pattern> {
        let (negated, mut glob) = match line.strip_prefix(b"!") {
            Some(rest) => (true, rest),
            None => (false, line),
        };
        let dir_only = glob.last() == Some(&b'/');
        if dir_only {
            glob = &glob[..glob.len() - 1];
        }
        if glob.is_empty() {
            // git keeps such a line, but it can never match a path.
            return None;
        }
        let basename_only = !glob.contains(&b'/');
        let literal_prefix = glob
            .iter()
            .position(|b| is_glob_special(*b))
            .unwrap_or(glob.len());
        Some(Pattern {
            glob: glob.to_vec(),
            literal_prefix,
            negated,
            dir_only,
            basename_only,
        })
    }

    fn matches_basename(&self, name: &[u8]) -> bool {
        if self.literal_prefix == self.glob.len() {
            return self.glob == name;
        }
        wildmatch(&self.glob, name, false)
    }

    /// Anchored match against the whole relative path. Like git, a literal
    /// prefix is compared first and only the rest goes through the glob
    /// matcher, which matters for `**` right after the prefix.
    fn matches_path(&self, path: &[u8]) -> bool {
        let mut glob = &self.glob[..];
        let mut prefix = self.literal_prefix;
        if glob.first() == Some(&b'/') {
            glob = &glob[1..];
            prefix -= 1;
        }
        let mut name = path;
        if prefix > 0 {
            if prefix > name.len() || glob[..prefix] != name[..prefix] {
                return false;
            }
            glob = &glob[prefix..];
            name = &name[prefix..];
            if glob.is_empty() && name.is_empty() {
                return true;
            }
        }
        wildmatch(glob, name, true)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Wild {
    Match,
    NoMatch,
    /// The text ran out: no later attempt can match either.
    AbortAll,
    /// A single `*` reached a `/`: only an enclosing `**` may go on.
    AbortToDoubleStar,
}

/// git's glob matcher. With `pathname`, `*` and `?` do not match `/` and `**`
/// between slashes matches any number of directories.
pub fn wildmatch(glob: &[u8], text: &[u8], pathname: bool) -> bool {
    Matcher { glob, pathname }.run(0, text, 0) == Wild::Match
}

struct Matcher<'a> {
    glob: &'a [u8],
    pathname: bool,
}

fn at(s: &[u8], i: usize) -> u8 {
    s.get(i).copied().unwrap_or(0)
}

impl Matcher<'_> {
    fn run(&self, mut p: usize, text: &[u8], mut t: usize) -> Wild {
        let g = self.glob;
        // `**` counts as a segment of its own only at the start of the glob
        // this call matches, or right after a `/`.
        let start = p;
        while p < g.len() && g[p] != 0 {
            let mut pc = g[p];
            let mut tc = at(text, t);
            if tc == 0 && pc != b'*' {
                return Wild::AbortAll;
            }
            match pc {
                b'?' => {
                    if self.pathname && tc == b'/' {
                        return Wild::NoMatch;
                    }
                }
                b'*' => {
                    // `crosses_slash`: this star may match across `/`.
                    let crosses_slash;
                    p += 1;
                    if at(g, p) == b'*' {
                        let before = p.checked_sub(2);
                        while at(g, p) == b'*' {
                            p += 1;
                        }
                        let starts_segment = before.is_none_or(|b| b < start || g[b] == b'/');
                        let ends_segment = at(g, p) == 0
                            || at(g, p) == b'/'
                            || (at(g, p) == b'\\' && at(g, p + 1) == b'/');
                        if starts_segment && ends_segment {
                            if at(g, p) == b'/' && self.run(p + 1, text, t) == Wild::Match {
                                return Wild::Match;
                            }
                            crosses_slash = true;
                        } else {
                            crosses_slash = false;
                        }
                    } else {
                        crosses_slash = !self.pathname;
                    }
                    if at(g, p) == 0 {
                        if !crosses_slash && text[t..].contains(&b'/') {
                            return Wild::NoMatch;
                        }
                        return Wild::Match;
                    }
                    if !crosses_slash && at(g, p) == b'/' {
                        // `*/`: the star takes the rest of this component.
                        match text[t..].iter().position(|b| *b == b'/') {
                            Some(off) => {
                                t += off + 1;
                                p += 1;
                                continue;
                            }
                            None => return Wild::NoMatch,
                        }
                    }
                    loop {
                        if tc == 0 {
                            return Wild::AbortAll;
                        }
                        let next = at(g, p);
                        if !is_glob_special(next) {
                            // Skip ahead to the next occurrence of the literal.
                            loop {
                                tc = at(text, t);
                                if tc == 0 || tc == next || (!crosses_slash && tc == b'/') {
                                    break;
                                }
                                t += 1;
                            }
                            if tc != next {
                                return Wild::NoMatch;
                            }
                        }
                        let r = self.run(p, text, t);
                        if r != Wild::NoMatch {
                            if !crosses_slash || r != Wild::AbortToDoubleStar {
                                return r;
                            }
                        } else if !crosses_slash && tc == b'/' {
                            return Wild::AbortToDoubleStar;
                        }
                        t += 1;
                        tc = at(text, t);
                    }
                }
                b'[' => {
                    p += 1;
                    pc = at(g, p);
                    if pc == b'^' {
                        pc = b'!';
                    }
                    let negated = pc == b'!';
                    if negated {
                        p += 1;
                        pc = at(g, p);
                    }
                    let mut prev: u8 = 0;
                    let mut matched = false;
                    loop {
                        if pc == 0 {
                            return Wild::AbortAll;
                        }
                        if pc == b'\\' {
                            p += 1;
                            pc = at(g, p);
                            if pc == 0 {
                                return Wild::AbortAll;
                            }
                            if tc == pc {
                                matched = true;
                            }
                        } else if pc == b'-'
                            && prev != 0
                            && at(g, p + 1) != 0
                            && at(g, p + 1) != b']'
                        {
                            p += 1;
                            pc = at(g, p);
                            if pc == b'\\' {
                                p += 1;
                                pc = at(g, p);
                                if pc == 0 {
                                    return Wild::AbortAll;
                                }
                            }
                            if tc <= pc && tc >= prev {
                                matched = true;
                            }
                            pc = 0;
                        } else if pc == b'[' && at(g, p + 1) == b':' {
                            let start = p + 2;
                            let mut end = start;
                            while at(g, end) != 0 && at(g, end) != b']' {
                                end += 1;
                            }
                            if at(g, end) == 0 {
                                return Wild::AbortAll;
                            }
                            if end == start || g[end - 1] != b':' {
                                // No `:]`: an ordinary `[` in the set.
                                pc = b'[';
                                if tc == pc {
                                    matched = true;
                                }
                            } else {
                                p = end;
                                match char_class(&g[start..end - 1]) {
                                    Some(class) => {
                                        if class(tc) {
                                            matched = true;
                                        }
                                    }
                                    None => return Wild::AbortAll,
                                }
                                pc = 0;
                            }
                        } else if tc == pc {
                            matched = true;
                        }
                        prev = pc;
                        p += 1;
                        pc = at(g, p);
                        if pc == b']' {
                            break;
                        }
                    }
                    if matched == negated || (self.pathname && tc == b'/') {
                        return Wild::NoMatch;
                    }
                }
                _ => {
                    if pc == b'\\' {
                        p += 1;
                        pc = at(g, p);
                    }
                    if tc != pc {
                        return Wild::NoMatch;
                    }
                }
            }
            p += 1;
            t += 1;
        }
        if t < text.len() {
            Wild::NoMatch
        } else {
            Wild::Match
        }
    }
}

/// The `[:name:]` classes git knows, over ASCII only as git's ctype is.
fn char_class(name: &[u8]) -> Option<fn(u8) -> bool> {
    Some(match name {
        b"alnum" => |c| c.is_ascii_alphanumeric(),
        b"alpha" => |c| c.is_ascii_alphabetic(),
        b"blank" => |c| c == b' ' || c == b'\t',
        b"cntrl" => |c| c < 0x20 || c == 0x7f,
        b"digit" => |c| c.is_ascii_digit(),
        b"graph" => |c| (0x21..=0x7e).contains(&c),
        b"lower" => |c| c.is_ascii_lowercase(),
        b"print" => |c| (0x20..=0x7e).contains(&c),
        b"punct" => |c| c.is_ascii_punctuation(),
        b"space" => |c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'),
        b"upper" => |c| c.is_ascii_uppercase(),
        b"xdigit" => |c| c.is_ascii_hexdigit(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ignored(rules: &str, path: &str, is_dir: bool) -> bool {
        IgnoreRules::parse(rules.as_bytes()).is_ignored(path.as_bytes(), is_dir)
    }

    #[test]
    fn git_semantics_table() {
        let cases: &[(&str, &str, bool, bool)] = &[
            ("logs", "logs", true, true),
            ("logs", "x/logs/a.txt", false, true),
            ("logs", "logsx/a", false, false),
            ("/logs", "x/logs/a.txt", false, false),
            ("/logs", "logs/a.txt", false, true),
            ("logs/", "logs", false, false),
            ("logs/", "logs", true, true),
            ("logs/", "x/logs/a.txt", false, true),
            ("*.log", "d/a.log", false, true),
            ("*.log", "a.logx", false, false),
            ("foo/bar", "x/foo/bar", false, false),
            ("foo/bar", "foo/bar/baz", false, true),
            ("foo/*.txt", "foo/sub/a.txt", false, false),
            ("a?c", "abc", false, true),
            ("a?c", "a/c", false, false),
            ("file(1).txt", "file(1).txt", false, true),
            ("file(1).txt", "file1.txt", false, false),
            ("[ab].txt", "a.txt", false, true),
            ("[!ab].txt", "a.txt", false, false),
            ("[^ab].txt", "c.txt", false, true),
            ("[[:digit:]]x", "7x", false, true),
            ("**/foo", "x/y/foo", false, true),
            ("a/**/b", "a/b", false, true),
            ("a/**/b", "a/x/y/b", false, true),
            ("a/**/b", "x/a/b", false, false),
            ("abc/**", "abc", true, false),
            ("abc/**", "abc/x/y", false, true),
            ("x/a**", "x/ab/c", false, true),
            ("\\#foo", "#foo", false, true),
            ("#foo", "#foo", false, false),
            ("\\!keep", "!keep", false, true),
            ("a\\ ", "a ", false, true),
            ("a  ", "a", false, true),
            ("*.LOG", "a.log", false, false),
            ("logs\n!logs/keep.txt", "logs/keep.txt", false, true),
            ("logs/*\n!logs/keep.txt", "logs/keep.txt", false, false),
            ("!keep.txt\n*.txt", "keep.txt", false, true),
            ("*.txt\r\n!keep.txt\r\n", "keep.txt", false, false),
            (
                "*\n!ShooterGame/\n!ShooterGame/Saved/",
                "ShooterGame/Saved",
                true,
                false,
            ),
            (
                "*\n!ShooterGame/\n!ShooterGame/Saved/",
                "ShooterGame/Binaries",
                true,
                true,
            ),
            ("[abc", "[abc", false, false),
            ("{a,b}", "{a,b}", false, true),
        ];
        for (rules, path, is_dir, want) in cases {
            assert_eq!(
                ignored(rules, path, *is_dir),
                *want,
                "rules {rules:?} path {path:?} dir {is_dir}"
            );
        }
    }

    #[test]
    fn trailing_space_rules() {
        assert_eq!(trim_trailing_spaces(b"a  "), b"a");
        assert_eq!(trim_trailing_spaces(b"a\\ "), b"a\\ ");
        assert_eq!(trim_trailing_spaces(b"a\\"), b"a\\");
        assert_eq!(trim_trailing_spaces(b"a\\  "), b"a\\ ");
    }
}
