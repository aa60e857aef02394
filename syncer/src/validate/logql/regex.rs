//! Structural check of RE2 regular expressions, `pattern` and `ip()` literals.

use super::*;

pub(crate) struct RegexInfo {
    /// The regex matches the empty string (as Prometheus matchers anchor it).
    pub(super) nullable: bool,
    /// Names of the named capture groups.
    pub(super) names: BTreeSet<String>,
}

/// A regex error: byte offset into the regex and a message.
type RegexError = (usize, String);

pub(super) struct RegexFrame {
    pub(super) open: usize,
    /// Some alternative closed so far matches the empty string.
    pub(super) alt_nullable: bool,
    /// Every item of the current alternative so far matches the empty string.
    pub(super) cat_nullable: bool,
}

pub(super) enum Escape {
    /// A single character (can be the end of a class range).
    Char(char),
    /// A class like `\d` or `\pL`.
    Class,
    /// A zero-width assertion like `\A`; the flag says whether it matches "".
    Assert(bool),
    /// `\Q...\E`; the flag says whether the quoted text is empty.
    Quote(bool),
}

/// Checks `re` against Go's RE2 syntax without compiling it, and works out
/// whether it matches the empty string and which named groups it has.
pub(crate) fn check_regex_syntax(re: &str) -> Result<RegexInfo, RegexError> {
    let cs: Vec<(usize, char)> = re.char_indices().collect();
    let at = |i: usize| cs.get(i).map(|&(_, c)| c);
    let off = |i: usize| cs.get(i).map_or(re.len(), |&(o, _)| o);

    let mut frames = vec![RegexFrame {
        open: 0,
        alt_nullable: false,
        cat_nullable: true,
    }];
    // The last item of the current alternative and whether it matches "".
    let mut pending: Option<bool> = None;
    let mut last_was_repeat = false;
    let mut names: BTreeSet<String> = BTreeSet::new();
    let mut i = 0;

    pub(super) fn commit(frames: &mut [RegexFrame], pending: &mut Option<bool>) {
        if let (Some(n), Some(f)) = (pending.take(), frames.last_mut()) {
            f.cat_nullable &= n;
        }
    }

    while let Some(c) = at(i) {
        // Repetition operators.
        let repeat = match c {
            '*' | '?' => Some((true, i + 1)),
            '+' => Some((false, i + 1)),
            '{' => match repeat_count(&cs, i) {
                Some(Ok((min, next))) => Some((min == 0, next)),
                Some(Err(())) => {
                    return Err((
                        off(i),
                        "invalid repeat count: use {n}, {n,} or {n,m} with n <= m <= 1000"
                            .to_string(),
                    ));
                }
                None => None,
            },
            _ => None,
        };
        if let Some((allows_zero, mut next)) = repeat {
            let op: String = cs
                .get(i..next)
                .map(|s| s.iter().take(48).map(|&(_, ch)| ch).collect())
                .unwrap_or_default();
            let Some(item) = pending else {
                return Err((
                    off(i),
                    format!("missing argument to repetition operator `{op}`"),
                ));
            };
            if last_was_repeat {
                return Err((off(i), format!("invalid nested repetition operator `{op}`")));
            }
            pending = Some(item || allows_zero);
            if at(next) == Some('?') {
                next += 1; // non-greedy
            }
            last_was_repeat = true;
            i = next;
            continue;
        }
        last_was_repeat = false;
        match c {
            '|' => {
                commit(&mut frames, &mut pending);
                if let Some(f) = frames.last_mut() {
                    f.alt_nullable |= f.cat_nullable;
                    f.cat_nullable = true;
                }
                i += 1;
            }
            '(' => {
                let (next, opens) = regex_group_open(&cs, i, &mut names, re.len())?;
                // A bare flag group like `(?i)` is no item: what precedes it
                // can still take a repetition operator, as in Go.
                if opens {
                    commit(&mut frames, &mut pending);
                    if frames.len() > MAX_REGEX_NESTING {
                        return Err((off(i), "regular expression nests too deeply".to_string()));
                    }
                    frames.push(RegexFrame {
                        open: i,
                        alt_nullable: false,
                        cat_nullable: true,
                    });
                }
                i = next;
            }
            ')' => {
                if frames.len() <= 1 {
                    return Err((off(i), "unexpected `)` without a matching `(`".to_string()));
                }
                commit(&mut frames, &mut pending);
                if let Some(f) = frames.pop() {
                    pending = Some(f.alt_nullable || f.cat_nullable);
                }
                i += 1;
            }
            '[' => {
                commit(&mut frames, &mut pending);
                i = regex_class_end(&cs, i, re.len())?;
                pending = Some(false);
            }
            '\\' => {
                commit(&mut frames, &mut pending);
                let (esc, next) = regex_escape(&cs, i, false, re.len())?;
                pending = match esc {
                    Escape::Char(_) | Escape::Class => Some(false),
                    Escape::Assert(nullable) => Some(nullable),
                    Escape::Quote(true) => pending,
                    Escape::Quote(false) => Some(false),
                };
                i = next;
            }
            '^' | '$' => {
                commit(&mut frames, &mut pending);
                pending = Some(true);
                i += 1;
            }
            _ => {
                commit(&mut frames, &mut pending);
                pending = Some(false);
                i += 1;
            }
        }
    }
    if frames.len() > 1 {
        let open = frames.last().map_or(0, |f| f.open);
        return Err((off(open), "missing closing `)` for this group".to_string()));
    }
    commit(&mut frames, &mut pending);
    let nullable = frames
        .first()
        .is_some_and(|f| f.alt_nullable || f.cat_nullable);
    Ok(RegexInfo { nullable, names })
}

/// Parses `{n}`, `{n,}` or `{n,m}` at `i`. `None`: not a repeat (a literal
/// `{`); `Some(Err)`: a repeat with a bad count.
pub(super) fn repeat_count(cs: &[(usize, char)], i: usize) -> Option<Result<(u32, usize), ()>> {
    let at = |j: usize| cs.get(j).map(|&(_, c)| c);
    let number = |mut j: usize| -> (Option<u32>, usize) {
        let start = j;
        let mut value: u32 = 0;
        while let Some(d) = at(j).and_then(|c| c.to_digit(10)) {
            value = value.saturating_mul(10).saturating_add(d);
            j += 1;
        }
        ((j > start).then_some(value), j)
    };
    let (min, j) = number(i + 1);
    let min = min?;
    let (max, j) = match at(j) {
        Some('}') => (Some(min), j),
        Some(',') => {
            let (max, k) = number(j + 1);
            (max, k)
        }
        _ => return None,
    };
    if at(j) != Some('}') {
        return None;
    }
    let bad = min > 1000 || max.is_some_and(|m| m > 1000 || m < min);
    Some(if bad { Err(()) } else { Ok((min, j + 1)) })
}

/// Parses the opening of a group at `i` (`(`, `(?:`, `(?P<name>`, `(?<name>`,
/// `(?flags)`, `(?flags:`). Returns the index after it and whether a group
/// was opened (a bare flag group `(?i)` opens none).
pub(super) fn regex_group_open(
    cs: &[(usize, char)],
    i: usize,
    names: &mut BTreeSet<String>,
    len: usize,
) -> Result<(usize, bool), RegexError> {
    let at = |j: usize| cs.get(j).map(|&(_, c)| c);
    let off = |j: usize| cs.get(j).map_or(len, |&(o, _)| o);
    if at(i + 1) != Some('?') {
        return Ok((i + 1, true));
    }
    let name_from = match (at(i + 2), at(i + 3)) {
        (Some(':'), _) => return Ok((i + 3, true)),
        (Some('='), _) | (Some('!'), _) => {
            return Err((
                off(i),
                "lookahead `(?=...)`/`(?!...)` is not supported: Loki uses Go's RE2 engine"
                    .to_string(),
            ));
        }
        (Some('<'), Some('=')) | (Some('<'), Some('!')) => {
            return Err((
                off(i),
                "lookbehind `(?<=...)`/`(?<!...)` is not supported: Loki uses Go's RE2 engine"
                    .to_string(),
            ));
        }
        (Some('P'), Some('<')) => Some(i + 4),
        (Some('<'), _) => Some(i + 3),
        (Some('P'), _) => {
            return Err((
                off(i),
                "named backreferences `(?P=name)` are not supported: Loki uses Go's RE2 engine"
                    .to_string(),
            ));
        }
        _ => None,
    };
    if let Some(from) = name_from {
        let mut j = from;
        let mut name = String::new();
        while let Some(c) = at(j) {
            if c == '>' {
                break;
            }
            name.push(c);
            j += 1;
        }
        let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if at(j) != Some('>') || !valid {
            return Err((
                off(i),
                "invalid named capture group: write (?P<name>...) with a name made of letters, \
                 digits and `_`"
                    .to_string(),
            ));
        }
        if names.contains(&name) {
            return Err((
                off(i),
                format!("duplicate capture group name `{}`", clip(&name)),
            ));
        }
        names.insert(name);
        return Ok((j + 1, true));
    }
    // Flags: (?i) (?-s) (?im-sU:...)
    let mut j = i + 2;
    let mut negated = false;
    let mut flags_since_sign = 0;
    let mut flags = 0;
    loop {
        match at(j) {
            Some('i' | 'm' | 's' | 'U') => {
                flags += 1;
                flags_since_sign += 1;
            }
            Some('-') if !negated => {
                negated = true;
                flags_since_sign = 0;
            }
            Some(end @ (')' | ':')) if flags > 0 && (!negated || flags_since_sign > 0) => {
                return Ok((j + 1, end == ':'));
            }
            _ => {
                return Err((
                    off(i),
                    "invalid or unsupported group syntax `(?`: RE2 supports (?:...), \
                     (?P<name>...) and flags like (?i)"
                        .to_string(),
                ));
            }
        }
        j += 1;
    }
}

/// Parses the escape at `i` (a backslash); returns what it is and the index
/// after it.
pub(super) fn regex_escape(
    cs: &[(usize, char)],
    i: usize,
    in_class: bool,
    len: usize,
) -> Result<(Escape, usize), RegexError> {
    let at = |j: usize| cs.get(j).map(|&(_, c)| c);
    let off = |j: usize| cs.get(j).map_or(len, |&(o, _)| o);
    let Some(c) = at(i + 1) else {
        return Err((
            off(i),
            "trailing backslash at the end of the expression".to_string(),
        ));
    };
    let is_octal = |ch: Option<char>| ch.is_some_and(|d| ('0'..='7').contains(&d));
    let backref = || {
        Err((
            off(i),
            format!(
                "backreference `\\{c}` is not supported: Loki uses Go's RE2 engine, which has no \
                 backreferences"
            ),
        ))
    };
    match c {
        '1'..='7' if !is_octal(at(i + 2)) => backref(),
        '0'..='7' => {
            let mut j = i + 2;
            let mut value = c.to_digit(8).unwrap_or(0);
            while j < i + 4 && is_octal(at(j)) {
                value = value * 8 + at(j).and_then(|d| d.to_digit(8)).unwrap_or(0);
                j += 1;
            }
            Ok((Escape::Char(char::from_u32(value).unwrap_or('\0')), j))
        }
        '8' | '9' => backref(),
        'x' => {
            if at(i + 2) == Some('{') {
                let mut j = i + 3;
                let mut value: u32 = 0;
                while let Some(d) = at(j).and_then(|h| h.to_digit(16)) {
                    value = value.saturating_mul(16).saturating_add(d);
                    j += 1;
                }
                match (j > i + 3, at(j), char::from_u32(value)) {
                    (true, Some('}'), Some(ch)) => Ok((Escape::Char(ch), j + 1)),
                    _ => Err((
                        off(i),
                        "invalid escape `\\x{...}`: write hex digits of a valid code point"
                            .to_string(),
                    )),
                }
            } else {
                match (
                    at(i + 2).and_then(|h| h.to_digit(16)),
                    at(i + 3).and_then(|h| h.to_digit(16)),
                ) {
                    (Some(h), Some(l)) => Ok((
                        Escape::Char(char::from_u32(h * 16 + l).unwrap_or('\0')),
                        i + 4,
                    )),
                    _ => Err((
                        off(i),
                        "invalid escape `\\x`: write two hex digits like \\x41 or \\x{263a}"
                            .to_string(),
                    )),
                }
            }
        }
        'a' => Ok((Escape::Char('\u{7}'), i + 2)),
        'f' => Ok((Escape::Char('\u{c}'), i + 2)),
        'n' => Ok((Escape::Char('\n'), i + 2)),
        'r' => Ok((Escape::Char('\r'), i + 2)),
        't' => Ok((Escape::Char('\t'), i + 2)),
        'v' => Ok((Escape::Char('\u{b}'), i + 2)),
        'd' | 'D' | 's' | 'S' | 'w' | 'W' => Ok((Escape::Class, i + 2)),
        'p' | 'P' => {
            if at(i + 2) == Some('{') {
                let mut j = i + 3;
                while at(j).is_some_and(|ch| ch != '}') {
                    j += 1;
                }
                if at(j) == Some('}') && j > i + 3 {
                    Ok((Escape::Class, j + 1))
                } else {
                    Err((
                        off(i),
                        "invalid Unicode class: write \\p{Name} or \\pL".to_string(),
                    ))
                }
            } else if at(i + 2).is_some_and(|ch| ch.is_ascii_alphabetic()) {
                Ok((Escape::Class, i + 3))
            } else {
                Err((
                    off(i),
                    "invalid Unicode class: write \\p{Name} or \\pL".to_string(),
                ))
            }
        }
        'b' if !in_class => Ok((Escape::Assert(false), i + 2)),
        'B' | 'A' | 'z' if !in_class => Ok((Escape::Assert(true), i + 2)),
        'Q' if !in_class => {
            let mut j = i + 2;
            while let Some(ch) = at(j) {
                if ch == '\\' && at(j + 1) == Some('E') {
                    return Ok((Escape::Quote(j == i + 2), j + 2));
                }
                j += 1;
            }
            Ok((Escape::Quote(j == i + 2), j))
        }
        c if c.is_ascii() && !c.is_ascii_alphanumeric() => Ok((Escape::Char(c), i + 2)),
        _ => Err((
            off(i),
            format!(
                "invalid escape `\\{}` in regular expression",
                c.escape_debug()
            ),
        )),
    }
}

pub(super) const POSIX_CLASSES: &[&str] = &[
    "alnum", "alpha", "ascii", "blank", "cntrl", "digit", "graph", "lower", "print", "punct",
    "space", "upper", "word", "xdigit",
];

/// Parses the character class starting at `i` (a `[`); returns the index
/// after its closing `]`.
pub(super) fn regex_class_end(
    cs: &[(usize, char)],
    i: usize,
    len: usize,
) -> Result<usize, RegexError> {
    let at = |j: usize| cs.get(j).map(|&(_, c)| c);
    let off = |j: usize| cs.get(j).map_or(len, |&(o, _)| o);
    let mut j = i + 1;
    if at(j) == Some('^') {
        j += 1;
    }
    let mut first = true;
    loop {
        let item_start = j;
        // One class item; `lo` is set when it is a single character.
        let lo: Option<char> = match at(j) {
            None => {
                return Err((
                    off(i),
                    "missing closing `]` for this character class".to_string(),
                ));
            }
            Some(']') if !first => return Ok(j + 1),
            Some('[') if at(j + 1) == Some(':') => {
                let mut k = j + 2;
                while at(k).is_some_and(|c| c != ':' && c != ']') {
                    k += 1;
                }
                if at(k) == Some(':') && at(k + 1) == Some(']') {
                    let name: String = cs
                        .get(j + 2..k)
                        .map(|s| s.iter().map(|&(_, c)| c).collect())
                        .unwrap_or_default();
                    let name = name.strip_prefix('^').unwrap_or(&name);
                    if !POSIX_CLASSES.contains(&name) {
                        return Err((
                            off(j),
                            format!("invalid character class `[:{}:]`", clip(name)),
                        ));
                    }
                    j = k + 2;
                    None
                } else {
                    j += 1;
                    Some('[')
                }
            }
            Some('\\') => {
                let (esc, next) = regex_escape(cs, j, true, len)?;
                j = next;
                match esc {
                    Escape::Char(c) => Some(c),
                    _ => None,
                }
            }
            Some(c) => {
                j += 1;
                Some(c)
            }
        };
        first = false;
        // A range `lo-hi`.
        if let Some(lo) = lo
            && at(j) == Some('-')
            && at(j + 1).is_some_and(|c| c != ']')
        {
            let hi = if at(j + 1) == Some('\\') {
                let (esc, next) = regex_escape(cs, j + 1, true, len)?;
                j = next;
                match esc {
                    Escape::Char(c) => c,
                    _ => {
                        return Err((off(item_start), "invalid character class range".to_string()));
                    }
                }
            } else {
                let hi = at(j + 1).unwrap_or(lo);
                j += 2;
                hi
            };
            if hi < lo {
                return Err((
                    off(item_start),
                    format!("invalid character class range `{lo}-{hi}`"),
                ));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Other literal checks
// ---------------------------------------------------------------------------

/// Checks a `| pattern` expression the way Loki's pattern parser does.
pub(super) fn check_pattern(p: &str) -> Result<(), RegexError> {
    enum Node {
        Literal,
        Capture(String, usize),
    }
    let b = p.as_bytes();
    let capture_end = |i: usize| -> Option<usize> {
        let first = *b.get(i + 1)?;
        if !(first.is_ascii_alphabetic() || first == b'_') {
            return None;
        }
        let mut j = i + 2;
        while b.get(j).is_some_and(|&c| is_word_byte(c)) {
            j += 1;
        }
        (b.get(j) == Some(&b'>')).then_some(j)
    };
    let mut nodes: Vec<Node> = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b.get(i) == Some(&b'<')
            && let Some(end) = capture_end(i)
        {
            nodes.push(Node::Capture(
                p.get(i + 1..end).unwrap_or("").to_string(),
                i,
            ));
            i = end + 1;
            continue;
        }
        if !matches!(nodes.last(), Some(Node::Literal)) {
            nodes.push(Node::Literal);
        }
        i += 1;
    }
    let named = |n: &Node| matches!(n, Node::Capture(name, _) if name != "_");
    if !nodes.iter().any(named) {
        return Err((
            0,
            "a pattern needs at least one named capture like <status>; <_> only skips text"
                .to_string(),
        ));
    }
    // Loki compares the nodes pairwise from the start.
    for pair in nodes.chunks(2) {
        if let [Node::Capture(..), Node::Capture(name, at)] = pair {
            return Err((
                *at,
                format!(
                    "captures next to each other are not allowed (before `<{}>`): put \
                     literal text between them",
                    clip(name)
                ),
            ));
        }
    }
    let mut seen: HashSet<&str> = HashSet::new();
    for node in &nodes {
        if let Node::Capture(name, at) = node
            && name != "_"
            && !seen.insert(name.as_str())
        {
            return Err((
                *at,
                format!("duplicate capture name `<{}>` in pattern", clip(name)),
            ));
        }
    }
    Ok(())
}

pub(super) fn parse_ip(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    // IPv6 with a zone, like fe80::1%eth0.
    let (addr, zone) = s.split_once('%')?;
    if zone.is_empty() {
        return None;
    }
    addr.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6)
}

/// Checks the argument of `ip("...")`: an address, a CIDR prefix or a range.
pub(super) fn check_ip_pattern(p: &str) -> Result<(), String> {
    const EXPECTED: &str = "expected an IP address (192.168.0.1, ::1), a CIDR prefix \
                            (10.0.0.0/8) or a range (192.168.0.1-192.168.0.9)";
    if parse_ip(p).is_some() {
        return Ok(());
    }
    if let Some((addr, bits)) = p.split_once('/') {
        let ip = addr.parse::<IpAddr>().map_err(|_| EXPECTED.to_string())?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let well_formed = !bits.is_empty()
            && bits.bytes().all(|c| c.is_ascii_digit())
            && (bits == "0" || !bits.starts_with('0'));
        return match bits.parse::<u32>() {
            Ok(n) if well_formed && n <= max => Ok(()),
            _ => Err(format!(
                "invalid prefix length `/{}`: must be 0 to {max}",
                clip(bits)
            )),
        };
    }
    if let Some((from, to)) = p.split_once('-') {
        return match (from.parse::<IpAddr>(), to.parse::<IpAddr>()) {
            (Ok(a), Ok(b)) if a.is_ipv4() != b.is_ipv4() => {
                Err("both ends of an IP range must be of the same family".to_string())
            }
            (Ok(a), Ok(b)) if a > b => Err("an IP range must not end before it starts".to_string()),
            (Ok(_), Ok(_)) => Ok(()),
            _ => Err(EXPECTED.to_string()),
        };
    }
    Err(EXPECTED.to_string())
}
