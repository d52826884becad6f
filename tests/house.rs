//! House rules checked on the product sources (docs/architecture.md): no
//! function longer than [`MAX_LINES`] lines without a reason written beside
//! it, as a line `// Long: <reason>` directly above the function (above its
//! doc comment and attributes, or among them).
//!
//! Scanned: the sources of the product crates (crates/wire, crates/proto,
//! crates/sensor, and the Suricata plugin's crates/suricata-core and
//! crates/qmwatch-suricata, read as files: the plugin is not built here) and
//! of the binary (src/); not the generator or the test
//! kit, not test files (`tests.rs`, `tests/`) and not inline
//! `#[cfg(test)] mod … { … }` blocks. A function is measured from its `fn`
//! line to its closing brace, braces counted with comments, strings and
//! character literals blanked out first.

use std::fs;
use std::path::{Path, PathBuf};

/// The longest a function may be without a reason.
const MAX_LINES: usize = 80;

/// The directories scanned, from the repository root.
const ROOTS: &[&str] = &[
    "crates/wire/src",
    "crates/proto/src",
    "crates/sensor/src",
    "crates/suricata-core/src",
    "crates/qmwatch-suricata/src",
    "src",
];

#[test]
fn long_functions_give_a_reason() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for r in ROOTS {
        rust_files(&root.join(r), &mut files);
    }
    files.sort();
    assert!(files.len() > 20, "too few sources found: {files:?}");
    let mut unexplained = Vec::new();
    for f in &files {
        let text = fs::read_to_string(f).unwrap();
        let rel = f
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        for long in long_functions(&text) {
            if long.reason {
                continue;
            }
            unexplained.push(format!(
                "{rel}:{}: fn {} is {} lines",
                long.line, long.name, long.lines
            ));
        }
    }
    assert!(
        unexplained.is_empty(),
        "functions over {MAX_LINES} lines without a `// Long: <reason>` line above them \
         (split them, or say why they are long):\n  {}",
        unexplained.join("\n  ")
    );
}

/// Every `.rs` file under `dir`, test files and directories left out.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if p.is_dir() {
            if name != "tests" {
                rust_files(&p, out);
            }
        } else if name.ends_with(".rs") && name != "tests.rs" {
            out.push(p);
        }
    }
}

/// A function over the limit.
#[derive(Debug, PartialEq)]
struct Long {
    name: String,
    /// 1-based line of its `fn`.
    line: usize,
    lines: usize,
    /// A `// Long:` line is above it.
    reason: bool,
}

/// The functions of `text` longer than [`MAX_LINES`], outside test modules.
fn long_functions(text: &str) -> Vec<Long> {
    let code = blank(text);
    let raw: Vec<&str> = text.lines().collect();
    let chars: Vec<char> = code.chars().collect();
    let line_of = line_index(&chars);
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if starts_word(&chars, i, "mod") && after_cfg_test(&chars, i) {
            // Skip the whole test module.
            match body_end(&chars, i) {
                Some(end) => {
                    i = end + 1;
                    continue;
                }
                None => break,
            }
        }
        if starts_word(&chars, i, "fn") {
            let name: String = chars[i + 2..]
                .iter()
                .skip_while(|c| c.is_whitespace())
                .take_while(|c| c.is_alphanumeric() || **c == '_')
                .collect();
            if !name.is_empty() {
                if let Some(end) = body_end(&chars, i) {
                    let (first, last) = (line_of[i], line_of[end]);
                    let lines = last - first + 1;
                    if lines > MAX_LINES {
                        out.push(Long {
                            name,
                            line: first + 1,
                            lines,
                            reason: has_reason(&raw, first),
                        });
                    }
                }
            }
            i += 2;
            continue;
        }
        i += 1;
    }
    out
}

/// 0-based line number of every char.
fn line_index(chars: &[char]) -> Vec<usize> {
    let mut line = 0;
    chars
        .iter()
        .map(|c| {
            let l = line;
            if *c == '\n' {
                line += 1;
            }
            l
        })
        .collect()
}

/// True if the word `w` starts at `i` (not inside a longer identifier).
fn starts_word(chars: &[char], i: usize, w: &str) -> bool {
    let ident = |c: &char| c.is_alphanumeric() || *c == '_';
    let n = w.chars().count();
    chars
        .get(i..i + n)
        .is_some_and(|s| s.iter().copied().eq(w.chars()))
        && (i == 0 || !ident(&chars[i - 1]))
        && chars.get(i + n).is_none_or(|c| !ident(c))
}

/// True if the item at `i` is preceded by `#[cfg(test)]` (possibly with
/// other attributes or `pub` between).
fn after_cfg_test(chars: &[char], i: usize) -> bool {
    let before: String = chars[i.saturating_sub(200)..i].iter().collect();
    let before = before.trim_end();
    let before = before.strip_suffix("pub").unwrap_or(before).trim_end();
    before
        .rsplit_once("#[cfg(test)]")
        .is_some_and(|(_, rest)| rest.trim().is_empty() || rest.trim().starts_with("#["))
}

/// The index of the `}` closing the body of the item whose keyword is at
/// `i`, or `None` if it has none (a declaration ending in `;`).
fn body_end(chars: &[char], i: usize) -> Option<usize> {
    let mut j = i;
    let mut paren = 0i32;
    while j < chars.len() {
        match chars[j] {
            '(' | '[' => paren += 1,
            ')' | ']' => paren -= 1,
            ';' if paren == 0 => return None,
            '{' if paren == 0 => break,
            _ => {}
        }
        j += 1;
    }
    let mut depth = 0i32;
    while j < chars.len() {
        match chars[j] {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(j);
                }
            }
            _ => {}
        }
        j += 1;
    }
    None
}

/// True if the lines above line `fn_line` (0-based) — its doc comment,
/// attributes and plain comments — hold a `// Long: <reason>` line.
fn has_reason(raw: &[&str], fn_line: usize) -> bool {
    for l in raw[..fn_line].iter().rev() {
        let t = l.trim_start();
        if let Some(reason) = t.strip_prefix("// Long:") {
            return !reason.trim().is_empty();
        }
        if !(t.starts_with("//") || t.starts_with("#[") || t.starts_with("#![")) {
            return false;
        }
    }
    false
}

/// `text` with comments, string literals and character literals replaced
/// by spaces (newlines kept), so that braces in them are not counted.
fn blank(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out: Vec<char> = c.clone();
    let mut i = 0;
    let clear = |out: &mut Vec<char>, from: usize, to: usize| {
        for x in out.iter_mut().take(to.min(c.len())).skip(from) {
            if *x != '\n' {
                *x = ' ';
            }
        }
    };
    let ident = |x: char| x.is_alphanumeric() || x == '_';
    while i < c.len() {
        let next = c.get(i + 1).copied();
        match c[i] {
            '/' if next == Some('/') => {
                let end = c[i..]
                    .iter()
                    .position(|x| *x == '\n')
                    .map_or(c.len(), |p| i + p);
                clear(&mut out, i, end);
                i = end;
            }
            '/' if next == Some('*') => {
                let mut depth = 0;
                let mut j = i;
                while j < c.len() {
                    if c[j] == '/' && c.get(j + 1) == Some(&'*') {
                        depth += 1;
                        j += 2;
                    } else if c[j] == '*' && c.get(j + 1) == Some(&'/') {
                        depth -= 1;
                        j += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        j += 1;
                    }
                }
                clear(&mut out, i, j);
                i = j;
            }
            'r' if (i == 0
                || !ident(c[i - 1])
                || (c[i - 1] == 'b' && (i < 2 || !ident(c[i - 2]))))
                && matches!(next, Some('"') | Some('#'))
                && raw_string_end(&c, i + 1).is_some() =>
            {
                let end = raw_string_end(&c, i + 1).unwrap_or(c.len());
                clear(&mut out, i, end);
                i = end;
            }
            '"' => {
                let mut j = i + 1;
                while j < c.len() && c[j] != '"' {
                    j += if c[j] == '\\' { 2 } else { 1 };
                }
                clear(&mut out, i, j + 1);
                i = j + 1;
            }
            '\'' => {
                // A character literal ('x', '\n', '\u{7b}'), or a lifetime
                // or label ('a), which is left alone.
                if next == Some('\\') {
                    let mut j = i + 2;
                    while j < c.len() && c[j] != '\'' {
                        j += 1;
                    }
                    clear(&mut out, i, j + 1);
                    i = j + 1;
                } else if c.get(i + 2) == Some(&'\'') {
                    clear(&mut out, i, i + 3);
                    i += 3;
                } else {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    out.into_iter().collect()
}

/// The end (exclusive) of a raw string whose `#`s or quote start at `i`
/// (just after the `r`), or `None` if it is no raw string.
fn raw_string_end(c: &[char], i: usize) -> Option<usize> {
    let hashes = c[i..].iter().take_while(|x| **x == '#').count();
    if c.get(i + hashes) != Some(&'"') {
        return None;
    }
    let mut j = i + hashes + 1;
    while j < c.len() {
        if c[j] == '"'
            && c[j + 1..]
                .iter()
                .take(hashes)
                .filter(|x| **x == '#')
                .count()
                == hashes
        {
            return Some(j + 1 + hashes);
        }
        j += 1;
    }
    Some(c.len())
}

#[test]
fn the_scanner_counts_braces_in_code_only() {
    let body: String = (0..85).map(|_| "    let _ = 1;\n").collect();
    let text = format!(
        "// Long: a table, clearer whole\n#[inline]\nfn explained() {{\n{body}}}\n\
         fn tricky() {{\n    let _ = \"}}\"; let _ = '}}'; let _ = r#\"}}\"#; // }}\n    /* }} */\n{body}}}\n\
         fn short<'a>(x: &'a str) -> &'a str {{ x }}\n\
         #[cfg(test)]\nmod tests {{\n    fn ignored() {{\n{body}    }}\n}}\n"
    );
    let got = long_functions(&text);
    let names: Vec<(&str, bool)> = got.iter().map(|l| (l.name.as_str(), l.reason)).collect();
    assert_eq!(names, [("explained", true), ("tricky", false)], "{got:?}");
    assert_eq!(got[1].lines, 85 + 4);
}
