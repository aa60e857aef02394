//! The LogQL parser (Loki `pkg/logql/syntax/syntax.y`): kinds and errors, no AST.

use super::*;

/// What an expression evaluates to.
#[derive(Debug, Clone, Copy)]
pub(super) struct Expr {
    pub(super) kind: QueryKind,
    /// A number literal, or arithmetic on number literals only.
    pub(super) literal: bool,
    pub(super) start: usize,
}

impl Expr {
    pub(super) fn metric(start: usize) -> Self {
        Expr {
            kind: QueryKind::Metric,
            literal: false,
            start,
        }
    }
}

pub(super) struct BinOp {
    pub(super) prec: u8,
    pub(super) name: &'static str,
    pub(super) set: bool,
}

/// What a log range inside a range aggregation contained.
pub(super) struct LogRange {
    /// Offset of the `unwrap` keyword, if any.
    pub(super) unwrap: Option<usize>,
}

pub(super) struct Parser<'a> {
    pub(super) src: &'a str,
    pub(super) toks: Vec<Token>,
    pub(super) pos: usize,
    /// End of the last consumed token.
    pub(super) prev_end: usize,
    pub(super) depth: usize,
    pub(super) eof: Token,
}

impl<'a> Parser<'a> {
    pub(super) fn new(src: &'a str) -> Self {
        Parser {
            src,
            toks: lex(src),
            pos: 0,
            prev_end: 0,
            depth: 0,
            eof: Token::simple(K::Eof, src.len(), src.len()),
        }
    }

    // -- token access -------------------------------------------------------

    pub(super) fn peek(&self, n: usize) -> &Token {
        self.toks
            .get(self.pos + n)
            .or_else(|| self.toks.last())
            .unwrap_or(&self.eof)
    }

    pub(super) fn tok(&self) -> &Token {
        self.peek(0)
    }

    pub(super) fn kind(&self) -> K {
        self.tok().kind
    }

    pub(super) fn bump(&mut self) {
        if let Some(t) = self.toks.get(self.pos) {
            self.prev_end = t.end;
        }
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
    }

    pub(super) fn text(&self, t: &Token) -> &'a str {
        self.src.get(t.start..t.end).unwrap_or("")
    }

    pub(super) fn lower(&self, t: &Token) -> String {
        self.text(t).to_ascii_lowercase()
    }

    pub(super) fn is_kw(&self, t: &Token, kw: &str) -> bool {
        t.kind == K::Ident && self.text(t).eq_ignore_ascii_case(kw)
    }

    pub(super) fn at_kw(&self, kw: &str) -> bool {
        self.is_kw(self.tok(), kw)
    }

    pub(super) fn at_grouping(&self) -> bool {
        self.at_kw("by") || self.at_kw("without")
    }

    pub(super) fn starts_pipeline(&self) -> bool {
        matches!(
            self.kind(),
            K::Pipe | K::PipeExact | K::PipeMatch | K::PipePattern | K::Neq | K::Nre | K::Npa
        )
    }

    pub(super) fn describe(&self, t: &Token) -> String {
        match t.kind {
            K::Eof => "the end of the query".to_string(),
            K::Error => "invalid input".to_string(),
            K::Str => format!("the string {}", shorten(self.text(t), 40)),
            K::Range => format!("the range `{}`", shorten(self.text(t), 40)),
            _ => format!("`{}`", shorten(self.text(t), 40)),
        }
    }

    // -- errors -------------------------------------------------------------

    /// An error at the current token (or the lexing error it stands for).
    pub(super) fn fail<T>(&self, msg: impl Into<String>) -> Result<T, LogqlError> {
        let t = self.tok();
        if let Some(e) = &t.error {
            return Err(e.clone());
        }
        Err(LogqlError::new(t.start, msg))
    }

    pub(super) fn expected<T>(&self, what: &str) -> Result<T, LogqlError> {
        self.fail(format!(
            "expected {what}, found {}",
            self.describe(self.tok())
        ))
    }

    pub(super) fn require(&mut self, kind: K, what: &str) -> Result<(), LogqlError> {
        if self.kind() != kind {
            return self.expected(what);
        }
        self.bump();
        Ok(())
    }

    pub(super) fn expect_string(&mut self, what: &str) -> Result<Token, LogqlError> {
        if self.kind() != K::Str {
            return self.expected(what);
        }
        let t = self.tok().clone();
        self.bump();
        Ok(t)
    }

    /// Runs `f` one nesting level deeper, refusing to go past the limit.
    pub(super) fn nest<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, LogqlError>,
    ) -> Result<T, LogqlError> {
        if self.depth >= MAX_NESTING {
            return Err(LogqlError::new(
                self.tok().start,
                format!(
                    "query is nested too deeply: at most {MAX_NESTING} levels of parentheses, \
                     function calls and `^` operators are supported"
                ),
            ));
        }
        self.depth += 1;
        let r = f(self);
        self.depth -= 1;
        r
    }

    /// Offset of position `rel` inside the string token `t`.
    pub(super) fn offset_in(t: &Token, rel: usize) -> usize {
        if t.verbatim {
            t.start + 1 + rel
        } else {
            t.start
        }
    }

    pub(super) fn check_regex(&self, t: &Token) -> Result<RegexInfo, LogqlError> {
        check_regex_syntax(&t.value).map_err(|(rel, msg)| {
            LogqlError::new(
                Self::offset_in(t, rel),
                format!("invalid regular expression {}: {msg}", clip(self.text(t))),
            )
        })
    }

    // -- expressions --------------------------------------------------------

    pub(super) fn finish(&self, e: Expr) -> Result<(), LogqlError> {
        match self.kind() {
            K::Eof => Ok(()),
            K::RParen => self.fail("unexpected `)` without a matching `(`"),
            K::Eq => self.fail("unexpected `=`: use `==` to compare values"),
            K::Range => self.fail(
                "a range like [5m] cannot follow a metric expression: LogQL has no subqueries",
            ),
            _ if self.at_kw("offset") => self.fail(
                "`offset` must directly follow the range inside the aggregation, e.g. \
                 rate({app=\"x\"}[5m] offset 1h)",
            ),
            _ if e.kind == QueryKind::Log && self.starts_pipeline() => self.fail(
                "a pipeline must directly follow its stream selector: move it inside the \
                 parentheses",
            ),
            _ if e.kind == QueryKind::Log => self.expected(
                "a pipeline stage like `| json` or `|= \"text\"`, or the end of the query",
            ),
            _ => self.expected("a binary operator or the end of the query"),
        }
    }

    pub(super) fn peek_binop(&self) -> Option<BinOp> {
        let t = self.tok();
        let (prec, name, set) = match t.kind {
            K::Ident => match self.lower(t).as_str() {
                "or" => (1, "or", true),
                "and" => (2, "and", true),
                "unless" => (2, "unless", true),
                _ => return None,
            },
            K::CmpEq => (3, "==", false),
            K::Neq => (3, "!=", false),
            K::Gt => (3, ">", false),
            K::Gte => (3, ">=", false),
            K::Lt => (3, "<", false),
            K::Lte => (3, "<=", false),
            K::Add => (4, "+", false),
            K::Sub => (4, "-", false),
            K::Mul => (5, "*", false),
            K::Div => (5, "/", false),
            K::Mod => (5, "%", false),
            K::Pow => (6, "^", false),
            _ => return None,
        };
        Some(BinOp { prec, name, set })
    }

    pub(super) fn parse_expr(&mut self, min_prec: u8) -> Result<Expr, LogqlError> {
        self.nest(|p| p.parse_expr_inner(min_prec))
    }

    pub(super) fn parse_expr_inner(&mut self, min_prec: u8) -> Result<Expr, LogqlError> {
        let mut lhs = self.parse_unary()?;
        if lhs.kind == QueryKind::Log && self.kind() == K::Range {
            return self.fail(
                "a range like [5m] is only allowed inside a range aggregation, e.g. \
                 count_over_time({app=\"x\"}[5m])",
            );
        }
        while let Some(op) = self.peek_binop() {
            if op.prec < min_prec {
                break;
            }
            if lhs.kind == QueryKind::Log {
                return self.fail(format!(
                    "binary operator `{}` needs metric queries on both sides, but its left side \
                     is a log query: turn it into a metric first, e.g. \
                     count_over_time({{app=\"x\"}}[5m])",
                    op.name
                ));
            }
            self.bump();
            self.parse_binop_modifiers()?;
            let next_min = if op.name == "^" { op.prec } else { op.prec + 1 };
            let rhs = self.parse_expr(next_min)?;
            if rhs.kind == QueryKind::Log {
                return Err(LogqlError::new(
                    rhs.start,
                    format!(
                        "binary operator `{}` needs metric queries on both sides, but its right \
                         side is a log query: turn it into a metric first, e.g. \
                         count_over_time({{app=\"x\"}}[5m])",
                        op.name
                    ),
                ));
            }
            if op.set && (lhs.literal || rhs.literal) {
                let (at, side) = if lhs.literal {
                    (lhs.start, "left")
                } else {
                    (rhs.start, "right")
                };
                return Err(LogqlError::new(
                    at,
                    format!(
                        "set operator `{}` needs vectors on both sides, but its {side} side is a \
                         number literal (use vector(n) instead)",
                        op.name
                    ),
                ));
            }
            lhs = Expr {
                kind: QueryKind::Metric,
                literal: lhs.literal && rhs.literal,
                start: lhs.start,
            };
        }
        Ok(lhs)
    }

    /// `bool`, `on(...)`/`ignoring(...)`, `group_left(...)`/`group_right(...)`.
    pub(super) fn parse_binop_modifiers(&mut self) -> Result<(), LogqlError> {
        if self.at_kw("bool") {
            self.bump();
        }
        if self.at_kw("on") || self.at_kw("ignoring") {
            let kw = self.lower(self.tok());
            self.bump();
            self.require(K::LParen, &format!("`(` after `{kw}`"))?;
            self.parse_label_list(&format!("in `{kw}(...)`"))?;
            if self.at_kw("group_left") || self.at_kw("group_right") {
                let kw = self.lower(self.tok());
                self.bump();
                if self.kind() == K::LParen {
                    self.bump();
                    self.parse_label_list(&format!("in `{kw}(...)`"))?;
                }
            }
        } else if self.at_kw("group_left") || self.at_kw("group_right") {
            return self
                .fail("`group_left`/`group_right` must follow `on(...)` or `ignoring(...)`");
        }
        Ok(())
    }

    /// Label names up to and including `)`; the `(` is already consumed.
    /// Returns whether the list is non-empty.
    pub(super) fn parse_label_list(&mut self, ctx: &str) -> Result<bool, LogqlError> {
        if self.kind() == K::RParen {
            self.bump();
            return Ok(false);
        }
        loop {
            self.label_name(ctx)?;
            match self.kind() {
                K::Comma => self.bump(),
                K::RParen => {
                    self.bump();
                    return Ok(true);
                }
                _ => return self.expected(&format!("`,` or `)` {ctx}")),
            }
        }
    }

    pub(super) fn label_name(&mut self, ctx: &str) -> Result<String, LogqlError> {
        let t = self.tok();
        match t.kind {
            K::Ident => {
                let text = self.text(t);
                if is_reserved(text) {
                    return self.fail(format!(
                        "`{text}` is a LogQL keyword and cannot be used as a label name {ctx}"
                    ));
                }
                self.bump();
                Ok(clip(text))
            }
            K::Str => self.fail(format!(
                "expected a label name {ctx}, found {}: label names are written without quotes",
                self.describe(t)
            )),
            _ => self.expected(&format!("a label name {ctx}")),
        }
    }

    pub(super) fn parse_unary(&mut self) -> Result<Expr, LogqlError> {
        if matches!(self.kind(), K::Add | K::Sub) {
            let start = self.tok().start;
            let sign = self.text(self.tok());
            if self.peek(1).kind == K::Number {
                self.bump();
                self.bump();
                return Ok(Expr {
                    kind: QueryKind::Metric,
                    literal: true,
                    start,
                });
            }
            self.bump();
            return self.expected(&format!(
                "a number after `{sign}` (LogQL only allows a sign directly before a number)"
            ));
        }
        self.parse_primary()
    }

    pub(super) fn parse_primary(&mut self) -> Result<Expr, LogqlError> {
        let start = self.tok().start;
        match self.kind() {
            K::Number => {
                self.bump();
                Ok(Expr {
                    kind: QueryKind::Metric,
                    literal: true,
                    start,
                })
            }
            K::LParen => {
                self.bump();
                let inner = self.parse_expr(0)?;
                self.require(K::RParen, "`)` to close the parenthesis")?;
                Ok(Expr { start, ..inner })
            }
            K::LBrace => {
                self.parse_selector()?;
                self.parse_pipeline(false)?;
                Ok(Expr {
                    kind: QueryKind::Log,
                    literal: false,
                    start,
                })
            }
            K::Ident => self.parse_call(),
            K::Duration | K::Bytes => self.fail(format!(
                "unexpected {}: durations and sizes are only allowed in a range like [5m], after \
                 `offset` and in label filters like `| latency > 5s`",
                self.describe(self.tok())
            )),
            K::Range => self.fail(
                "a range like [5m] must follow a log query inside a range aggregation, e.g. \
                 count_over_time({app=\"x\"}[5m])",
            ),
            _ => self.expected(
                "a stream selector like {app=\"x\"}, a function like rate(...), a number or `(`",
            ),
        }
    }

    pub(super) fn parse_call(&mut self) -> Result<Expr, LogqlError> {
        let t = self.tok();
        let start = t.start;
        let name = self.text(t).to_ascii_lowercase();
        let text = clip(self.text(t));
        let next = self.peek(1).kind;
        if RANGE_OPS.contains(&name.as_str()) {
            self.bump();
            if next == K::LParen {
                return self.parse_range_agg(&name, start);
            }
            if self.at_grouping() {
                return self.fail(format!(
                    "`by`/`without` goes after the parentheses of {name}(...), and only for the \
                     *_over_time functions that support it"
                ));
            }
            return self.expected(&format!("`(` after `{name}`"));
        }
        if VECTOR_OPS.contains(&name.as_str()) {
            return self.parse_vector_agg(&name, start);
        }
        match name.as_str() {
            "label_replace" => return self.parse_label_replace(start),
            "vector" => return self.parse_vector(start),
            _ => {}
        }
        if next == K::LParen {
            if name == "variants" {
                return self.fail(
                    "`variants(...) of (...)` queries are experimental and not supported by mop \
                     validate",
                );
            }
            if PROMQL_ONLY.contains(&name.as_str()) {
                return self.fail(format!(
                    "`{text}` is a PromQL function that LogQL does not have; LogQL functions are \
                     the range aggregations ({}), the vector aggregations ({}), label_replace and \
                     vector",
                    RANGE_OPS.join(", "),
                    VECTOR_OPS.join(", ")
                ));
            }
            return self.fail(format!(
                "unknown function `{text}`: LogQL functions are the range aggregations ({}), the \
                 vector aggregations ({}), label_replace and vector",
                RANGE_OPS.join(", "),
                VECTOR_OPS.join(", ")
            ));
        }
        self.fail(format!(
            "unexpected `{text}`: expected a stream selector like {{app=\"x\"}}, a function like \
             rate(...) or a number"
        ))
    }

    pub(super) fn parse_grouping(&mut self) -> Result<(usize, bool), LogqlError> {
        let at = self.tok().start;
        let kw = self.lower(self.tok());
        self.bump();
        self.require(K::LParen, &format!("`(` after `{kw}`"))?;
        let labels = self.parse_label_list(&format!("in `{kw} (...)`"))?;
        Ok((at, labels))
    }

    pub(super) fn parse_range_agg(&mut self, name: &str, start: usize) -> Result<Expr, LogqlError> {
        self.require(K::LParen, &format!("`(` after `{name}`"))?;
        let is_quantile = name == "quantile_over_time";
        let mut param = None;
        if self.kind() == K::Number && self.peek(1).kind == K::Comma {
            param = Some(self.tok().start);
            self.bump();
            self.bump();
        }
        if is_quantile && param.is_none() {
            return self.expected(
                "the quantile as the first argument of quantile_over_time, e.g. \
                 quantile_over_time(0.99, {app=\"x\"} | unwrap latency [5m])",
            );
        }
        if let Some(at) = param
            && !is_quantile
        {
            return Err(LogqlError::new(
                at,
                format!("{name} does not take a parameter: write {name}({{app=\"x\"}}[5m])"),
            ));
        }
        let range = self.nest(|p| p.parse_log_range(name))?;
        match range.unwrap {
            Some(at) if REFUSES_UNWRAP.contains(&name) => {
                return Err(LogqlError::new(
                    at,
                    format!(
                        "{name} works on log lines and cannot be used with `| unwrap`: remove the \
                         unwrap, or aggregate the unwrapped values with sum_over_time, \
                         avg_over_time, max_over_time, ..."
                    ),
                ));
            }
            None if NEEDS_UNWRAP.contains(&name) => {
                return Err(LogqlError::new(
                    start,
                    format!(
                        "{name} aggregates sample values and needs `| unwrap <label>` in its \
                         pipeline, e.g. {name}({}{{app=\"x\"}} | logfmt | unwrap duration [5m])",
                        if name == "quantile_over_time" {
                            "0.99, "
                        } else {
                            ""
                        }
                    ),
                ));
            }
            _ => {}
        }
        if self.kind() != K::RParen {
            if self.at_kw("offset") {
                return self.fail(format!(
                    "`offset` must directly follow the range, e.g. {name}({{app=\"x\"}}[5m] \
                     offset 1h)"
                ));
            }
            return self.expected(&format!("`)` to close {name}("));
        }
        self.bump();
        if self.at_grouping() {
            if !RANGE_GROUPING.contains(&name) {
                return self.fail(format!(
                    "{name} does not support `by`/`without`: aggregate its result instead, e.g. \
                     sum by (label) ({name}(...))"
                ));
            }
            self.parse_grouping()?;
        }
        Ok(Expr::metric(start))
    }

    /// The log query and range inside a range aggregation, in any of the
    /// shapes Loki accepts.
    pub(super) fn parse_log_range(&mut self, name: &str) -> Result<LogRange, LogqlError> {
        let start = self.tok().start;
        match self.kind() {
            K::LParen => {
                self.bump();
                match self.kind() {
                    K::LParen => {
                        let inner = self.nest(|p| p.parse_log_range(name))?;
                        self.require(K::RParen, "`)`")?;
                        Ok(inner)
                    }
                    K::LBrace => {
                        self.parse_selector()?;
                        let (piped, unwrap) = self.parse_pipeline(true)?;
                        if self.kind() == K::Range {
                            let range = self.parse_range_tail(name, start, piped, unwrap)?;
                            self.require(K::RParen, "`)`")?;
                            return Ok(range);
                        }
                        self.require(K::RParen, "`)` or a range like [5m]")?;
                        if self.kind() == K::RParen {
                            return self.expected(
                                "a range like [5m] after the parenthesised log query (only one \
                                 pair of parentheses may enclose a log query before its range)",
                            );
                        }
                        if self.kind() != K::Range {
                            return self.missing_range(name, start, false);
                        }
                        self.bump();
                        self.parse_offset()?;
                        Ok(LogRange { unwrap })
                    }
                    _ => self.expected("a stream selector like {app=\"x\"}"),
                }
            }
            K::LBrace => {
                self.parse_selector()?;
                let (piped, unwrap) = self.parse_pipeline(true)?;
                self.parse_range_tail(name, start, piped, unwrap)
            }
            K::Ident if self.peek(1).kind == K::LParen => self.fail(format!(
                "{name} needs a log query with a range, like {name}({{app=\"x\"}}[5m]), not \
                 another function: LogQL has no subqueries"
            )),
            _ => self.expected(&format!(
                "a log query with a range inside {name}(...), like {name}({{app=\"x\"}}[5m])"
            )),
        }
    }

    pub(super) fn parse_range_tail(
        &mut self,
        name: &str,
        log_start: usize,
        piped: bool,
        unwrap: Option<usize>,
    ) -> Result<LogRange, LogqlError> {
        let piped = piped || unwrap.is_some();
        if self.kind() != K::Range {
            return self.missing_range(name, log_start, piped);
        }
        self.bump();
        self.parse_offset()?;
        if !piped {
            let (_, unwrap) = self.parse_pipeline(true)?;
            return Ok(LogRange { unwrap });
        }
        if self.starts_pipeline() {
            return self.fail(
                "the log pipeline must be written entirely before or entirely after the range, \
                 not on both sides",
            );
        }
        Ok(LogRange { unwrap })
    }

    pub(super) fn missing_range<T>(
        &self,
        name: &str,
        log_start: usize,
        piped: bool,
    ) -> Result<T, LogqlError> {
        if self.kind() == K::RParen {
            let src = self.src.get(log_start..self.prev_end).unwrap_or("").trim();
            let shown = if src.chars().count() <= 80 {
                src
            } else {
                "<log query>"
            };
            let sep = if piped { " " } else { "" };
            return self.fail(format!(
                "{name} needs a range: write `{name}({shown}{sep}[5m])`"
            ));
        }
        let after = if piped {
            "the log pipeline"
        } else {
            "the stream selector"
        };
        self.expected(&format!("a range like [5m] after {after}"))
    }

    pub(super) fn parse_offset(&mut self) -> Result<(), LogqlError> {
        if self.at_kw("offset") {
            self.bump();
            self.require(K::Duration, "a duration like 1h after `offset`")?;
        }
        Ok(())
    }

    pub(super) fn parse_vector_agg(
        &mut self,
        name: &str,
        start: usize,
    ) -> Result<Expr, LogqlError> {
        self.bump();
        let mut grouping = None;
        if self.at_grouping() {
            grouping = Some(self.parse_grouping()?);
        }
        let what = match grouping {
            Some(_) => format!("`(` and the argument of {name} after its `by`/`without` clause"),
            None => format!("`(` after `{name}`"),
        };
        self.require(K::LParen, &what)?;
        let mut param = None;
        if self.kind() == K::Number && self.peek(1).kind == K::Comma {
            param = Some((self.tok().start, clip(self.text(self.tok()))));
            self.bump();
            self.bump();
        }
        let takes_param = matches!(name, "topk" | "bottomk" | "approx_topk");
        let inner = self.parse_expr(0)?;
        if inner.kind == QueryKind::Log {
            return Err(LogqlError::new(
                inner.start,
                format!(
                    "{name}(...) aggregates samples, but its argument is a log query: turn it \
                     into a metric first, e.g. {name}(count_over_time({{app=\"x\"}}[5m]))"
                ),
            ));
        }
        if takes_param && self.kind() == K::Comma {
            return self.fail(format!(
                "{name} takes the number of series first: {name}(5, <expression>)"
            ));
        }
        self.require(K::RParen, &format!("`)` to close {name}("))?;
        if self.at_grouping() {
            if grouping.is_some() {
                return self.fail(format!(
                    "{name} already has a `by`/`without` clause before its parentheses"
                ));
            }
            grouping = Some(self.parse_grouping()?);
        }
        if takes_param {
            let Some((at, text)) = param else {
                return Err(LogqlError::new(
                    start,
                    format!(
                        "{name} needs the number of series as its first argument, e.g. {name}(5, \
                         sum by (app) (rate({{app=\"x\"}}[5m])))"
                    ),
                ));
            };
            match text.parse::<i64>() {
                Ok(n) if n > 0 => {}
                Ok(_) => {
                    return Err(LogqlError::new(
                        at,
                        format!("the parameter of {name} must be greater than 0, found `{text}`"),
                    ));
                }
                Err(_) => {
                    return Err(LogqlError::new(
                        at,
                        format!("the parameter of {name} must be a whole number, found `{text}`"),
                    ));
                }
            }
            if name == "approx_topk"
                && let Some((at, _)) = grouping
            {
                return Err(LogqlError::new(
                    at,
                    "approx_topk does not support `by`/`without`",
                ));
            }
        } else if let Some((at, _)) = param {
            return Err(LogqlError::new(
                at,
                format!("{name} does not take a parameter; only topk, bottomk and approx_topk do"),
            ));
        }
        if matches!(name, "sort" | "sort_desc")
            && let Some((at, true)) = grouping
        {
            return Err(LogqlError::new(
                at,
                format!("{name} does not support grouping by labels"),
            ));
        }
        Ok(Expr::metric(start))
    }

    pub(super) fn parse_label_replace(&mut self, start: usize) -> Result<Expr, LogqlError> {
        self.bump();
        self.require(K::LParen, "`(` after `label_replace`")?;
        let inner = self.parse_expr(0)?;
        if inner.kind == QueryKind::Log {
            return Err(LogqlError::new(
                inner.start,
                "label_replace needs a metric query as its first argument, e.g. \
                 label_replace(rate({app=\"x\"}[5m]), \"dst\", \"$1\", \"src\", \"(.*)\")",
            ));
        }
        let args = [
            "destination label",
            "replacement",
            "source label",
            "regular expression",
        ];
        for (i, what) in args.iter().enumerate() {
            self.require(
                K::Comma,
                &format!(
                    "`,` and the {what}: label_replace takes 5 arguments, \
                     label_replace(<expr>, \"dst\", \"replacement\", \"src\", \"regex\")"
                ),
            )?;
            let s =
                self.expect_string(&format!("the {what} of label_replace as a quoted string"))?;
            if i == 0 && !is_label_name(&s.value) {
                return Err(LogqlError::new(
                    s.start,
                    format!(
                        "invalid destination label name {} in label_replace: label names match \
                         [a-zA-Z_][a-zA-Z0-9_]*",
                        clip(self.text(&s))
                    ),
                ));
            }
            if i == 3 {
                self.check_regex(&s)?;
            }
        }
        self.require(K::RParen, "`)` to close label_replace(")?;
        Ok(Expr::metric(start))
    }

    pub(super) fn parse_vector(&mut self, start: usize) -> Result<Expr, LogqlError> {
        self.bump();
        self.require(K::LParen, "`(` after `vector`")?;
        self.require(K::Number, "a number inside vector(...), e.g. vector(0)")?;
        self.require(K::RParen, "`)` to close vector(")?;
        Ok(Expr::metric(start))
    }

    // -- log queries --------------------------------------------------------

    pub(super) fn parse_selector(&mut self) -> Result<(), LogqlError> {
        let open = self.tok().start;
        self.require(K::LBrace, "`{`")?;
        if self.kind() == K::RBrace {
            return Err(LogqlError::new(
                open,
                "a stream selector needs at least one label matcher, e.g. {app=\"x\"}",
            ));
        }
        let mut selective = false;
        loop {
            let name = self.label_name("in the stream selector")?;
            let op = self.kind();
            if !matches!(op, K::Eq | K::Neq | K::Re | K::Nre) {
                if op == K::CmpEq {
                    return self.fail("use `=` instead of `==` in a stream selector");
                }
                return self.expected(&format!(
                    "a matcher operator (=, !=, =~, !~) after `{name}` in the stream selector"
                ));
            }
            let op_text = self.text(self.tok());
            self.bump();
            let value = self.expect_string(&format!("a quoted string after `{name}{op_text}`"))?;
            let matches_empty = match op {
                K::Eq => value.value.is_empty(),
                K::Neq => !value.value.is_empty(),
                K::Re => self.check_regex(&value)?.nullable,
                _ => !self.check_regex(&value)?.nullable,
            };
            selective |= !matches_empty;
            match self.kind() {
                K::Comma => {
                    self.bump();
                    if self.kind() == K::RBrace {
                        return self.expected("a label matcher after `,`");
                    }
                }
                K::RBrace => {
                    self.bump();
                    break;
                }
                _ => return self.expected("`,` or `}` in stream selector"),
            }
        }
        if !selective {
            return Err(LogqlError::new(
                open,
                "stream selector needs at least one matcher that does not match the empty \
                 string, e.g. {app=\"x\"} or {app=~\".+\"}; matchers like app=\"\", app!=\"x\" \
                 or app=~\".*\" alone would select every stream",
            ));
        }
        Ok(())
    }

    /// Pipeline stages after a selector (or a range). Returns whether there
    /// was any stage and the offset of `unwrap`, which ends the pipeline.
    pub(super) fn parse_pipeline(
        &mut self,
        allow_unwrap: bool,
    ) -> Result<(bool, Option<usize>), LogqlError> {
        let mut piped = false;
        loop {
            match self.kind() {
                K::PipeExact | K::PipeMatch | K::PipePattern | K::Neq | K::Nre | K::Npa => {
                    self.parse_line_filter()?;
                }
                K::Pipe => {
                    let next = self.peek(1);
                    let stage = if next.kind == K::Ident {
                        self.lower(next)
                    } else {
                        String::new()
                    };
                    if stage == "unwrap" {
                        let at = next.start;
                        self.bump();
                        if !allow_unwrap {
                            return self.fail(
                                "`| unwrap` is only allowed inside a range aggregation over \
                                 unwrapped values, e.g. sum_over_time({app=\"x\"} | logfmt | \
                                 unwrap bytes [5m])",
                            );
                        }
                        self.bump();
                        self.parse_unwrap()?;
                        return Ok((piped, Some(at)));
                    }
                    self.bump();
                    self.parse_stage(&stage)?;
                }
                _ => return Ok((piped, None)),
            }
            piped = true;
        }
    }

    pub(super) fn parse_stage(&mut self, stage: &str) -> Result<(), LogqlError> {
        match stage {
            "json" => {
                self.bump();
                self.parse_extractions("json")
            }
            "logfmt" => {
                self.bump();
                while self.kind() == K::Flag {
                    self.bump();
                }
                self.parse_extractions("logfmt")
            }
            "regexp" => {
                self.bump();
                let s = self.expect_string("a quoted regular expression after `| regexp`")?;
                let info = self.check_regex(&s)?;
                if info.names.is_empty() {
                    return Err(LogqlError::new(
                        s.start,
                        "`| regexp` needs at least one named capture group like (?P<name>...) \
                         to extract labels",
                    ));
                }
                if let Some(bad) = info.names.iter().find(|n| !is_label_name(n)) {
                    return Err(LogqlError::new(
                        s.start,
                        format!(
                            "invalid extracted label name `{}` in `| regexp`: label names \
                             match [a-zA-Z_][a-zA-Z0-9_]*",
                            clip(bad)
                        ),
                    ));
                }
                Ok(())
            }
            "pattern" => {
                self.bump();
                let s = self.expect_string("a quoted pattern after `| pattern`")?;
                check_pattern(&s.value).map_err(|(rel, msg)| {
                    LogqlError::new(Self::offset_in(&s, rel), format!("invalid pattern: {msg}"))
                })
            }
            "unpack" | "decolorize" => {
                self.bump();
                Ok(())
            }
            "line_format" => {
                self.bump();
                self.expect_string("a quoted template after `| line_format`")?;
                Ok(())
            }
            "label_format" => {
                self.bump();
                self.parse_label_formats()
            }
            "drop" | "keep" => {
                self.bump();
                self.parse_named_matchers(stage)
            }
            _ if matches!(self.kind(), K::Ident | K::LParen) => self.parse_label_filter_expr(true),
            _ => self.expected(
                "a pipeline stage after `|`: json, logfmt, regexp, pattern, unpack, line_format, \
                 label_format, drop, keep, decolorize, unwrap, or a label filter like \
                 level=\"error\"",
            ),
        }
    }

    /// Optional `label="expression", label, ...` after `| json`/`| logfmt`.
    pub(super) fn parse_extractions(&mut self, parser: &str) -> Result<(), LogqlError> {
        if self.kind() != K::Ident || is_reserved(self.text(self.tok())) {
            return Ok(());
        }
        let ctx = format!("in `| {parser}`");
        loop {
            self.label_name(&ctx)?;
            if self.kind() == K::Eq {
                self.bump();
                self.expect_string(&format!("a quoted expression after `=` {ctx}"))?;
            }
            if self.kind() != K::Comma {
                return Ok(());
            }
            self.bump();
        }
    }

    pub(super) fn parse_label_formats(&mut self) -> Result<(), LogqlError> {
        loop {
            let name = self.label_name("in `| label_format`")?;
            self.require(
                K::Eq,
                &format!(
                    "`=` after `{name}` in `| label_format` (e.g. `{name}=other_label` or \
                     `{name}=\"{{{{.other_label}}}}\"`)"
                ),
            )?;
            match self.kind() {
                K::Str => self.bump(),
                K::Ident => {
                    self.label_name("after `=` in `| label_format`")?;
                }
                _ => {
                    return self.expected(
                        "a label name or a quoted template after `=` in `| label_format`",
                    );
                }
            }
            if self.kind() != K::Comma {
                return Ok(());
            }
            self.bump();
        }
    }

    pub(super) fn parse_named_matchers(&mut self, stage: &str) -> Result<(), LogqlError> {
        let ctx = format!("in `| {stage}`");
        loop {
            self.label_name(&ctx)?;
            let op = self.kind();
            if matches!(op, K::Eq | K::Neq | K::Re | K::Nre) {
                self.bump();
                let s = self.expect_string(&format!("a quoted string after the operator {ctx}"))?;
                if matches!(op, K::Re | K::Nre) {
                    self.check_regex(&s)?;
                }
            }
            if self.kind() != K::Comma {
                return Ok(());
            }
            self.bump();
        }
    }

    pub(super) fn parse_line_filter(&mut self) -> Result<(), LogqlError> {
        let op = self.kind();
        let op_text = self.text(self.tok());
        self.bump();
        self.parse_line_filter_value(op, op_text)?;
        // A log query is never the left side of the binary `or`, so an `or`
        // here always continues the line filter.
        while self.at_kw("or") {
            self.bump();
            self.parse_line_filter_value(op, op_text)?;
        }
        Ok(())
    }

    pub(super) fn parse_line_filter_value(
        &mut self,
        op: K,
        op_text: &str,
    ) -> Result<(), LogqlError> {
        match self.kind() {
            K::Str => {
                if matches!(op, K::PipeMatch | K::Nre) {
                    let t = self.tok().clone();
                    self.check_regex(&t)?;
                }
                self.bump();
                Ok(())
            }
            K::Ident if self.at_kw("ip") && self.peek(1).kind == K::LParen => {
                if !matches!(op, K::PipeExact | K::Neq) {
                    return self.fail(format!(
                        "ip(...) can only be used with the `|=` and `!=` line filters, not with \
                         `{op_text}`"
                    ));
                }
                self.parse_ip_call()
            }
            _ => self.expected(&format!(
                "a quoted string after the line filter `{op_text}` or its `or`"
            )),
        }
    }

    /// `ip("...")`, at the `ip` keyword.
    pub(super) fn parse_ip_call(&mut self) -> Result<(), LogqlError> {
        self.bump();
        self.require(K::LParen, "`(` after `ip`")?;
        let s = self.expect_string("a quoted IP address, CIDR prefix or range inside ip(...)")?;
        if let Err(why) = check_ip_pattern(&s.value) {
            return Err(LogqlError::new(
                s.start,
                format!("invalid ip() pattern {}: {why}", clip(self.text(&s))),
            ));
        }
        self.require(K::RParen, "`)` to close ip(")
    }

    /// A label filter expression: terms joined by `and`, `or`, `,` or
    /// nothing, with parentheses.
    pub(super) fn parse_label_filter_expr(&mut self, after_pipe: bool) -> Result<(), LogqlError> {
        self.parse_label_filter_term(after_pipe)?;
        loop {
            let t = self.tok();
            if self.is_kw(t, "and") || self.is_kw(t, "or") || t.kind == K::Comma {
                self.bump();
                self.parse_label_filter_term(false)?;
            } else if t.kind == K::LParen || (t.kind == K::Ident && !is_reserved(self.text(t))) {
                self.parse_label_filter_term(false)?;
            } else {
                return Ok(());
            }
        }
    }

    pub(super) fn parse_label_filter_term(&mut self, after_pipe: bool) -> Result<(), LogqlError> {
        match self.kind() {
            K::LParen => self.nest(|p| {
                p.bump();
                p.parse_label_filter_expr(false)?;
                p.require(K::RParen, "`)` to close the label filter group")
            }),
            K::Ident => {
                let name = self.label_name("in the label filter")?;
                let op = self.kind();
                let op_text = self.text(self.tok());
                match op {
                    K::Eq | K::Neq => {
                        self.bump();
                        match self.kind() {
                            K::Str => {
                                self.bump();
                                Ok(())
                            }
                            K::Ident if self.at_kw("ip") && self.peek(1).kind == K::LParen => {
                                self.parse_ip_call()
                            }
                            _ => self.parse_filter_value(op_text, true),
                        }
                    }
                    K::Re | K::Nre => {
                        self.bump();
                        let s = self.expect_string(&format!(
                            "a quoted regular expression after `{name}{op_text}`"
                        ))?;
                        self.check_regex(&s)?;
                        Ok(())
                    }
                    K::CmpEq | K::Gt | K::Gte | K::Lt | K::Lte => {
                        self.bump();
                        self.parse_filter_value(op_text, false)
                    }
                    _ => {
                        let hint = if after_pipe && name == "distinct" {
                            " (`| distinct` was removed from LogQL before it was ever released)"
                                .to_string()
                        } else if after_pipe {
                            format!(
                                " (`{name}` is not a pipeline stage either; stages are json, \
                                 logfmt, regexp, pattern, unpack, line_format, label_format, \
                                 drop, keep, decolorize and unwrap)"
                            )
                        } else {
                            String::new()
                        };
                        self.expected(&format!(
                            "a comparison operator (=, !=, =~, !~, ==, >, >=, <, <=) after label \
                             `{name}`{hint}"
                        ))
                    }
                }
            }
            _ => self.expected("a label filter like level=\"error\" or status >= 500"),
        }
    }

    /// The right-hand side of a numeric, duration or size label filter.
    pub(super) fn parse_filter_value(
        &mut self,
        op_text: &str,
        strings_ok: bool,
    ) -> Result<(), LogqlError> {
        match self.kind() {
            K::Number | K::Duration | K::Bytes => {
                self.bump();
                Ok(())
            }
            K::Add | K::Sub if self.peek(1).kind == K::Number => {
                self.bump();
                self.bump();
                Ok(())
            }
            K::Str => self.expected(&format!(
                "a number, a duration like 5s or a size like 20KB after `{op_text}` (compare \
                 strings with `=`, `!=`, `=~` or `!~`)"
            )),
            _ if strings_ok => self.expected(&format!(
                "a quoted string, ip(\"...\"), a number, a duration like 5s or a size like 20KB \
                 after `{op_text}`"
            )),
            _ => self.expected(&format!(
                "a number, a duration like 5s or a size like 20KB after `{op_text}`"
            )),
        }
    }

    /// After `| unwrap`: the label, optionally converted, then only label
    /// filters.
    pub(super) fn parse_unwrap(&mut self) -> Result<(), LogqlError> {
        if self.kind() == K::Ident && self.peek(1).kind == K::LParen {
            let conv = clip(&self.lower(self.tok()));
            if !matches!(conv.as_str(), "bytes" | "duration" | "duration_seconds") {
                return self.fail(format!(
                    "unknown conversion `{conv}(...)` in `| unwrap`: use bytes(label), \
                     duration(label) or duration_seconds(label)"
                ));
            }
            self.bump();
            self.bump();
            self.label_name(&format!("inside `{conv}(...)`"))?;
            self.require(K::RParen, &format!("`)` to close {conv}("))?;
        } else if self.kind() == K::Ident {
            self.label_name("after `| unwrap`")?;
        } else {
            return self.expected(
                "a label name after `| unwrap`, e.g. `| unwrap latency` or `| unwrap \
                 duration(latency)`",
            );
        }
        loop {
            match self.kind() {
                K::Pipe => {
                    let next = self.peek(1);
                    if next.kind == K::Ident && STAGES.contains(&self.lower(next).as_str()) {
                        return Err(LogqlError::new(
                            next.start,
                            format!(
                                "only label filters (e.g. `| __error__=\"\"`) may follow `| \
                                 unwrap`: move `| {}` before the unwrap",
                                self.text(next)
                            ),
                        ));
                    }
                    self.bump();
                    self.parse_label_filter_expr(false)?;
                }
                K::PipeExact | K::PipeMatch | K::PipePattern | K::Neq | K::Nre | K::Npa => {
                    return self.fail(
                        "line filters must come before `| unwrap`; only label filters (e.g. `| \
                         __error__=\"\"`) may follow it",
                    );
                }
                _ => return Ok(()),
            }
        }
    }
}
