//! The operations gate: the generated files compared with the committed ones, failing with a
//! readable diff.

use std::fmt::{self, Write as _};
use std::path::Path;

use super::Files;

/// Set to `1` to make [`Files::check_dir`] (and the `--ops-check` flag) rewrite the
/// committed files instead of failing.
pub const UPDATE_ENV: &str = "TRACEWIRE_OPS_UPDATE";

/// Lines of context around each change in a diff.
const CONTEXT: usize = 3;
/// Changed lines shown per file before the diff is cut short.
const MAX_LINES: usize = 200;

/// The committed operations files differ from what the code generates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    /// The directory holding the committed files (as given).
    pub dir: String,
    /// Per differing file: its name and a unified diff (committed → generated), or why it
    /// could not be compared.
    pub files: Vec<(String, String)>,
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "the operations files in {} differ from what the objectives in the code generate:",
            self.dir
        )?;
        for (name, diff) in &self.files {
            writeln!(f, "--- {name} (committed)\n+++ {name} (generated)")?;
            f.write_str(diff)?;
        }
        write!(
            f,
            "review the change, then regenerate with {UPDATE_ENV}=1 (or the program's `--ops-out DIR`)"
        )
    }
}

impl std::error::Error for Drift {}

impl Files {
    /// Compares every file with the file of the same name in `dir`. With [`UPDATE_ENV`]`=1`
    /// in the environment, rewrites the files that differ (or are missing) instead.
    pub fn check_dir(&self, dir: impl AsRef<Path>) -> Result<(), Drift> {
        let update = std::env::var(UPDATE_ENV).is_ok_and(|v| v == "1");
        let dir = dir.as_ref();
        let mut drift = Drift {
            dir: dir.display().to_string(),
            files: Vec::new(),
        };
        for (name, generated) in self.iter() {
            let path = dir.join(name);
            let committed = std::fs::read_to_string(&path);
            if committed.as_deref().ok() == Some(generated) {
                continue;
            }
            if update {
                let written =
                    std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, generated));
                if let Err(e) = written {
                    drift
                        .files
                        .push((name.to_owned(), format!("cannot write it: {e}\n")));
                }
                continue;
            }
            let diff = match committed {
                Ok(committed) => unified_diff(&committed, generated),
                Err(e) => format!("not committed ({e})\n"),
            };
            drift.files.push((name.to_owned(), diff));
        }
        if drift.files.is_empty() {
            Ok(())
        } else {
            Err(drift)
        }
    }

    /// [`check_dir`](Self::check_dir) for tests: panics with the readable diff.
    #[track_caller]
    pub fn assert_dir(&self, dir: impl AsRef<Path>) {
        if let Err(drift) = self.check_dir(dir) {
            panic!("{drift}");
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Same,
    Removed,
    Added,
}

/// A unified diff of two texts, `@@ -a,b +c,d @@` hunks with three lines of context.
pub(crate) fn unified_diff(old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    // Common prefix and suffix first: generated files usually change in a few places.
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let suffix = a[prefix..]
        .iter()
        .rev()
        .zip(b[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (am, bm) = (&a[prefix..a.len() - suffix], &b[prefix..b.len() - suffix]);
    // Longest common subsequence of the middle parts.
    let (n, m) = (am.len(), bm.len());
    let mut lcs = vec![0u32; (n + 1) * (m + 1)];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i * (m + 1) + j] = if am[i] == bm[j] {
                lcs[(i + 1) * (m + 1) + j + 1] + 1
            } else {
                lcs[(i + 1) * (m + 1) + j].max(lcs[i * (m + 1) + j + 1])
            };
        }
    }
    let mut ops: Vec<(Op, &str)> = a[..prefix].iter().map(|l| (Op::Same, *l)).collect();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && am[i] == bm[j] {
            ops.push((Op::Same, am[i]));
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i * (m + 1) + j + 1] > lcs[(i + 1) * (m + 1) + j]) {
            ops.push((Op::Added, bm[j]));
            j += 1;
        } else {
            ops.push((Op::Removed, am[i]));
            i += 1;
        }
    }
    ops.extend(a[a.len() - suffix..].iter().map(|l| (Op::Same, *l)));

    // Group into hunks.
    let changed: Vec<usize> = (0..ops.len()).filter(|&k| ops[k].0 != Op::Same).collect();
    let mut out = String::new();
    let mut shown = 0;
    let mut k = 0;
    while k < changed.len() {
        let start = changed[k].saturating_sub(CONTEXT);
        let mut end = (changed[k] + CONTEXT + 1).min(ops.len());
        while k + 1 < changed.len() && changed[k + 1] <= end + CONTEXT {
            k += 1;
            end = (changed[k] + CONTEXT + 1).min(ops.len());
        }
        let old_start = ops[..start].iter().filter(|o| o.0 != Op::Added).count();
        let new_start = ops[..start].iter().filter(|o| o.0 != Op::Removed).count();
        let old_len = ops[start..end].iter().filter(|o| o.0 != Op::Added).count();
        let new_len = ops[start..end]
            .iter()
            .filter(|o| o.0 != Op::Removed)
            .count();
        let _ = writeln!(
            out,
            "@@ -{},{old_len} +{},{new_len} @@",
            old_start + 1,
            new_start + 1
        );
        for (op, line) in &ops[start..end] {
            let sign = match op {
                Op::Same => ' ',
                Op::Removed => '-',
                Op::Added => '+',
            };
            let _ = writeln!(out, "{sign}{line}");
            if *op != Op::Same {
                shown += 1;
            }
        }
        if shown >= MAX_LINES {
            let _ = writeln!(out, "… (more changes not shown)");
            break;
        }
        k += 1;
    }
    if out.is_empty() {
        // Same lines, different line endings or final newline.
        out.push_str("(only line endings or the final newline differ)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::unified_diff;

    #[test]
    fn a_changed_line_shows_with_context() {
        let old = "a\nb\nc\nd\ne\nf\ng\nh\n";
        let new = "a\nb\nc\nd\nE\nf\ng\nh\n";
        assert_eq!(
            unified_diff(old, new),
            "@@ -2,7 +2,7 @@\n b\n c\n d\n-e\n+E\n f\n g\n h\n"
        );
    }

    #[test]
    fn added_and_removed_lines() {
        let diff = unified_diff("x\ny\n", "x\nz\ny\nw\n");
        assert_eq!(diff, "@@ -1,2 +1,4 @@\n x\n+z\n y\n+w\n");
    }
}
