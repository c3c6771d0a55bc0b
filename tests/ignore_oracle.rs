//! Differential test of the ignore rules against `git check-ignore --no-index`:
//! seeded random pattern sets over random trees, every path compared.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use wings_backup::ignore::IgnoreRules;

/// A small deterministic generator (xorshift64*), so a failing seed replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

const NAMES: &[&str] = &[
    "a", "b", "ab", "abc", "a.txt", "b.log", "A", "logs", "keep.txt", "x y", "[x]", "#c", "!d",
    "f?", "s*", "b\\c", "a-b", "z9", "_u", "dir", "sub", "q.LOG", "a ", "é",
];

const ATOMS: &[&str] = &[
    "a",
    "b",
    "ab",
    "abc",
    "txt",
    "log",
    "logs",
    "keep",
    ".",
    "x",
    "y",
    " ",
    "#",
    "!",
    "-",
    "z",
    "*",
    "*",
    "**",
    "?",
    "[ab]",
    "[!a]",
    "[^b]",
    "[a-c]",
    "[[:alpha:]]",
    "[[:digit:]]",
    "[[:space:]]",
    "[]a]",
    "[a-]",
    "[\\]]",
    "\\*",
    "\\?",
    "\\[",
    "\\ ",
    "\\#",
    "\\!",
    "[",
    "[:alpha:]",
    "é",
    "dir",
    "sub",
    "A",
    "LOG",
    "s",
    "f",
    "u",
    "_",
    "9",
];

fn random_segment(rng: &mut Rng) -> String {
    let n = 1 + rng.below(3);
    (0..n).map(|_| rng.pick(ATOMS)).collect()
}

fn random_pattern(rng: &mut Rng) -> String {
    match rng.below(20) {
        0 => return String::new(),
        1 => return format!("# {}", random_segment(rng)),
        _ => {}
    }
    let mut p = String::new();
    if rng.chance(25) {
        p.push('!');
    }
    if rng.chance(25) {
        p.push('/');
    }
    if rng.chance(10) {
        p.push_str("**/");
    }
    let segments = 1 + rng.below(3);
    let parts: Vec<String> = (0..segments)
        .map(|_| {
            if rng.chance(10) {
                "**".to_string()
            } else {
                random_segment(rng)
            }
        })
        .collect();
    p.push_str(&parts.join("/"));
    if rng.chance(25) {
        p.push('/');
    }
    if rng.chance(8) {
        p.push_str("  ");
    }
    if rng.chance(5) {
        p.push('\r');
    }
    p
}

struct Tree {
    /// (relative path, is directory)
    paths: Vec<(String, bool)>,
}

fn random_tree(rng: &mut Rng, root: &Path) -> Tree {
    let mut paths: Vec<(String, bool)> = Vec::new();
    let mut dirs = vec![String::new()];
    for _ in 0..(10 + rng.below(30)) {
        let parent = dirs[rng.below(dirs.len())].clone();
        let depth = parent.matches('/').count();
        let name = rng.pick(NAMES);
        let rel = if parent.is_empty() {
            name.to_string()
        } else {
            format!("{parent}/{name}")
        };
        if paths.iter().any(|(p, _)| *p == rel) {
            continue;
        }
        let is_dir = depth < 3 && rng.chance(40);
        if is_dir {
            fs::create_dir(root.join(&rel)).unwrap();
            dirs.push(rel.clone());
        } else {
            fs::write(root.join(&rel), b"x").unwrap();
        }
        paths.push((rel, is_dir));
    }
    Tree { paths }
}

/// Paths git reports as ignored.
fn git_ignored(root: &Path, excludes: &Path, paths: &[(String, bool)]) -> Vec<bool> {
    let mut child = Command::new("git")
        .current_dir(root)
        .arg("-c")
        .arg(format!("core.excludesFile={}", excludes.display()))
        .args(["check-ignore", "--no-index", "--stdin", "-z", "-v", "-n"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("git is installed");
    let mut input = Vec::new();
    for (p, _) in paths {
        input.extend_from_slice(p.as_bytes());
        input.push(0);
    }
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    let fields: Vec<&[u8]> = out.stdout.split(|b| *b == 0).collect();
    let mut result = Vec::new();
    for record in fields.chunks(4) {
        if record.len() < 4 {
            break;
        }
        let pattern = record[2];
        result.push(!pattern.is_empty() && pattern[0] != b'!');
    }
    assert_eq!(result.len(), paths.len(), "git answered every path");
    result
}

#[test]
fn matches_git_check_ignore() {
    let base = std::env::temp_dir().join(format!("wb-ignore-oracle-{}", std::process::id()));
    let _ = fs::remove_dir_all(&base);
    fs::create_dir_all(&base).unwrap();
    let excludes =
        std::env::temp_dir().join(format!("wb-ignore-oracle-{}.txt", std::process::id()));

    let mut compared = 0;
    let mut ignored = 0;
    let mut mismatches = Vec::new();
    for seed in 1..=400u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let root = base.join(format!("t{seed}"));
        fs::create_dir(&root).unwrap();
        let tree = random_tree(&mut rng, &root);
        let lines: Vec<String> = (0..1 + rng.below(6))
            .map(|_| random_pattern(&mut rng))
            .collect();
        let text = lines.join("\n");
        fs::write(&excludes, &text).unwrap();
        // Each tree is its own repository, so anchored patterns are relative to it.
        Command::new("git")
            .args(["init", "-q"])
            .arg(&root)
            .status()
            .unwrap();
        let want = git_ignored(&root, &excludes, &tree.paths);
        let rules = IgnoreRules::parse(text.as_bytes());
        for ((path, is_dir), want) in tree.paths.iter().zip(want) {
            compared += 1;
            let got = rules.is_ignored(path.as_bytes(), *is_dir);
            ignored += usize::from(want);
            if got != want {
                mismatches.push(format!(
                    "seed {seed}: patterns {text:?} path {path:?} dir {is_dir}: git {want}, ours {got}"
                ));
            }
        }
        fs::remove_dir_all(&root).unwrap();
    }
    let _ = fs::remove_dir_all(&base);
    let _ = fs::remove_file(&excludes);
    assert!(compared >= 1000, "only {compared} cases");
    // Both answers must be well represented, or the comparison proves little.
    assert!(
        ignored * 10 > compared && ignored * 10 < compared * 9,
        "{ignored} of {compared} ignored"
    );
    assert!(
        mismatches.is_empty(),
        "{} of {compared} differ:\n{}",
        mismatches.len(),
        mismatches[..mismatches.len().min(20)].join("\n")
    );
}

/// Globs with many `**` over deep paths, the shape on which git's
/// backtracking matcher takes exponential time (kept small enough here for
/// git to answer quickly): the answers must still be git's.
#[test]
fn many_double_stars_over_deep_paths_match_git() {
    const COMPONENTS: &[&str] = &["a", "b", "ab", "ba"];
    const GLOB_PARTS: &[&str] = &["**", "**", "a", "b", "*", "a*", "*b", "?", "[ab]", "ab"];
    let base = std::env::temp_dir().join(format!("wb-ignore-deep-{}", std::process::id()));
    let _ = fs::remove_dir_all(&base);
    fs::create_dir_all(&base).unwrap();
    let excludes = std::env::temp_dir().join(format!("wb-ignore-deep-{}.txt", std::process::id()));

    let mut compared = 0;
    let mut ignored = 0;
    let mut mismatches = Vec::new();
    for seed in 1..=60u64 {
        let mut rng = Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1);
        let root = base.join(format!("t{seed}"));
        fs::create_dir(&root).unwrap();
        // One chain of directories, with a file beside each.
        let mut paths: Vec<(String, bool)> = Vec::new();
        let mut dir = String::new();
        for _ in 0..(8 + rng.below(17)) {
            let name = rng.pick(COMPONENTS);
            let file = rng.pick(&["a", "b", "c", "ab"]);
            if file != name {
                let rel = if dir.is_empty() {
                    file.to_string()
                } else {
                    format!("{dir}/{file}")
                };
                fs::write(root.join(&rel), b"x").unwrap();
                paths.push((rel, false));
            }
            dir = if dir.is_empty() {
                name.to_string()
            } else {
                format!("{dir}/{name}")
            };
            fs::create_dir(root.join(&dir)).unwrap();
            paths.push((dir.clone(), true));
        }
        let lines: Vec<String> = (0..1 + rng.below(3))
            .map(|_| {
                let mut stars = 0;
                let parts: Vec<&str> = (0..3 + rng.below(6))
                    .map(|_| loop {
                        let part = rng.pick(GLOB_PARTS);
                        if part != "**" || stars < 4 {
                            stars += usize::from(part == "**");
                            break part;
                        }
                    })
                    .collect();
                let mut line = parts.join("/");
                if rng.chance(20) {
                    line.insert(0, '!');
                }
                line
            })
            .collect();
        let text = lines.join("\n");
        fs::write(&excludes, &text).unwrap();
        Command::new("git")
            .args(["init", "-q"])
            .arg(&root)
            .status()
            .unwrap();
        let want = git_ignored(&root, &excludes, &paths);
        let rules = IgnoreRules::parse(text.as_bytes());
        for ((path, is_dir), want) in paths.iter().zip(want) {
            compared += 1;
            ignored += usize::from(want);
            let got = rules.is_ignored(path.as_bytes(), *is_dir);
            if got != want {
                mismatches.push(format!(
                    "seed {seed}: patterns {text:?} path {path:?} dir {is_dir}: git {want}, ours {got}"
                ));
            }
        }
        fs::remove_dir_all(&root).unwrap();
    }
    let _ = fs::remove_dir_all(&base);
    let _ = fs::remove_file(&excludes);
    assert!(compared >= 1000, "only {compared} cases");
    assert!(
        ignored * 10 > compared && ignored * 10 < compared * 9,
        "{ignored} of {compared} ignored"
    );
    assert!(
        mismatches.is_empty(),
        "{} of {compared} differ:\n{}",
        mismatches.len(),
        mismatches[..mismatches.len().min(20)].join("\n")
    );
}
