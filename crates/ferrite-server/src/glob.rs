//! Redis's glob matching (`stringmatchlen`) for KEYS, SCAN MATCH and CONFIG GET:
//! `*`, `?`, `[abc]`, `[^a-z]`, `\x` escapes.

/// Does `s` match `pat`? `nocase` folds ASCII case.
pub fn glob_match(pat: &[u8], s: &[u8], nocase: bool) -> bool {
    // Iterative with one level of backtracking for `*` keeps the cost bounded
    // by len(pat) * len(s) instead of Redis's exponential worst case.
    let (mut p, mut i) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    loop {
        if p < pat.len() && pat[p] == b'*' {
            while p < pat.len() && pat[p] == b'*' {
                p += 1;
            }
            if p == pat.len() {
                return true;
            }
            star = Some((p, i));
            continue;
        }
        if p == pat.len() && i == s.len() {
            return true;
        }
        if p < pat.len() && i < s.len() {
            if let Some(next) = token_match(pat, p, s[i], nocase) {
                p = next;
                i += 1;
                continue;
            }
        }
        // Mismatch: let the last `*` absorb one more byte, or fail.
        match star {
            Some((sp, si)) if si < s.len() => {
                star = Some((sp, si + 1));
                p = sp;
                i = si + 1;
            }
            _ => return false,
        }
    }
}

/// Match one pattern token at `pat[p]` (not `*`) against byte `c`; the index
/// after the token when it matches.
fn token_match(pat: &[u8], p: usize, c: u8, nocase: bool) -> Option<usize> {
    let eq = |a: u8, b: u8| {
        if nocase {
            a.eq_ignore_ascii_case(&b)
        } else {
            a == b
        }
    };
    match pat[p] {
        b'?' => Some(p + 1),
        b'[' => match class(pat, p, c, nocase) {
            Some((true, next)) => Some(next),
            _ => None,
        },
        b'\\' if p + 1 < pat.len() => eq(pat[p + 1], c).then_some(p + 2),
        other => eq(other, c).then_some(p + 1),
    }
}

/// Match byte `c` against the class starting at `pat[p] == '['`.
/// Returns (matched, index after the class).
fn class(pat: &[u8], p: usize, c: u8, nocase: bool) -> Option<(bool, usize)> {
    let mut j = p + 1;
    let not = j < pat.len() && pat[j] == b'^';
    if not {
        j += 1;
    }
    let fold = |x: u8| if nocase { x.to_ascii_lowercase() } else { x };
    let c = fold(c);
    let mut matched = false;
    loop {
        if j >= pat.len() {
            // Redis treats an unterminated class as ending at the pattern end.
            break;
        }
        if pat[j] == b'\\' && j + 1 < pat.len() {
            if fold(pat[j + 1]) == c {
                matched = true;
            }
            j += 2;
        } else if pat[j] == b']' {
            j += 1;
            break;
        } else if j + 2 < pat.len() && pat[j + 1] == b'-' {
            let (mut a, mut b) = (fold(pat[j]), fold(pat[j + 2]));
            if a > b {
                std::mem::swap(&mut a, &mut b);
            }
            if c >= a && c <= b {
                matched = true;
            }
            j += 3;
        } else {
            if fold(pat[j]) == c {
                matched = true;
            }
            j += 1;
        }
    }
    Some((matched != not, j))
}

#[cfg(test)]
mod tests {
    use super::glob_match as m;

    #[test]
    fn globs() {
        assert!(m(b"*", b"anything", false));
        assert!(m(b"h?llo", b"hello", false));
        assert!(m(b"h*llo", b"heeeello", false));
        assert!(m(b"h[ae]llo", b"hallo", false));
        assert!(!m(b"h[^e]llo", b"hello", false));
        assert!(m(b"h[a-b]llo", b"hbllo", false));
        assert!(m(b"stream-node-*", b"stream-node-max-bytes", false));
        assert!(!m(b"a*b", b"acd", false));
        assert!(m(b"a\\*b", b"a*b", false));
        assert!(m(b"PORT", b"port", true));
        assert!(!m(b"", b"x", false));
        assert!(m(b"", b"", false));
    }
}
