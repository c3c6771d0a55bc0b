//! Ignore rules with git's `.gitignore` semantics (docs/api.md section 11).
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
//!
//! The ignore file is written by the server's user, so matching must not be
//! a way to stall a backup: git's matcher backtracks and takes exponential
//! time on globs like `**/a/**/a/**/a/**/a/**/b` over a deep path. Here each
//! glob is compiled once into a list of steps, read the way git reads it, and
//! matched by following every possible position at once (an NFA simulation):
//! time at most proportional to the glob's length times the path's, whatever
//! the glob. Quick literal tests (head, tail, a run the text must contain)
//! answer most paths before that.

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
    /// What is left of the glob for the matcher: all of it for a basename
    /// pattern, the part after the literal prefix otherwise.
    compiled: Glob,
}

/// A compiled set of ignore lines.
#[derive(Clone, Debug, Default)]
pub struct IgnoreRules {
    patterns: Vec<Pattern>,
    /// Digest of the text the rules were parsed from (see `digest`).
    digest: u64,
}

/// How many patterns `matches_unless` tries between two questions to `stop`.
const STOP_CHECK_PATTERNS: usize = 16;

/// How many bytes of text a glob of 64 steps or more reads between two
/// questions to `stop`.
const STOP_CHECK_BYTES: usize = 64;

/// Largest `.pteroignore` honoured, as in Wings.
pub const IGNORE_FILE_MAX: u64 = 32 * 1024;

impl IgnoreRules {
    /// A digest of the rules' text (the same text gives the same digest;
    /// no rules at all give 0), recorded in an archive's index.
    pub fn digest(&self) -> u64 {
        self.digest
    }

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
        IgnoreRules {
            patterns,
            digest: if text.is_empty() {
                0
            } else {
                xxhash_rust::xxh3::xxh3_64(text)
            },
        }
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether `path` (relative, `/`-separated) is ignored by its own patterns.
    /// Callers walking a tree prune ignored directories, so ancestors are
    /// already known not to be ignored.
    pub fn matches(&self, path: &[u8], is_dir: bool) -> bool {
        self.matches_unless(path, is_dir, &|| false)
            .unwrap_or(false)
    }

    /// `matches`, giving up (`None`) once `stop` answers true. It is asked
    /// between patterns: with many patterns and a long path, one answer can
    /// take a while, even though each pattern takes time bounded by its
    /// length times the path's.
    pub fn matches_unless(
        &self,
        path: &[u8],
        is_dir: bool,
        stop: &dyn Fn() -> bool,
    ) -> Option<bool> {
        let basename = match path.iter().rposition(|b| *b == b'/') {
            Some(slash) => &path[slash + 1..],
            None => path,
        };
        for (i, p) in self.patterns.iter().rev().enumerate() {
            if i % STOP_CHECK_PATTERNS == STOP_CHECK_PATTERNS - 1 && stop() {
                return None;
            }
            if p.dir_only && !is_dir {
                continue;
            }
            let hit = if p.basename_only {
                p.matches_basename(basename, stop)?
            } else {
                p.matches_path(path, stop)?
            };
            if hit {
                return Some(!p.negated);
            }
        }
        Some(false)
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
        let compiled = if basename_only {
            Glob::new(glob, false)
        } else {
            Glob::new(&glob[literal_prefix..], true)
        };
        Some(Pattern {
            glob: glob.to_vec(),
            literal_prefix,
            negated,
            dir_only,
            basename_only,
            compiled,
        })
    }

    fn matches_basename(&self, name: &[u8], stop: &dyn Fn() -> bool) -> Option<bool> {
        if self.literal_prefix == self.glob.len() {
            return Some(self.glob == name);
        }
        self.compiled.matches_unless(name, stop)
    }

    /// Anchored match against the whole relative path. Like git, a literal
    /// prefix is compared first and only the rest goes through the glob
    /// matcher, which matters for `**` right after the prefix.
    fn matches_path(&self, path: &[u8], stop: &dyn Fn() -> bool) -> Option<bool> {
        let mut glob = &self.glob[..];
        let mut prefix = self.literal_prefix;
        if glob.first() == Some(&b'/') {
            glob = &glob[1..];
            prefix -= 1;
        }
        let mut name = path;
        if prefix > 0 {
            if prefix > name.len() || glob[..prefix] != name[..prefix] {
                return Some(false);
            }
            name = &name[prefix..];
        }
        self.compiled.matches_unless(name, stop)
    }
}

/// A set of bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ByteSet([u64; 4]);

impl ByteSet {
    const EMPTY: ByteSet = ByteSet([0; 4]);

    /// Every byte but NUL, which never occurs in a path.
    fn all() -> ByteSet {
        let mut s = ByteSet([u64::MAX; 4]);
        s.remove(0);
        s
    }

    /// Every byte but NUL and `/`.
    fn all_but_slash() -> ByteSet {
        let mut s = ByteSet::all();
        s.remove(b'/');
        s
    }

    fn single(b: u8) -> ByteSet {
        let mut s = ByteSet::EMPTY;
        s.insert(b);
        s
    }

    fn insert(&mut self, b: u8) {
        self.0[usize::from(b >> 6)] |= 1 << (b & 63);
    }

    fn remove(&mut self, b: u8) {
        self.0[usize::from(b >> 6)] &= !(1 << (b & 63));
    }

    fn contains(&self, b: u8) -> bool {
        self.0[usize::from(b >> 6)] & (1 << (b & 63)) != 0
    }

    /// The byte, if the set holds exactly one.
    fn only(&self) -> Option<u8> {
        let count: u32 = self.0.iter().map(|w| w.count_ones()).sum();
        if count != 1 {
            return None;
        }
        (0..=255u8).find(|b| self.contains(*b))
    }
}

/// One step of a compiled glob. The matcher keeps the set of steps the
/// text read so far can have reached (a Thompson NFA simulation), so every
/// glob matches in time proportional to its length times the text's length,
/// however many `*` and `**` it holds. git's `wildmatch` backtracks and can
/// take exponential time on globs such as `**/a/**/a/**/a/**/b`; its early
/// aborts only prune attempts that cannot succeed (in pathname mode, and on
/// a single component otherwise), so the answers agree: the oracle tests
/// compare them with `git check-ignore`.
#[derive(Clone, Debug)]
enum Step {
    /// Exactly one byte of the set.
    One(ByteSet),
    /// Any number of bytes of the set: a `*`.
    Many(ByteSet),
    /// The start of a `**/` group (this step, a `Many` of every byte and a
    /// `One` of `/`), which may also be skipped as a whole: "no directory".
    Dirs,
}

/// Steps a `Step::Dirs` group spans.
const DIRS_GROUP: usize = 3;

/// A glob compiled for one mode (`pathname` or not).
#[derive(Clone, Debug)]
pub struct Glob {
    form: Form,
}

#[derive(Clone, Debug)]
enum Form {
    /// A glob git can never match (a bracket expression without its `]` or
    /// with an unknown class name, a trailing backslash).
    Never,
    /// No wildcard at all: the text must be these bytes.
    Literal(Vec<u8>),
    /// Literal bytes every match starts with and ends with, a run of literal
    /// bytes every match contains (quick rejections of most texts), and the
    /// steps that must match what is between head and tail.
    Wild {
        head: Vec<u8>,
        tail: Vec<u8>,
        contains: Vec<u8>,
        middle: Middle,
    },
}

#[derive(Clone, Debug)]
enum Middle {
    /// A single `*`: every byte must be in the set.
    AnyOf(ByteSet),
    /// Fewer than 64 steps: their states are the bits of one word.
    Small(Box<SmallNfa>),
    Large(Vec<Step>),
}

/// The states of a glob of fewer than 64 steps as the bits of one word.
#[derive(Clone, Debug)]
struct SmallNfa {
    /// Bytes that no step tells apart share a class.
    class: [u8; 256],
    /// Per class: the states whose `One` step takes such a byte, and the
    /// states whose `Many` step does.
    moves: Vec<(u64, u64)>,
    /// States that may move on to the next one without reading a byte.
    to_next: u64,
    /// `Dirs` states, which may also move `DIRS_GROUP` states on.
    dirs: u64,
    /// The states before the first byte is read.
    start: u64,
    accept: u64,
}

impl SmallNfa {
    fn new(steps: &[Step]) -> SmallNfa {
        let mut class = [0u8; 256];
        let mut moves: Vec<(u64, u64)> = Vec::new();
        for c in 0..=255u8 {
            let (mut one, mut many) = (0u64, 0u64);
            for (i, step) in steps.iter().enumerate() {
                match step {
                    Step::One(set) if set.contains(c) => one |= 1 << i,
                    Step::Many(set) if set.contains(c) => many |= 1 << i,
                    _ => {}
                }
            }
            let k = match moves.iter().position(|m| *m == (one, many)) {
                Some(k) => k,
                None => {
                    moves.push((one, many));
                    moves.len() - 1
                }
            };
            // At most 256 classes, one per byte.
            class[usize::from(c)] = k as u8;
        }
        let mut to_next = 0u64;
        let mut dirs = 0u64;
        for (i, step) in steps.iter().enumerate() {
            match step {
                Step::Many(_) => to_next |= 1 << i,
                Step::Dirs => {
                    to_next |= 1 << i;
                    dirs |= 1 << i;
                }
                Step::One(_) => {}
            }
        }
        let mut nfa = SmallNfa {
            class,
            moves,
            to_next,
            dirs,
            start: 0,
            accept: 1 << steps.len(),
        };
        nfa.start = nfa.close(1);
        nfa
    }

    /// Adds every state reachable without reading a byte.
    fn close(&self, mut states: u64) -> u64 {
        loop {
            let more =
                states | ((states & self.to_next) << 1) | ((states & self.dirs) << DIRS_GROUP);
            if more == states {
                return states;
            }
            states = more;
        }
    }

    fn matches(&self, text: &[u8]) -> bool {
        let mut states = self.start;
        for &c in text {
            let (one, many) = self.moves[usize::from(self.class[usize::from(c)])];
            let next = ((states & one) << 1) | (states & many);
            if next == 0 {
                return false;
            }
            states = self.close(next);
        }
        states & self.accept != 0
    }
}

fn at(s: &[u8], i: usize) -> u8 {
    s.get(i).copied().unwrap_or(0)
}

impl Glob {
    /// Compiles `glob` with git's rules. With `pathname`, `*`, `?` and
    /// bracket expressions do not match `/`, and `**` between slashes (or at
    /// either end) matches any number of directories.
    pub fn new(glob: &[u8], pathname: bool) -> Glob {
        let Some(steps) = compile(glob, pathname) else {
            return Glob { form: Form::Never };
        };
        let byte = |step: &Step| match step {
            Step::One(set) => set.only(),
            _ => None,
        };
        // The head ends at the first step that is not a single byte, the
        // tail starts after the last one and after the end of every `**/`
        // group (which may be skipped whole).
        let head = steps.iter().map_while(byte).count();
        if head == steps.len() {
            return Glob {
                form: Form::Literal(steps.iter().filter_map(byte).collect()),
            };
        }
        let mut tail = head;
        let mut in_group = vec![false; steps.len()];
        for (i, step) in steps.iter().enumerate() {
            if let Step::Dirs = step {
                tail = tail.max(i + DIRS_GROUP);
                in_group[i..i + DIRS_GROUP].fill(true);
            } else if byte(step).is_none() {
                tail = tail.max(i + 1);
            }
        }
        // The longest run of single bytes between them that cannot be
        // skipped.
        let mut contains: &[Step] = &[];
        let mut run = head;
        for i in head..=tail {
            if i == tail || in_group[i] || byte(&steps[i]).is_none() {
                if i - run > contains.len() {
                    contains = &steps[run..i];
                }
                run = i + 1;
            }
        }
        let middle = &steps[head..tail];
        let middle = match middle {
            [Step::Many(set)] => Middle::AnyOf(*set),
            _ if middle.len() < 64 => Middle::Small(Box::new(SmallNfa::new(middle))),
            _ => Middle::Large(middle.to_vec()),
        };
        Glob {
            form: Form::Wild {
                head: steps[..head].iter().filter_map(byte).collect(),
                tail: steps[tail..].iter().filter_map(byte).collect(),
                contains: if contains.len() >= 2 {
                    contains.iter().filter_map(byte).collect()
                } else {
                    Vec::new()
                },
                middle,
            },
        }
    }

    /// Whether the whole of `text` matches.
    pub fn matches(&self, text: &[u8]) -> bool {
        self.matches_unless(text, &|| false).unwrap_or(false)
    }

    /// `matches`, giving up (`None`) once `stop` answers true; it is asked
    /// now and then only for globs of 64 steps or more, the ones that can
    /// take long on a long text.
    pub fn matches_unless(&self, text: &[u8], stop: &dyn Fn() -> bool) -> Option<bool> {
        Some(match &self.form {
            Form::Never => false,
            Form::Literal(bytes) => same(text, bytes),
            Form::Wild {
                head,
                tail,
                contains,
                middle,
            } => {
                if text.len() < head.len() + tail.len()
                    || !same(&text[text.len() - tail.len()..], tail)
                    || !same(&text[..head.len()], head)
                {
                    return Some(false);
                }
                let text = &text[head.len()..text.len() - tail.len()];
                if !contains.is_empty() && !find(text, contains) {
                    return Some(false);
                }
                match middle {
                    Middle::AnyOf(set) => text.iter().all(|c| set.contains(*c)),
                    Middle::Small(nfa) => nfa.matches(text),
                    Middle::Large(steps) => simulate(steps, text, stop)?,
                }
            }
        })
    }
}

/// Whether `needle` (not empty) occurs in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> bool {
    let (first, rest) = (needle[0], &needle[1..]);
    hay.len() >= needle.len()
        && hay[..=hay.len() - needle.len()]
            .iter()
            .enumerate()
            .any(|(i, c)| *c == first && same(&hay[i + 1..i + needle.len()], rest))
}

/// Byte-wise equality, inlined: the slices compared are short, where a
/// call to `memcmp` costs more than the comparison.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

fn set_bit(bits: &mut [u64], i: usize) {
    bits[i / 64] |= 1 << (i % 64);
}

/// Adds to `bits` every state reachable from it without reading a byte.
/// Such moves only go forward, so one pass in increasing order suffices.
fn close(steps: &[Step], bits: &mut [u64]) {
    for w in 0..bits.len() {
        let mut pending = bits[w];
        while pending != 0 {
            let i = w * 64 + pending.trailing_zeros() as usize;
            pending &= pending - 1;
            let targets = match steps.get(i) {
                Some(Step::Many(_)) => [i + 1, i + 1],
                Some(Step::Dirs) => [i + 1, i + DIRS_GROUP],
                _ => continue,
            };
            for t in targets {
                set_bit(bits, t);
                if t / 64 == w {
                    // A later state in this same word: visit it too.
                    pending |= 1 << (t % 64);
                }
            }
        }
    }
}

/// The general form of `SmallNfa::matches`, for globs of any length; `None`
/// if `stop` said so (it is asked every `STOP_CHECK_BYTES` bytes).
fn simulate(steps: &[Step], text: &[u8], stop: &dyn Fn() -> bool) -> Option<bool> {
    // States 0..=steps.len(); the last one is "matched".
    let accept = steps.len();
    let words = accept / 64 + 1;
    let mut cur = vec![0u64; words];
    let mut next = vec![0u64; words];
    set_bit(&mut cur, 0);
    close(steps, &mut cur);
    for (n, &c) in text.iter().enumerate() {
        if n % STOP_CHECK_BYTES == STOP_CHECK_BYTES - 1 && stop() {
            return None;
        }
        next.fill(0);
        let mut alive = false;
        for (w, &word) in cur.iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                let i = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                match steps.get(i) {
                    Some(Step::One(set)) if set.contains(c) => {
                        set_bit(&mut next, i + 1);
                        alive = true;
                    }
                    Some(Step::Many(set)) if set.contains(c) => {
                        set_bit(&mut next, i);
                        alive = true;
                    }
                    _ => {}
                }
            }
        }
        if !alive {
            return Some(false);
        }
        close(steps, &mut next);
        std::mem::swap(&mut cur, &mut next);
    }
    Some(cur[accept / 64] & (1 << (accept % 64)) != 0)
}

/// Translates git's glob syntax into steps, reading it the way git's
/// `dowild` does.
fn compile(g: &[u8], pathname: bool) -> Option<Vec<Step>> {
    let one_char = if pathname {
        ByteSet::all_but_slash()
    } else {
        ByteSet::all()
    };
    let mut steps = Vec::new();
    let mut p = 0;
    while p < g.len() {
        match g[p] {
            b'?' => steps.push(Step::One(one_char)),
            b'*' => {
                let first = p;
                p += 1;
                let crosses_slash = if at(g, p) == b'*' {
                    while at(g, p) == b'*' {
                        p += 1;
                    }
                    // `**` counts as a segment of its own only between
                    // slashes or at the ends; otherwise it is a `*` (that
                    // does not cross `/`, even outside pathname mode).
                    let starts_segment = first == 0 || g[first - 1] == b'/';
                    let ends_segment =
                        p == g.len() || g[p] == b'/' || (g[p] == b'\\' && at(g, p + 1) == b'/');
                    if starts_segment && ends_segment && at(g, p) == b'/' {
                        // `**/`: no directory, or anything ending in `/`.
                        steps.push(Step::Dirs);
                        steps.push(Step::Many(ByteSet::all()));
                        steps.push(Step::One(ByteSet::single(b'/')));
                        p += 1;
                        continue;
                    }
                    starts_segment && ends_segment
                } else {
                    !pathname
                };
                steps.push(Step::Many(if crosses_slash {
                    ByteSet::all()
                } else {
                    ByteSet::all_but_slash()
                }));
                continue;
            }
            b'[' => {
                let (set, end) = compile_bracket(g, p, pathname)?;
                steps.push(Step::One(set));
                p = end;
            }
            b'\\' => {
                p += 1;
                if p >= g.len() {
                    return None;
                }
                steps.push(Step::One(ByteSet::single(g[p])));
            }
            c => steps.push(Step::One(ByteSet::single(c))),
        }
        p += 1;
    }
    Some(steps)
}

/// The set of bytes the bracket expression at `g[p] == '['` matches, and
/// the index of its closing `]`; `None` if git would abort on it.
fn compile_bracket(g: &[u8], mut p: usize, pathname: bool) -> Option<(ByteSet, usize)> {
    p += 1;
    let mut pc = at(g, p);
    if pc == b'^' {
        pc = b'!';
    }
    let negated = pc == b'!';
    if negated {
        p += 1;
        pc = at(g, p);
    }
    let mut set = ByteSet::EMPTY;
    let mut prev: u8 = 0;
    loop {
        if pc == 0 {
            return None;
        }
        if pc == b'\\' {
            p += 1;
            pc = at(g, p);
            if pc == 0 {
                return None;
            }
            set.insert(pc);
        } else if pc == b'-' && prev != 0 && at(g, p + 1) != 0 && at(g, p + 1) != b']' {
            p += 1;
            pc = at(g, p);
            if pc == b'\\' {
                p += 1;
                pc = at(g, p);
                if pc == 0 {
                    return None;
                }
            }
            for b in prev..=pc {
                set.insert(b);
            }
            pc = 0;
        } else if pc == b'[' && at(g, p + 1) == b':' {
            let start = p + 2;
            let mut end = start;
            while at(g, end) != 0 && at(g, end) != b']' {
                end += 1;
            }
            if at(g, end) == 0 {
                return None;
            }
            if end == start || g[end - 1] != b':' {
                // No `:]`: an ordinary `[` in the set.
                pc = b'[';
                set.insert(pc);
            } else {
                p = end;
                let class = char_class(&g[start..end - 1])?;
                for b in 1..=255u8 {
                    if class(b) {
                        set.insert(b);
                    }
                }
                pc = 0;
            }
        } else {
            set.insert(pc);
        }
        prev = pc;
        p += 1;
        pc = at(g, p);
        if pc == b']' {
            break;
        }
    }
    if negated {
        for w in &mut set.0 {
            *w = !*w;
        }
    }
    set.remove(0);
    if pathname {
        set.remove(b'/');
    }
    Some((set, p))
}

/// git's glob match of the whole `text` (compiles the glob each time; the
/// ignore rules compile theirs once). Without `pathname`, `text` is taken to
/// be one path component, as in the ignore rules' basename matches: git's
/// early aborts can refuse a match there when a `/` in the text is matched
/// by `?` or a bracket expression next to a `**` that is not a segment of its
/// own, and this matcher does not copy that quirk.
pub fn wildmatch(glob: &[u8], text: &[u8], pathname: bool) -> bool {
    Glob::new(glob, pathname).matches(text)
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

    /// The glob from issue 15: exponential for a backtracking matcher over
    /// a deep path, answered here in time linear in the path.
    #[test]
    fn hostile_glob_over_deep_paths() {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rules = IgnoreRules::parse(b"**/a/**/a/**/a/**/a/**/a/**/a/**/b");
            let deep = "a/".repeat(100);
            let answers = [
                rules.matches(format!("{deep}b").as_bytes(), false),
                rules.matches(format!("{deep}xb").as_bytes(), false),
                rules.matches(format!("{deep}c").as_bytes(), false),
                rules.matches(deep.trim_end_matches('/').as_bytes(), true),
                rules.matches(format!("{}b", "a/".repeat(5)).as_bytes(), false),
                rules.matches(format!("{}b", "a/".repeat(6)).as_bytes(), false),
                rules.matches(format!("{}b", "a/b/".repeat(6)).as_bytes(), false),
            ];
            let _ = tx.send(answers);
        });
        let answers = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("answered within 10 s");
        assert_eq!(answers, [true, false, false, false, false, true, true]);
    }

    /// Globs of 64 steps or more take the general simulation, which also
    /// gives up when told to stop, as do rules between patterns.
    #[test]
    fn long_globs_and_stopping() {
        let glob = Glob::new("a*".repeat(40).as_bytes(), true);
        assert!(matches!(
            glob.form,
            Form::Wild {
                middle: Middle::Large(_),
                ..
            }
        ));
        assert!(glob.matches("a".repeat(40).as_bytes()));
        assert!(glob.matches("ab".repeat(40).as_bytes()));
        assert!(!glob.matches("a".repeat(39).as_bytes()));
        assert!(!glob.matches(format!("{}/", "a".repeat(40)).as_bytes()));
        let text = "a".repeat(1000);
        assert_eq!(glob.matches_unless(text.as_bytes(), &|| false), Some(true));
        assert_eq!(glob.matches_unless(text.as_bytes(), &|| true), None);

        let rules = IgnoreRules::parse("x*y\n".repeat(100).as_bytes());
        assert_eq!(rules.matches_unless(b"xz", false, &|| true), None);
        assert_eq!(rules.matches_unless(b"xzy", false, &|| false), Some(true));
        assert_eq!(rules.matches_unless(b"xz", false, &|| false), Some(false));
    }

    #[test]
    fn trailing_space_rules() {
        assert_eq!(trim_trailing_spaces(b"a  "), b"a");
        assert_eq!(trim_trailing_spaces(b"a\\ "), b"a\\ ");
        assert_eq!(trim_trailing_spaces(b"a\\"), b"a\\");
        assert_eq!(trim_trailing_spaces(b"a\\  "), b"a\\ ");
    }
}
