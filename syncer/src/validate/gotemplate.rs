//! A parse-only checker of Go's `text/template` syntax, for the templates in
//! alerting rules' labels and annotations.
//!
//! Mimir and Loki parse these templates when a rule group is posted and refuse
//! the group if one does not parse (Prometheus `model/rulefmt/rulefmt.go`,
//! `testTemplateParsing`; Loki `pkg/ruler/compat.go`). Parsing in Go checks more
//! than syntax: every function must be registered (Prometheus' set is in
//! `template/template.go`, `NewTemplateExpander`), every `$variable` must be
//! declared in scope, and `{{break}}`/`{{continue}}` must be inside `{{range}}`.
//! This module follows Go's `text/template/parse` (`lex.go`, `parse.go`) step
//! by step, producing no tree: it only says whether, and where, parsing fails.
//!
//! No crate fits: `gtmpl` (last release 2021) refuses valid templates
//! (`{{break}}`, `$x = 1`, `1_000`, `{{else with}}`) and `gotmpl` accepts
//! undefined functions and variables and a stray `{{end}}`.

use std::collections::HashSet;

/// Which ruler's template set-up applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Prometheus' rulefmt as Mimir runs it: `$labels`, `$externalLabels`,
    /// `$externalURL` and `$value` are declared before the text.
    Prometheus,
    /// Loki's copy of the check declares no `$externalURL`
    /// (`pkg/ruler/compat.go`, `testTemplateParsing`).
    Loki,
    /// Alertmanager notification templates (`template.FromGlobs`): no
    /// predeclared variables but `$`. The function set differs between
    /// Alertmanager releases and Mimir's fork adds its own, so function names
    /// are left to Mimir, which parses the files when the configuration is posted.
    Alertmanager,
}

/// Why a template does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    /// Byte offset in the template text where the problem is.
    pub offset: usize,
    /// Go's message, e.g. `function "humanise" not defined`.
    pub message: String,
    /// The name, when the problem is an unregistered function.
    pub unknown_function: Option<String>,
}

/// Go's builtin template functions (`text/template/funcs.go`).
const GO_BUILTINS: &[&str] = &[
    "and", "call", "html", "index", "slice", "js", "len", "not", "or", "print", "printf",
    "println", "urlquery", "eq", "ge", "gt", "le", "lt", "ne",
];

/// The functions Prometheus registers (`template/template.go`,
/// `NewTemplateExpander`, Prometheus 3.x as vendored by Mimir and Loki).
const PROMETHEUS_FUNCS: &[&str] = &[
    "query",
    "first",
    "label",
    "value",
    "strvalue",
    "args",
    "reReplaceAll",
    "safeHtml",
    "match",
    "title",
    "toUpper",
    "toLower",
    "graphLink",
    "tableLink",
    "sortByLabel",
    "stripPort",
    "stripDomain",
    "humanize",
    "humanize1024",
    "humanizeDuration",
    "humanizePercentage",
    "humanizeTimestamp",
    "toTime",
    "toDuration",
    "pathPrefix",
    "externalURL",
    "parseDuration",
    "now",
    "urlUnescape",
];

/// Every function name a template may call in `dialect`.
pub fn function_names(_dialect: Dialect) -> impl Iterator<Item = &'static str> {
    GO_BUILTINS.iter().chain(PROMETHEUS_FUNCS).copied()
}

fn is_function(name: &str) -> bool {
    GO_BUILTINS.contains(&name) || PROMETHEUS_FUNCS.contains(&name)
}

fn predeclared(dialect: Dialect) -> Vec<&'static str> {
    if dialect == Dialect::Alertmanager {
        return vec!["$"];
    }
    // `$` always exists; the rest are rulefmt's `defs`, parsed in front of the text.
    let mut v = vec!["$", "$labels", "$externalLabels"];
    if dialect == Dialect::Prometheus {
        v.push("$externalURL");
    }
    v.push("$value");
    v
}

/// Parses `text` as the ruler would; `Ok` when it would accept it.
pub fn parse(text: &str, dialect: Dialect) -> Result<(), TemplateError> {
    let tokens = lex(text);
    let mut p = Parser {
        text,
        tokens,
        pos: 0,
        vars: predeclared(dialect),
        range_depth: 0,
        defined: HashSet::new(),
        check_functions: dialect != Dialect::Alertmanager,
    };
    p.parse_top()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kw {
    Block,
    Break,
    Continue,
    Define,
    Else,
    End,
    If,
    Range,
    Nil,
    Template,
    With,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Text,
    Comment,
    LeftDelim,
    RightDelim,
    Space,
    Assign,
    Declare,
    Pipe,
    /// Any other printable ASCII character (`,` matters to range declarations).
    Char(char),
    String,
    RawString,
    CharConst,
    Number,
    Complex,
    Variable,
    Field,
    Dot,
    Identifier,
    Bool,
    Keyword(Kw),
    LeftParen,
    RightParen,
    Error(String),
    Eof,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    start: usize,
    end: usize,
}

const LEFT: &str = "{{";
const RIGHT: &str = "}}";

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn is_alnum(c: char) -> bool {
    c == '_' || c.is_alphabetic() || c.is_numeric()
}

/// Go's lexer (`lex.go`), run to the end or to the first error, which becomes
/// an `Error` token the parser reports when it reaches it (as Go's does).
fn lex(text: &str) -> Vec<Token> {
    let mut l = Lexer {
        s: text,
        pos: 0,
        out: Vec::new(),
        paren_depth: 0,
    };
    l.run();
    l.out
}

struct Lexer<'a> {
    s: &'a str,
    pos: usize,
    out: Vec<Token>,
    paren_depth: i32,
}

impl Lexer<'_> {
    fn rest(&self) -> &str {
        &self.s[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn emit(&mut self, tok: Tok, start: usize) {
        self.out.push(Token {
            tok,
            start,
            end: self.pos,
        });
    }

    fn error(&mut self, at: usize, msg: impl Into<String>) {
        self.out.push(Token {
            tok: Tok::Error(msg.into()),
            start: at,
            end: at,
        });
    }

    fn run(&mut self) {
        loop {
            // Text up to the next action.
            let Some(i) = self.rest().find(LEFT) else {
                if self.pos < self.s.len() {
                    let start = self.pos;
                    self.pos = self.s.len();
                    self.emit(Tok::Text, start);
                }
                self.emit(Tok::Eof, self.pos);
                return;
            };
            if i > 0 {
                let start = self.pos;
                self.pos += i;
                self.emit(Tok::Text, start);
            }
            let delim_start = self.pos;
            self.pos += LEFT.len();
            // A left trim marker is `-` and a space right after the delimiter.
            let b = self.rest().as_bytes();
            if b.len() >= 2 && b[0] == b'-' && is_space(b[1] as char) {
                self.pos += 2;
            }
            if self.rest().starts_with("/*") {
                if !self.comment(delim_start) {
                    return;
                }
                continue;
            }
            self.emit(Tok::LeftDelim, delim_start);
            if !self.inside_action() {
                return;
            }
        }
    }

    /// A comment runs from `/*` to `*/`, which must be followed at once by the
    /// closing delimiter (optionally trim-marked).
    fn comment(&mut self, start: usize) -> bool {
        let body = self.pos + 2;
        let Some(i) = self.s[body..].find("*/") else {
            self.error(start, "unclosed comment");
            return false;
        };
        self.pos = body + i + 2;
        let (delim, trim) = self.at_right_delim();
        if !delim {
            self.error(start, "comment ends before closing delimiter");
            return false;
        }
        self.pos += if trim { 2 } else { 0 } + RIGHT.len();
        self.emit(Tok::Comment, start);
        true
    }

    /// (at a closing delimiter, with a trim marker before it)
    fn at_right_delim(&self) -> (bool, bool) {
        let r = self.rest();
        let b = r.as_bytes();
        if b.len() >= 2 && is_space(b[0] as char) && b[1] == b'-' && r[2..].starts_with(RIGHT) {
            return (true, true);
        }
        (r.starts_with(RIGHT), false)
    }

    /// Lexes one action up to and including its closing delimiter; false after
    /// an error.
    fn inside_action(&mut self) -> bool {
        loop {
            let (delim, trim) = self.at_right_delim();
            if delim {
                if self.paren_depth != 0 {
                    self.error(self.pos, "unclosed left paren");
                    return false;
                }
                let start = self.pos;
                self.pos += if trim { 2 } else { 0 } + RIGHT.len();
                self.emit(Tok::RightDelim, start);
                return true;
            }
            let start = self.pos;
            let Some(c) = self.peek() else {
                self.error(start, "unclosed action");
                return false;
            };
            self.pos += c.len_utf8();
            match c {
                c if is_space(c) => {
                    self.pos = start;
                    let mut n = 0;
                    while let Some(c) = self.peek().filter(|c| is_space(*c)) {
                        self.pos += c.len_utf8();
                        n += 1;
                    }
                    // A space before `-}}` belongs to the trim marker.
                    let before = self.pos - 1;
                    let tail = &self.s[before..];
                    if tail.len() >= 2 && tail.as_bytes()[1] == b'-' && tail[2..].starts_with(RIGHT)
                    {
                        self.pos = before;
                        if n == 1 {
                            continue;
                        }
                    }
                    self.emit(Tok::Space, start);
                }
                '=' => self.emit(Tok::Assign, start),
                ':' => {
                    if self.peek() != Some('=') {
                        self.error(start, "expected :=");
                        return false;
                    }
                    self.pos += 1;
                    self.emit(Tok::Declare, start);
                }
                '|' => self.emit(Tok::Pipe, start),
                '"' => {
                    if !self.quoted(start, '"', "unterminated quoted string", Tok::String) {
                        return false;
                    }
                }
                '\'' => {
                    if !self.quoted(
                        start,
                        '\'',
                        "unterminated character constant",
                        Tok::CharConst,
                    ) {
                        return false;
                    }
                }
                '`' => {
                    let Some(i) = self.rest().find('`') else {
                        self.error(start, "unterminated raw quoted string");
                        return false;
                    };
                    self.pos += i + 1;
                    self.emit(Tok::RawString, start);
                }
                '$' => {
                    if !self.field_or_variable(start, Tok::Variable) {
                        return false;
                    }
                }
                '.' if !self.peek().is_some_and(|c| c.is_ascii_digit()) => {
                    if !self.field_or_variable(start, Tok::Field) {
                        return false;
                    }
                }
                '.' | '+' | '-' | '0'..='9' => {
                    self.pos = start;
                    if !self.number(start) {
                        return false;
                    }
                }
                c if is_alnum(c) => {
                    self.pos = start;
                    if !self.identifier(start) {
                        return false;
                    }
                }
                '(' => {
                    self.emit(Tok::LeftParen, start);
                    self.paren_depth += 1;
                }
                ')' => {
                    self.emit(Tok::RightParen, start);
                    self.paren_depth -= 1;
                    if self.paren_depth < 0 {
                        self.error(start, "unexpected right paren");
                        return false;
                    }
                }
                c if c.is_ascii() && !c.is_ascii_control() => self.emit(Tok::Char(c), start),
                c => {
                    self.error(
                        start,
                        format!("unrecognized character in action: U+{:04X}", u32::from(c)),
                    );
                    return false;
                }
            }
        }
    }

    fn quoted(&mut self, start: usize, quote: char, unterminated: &str, tok: Tok) -> bool {
        loop {
            let Some(c) = self.peek() else {
                self.error(start, unterminated);
                return false;
            };
            self.pos += c.len_utf8();
            match c {
                '\\' => match self.peek() {
                    Some(n) if n != '\n' => self.pos += n.len_utf8(),
                    _ => {
                        self.error(start, unterminated);
                        return false;
                    }
                },
                '\n' => {
                    self.error(start, unterminated);
                    return false;
                }
                c if c == quote => {
                    self.emit(tok, start);
                    return true;
                }
                _ => {}
            }
        }
    }

    /// Go's `atTerminator`: what may follow a word.
    fn at_terminator(&self) -> bool {
        match self.peek() {
            None => true,
            Some(c) => is_space(c) || ".,|:()".contains(c) || self.rest().starts_with(RIGHT),
        }
    }

    fn absorb_alnum(&mut self) {
        while let Some(c) = self.peek().filter(|c| is_alnum(*c)) {
            self.pos += c.len_utf8();
        }
    }

    fn bad_character(&mut self) {
        let c = self.peek().unwrap_or(' ');
        self.error(
            self.pos,
            format!("bad character U+{:04X} '{c}'", u32::from(c)),
        );
    }

    fn field_or_variable(&mut self, start: usize, tok: Tok) -> bool {
        if self.at_terminator() {
            let t = if tok == Tok::Variable {
                Tok::Variable
            } else {
                Tok::Dot
            };
            self.emit(t, start);
            return true;
        }
        self.absorb_alnum();
        if !self.at_terminator() {
            self.bad_character();
            return false;
        }
        self.emit(tok, start);
        true
    }

    fn identifier(&mut self, start: usize) -> bool {
        self.absorb_alnum();
        if !self.at_terminator() {
            self.bad_character();
            return false;
        }
        let word = &self.s[start..self.pos];
        let tok = match word {
            "block" => Tok::Keyword(Kw::Block),
            "break" => Tok::Keyword(Kw::Break),
            "continue" => Tok::Keyword(Kw::Continue),
            "define" => Tok::Keyword(Kw::Define),
            "else" => Tok::Keyword(Kw::Else),
            "end" => Tok::Keyword(Kw::End),
            "if" => Tok::Keyword(Kw::If),
            "range" => Tok::Keyword(Kw::Range),
            "nil" => Tok::Keyword(Kw::Nil),
            "template" => Tok::Keyword(Kw::Template),
            "with" => Tok::Keyword(Kw::With),
            "true" | "false" => Tok::Bool,
            _ => Tok::Identifier,
        };
        self.emit(tok, start);
        true
    }

    fn accept(&mut self, set: &str) -> bool {
        match self.peek() {
            Some(c) if set.contains(c) => {
                self.pos += 1;
                true
            }
            _ => false,
        }
    }

    fn accept_run(&mut self, set: &str) {
        while self.accept(set) {}
    }

    /// Go's `scanNumber`: the longest run that looks like a number; its value
    /// is checked by the parser.
    fn scan_number(&mut self) -> bool {
        self.accept("+-");
        let mut digits = "0123456789_";
        if self.accept("0") {
            if self.accept("xX") {
                digits = "0123456789abcdefABCDEF_";
            } else if self.accept("oO") {
                digits = "01234567_";
            } else if self.accept("bB") {
                digits = "01_";
            }
        }
        self.accept_run(digits);
        if self.accept(".") {
            self.accept_run(digits);
        }
        if digits.len() == 11 && self.accept("eE") {
            self.accept("+-");
            self.accept_run("0123456789_");
        }
        if digits.len() == 23 && self.accept("pP") {
            self.accept("+-");
            self.accept_run("0123456789_");
        }
        self.accept("i");
        if self.peek().is_some_and(is_alnum) {
            self.pos += self.peek().map_or(1, char::len_utf8);
            return false;
        }
        true
    }

    fn number(&mut self, start: usize) -> bool {
        if !self.scan_number() {
            let bad = self.s[start..self.pos].to_string();
            self.error(start, format!("bad number syntax: {bad:?}"));
            return false;
        }
        if matches!(self.peek(), Some('+' | '-')) {
            // A complex constant: 1+2i, no spaces.
            if !self.scan_number() || !self.s[..self.pos].ends_with('i') {
                let bad = self.s[start..self.pos].to_string();
                self.error(start, format!("bad number syntax: {bad:?}"));
                return false;
            }
            self.emit(Tok::Complex, start);
        } else {
            self.emit(Tok::Number, start);
        }
        true
    }
}

/// Whether Go's `strconv` reads `text` as a number the way the template parser
/// tries it (`parse.(*Tree).newNumber`): integer in any base, float (decimal or
/// hexadecimal), or an imaginary part.
fn number_error(text: &str) -> Option<String> {
    let illegal = || Some(format!("illegal number syntax: {text:?}"));
    if let Some(im) = text.strip_suffix('i')
        && go_float(im)
    {
        return None;
    }
    if let Some(fits) = go_int(text) {
        return if fits {
            None
        } else {
            Some(format!("integer overflow: {text:?}"))
        };
    }
    if go_float(text) {
        // strconv read it as a float although it has an integer's shape: too
        // big for 64 bits (or an invalid octal such as 08), which Go refuses.
        if !text.contains(['.', 'e', 'E', 'p', 'P']) {
            return Some(format!("integer overflow: {text:?}"));
        }
        return None;
    }
    illegal()
}

/// `strconv.ParseComplex` of a lexed complex constant such as `1+2i`.
fn complex_error(text: &str) -> Option<String> {
    let b = text.as_bytes();
    let split = (1..b.len())
        .rev()
        .find(|&i| matches!(b[i], b'+' | b'-') && !matches!(b[i - 1] | 0x20, b'e' | b'p'));
    let ok = split.is_some_and(|i| {
        let (re, im) = (&text[..i], &text[i..]);
        let real_ok = go_int(re) == Some(true) || go_float(re);
        real_ok
            && im
                .strip_suffix('i')
                .is_some_and(|m| go_int(m) == Some(true) || go_float(m))
    });
    (!ok).then(|| format!("illegal number syntax: {text:?}"))
}

/// Go's `underscoreOK`: underscores only between digits or after a base prefix.
fn underscores_ok(s: &str) -> bool {
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    let b = s.as_bytes();
    let mut saw = b'^';
    let mut i = 0;
    let mut hex = false;
    if b.len() >= 2 && b[0] == b'0' && matches!(b[1] | 0x20, b'b' | b'o' | b'x') {
        i = 2;
        saw = b'0';
        hex = b[1] | 0x20 == b'x';
    }
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_digit() || (hex && (c | 0x20).is_ascii_hexdigit()) {
            saw = b'0';
        } else if c == b'_' {
            if saw != b'0' {
                return false;
            }
            saw = b'_';
        } else {
            if saw == b'_' {
                return false;
            }
            saw = b'!';
        }
        i += 1;
    }
    saw != b'_'
}

/// `Some(fits)` when `text` has integer syntax (`strconv.ParseInt(text, 0, 64)`
/// or `ParseUint`), with whether its value fits 64 bits.
fn go_int(text: &str) -> Option<bool> {
    if text.contains('_') && !underscores_ok(text) {
        return None;
    }
    let clean: String = text.chars().filter(|c| *c != '_').collect();
    let (neg, unsigned) = match clean.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, clean.strip_prefix('+').unwrap_or(&clean)),
    };
    let lower = unsigned.to_ascii_lowercase();
    let (radix, digits) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, &lower[1..])
    } else {
        (10, lower.as_str())
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let fits = match u64::from_str_radix(digits, radix) {
        Ok(v) => !neg || v <= 1 << 63,
        Err(_) => false,
    };
    Some(fits)
}

/// `strconv.ParseFloat(text, 64)` accepts it (decimal or hexadecimal float).
fn go_float(text: &str) -> bool {
    if text.contains('_') && !underscores_ok(text) {
        return false;
    }
    let clean: String = text.chars().filter(|c| *c != '_').collect();
    let body = clean.strip_prefix(['+', '-']).unwrap_or(&clean);
    let lower = body.to_ascii_lowercase();
    if matches!(lower.as_str(), "inf" | "infinity" | "nan") {
        return true;
    }
    if let Some(h) = lower.strip_prefix("0x") {
        // Hexadecimal floats need a `p` exponent.
        let Some((mant, exp)) = h.split_once('p') else {
            return false;
        };
        let (a, b) = mant.split_once('.').unwrap_or((mant, ""));
        let exp = exp.strip_prefix(['+', '-']).unwrap_or(exp);
        return (!a.is_empty() || !b.is_empty())
            && a.chars().chain(b.chars()).all(|c| c.is_ascii_hexdigit())
            && !exp.is_empty()
            && exp.chars().all(|c| c.is_ascii_digit());
    }
    let (mant, exp) = match lower.split_once('e') {
        Some((m, e)) => (m, Some(e)),
        None => (lower.as_str(), None),
    };
    let (a, b) = mant.split_once('.').unwrap_or((mant, ""));
    let digits_ok =
        (!a.is_empty() || !b.is_empty()) && a.chars().chain(b.chars()).all(|c| c.is_ascii_digit());
    let exp_ok = exp.is_none_or(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && e.chars().all(|c| c.is_ascii_digit())
    });
    digits_ok && exp_ok
}

/// `strconv.Unquote` of a double-quoted string or a character constant: every
/// escape must be one Go knows, and a character constant holds one character.
fn unquote_error(lit: &str) -> Option<&'static str> {
    let quote = lit.chars().next().unwrap_or('"');
    let inner = &lit[1..lit.len().saturating_sub(1)];
    let mut chars = inner.chars().peekable();
    let mut count = 0;
    while let Some(c) = chars.next() {
        count += 1;
        if c == '\n' || (c == quote && quote == '\'') {
            return Some("invalid syntax");
        }
        if c != '\\' {
            continue;
        }
        let Some(e) = chars.next() else {
            return Some("invalid syntax");
        };
        let hex = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>, n: usize| {
            let s: String = (0..n).filter_map(|_| chars.next()).collect();
            s.len() == n && s.chars().all(|c| c.is_ascii_hexdigit())
        };
        let ok = match e {
            'a' | 'b' | 'f' | 'n' | 'r' | 't' | 'v' | '\\' => true,
            '\'' | '"' => e == quote,
            'x' => hex(&mut chars, 2),
            'u' => hex(&mut chars, 4),
            'U' => {
                let s: String = (0..8).filter_map(|_| chars.next()).collect();
                u32::from_str_radix(&s, 16)
                    .ok()
                    .and_then(char::from_u32)
                    .is_some()
                    && s.len() == 8
            }
            '0'..='7' => {
                let s: String = std::iter::once(e)
                    .chain((0..2).filter_map(|_| chars.next()))
                    .collect();
                s.len() == 3 && u32::from_str_radix(&s, 8).is_ok_and(|v| v <= 255)
            }
            _ => false,
        };
        if !ok {
            return Some("invalid syntax");
        }
    }
    if quote == '\'' && count != 1 {
        return Some("invalid syntax");
    }
    None
}

struct Parser<'a> {
    text: &'a str,
    tokens: Vec<Token>,
    pos: usize,
    /// Variables in scope: slices of the text, or the predeclared names.
    vars: Vec<&'a str>,
    range_depth: usize,
    defined: HashSet<String>,
    /// Whether an unregistered function name is an error.
    check_functions: bool,
}

type PResult<T> = Result<T, TemplateError>;

/// What ended an item list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    End,
    /// `{{else}}`, with whether `if`/`with` follows at once (`{{else if …}}`).
    Else(Option<Kw>),
}

impl<'a> Parser<'a> {
    fn tok(&self, i: usize) -> &Token {
        let last = self.tokens.len().saturating_sub(1);
        &self.tokens[i.min(last)]
    }

    fn peek(&self) -> &Token {
        self.tok(self.pos)
    }

    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        if self.pos < self.tokens.len() {
            self.pos += 1;
        }
        t
    }

    fn skip_space(&mut self) {
        while self.peek().tok == Tok::Space {
            self.pos += 1;
        }
    }

    fn peek_non_space(&mut self) -> Token {
        self.skip_space();
        self.peek().clone()
    }

    fn next_non_space(&mut self) -> Token {
        self.skip_space();
        self.next()
    }

    fn err<T>(&self, at: usize, message: impl Into<String>) -> PResult<T> {
        Err(TemplateError {
            offset: at,
            message: message.into(),
            unknown_function: None,
        })
    }

    /// How Go prints a token in "unexpected … in …".
    fn show(&self, t: &Token) -> String {
        let val = &self.text[t.start..t.end.min(self.text.len())];
        match &t.tok {
            Tok::Eof => "EOF".into(),
            Tok::Keyword(_) => format!("<{val}>"),
            _ if val.chars().count() > 10 => {
                let short: String = val.chars().take(10).collect();
                format!("{short:?}...")
            }
            _ => format!("{val:?}"),
        }
    }

    fn unexpected<T>(&self, t: &Token, context: &str) -> PResult<T> {
        if let Tok::Error(msg) = &t.tok {
            return self.err(t.start, msg.clone());
        }
        self.err(t.start, format!("unexpected {} in {context}", self.show(t)))
    }

    fn expect(&mut self, want: &Tok, context: &str) -> PResult<Token> {
        let t = self.next_non_space();
        if &t.tok != want {
            return self.unexpected(&t, context);
        }
        Ok(t)
    }

    /// `parse()`: the top level, where `{{define}}` may appear.
    fn parse_top(&mut self) -> PResult<()> {
        loop {
            let t = self.peek().clone();
            if t.tok == Tok::Eof {
                return Ok(());
            }
            if t.tok == Tok::LeftDelim {
                let save = self.pos;
                self.pos += 1;
                if self.peek_non_space().tok == Tok::Keyword(Kw::Define) {
                    self.next();
                    self.definition()?;
                    continue;
                }
                self.pos = save;
            }
            if let Some(stop) = self.text_or_action()? {
                let what = match stop {
                    Stop::End => "{{end}}",
                    Stop::Else(_) => "{{else}}",
                };
                return self.err(t.start, format!("unexpected {what}"));
            }
        }
    }

    /// `{{define "name"}} … {{end}}`: a new tree, where only `$` is declared.
    fn definition(&mut self) -> PResult<()> {
        let context = "define clause";
        let name = self.next_non_space();
        if !matches!(name.tok, Tok::String | Tok::RawString) {
            return self.unexpected(&name, context);
        }
        self.check_string(&name)?;
        self.expect(&Tok::RightDelim, context)?;
        let saved_vars = std::mem::replace(&mut self.vars, vec!["$"]);
        let saved_depth = std::mem::replace(&mut self.range_depth, 0);
        let body_start = self.pos;
        let (stop, at) = self.item_list()?;
        if stop != Stop::End {
            return self.err(at, format!("unexpected {{{{else}}}} in {context}"));
        }
        // Go's IsEmptyTree: only blank text and comments.
        let non_empty = self.tokens[body_start..self.pos]
            .iter()
            .filter(|t| t.start < at)
            .any(|t| match t.tok {
                Tok::Text => !self.is_blank(t),
                Tok::Comment | Tok::Space => false,
                _ => true,
            });
        self.vars = saved_vars;
        self.range_depth = saved_depth;
        let key = self.text[name.start..name.end].to_string();
        if non_empty && !self.defined.insert(key) {
            return self.err(
                name.start,
                format!(
                    "template: multiple definition of template {}",
                    &self.text[name.start..name.end]
                ),
            );
        }
        Ok(())
    }

    fn is_blank(&self, t: &Token) -> bool {
        self.text[t.start..t.end].trim().is_empty()
    }

    /// `itemList`: items up to `{{end}}` or `{{else}}`, which it returns.
    fn item_list(&mut self) -> PResult<(Stop, usize)> {
        loop {
            let t = self.peek_non_space();
            if t.tok == Tok::Eof {
                return self.err(t.start, "unexpected EOF");
            }
            if let Some(stop) = self.text_or_action()? {
                return Ok((stop, t.start));
            }
        }
    }

    fn text_or_action(&mut self) -> PResult<Option<Stop>> {
        let t = self.next_non_space();
        match t.tok {
            Tok::Text | Tok::Comment => Ok(None),
            Tok::LeftDelim => self.action(),
            _ => self.unexpected(&t, "input"),
        }
    }

    fn action(&mut self) -> PResult<Option<Stop>> {
        let t = self.next_non_space();
        match t.tok {
            Tok::Keyword(Kw::Block) => self.block().map(|()| None),
            Tok::Keyword(Kw::Break) | Tok::Keyword(Kw::Continue) => {
                let word = if t.tok == Tok::Keyword(Kw::Break) {
                    "break"
                } else {
                    "continue"
                };
                let close = self.next_non_space();
                if close.tok != Tok::RightDelim {
                    return self.unexpected(&close, &format!("{{{{{word}}}}}"));
                }
                if self.range_depth == 0 {
                    return self.err(t.start, format!("{{{{{word}}}}} outside {{{{range}}}}"));
                }
                Ok(None)
            }
            Tok::Keyword(Kw::Else) => {
                let p = self.peek_non_space();
                if let Tok::Keyword(k @ (Kw::If | Kw::With)) = p.tok {
                    return Ok(Some(Stop::Else(Some(k))));
                }
                self.expect(&Tok::RightDelim, "else")?;
                Ok(Some(Stop::Else(None)))
            }
            Tok::Keyword(Kw::End) => {
                self.expect(&Tok::RightDelim, "end")?;
                Ok(Some(Stop::End))
            }
            Tok::Keyword(k @ (Kw::If | Kw::Range | Kw::With)) => self.control(k).map(|()| None),
            Tok::Keyword(Kw::Template) => {
                let context = "template clause";
                let name = self.next_non_space();
                if !matches!(name.tok, Tok::String | Tok::RawString) {
                    return self.unexpected(&name, context);
                }
                self.check_string(&name)?;
                if self.next_non_space().tok != Tok::RightDelim {
                    self.pos -= 1;
                    self.pipeline(context, &Tok::RightDelim)?;
                }
                Ok(None)
            }
            _ => {
                self.pos -= 1;
                self.pipeline("command", &Tok::RightDelim).map(|()| None)
            }
        }
    }

    fn block(&mut self) -> PResult<()> {
        let context = "block clause";
        let name = self.next_non_space();
        if !matches!(name.tok, Tok::String | Tok::RawString) {
            return self.unexpected(&name, context);
        }
        self.check_string(&name)?;
        self.pipeline(context, &Tok::RightDelim)?;
        // The body is a template of its own: only `$` is declared in it.
        let saved_vars = std::mem::replace(&mut self.vars, vec!["$"]);
        let saved_depth = std::mem::replace(&mut self.range_depth, 0);
        let (stop, at) = self.item_list()?;
        if stop != Stop::End {
            return self.err(at, format!("unexpected {{{{else}}}} in {context}"));
        }
        self.vars = saved_vars;
        self.range_depth = saved_depth;
        Ok(())
    }

    /// `parseControl` for `if`, `range` and `with`; variables declared inside
    /// go out of scope at its `{{end}}`.
    fn control(&mut self, kw: Kw) -> PResult<()> {
        let context = match kw {
            Kw::If => "if",
            Kw::Range => "range",
            _ => "with",
        };
        let scope = self.vars.len();
        self.pipeline(context, &Tok::RightDelim)?;
        if kw == Kw::Range {
            self.range_depth += 1;
        }
        let (stop, _) = self.item_list()?;
        if kw == Kw::Range {
            self.range_depth -= 1;
        }
        match stop {
            Stop::End => {}
            Stop::Else(chained) => {
                if chained.is_some() && chained == Some(kw) {
                    // `{{else if …}}` is `{{else}}{{if …}}…{{end}}{{end}}` with the
                    // last `{{end}}` shared.
                    self.next_non_space();
                    self.control(kw)?;
                } else if chained.is_some() {
                    let t = self.peek_non_space();
                    return self.unexpected(&t, "input");
                } else {
                    let (stop, at) = self.item_list()?;
                    if stop != Stop::End {
                        return self.err(at, "expected end; found {{else}}");
                    }
                }
            }
        }
        self.vars.truncate(scope);
        Ok(())
    }

    /// `pipeline`: optional declarations, then commands separated by `|`, up to
    /// `end` (the closing delimiter, or `)` inside parentheses).
    fn pipeline(&mut self, context: &str, end: &Tok) -> PResult<()> {
        let mut decls = 0;
        loop {
            let v = self.peek_non_space();
            if v.tok != Tok::Variable {
                break;
            }
            let var_at = self.pos;
            self.next();
            let next = self.peek_non_space();
            match next.tok {
                Tok::Assign | Tok::Declare => {
                    self.next();
                    self.vars.push(&self.text[v.start..v.end]);
                    break;
                }
                Tok::Char(',') => {
                    self.next();
                    decls += 1;
                    self.vars.push(&self.text[v.start..v.end]);
                    if context == "range" && decls < 2 {
                        match self.peek_non_space().tok {
                            Tok::Variable | Tok::RightDelim | Tok::RightParen => continue,
                            _ => {
                                return self.err(next.start, "range can only initialize variables");
                            }
                        }
                    }
                    return self.err(next.start, format!("too many declarations in {context}"));
                }
                _ => {
                    // An operand, not a declaration.
                    self.pos = var_at;
                    break;
                }
            }
        }
        let mut cmds: Vec<(Tok, usize)> = Vec::new();
        loop {
            let t = self.next_non_space();
            if &t.tok == end {
                if cmds.is_empty() {
                    return self.err(t.start, format!("missing value for {context}"));
                }
                // Only the first command may start with a literal.
                for (i, (first, at)) in cmds.iter().enumerate().skip(1) {
                    if matches!(
                        first,
                        Tok::Bool
                            | Tok::Dot
                            | Tok::Keyword(Kw::Nil)
                            | Tok::Number
                            | Tok::Complex
                            | Tok::CharConst
                            | Tok::String
                            | Tok::RawString
                    ) {
                        return self.err(
                            *at,
                            format!("non executable command in pipeline stage {}", i + 1),
                        );
                    }
                }
                return Ok(());
            }
            match t.tok {
                Tok::Bool
                | Tok::CharConst
                | Tok::Complex
                | Tok::Dot
                | Tok::Field
                | Tok::Identifier
                | Tok::Number
                | Tok::Keyword(Kw::Nil)
                | Tok::RawString
                | Tok::String
                | Tok::Variable
                | Tok::LeftParen => {
                    self.pos -= 1;
                    let first = self.command()?;
                    cmds.push(first);
                }
                _ => return self.unexpected(&t, context),
            }
        }
    }

    /// One command: operands separated by spaces, ended by `|`, `)` or `}}`.
    /// Returns the kind of its first operand (for the literal check).
    fn command(&mut self) -> PResult<(Tok, usize)> {
        let start = self.peek_non_space();
        let mut first: Option<(Tok, usize)> = None;
        loop {
            self.skip_space();
            if let Some(op) = self.operand()?
                && first.is_none()
            {
                first = Some(op);
            }
            let t = self.next();
            match t.tok {
                Tok::Space => continue,
                Tok::RightDelim | Tok::RightParen => self.pos -= 1,
                Tok::Pipe => {}
                _ => return self.unexpected(&t, "operand"),
            }
            break;
        }
        first.map_or_else(|| self.err(start.start, "empty command"), Ok)
    }

    fn operand(&mut self) -> PResult<Option<(Tok, usize)>> {
        let Some(term) = self.term()? else {
            return Ok(None);
        };
        if self.peek().tok == Tok::Field {
            match term.0 {
                Tok::Bool
                | Tok::String
                | Tok::RawString
                | Tok::Number
                | Tok::Complex
                | Tok::CharConst
                | Tok::Keyword(Kw::Nil)
                | Tok::Dot => {
                    let t = self.tok(term.1).clone();
                    let shown = &self.text[t.start..t.end];
                    return self.err(term.1, format!("unexpected . after term {shown:?}"));
                }
                _ => {}
            }
            while self.peek().tok == Tok::Field {
                self.next();
            }
            // A field chain on a parenthesised pipeline is not a literal.
            return Ok(Some((Tok::Field, self.tok(term.1).start)));
        }
        let at = self.tok(term.1).start;
        Ok(Some((term.0, at)))
    }

    /// One term; returns its kind and token index, or `None` (nothing consumed)
    /// when the next token starts no term.
    fn term(&mut self) -> PResult<Option<(Tok, usize)>> {
        self.skip_space();
        let i = self.pos;
        let t = self.next();
        match &t.tok {
            Tok::Identifier => {
                let name = &self.text[t.start..t.end];
                if self.check_functions && !is_function(name) {
                    return Err(TemplateError {
                        offset: t.start,
                        message: format!("function {name:?} not defined"),
                        unknown_function: Some(name.to_string()),
                    });
                }
            }
            Tok::Variable => {
                let name = &self.text[t.start..t.end];
                if !self.vars.contains(&name) {
                    return self.err(t.start, format!("undefined variable {name:?}"));
                }
            }
            Tok::Number | Tok::Complex => {
                let lit = &self.text[t.start..t.end];
                let problem = if t.tok == Tok::Complex {
                    complex_error(lit)
                } else {
                    number_error(lit)
                };
                if let Some(msg) = problem {
                    return self.err(t.start, msg);
                }
            }
            Tok::CharConst | Tok::String => {
                self.check_string(&t)?;
            }
            Tok::LeftParen => {
                self.pipeline("parenthesized pipeline", &Tok::RightParen)?;
                return Ok(Some((Tok::LeftParen, i)));
            }
            Tok::Dot | Tok::Keyword(Kw::Nil) | Tok::Field | Tok::Bool | Tok::RawString => {}
            _ => {
                self.pos = i;
                return Ok(None);
            }
        }
        Ok(Some((t.tok, i)))
    }

    fn check_string(&self, t: &Token) -> PResult<()> {
        if t.tok == Tok::RawString {
            return Ok(());
        }
        let lit = &self.text[t.start..t.end];
        match unquote_error(lit) {
            None => Ok(()),
            Some(_) if t.tok == Tok::CharConst => {
                self.err(t.start, format!("malformed character constant: {lit}"))
            }
            Some(msg) => self.err(t.start, msg),
        }
    }
}

#[cfg(test)]
mod tests;
