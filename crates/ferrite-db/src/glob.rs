//! Redis's glob matching (`stringmatchlen`) for KEYS, SCAN MATCH and CONFIG GET:
//! `*`, `?`, `[abc]`, `[^a-z]`, `\x` escapes.

/// Does `s` match `pat`? `nocase` folds ASCII case.
pub fn glob_match(pat: &[u8], s: &[u8], nocase: bool) -> bool {
    // NOTE: Redis's matcher never matches an empty string (`KEYS **` skips the
    // key ""), except through its callers' shortcut for a lone `*` (KEYS,
    // SCAN MATCH), which only the empty pattern otherwise matches.
    if s.is_empty() {
        return pat.is_empty() || pat == b"*";
    }
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
    let raw = c;
    let c = fold(c);
    let mut matched = false;
    loop {
        if j >= pat.len() {
            // Redis treats an unterminated class as ending at the pattern end.
            break;
        }
        if pat[j] == b'\\' && j + 1 < pat.len() {
            // Redis compares an escaped class member case-sensitively.
            if pat[j + 1] == raw {
                matched = true;
            }
            j += 2;
        } else if pat[j] == b']' {
            j += 1;
            break;
        } else if j + 2 < pat.len() && pat[j + 1] == b'-' {
            // Redis orders the ends, then folds case.
            let (mut a, mut b) = (pat[j], pat[j + 2]);
            if a > b {
                std::mem::swap(&mut a, &mut b);
            }
            let (a, b) = (fold(a), fold(b));
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

    #[test]
    fn redis_corner_cases() {
        // Found by differential fuzzing against Redis 7.0's stringmatchlen.
        assert!(!m(b"**", b"", false)); // KEYS ** skips the key ""
        assert!(!m(b"?*", b"", false));
        assert!(m(b"*", b"", false)); // KEYS * and SCAN MATCH * do not
        assert!(!m(b"[Z-a]", b"m", true)); // ends ordered, then folded
        assert!(!m(b"[\\A]", b"a", true)); // escaped member: exact case
        assert!(m(b"[A]", b"a", true));
    }

    /// Redis 7.0's `stringmatchlen_impl`, transcribed (bounds-checked; a read
    /// past the end sees the C string's NUL), as the reference.
    fn redis(pat: &[u8], s: &[u8], nocase: bool, skip: &mut bool) -> bool {
        let at = |i: usize| pat.get(i).copied().unwrap_or(0);
        let low = |c: u8| if nocase { c.to_ascii_lowercase() } else { c };
        let (mut p, mut pl, mut i) = (0usize, pat.len() as isize, 0usize);
        while pl > 0 && i < s.len() {
            match at(p) {
                b'*' => {
                    while pl > 0 && at(p + 1) == b'*' {
                        p += 1;
                        pl -= 1;
                    }
                    if pl == 1 {
                        return true;
                    }
                    while i < s.len() {
                        if redis(&pat[p + 1..], &s[i..], nocase, skip) {
                            return true;
                        }
                        if *skip {
                            return false;
                        }
                        i += 1;
                    }
                    *skip = true;
                    return false;
                }
                b'?' => i += 1,
                b'[' => {
                    p += 1;
                    pl -= 1;
                    let not = at(p) == b'^';
                    if not {
                        p += 1;
                        pl -= 1;
                    }
                    let mut hit = false;
                    loop {
                        if at(p) == b'\\' && pl >= 2 {
                            p += 1;
                            pl -= 1;
                            hit |= at(p) == s[i];
                        } else if at(p) == b']' && pl > 0 {
                            break;
                        } else if pl <= 0 {
                            p -= 1;
                            pl += 1;
                            break;
                        } else if pl >= 3 && at(p + 1) == b'-' {
                            let (mut a, mut b) = (at(p), at(p + 2));
                            if a > b {
                                std::mem::swap(&mut a, &mut b);
                            }
                            p += 2;
                            pl -= 2;
                            hit |= (low(a)..=low(b)).contains(&low(s[i]));
                        } else {
                            hit |= low(at(p)) == low(s[i]);
                        }
                        p += 1;
                        pl -= 1;
                    }
                    if hit == not {
                        return false;
                    }
                    i += 1;
                }
                c => {
                    let c = if c == b'\\' && pl >= 2 {
                        p += 1;
                        pl -= 1;
                        at(p)
                    } else {
                        c
                    };
                    if low(c) != low(s[i]) {
                        return false;
                    }
                    i += 1;
                }
            }
            p += 1;
            pl -= 1;
            if i == s.len() {
                while pl > 0 && at(p) == b'*' {
                    p += 1;
                    pl -= 1;
                }
                break;
            }
        }
        pl == 0 && i == s.len()
    }

    #[test]
    fn agrees_with_redis_on_small_patterns() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        };
        let (pa, sa) = (b"ab*?[]^-\\A", b"ab-]\\A^");
        for _ in 0..200_000 {
            let pat: Vec<u8> = (0..next(7)).map(|_| pa[next(pa.len())]).collect();
            let s: Vec<u8> = (0..next(6)).map(|_| sa[next(sa.len())]).collect();
            for nocase in [false, true] {
                // Callers special-case a lone `*` (Redis's allkeys shortcut).
                let want = pat == b"*" || redis(&pat, &s, nocase, &mut false);
                assert_eq!(m(&pat, &s, nocase), want, "{pat:?} {s:?} nocase={nocase}");
            }
        }
    }
}
