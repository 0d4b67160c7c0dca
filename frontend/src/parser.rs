//! The parser: tokens to an [`ast::File`](crate::ast::File), by recursive descent (precedence
//! climbing for binary operators).
//!
//! It always returns a tree, possibly partial, and every diagnostic it found.
//! A bad statement gives one diagnostic and the parser skips to the next
//! newline or to the `}` that closes the body; a bad item header skips to the
//! next `config`, `block` or `model`. Nothing is reported for an
//! [`TokenKind::Error`] token (the lexer has reported it) nor twice at one
//! token, so one mistake gives one message. Nesting is limited to
//! [`MAX_NESTING`] levels so that no input can overflow the stack.

use crate::ast::*;
use crate::diagnostic::Diagnostic;
use crate::lexer::{Token, TokenKind, lex};
use crate::source::{FileId, Span};

/// How deeply expressions and bodies may nest: parentheses, brackets, call
/// arguments, prefix operators, right operands of `**`, bodies and `else if`.
pub const MAX_NESTING: u32 = 256;

/// The stack the parser runs on. Nesting is limited to [`MAX_NESTING`], but
/// a level of nesting costs several kilobytes of stack in a debug build, more
/// than the 2 MiB of a test thread allow; the parser runs on a thread of its
/// own with this much (reserved, not committed, memory).
const PARSER_STACK: usize = 64 << 20;

/// Parses one file. Diagnostics (lexer and parser) come in source order.
pub fn parse_file(file: FileId, text: &str) -> (File, Vec<Diagnostic>) {
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name("lpac-parser".to_string())
            .stack_size(PARSER_STACK)
            .spawn_scoped(scope, || parse_on_this_thread(file, text));
        match thread {
            Ok(handle) => handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            // No thread to be had: parse here, which is fine for any input
            // with a sane nesting depth.
            Err(_) => parse_on_this_thread(file, text),
        }
    })
}

fn parse_on_this_thread(file: FileId, text: &str) -> (File, Vec<Diagnostic>) {
    let (tokens, mut diags) = lex(file, text);
    let mut parser = Parser {
        text,
        tokens,
        pos: 0,
        prev: Span::new(file, 0, 0),
        diags: Vec::new(),
        depth: 0,
        last_error_at: None,
        misindented: None,
    };
    let items = parser.items();
    diags.append(&mut parser.diags);
    diags.sort_by_key(|d| d.span.start);
    (File { items }, diags)
}

/// A parse failed; its diagnostic has been recorded (or deliberately not).
struct Fail;

type PResult<T> = Result<T, Fail>;

// Binding powers of binary operators and of the prefix operators.
const OR: u8 = 1;
const AND: u8 = 2;
const NOT: u8 = 3;
const CMP: u8 = 4;
const ADD: u8 = 5;
const MUL: u8 = 6;
const NEG: u8 = 7;
const POW: u8 = 8;

fn binary_op(kind: &TokenKind) -> Option<(BinOp, u8)> {
    use TokenKind as T;
    Some(match kind {
        T::Or => (BinOp::Or, OR),
        T::And => (BinOp::And, AND),
        T::Lt => (BinOp::Lt, CMP),
        T::Le => (BinOp::Le, CMP),
        T::Gt => (BinOp::Gt, CMP),
        T::Ge => (BinOp::Ge, CMP),
        T::EqEq => (BinOp::Eq, CMP),
        T::Ne => (BinOp::Ne, CMP),
        T::Plus => (BinOp::Add, ADD),
        T::Minus => (BinOp::Sub, ADD),
        T::Star => (BinOp::Mul, MUL),
        T::Slash => (BinOp::Div, MUL),
        T::At => (BinOp::MatMul, MUL),
        T::StarStar => (BinOp::Pow, POW),
        _ => return None,
    })
}

const STATEMENT_NOTE: &str = "a statement is `name = expr`, `param`, `if`, `for`, `return` or `assert`";

struct Parser<'a> {
    text: &'a str,
    /// Never empty: the last token is `Eof`.
    tokens: Vec<Token>,
    pos: usize,
    /// The span of the last token consumed.
    prev: Span,
    diags: Vec<Diagnostic>,
    depth: u32,
    /// The token index of the last diagnostic, so that one place gets one.
    last_error_at: Option<usize>,
    /// In the current item, the first `{` whose `}` is indented unlike the
    /// line of the `{`, and that `}`: when a body is left open, that `}` was
    /// likely meant for an outer `{`.
    misindented: Option<(Span, Span)>,
}

impl Parser<'_> {
    // ---- Tokens ----

    fn tok(&self) -> &Token {
        &self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    fn kind(&self) -> &TokenKind {
        &self.tok().kind
    }

    fn kind_at(&self, ahead: usize) -> &TokenKind {
        let i = (self.pos + ahead).min(self.tokens.len() - 1);
        &self.tokens[i].kind
    }

    fn at(&self, kind: &TokenKind) -> bool {
        self.kind() == kind
    }

    fn bump(&mut self) -> Token {
        let token = self.tok().clone();
        if token.kind != TokenKind::Eof {
            self.pos += 1;
        }
        self.prev = token.span;
        token
    }

    fn eat(&mut self, kind: &TokenKind) -> Option<Span> {
        if self.at(kind) { Some(self.bump().span) } else { None }
    }

    // ---- Diagnostics ----

    /// Records `d` unless the current token is an `Error` token or already
    /// has a diagnostic.
    fn report(&mut self, d: Diagnostic) -> Fail {
        if self.tok().kind != TokenKind::Error && self.last_error_at != Some(self.pos) {
            self.diags.push(d);
            self.last_error_at = Some(self.pos);
        }
        Fail
    }

    /// `expected {what}, found {the current token}`, at the current token.
    fn expected_diag(&self, what: &str) -> Diagnostic {
        let found = self.tok().describe(self.text);
        Diagnostic::error(self.tok().span, format!("expected {what}, found {found}"))
    }

    fn expected(&mut self, what: &str) -> Fail {
        let d = self.expected_diag(what);
        self.report(d)
    }

    fn expect(&mut self, kind: &TokenKind) -> PResult<Span> {
        match self.eat(kind) {
            Some(span) => Ok(span),
            None => Err(self.expected(&format!("`{}`", kind.symbol()))),
        }
    }

    fn ident(&mut self, what: &str) -> PResult<Ident> {
        if let TokenKind::Ident(name) = self.kind() {
            let name = name.clone();
            let span = self.bump().span;
            Ok(Ident { name, span })
        } else {
            Err(self.expected(what))
        }
    }

    /// Runs `f` one nesting level deeper, failing past [`MAX_NESTING`].
    fn nested<T>(&mut self, f: impl FnOnce(&mut Self) -> PResult<T>) -> PResult<T> {
        if self.depth >= MAX_NESTING {
            let d = Diagnostic::error(self.tok().span, format!("nested too deeply: more than {MAX_NESTING} levels"))
                .with_label("the limit is reached here");
            return Err(self.report(d));
        }
        self.depth += 1;
        let result = f(self);
        self.depth -= 1;
        result
    }

    /// The leading blanks of the line `span` starts on.
    fn indent(&self, span: Span) -> &str {
        let start = self.text[..span.start as usize].rfind('\n').map_or(0, |i| i + 1);
        let line = &self.text[start..];
        &line[..line.len() - line.trim_start_matches([' ', '\t']).len()]
    }

    /// Whether only blanks precede `span` on its line.
    fn starts_line(&self, span: Span) -> bool {
        let before = &self.text[..span.start as usize];
        let start = before.rfind('\n').map_or(0, |i| i + 1);
        before[start..].trim_start_matches([' ', '\t']).is_empty()
    }

    /// 1-based line and column (in characters) of the start of `span`.
    fn line_col(&self, span: Span) -> (usize, usize) {
        let before = &self.text[..span.start as usize];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        (before.matches('\n').count() + 1, before[line_start..].chars().count() + 1)
    }

    // ---- Recovery ----

    fn is_item_keyword(kind: &TokenKind) -> bool {
        matches!(kind, TokenKind::Config | TokenKind::Block | TokenKind::Model)
    }

    /// Skips the rest of a bad statement: up to the next newline or the `}`
    /// closing the current body (braces in between are matched), or an item
    /// keyword, which cannot be inside a body.
    fn skip_statement(&mut self) {
        let mut depth = 0usize;
        loop {
            match self.kind() {
                TokenKind::Eof => return,
                k if Self::is_item_keyword(k) => return,
                TokenKind::Newline | TokenKind::RBrace if depth == 0 => return,
                TokenKind::LBrace => depth += 1,
                TokenKind::RBrace => depth -= 1,
                _ => {}
            }
            self.bump();
        }
    }

    /// Skips the rest of a bad item: up to an item keyword outside braces or
    /// at the start of a line.
    fn skip_item(&mut self) {
        let mut depth = 0usize;
        loop {
            match self.kind() {
                TokenKind::Eof => return,
                k if Self::is_item_keyword(k) => {
                    let line_start = self.pos == 0 || self.tokens[self.pos - 1].kind == TokenKind::Newline;
                    if depth == 0 || line_start {
                        return;
                    }
                }
                TokenKind::LBrace => depth += 1,
                TokenKind::RBrace => depth = depth.saturating_sub(1),
                _ => {}
            }
            self.bump();
        }
    }

    // ---- Items ----

    fn items(&mut self) -> Vec<Item> {
        let mut items = Vec::new();
        loop {
            self.misindented = None;
            let result = match self.kind() {
                TokenKind::Eof => break,
                TokenKind::Newline => {
                    self.bump();
                    continue;
                }
                TokenKind::Config => self.config(),
                TokenKind::Block => self.block().map(Item::Block),
                TokenKind::Model => self.model().map(Item::Model),
                _ => Err(self.expected("`config`, `block` or `model`")),
            };
            match result {
                Ok(item) => items.push(item),
                Err(Fail) => self.skip_item(),
            }
        }
        items
    }

    fn config(&mut self) -> PResult<Item> {
        self.bump();
        let open = self.open_brace()?;
        let (entries, _) = self.nested(|p| Ok(p.braced(open, Self::config_entry)))?;
        Ok(Item::Config(entries))
    }

    fn config_entry(&mut self) -> PResult<ConfigEntry> {
        let name = self.ident("a config entry `name = value`")?;
        self.expect(&TokenKind::Assign)?;
        let value = self.expr()?;
        let doc = self.tokens[self.pos.saturating_sub(1)].trailing_comment.clone().filter(|doc| !doc.is_empty());
        Ok(ConfigEntry { name, value, doc })
    }

    fn block(&mut self) -> PResult<BlockDef> {
        let keyword = self.bump().span;
        let name = self.ident("identifier")?;
        self.expect(&TokenKind::LParen)?;
        let (params, _) = self.comma_list(TokenKind::RParen, |p| {
            let name = p.ident("identifier")?;
            let default = if p.eat(&TokenKind::Assign).is_some() { Some(p.expr()?) } else { None };
            Ok(BlockParam { name, default })
        })?;
        let (body, end) = self.body()?;
        Ok(BlockDef { name, params, body, span: keyword.to(end) })
    }

    fn model(&mut self) -> PResult<ModelDef> {
        let keyword = self.bump().span;
        let name = self.ident("identifier")?;
        self.expect(&TokenKind::LParen)?;
        let (inputs, _) = self.comma_list(TokenKind::RParen, |p| {
            let name = p.ident("identifier")?;
            p.expect(&TokenKind::Colon)?;
            let ty = p.type_expr()?;
            Ok(InputDecl { name, ty })
        })?;
        let (body, end) = self.body()?;
        Ok(ModelDef { name, inputs, body, span: keyword.to(end) })
    }

    // ---- Bodies and statements ----

    /// The `{` of a body; it may be on the next line.
    fn open_brace(&mut self) -> PResult<Span> {
        if self.at(&TokenKind::Newline) && *self.kind_at(1) == TokenKind::LBrace {
            self.bump();
        }
        if self.at(&TokenKind::Assign) {
            let d = self.expected_diag("`{`").with_note("use `==` to compare");
            return Err(self.report(d));
        }
        self.expect(&TokenKind::LBrace)
    }

    /// `{ stmt* }`: the statements and the span of the `}` (or of the last
    /// token, when the body is never closed).
    fn body(&mut self) -> PResult<(Vec<Stmt>, Span)> {
        let open = self.open_brace()?;
        self.nested(|p| Ok(p.braced(open, Self::stmt)))
    }

    /// The contents of `{ ... }` after the `{`: entries parsed by `entry`,
    /// each ended by a newline or the `}`. Recovers from bad entries; reports
    /// a body left open at the end of the file or at the next item.
    fn braced<S>(&mut self, open: Span, mut entry: impl FnMut(&mut Self) -> PResult<S>) -> (Vec<S>, Span) {
        let mut entries = Vec::new();
        loop {
            match self.kind() {
                TokenKind::Newline => {
                    self.bump();
                }
                TokenKind::RBrace => {
                    let close = self.bump().span;
                    if self.misindented.is_none() && self.starts_line(close) && self.indent(open) != self.indent(close)
                    {
                        self.misindented = Some((open, close));
                    }
                    return (entries, close);
                }
                k if Self::is_item_keyword(k) && *self.kind_at(1) == TokenKind::Assign => {
                    // `model = 1`: a keyword as a name, not the next item.
                    let word = k.symbol();
                    let d = self
                        .expected_diag("identifier")
                        .with_note(format!("`{word}` is a keyword; choose another name"));
                    self.report(d);
                    self.bump();
                    self.skip_statement();
                }
                k if *k == TokenKind::Eof || Self::is_item_keyword(k) => {
                    let mut d = self.expected_diag("`}`").with_secondary(open, "this `{` is not closed");
                    if let Some((inner_open, inner_close)) = self.misindented.take() {
                        let (line, _) = self.line_col(inner_close);
                        d = d.with_secondary(
                            inner_open,
                            format!("perhaps this `{{` lacks its `}}`: the `}}` on line {line} that closes it is indented differently"),
                        );
                    }
                    self.report(d);
                    return (entries, self.prev);
                }
                _ => match entry(self) {
                    Ok(e) => {
                        entries.push(e);
                        if !matches!(self.kind(), TokenKind::Newline | TokenKind::RBrace | TokenKind::Eof) {
                            self.expected("newline");
                            self.skip_statement();
                        }
                    }
                    Err(Fail) => self.skip_statement(),
                },
            }
        }
    }

    fn stmt(&mut self) -> PResult<Stmt> {
        match self.kind() {
            TokenKind::Param => self.param(),
            TokenKind::If => self.if_stmt(),
            TokenKind::For => self.for_stmt(),
            TokenKind::Return => {
                let keyword = self.bump().span;
                let value = self.expr()?;
                let span = keyword.to(value.span);
                Ok(Stmt::Return { value, span })
            }
            TokenKind::Assert => {
                let keyword = self.bump().span;
                let cond = self.expr()?;
                let mut span = keyword.to(cond.span);
                let mut message = None;
                if self.eat(&TokenKind::Comma).is_some() {
                    let TokenKind::Str(text) = self.kind() else { return Err(self.expected("string")) };
                    message = Some(text.clone());
                    span = span.to(self.bump().span);
                }
                Ok(Stmt::Assert { cond, message, span })
            }
            TokenKind::Ident(_) => {
                let name = self.ident("identifier")?;
                if !self.at(&TokenKind::Assign) {
                    let mut d = self.expected_diag("`=`");
                    if self.at(&TokenKind::Colon) {
                        d = d.with_note(format!("to declare a parameter, write `param {}: [...] = ...`", name.name));
                    } else if self.at(&TokenKind::LParen) || self.at(&TokenKind::LBracket) {
                        d = d.with_note("a call on its own is not a statement; bind its result: `y = f(...)`");
                    }
                    return Err(self.report(d));
                }
                self.bump();
                let value = self.expr()?;
                Ok(Stmt::Assign { name, value })
            }
            TokenKind::Else => {
                let d = self
                    .expected_diag("statement")
                    .with_note("`else` must follow the `}` that closes the body of an `if`");
                Err(self.report(d))
            }
            _ => {
                let d = self.expected_diag("statement").with_note(STATEMENT_NOTE);
                Err(self.report(d))
            }
        }
    }

    fn param(&mut self) -> PResult<Stmt> {
        let keyword = self.bump().span;
        let name = self.ident("identifier")?;
        self.expect(&TokenKind::Colon)?;
        let ty = self.type_expr()?;
        self.expect(&TokenKind::Assign)?;
        let init = self.expr()?;
        let span = keyword.to(init.span);
        Ok(Stmt::Param { name, ty, init, span })
    }

    fn if_stmt(&mut self) -> PResult<Stmt> {
        let keyword = self.bump().span;
        let cond = self.expr()?;
        let (then_body, mut end) = self.body()?;
        let mut else_body = Vec::new();
        // `}` newline `else` is accepted too.
        if self.at(&TokenKind::Newline) && *self.kind_at(1) == TokenKind::Else {
            self.bump();
        }
        if self.eat(&TokenKind::Else).is_some() {
            if self.at(&TokenKind::If) {
                let nested = self.nested(Self::if_stmt)?;
                if let Stmt::If { span, .. } = &nested {
                    end = *span;
                }
                else_body.push(nested);
            } else {
                if !self.at(&TokenKind::LBrace) && !self.at(&TokenKind::Newline) {
                    return Err(self.expected("`{` or `if`"));
                }
                let (body, close) = self.body()?;
                else_body = body;
                end = close;
            }
        }
        Ok(Stmt::If { cond, then_body, else_body, span: keyword.to(end) })
    }

    fn for_stmt(&mut self) -> PResult<Stmt> {
        let keyword = self.bump().span;
        let var = self.ident("identifier")?;
        self.expect(&TokenKind::In)?;
        let start = self.expr()?;
        if !self.at(&TokenKind::DotDot) {
            let d = self.expected_diag("`..`").with_note("a loop runs over a range of integers: `for i in 0..n`");
            return Err(self.report(d));
        }
        self.bump();
        let end = self.expr()?;
        let (body, close) = self.body()?;
        Ok(Stmt::For { var, start, end, body, span: keyword.to(close) })
    }

    /// `f32[d, 4 * d]` or `[d]`.
    fn type_expr(&mut self) -> PResult<TypeExpr> {
        let start = self.tok().span;
        let dtype = match self.kind() {
            TokenKind::Ident(_) => Some(self.ident("identifier")?),
            _ => None,
        };
        if !self.at(&TokenKind::LBracket) {
            let what = if dtype.is_some() { "`[`" } else { "a type such as `f32[d]` or `[d]`" };
            return Err(self.expected(what));
        }
        self.bump();
        let (dims, close) = self.comma_list(TokenKind::RBracket, Self::expr)?;
        Ok(TypeExpr { dtype, dims, span: start.to(close) })
    }

    /// Items separated by commas (a trailing comma allowed) up to `close`,
    /// after the opening bracket. Returns the span of `close`.
    fn comma_list<X>(
        &mut self,
        close: TokenKind,
        mut item: impl FnMut(&mut Self) -> PResult<X>,
    ) -> PResult<(Vec<X>, Span)> {
        let mut items = Vec::new();
        loop {
            if let Some(span) = self.eat(&close) {
                return Ok((items, span));
            }
            items.push(item(self)?);
            if !self.at(&close) && self.eat(&TokenKind::Comma).is_none() {
                return Err(self.expected(&format!("`{}` or `,`", close.symbol())));
            }
        }
    }

    // ---- Expressions ----

    fn expr(&mut self) -> PResult<Expr> {
        self.nested(|p| p.binary(0))
    }

    /// An expression whose operators all bind at least as tightly as `min`.
    fn binary(&mut self, min: u8) -> PResult<Expr> {
        let mut lhs = match self.kind() {
            TokenKind::Not if min <= NOT => self.prefix(UnaryOp::Not, NOT)?,
            TokenKind::Minus if min <= NEG => self.prefix(UnaryOp::Neg, NEG)?,
            _ => self.primary()?,
        };
        // The operator of the comparison `lhs` is, to reject `a < b < c`.
        let mut comparison: Option<Span> = None;
        while let Some((op, power)) = binary_op(self.kind()) {
            if power < min {
                break;
            }
            let op_span = self.bump().span;
            if power == CMP
                && let Some(first) = comparison
            {
                self.diags.push(
                    Diagnostic::error(op_span, "comparison operators cannot be chained")
                        .with_label("second comparison")
                        .with_secondary(first, "first comparison")
                        .with_note("combine comparisons with `and`: `a < b and b < c`"),
                );
            }
            let rhs = if op == BinOp::Pow {
                // Right-associative; the exponent may be negated: `x ** -2`.
                self.nested(|p| p.binary(NEG))?
            } else {
                self.binary(power + 1)?
            };
            comparison = (power == CMP).then_some(op_span);
            let span = lhs.span.to(rhs.span);
            lhs = Expr { kind: ExprKind::Binary { op, lhs: Box::new(lhs), rhs: Box::new(rhs) }, span };
        }
        Ok(lhs)
    }

    fn prefix(&mut self, op: UnaryOp, power: u8) -> PResult<Expr> {
        let op_span = self.bump().span;
        let operand = self.nested(|p| p.binary(power))?;
        let span = op_span.to(operand.span);
        Ok(Expr { kind: ExprKind::Unary { op, operand: Box::new(operand) }, span })
    }

    fn primary(&mut self) -> PResult<Expr> {
        let token = self.tok().clone();
        let kind = match token.kind {
            TokenKind::Int(v) => ExprKind::Int(v),
            TokenKind::Float(v) => ExprKind::Float(v),
            TokenKind::True => ExprKind::Bool(true),
            TokenKind::False => ExprKind::Bool(false),
            TokenKind::Str(s) => ExprKind::Str(s),
            TokenKind::LParen => {
                self.bump();
                let mut inner = self.expr()?;
                let close = self.expect(&TokenKind::RParen)?;
                inner.span = token.span.to(close);
                return Ok(inner);
            }
            TokenKind::LBracket => {
                self.bump();
                let (items, close) = self.comma_list(TokenKind::RBracket, Self::expr)?;
                return Ok(Expr { kind: ExprKind::List(items), span: token.span.to(close) });
            }
            TokenKind::Ident(name) => return self.name_or_call(Ident { name, span: token.span }),
            _ => return Err(self.expected("expression")),
        };
        self.bump();
        Ok(Expr { kind, span: token.span })
    }

    /// After an identifier: a name, a call `f(...)` or a scoped call
    /// `f[scope.path](...)`.
    fn name_or_call(&mut self, callee: Ident) -> PResult<Expr> {
        self.bump();
        let scope = if self.at(&TokenKind::LBracket) { Some(self.scope()?) } else { None };
        if !self.at(&TokenKind::LParen) {
            let Some(scope) = scope else {
                return Ok(Expr { kind: ExprKind::Name(callee.name), span: callee.span });
            };
            let d = self.expected_diag("`(`").with_note(format!(
                "`{}[{}]` is a scope: it must be followed by the call's arguments, as in `{}[{}](...)`",
                callee.name,
                segments(&scope),
                callee.name,
                segments(&scope)
            ));
            return Err(self.report(d));
        }
        self.bump();
        let (args, close) = self.comma_list(TokenKind::RParen, |p| {
            let name = match (p.kind(), p.kind_at(1)) {
                (TokenKind::Ident(_), TokenKind::Assign) => {
                    let name = p.ident("identifier")?;
                    p.bump();
                    Some(name)
                }
                _ => None,
            };
            let value = p.expr()?;
            Ok(Arg { name, value })
        })?;
        let span = callee.span.to(close);
        Ok(Expr { kind: ExprKind::Call { callee, scope, args }, span })
    }

    /// `[a.b.0]` after a callee: the path between the brackets.
    fn scope(&mut self) -> PResult<ScopePath> {
        self.bump();
        let first = self.ident("identifier")?;
        let mut span = first.span;
        let mut segments = vec![first];
        while self.eat(&TokenKind::Dot).is_some() {
            let segment = match self.kind() {
                TokenKind::Ident(_) => self.ident("identifier")?,
                TokenKind::Int(_) => {
                    let span = self.bump().span;
                    let name = self.text[span.start as usize..span.end as usize].to_string();
                    Ident { name, span }
                }
                _ => return Err(self.expected("identifier or number")),
            };
            span = span.to(segment.span);
            segments.push(segment);
        }
        if !self.at(&TokenKind::RBracket) {
            return Err(self.expected("`.` or `]`"));
        }
        self.bump();
        Ok(ScopePath { segments, span })
    }
}

fn segments(scope: &ScopePath) -> String {
    scope.segments.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(".")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostic::render_all;
    use crate::source::SourceMap;

    const F: FileId = FileId(0);

    fn parse_ok(text: &str) -> File {
        let (file, diags) = parse_file(F, text);
        assert!(diags.is_empty(), "unexpected diagnostics for {text:?}:\n{diags:#?}");
        file
    }

    fn messages(text: &str) -> Vec<String> {
        parse_file(F, text).1.into_iter().map(|d| d.message).collect()
    }

    fn rendered(text: &str) -> String {
        let mut map = SourceMap::new();
        let id = map.add("m.lpa", text.to_string(), false);
        let (_, diags) = parse_file(id, text);
        render_all(&diags, &map)
    }

    /// The statements of the only model of a file.
    fn model_body(text: &str) -> Vec<Stmt> {
        match parse_ok(text).items.as_slice() {
            [Item::Model(m)] => m.body.clone(),
            items => panic!("expected one model, got {items:?}"),
        }
    }

    /// The expression `text` as an S-expression.
    fn expr(text: &str) -> String {
        let body = model_body(&format!("model m() {{\n  x = {text}\n}}\n"));
        match body.as_slice() {
            [Stmt::Assign { value, .. }] => sx(value),
            other => panic!("{other:?}"),
        }
    }

    fn sx(e: &Expr) -> String {
        match &e.kind {
            ExprKind::Int(v) => v.to_string(),
            ExprKind::Float(v) => format!("{v:?}"),
            ExprKind::Bool(b) => b.to_string(),
            ExprKind::Str(s) => format!("{s:?}"),
            ExprKind::Name(n) => n.clone(),
            ExprKind::List(items) => format!("[{}]", items.iter().map(sx).collect::<Vec<_>>().join(" ")),
            ExprKind::Unary { op, operand } => {
                format!("({} {})", if *op == UnaryOp::Neg { "neg" } else { "not" }, sx(operand))
            }
            ExprKind::Binary { op, lhs, rhs } => format!("({} {} {})", op.symbol(), sx(lhs), sx(rhs)),
            ExprKind::Call { callee, scope, args } => {
                let scope = scope.as_ref().map(|s| format!("[{}]", segments(s))).unwrap_or_default();
                let args: Vec<String> = args
                    .iter()
                    .map(|a| match &a.name {
                        Some(n) => format!("{}={}", n.name, sx(&a.value)),
                        None => sx(&a.value),
                    })
                    .collect();
                format!("{}{}({})", callee.name, scope, args.join(" "))
            }
        }
    }

    fn text_of(text: &str, span: Span) -> &str {
        &text[span.start as usize..span.end as usize]
    }

    #[test]
    fn precedence() {
        assert_eq!(expr("a + b * c"), "(+ a (* b c))");
        assert_eq!(expr("a * b + c"), "(+ (* a b) c)");
        assert_eq!(expr("-x ** 2"), "(neg (** x 2))");
        assert_eq!(expr("a @ b + c"), "(+ (@ a b) c)");
        assert_eq!(expr("not a and b"), "(and (not a) b)");
        assert_eq!(expr("not a == b"), "(not (== a b))");
        assert_eq!(expr("a or b and c"), "(or a (and b c))");
        assert_eq!(expr("a and not b or c"), "(or (and a (not b)) c)");
        assert_eq!(expr("a - b - c"), "(- (- a b) c)");
        assert_eq!(expr("a / b * c"), "(* (/ a b) c)");
        assert_eq!(expr("a ** b ** c"), "(** a (** b c))");
        assert_eq!(expr("2 ** -1"), "(** 2 (neg 1))");
        assert_eq!(expr("-a * b"), "(* (neg a) b)");
        assert_eq!(expr("a * -b"), "(* a (neg b))");
        assert_eq!(expr("- - a"), "(neg (neg a))");
        assert_eq!(expr("(a + b) * c"), "(* (+ a b) c)");
        assert_eq!(expr("a + b < c * d and e != f"), "(and (< (+ a b) (* c d)) (!= e f))");
        assert_eq!(expr("(a < b) == c"), "(== (< a b) c)");
        assert_eq!(expr("1.5e-3 + 2 + true"), "(+ (+ 0.0015 2) true)");
    }

    #[test]
    fn calls_lists_and_scopes() {
        assert_eq!(expr("linear[layers.i.q](x, d, bias=false)"), "linear[layers.i.q](x d bias=false)");
        assert_eq!(expr("f()"), "f()");
        assert_eq!(expr("f(a,)"), "f(a)");
        assert_eq!(expr("layer[layers.0.1](h)"), "layer[layers.0.1](h)");
        assert_eq!(expr("softmax(x, axis=-1)"), "softmax(x axis=(neg 1))");
        assert_eq!(expr("f(a == b)"), "f((== a b))");
        assert_eq!(expr("[1, [2, 3], \"s\",]"), "[1 [2 3] \"s\"]");
        assert_eq!(expr("[]"), "[]");
        assert_eq!(expr("reshape(x, [b,\n   s, -1])"), "reshape(x [b s (neg 1)])");
        assert_eq!(expr("f(\n  a,\n  b = 2,\n)"), "f(a b=2)");
    }

    #[test]
    fn expression_spans() {
        let text = "model m() {\n  y = linear[a.b](x, d) + -z ** 2\n  w = (a)\n}\n";
        let body = model_body(text);
        let Stmt::Assign { name, value } = &body[0] else { panic!() };
        assert_eq!(text_of(text, name.span), "y");
        assert_eq!(text_of(text, value.span), "linear[a.b](x, d) + -z ** 2");
        let ExprKind::Binary { lhs, rhs, .. } = &value.kind else { panic!() };
        assert_eq!(text_of(text, lhs.span), "linear[a.b](x, d)");
        assert_eq!(text_of(text, rhs.span), "-z ** 2");
        let ExprKind::Call { callee, scope, args } = &lhs.kind else { panic!() };
        assert_eq!(text_of(text, callee.span), "linear");
        let scope = scope.as_ref().unwrap();
        assert_eq!(text_of(text, scope.span), "a.b");
        assert_eq!(text_of(text, scope.segments[1].span), "b");
        assert_eq!(text_of(text, args[1].value.span), "d");
        let Stmt::Assign { value, .. } = &body[1] else { panic!() };
        assert_eq!(text_of(text, value.span), "(a)");
    }

    #[test]
    fn config_with_docs() {
        let text = "config {\n  vocab = 256        # vocabulary size\n  d = 256\n  head_dim = d / heads   #  per head  \n  # a comment line\n  dropout = 0.1 #\n  sizes = [1,\n     2]  # a list\n}\n";
        let file = parse_ok(text);
        let [Item::Config(entries)] = file.items.as_slice() else { panic!("{file:?}") };
        let summary: Vec<(String, String, Option<String>)> =
            entries.iter().map(|e| (e.name.name.clone(), sx(&e.value), e.doc.clone())).collect();
        assert_eq!(
            summary,
            vec![
                ("vocab".into(), "256".into(), Some("vocabulary size".into())),
                ("d".into(), "256".into(), None),
                ("head_dim".into(), "(/ d heads)".into(), Some("per head".into())),
                ("dropout".into(), "0.1".into(), None),
                ("sizes".into(), "[1 2]".into(), Some("a list".into())),
            ]
        );
        // One-line config.
        let file = parse_ok("config { a = 1 }");
        assert!(matches!(file.items.as_slice(), [Item::Config(e)] if e.len() == 1));
    }

    #[test]
    fn if_else_if_else() {
        let text = "model m() {\n  if a {\n    x = 1\n  } else if b {\n    x = 2\n  } else {\n    x = 3\n    y = 4\n  }\n  if c { return x }\n  if d {\n  }\n  else {\n  }\n}\n";
        let body = model_body(text);
        assert_eq!(body.len(), 3);
        let Stmt::If { cond, then_body, else_body, span } = &body[0] else { panic!() };
        assert_eq!(sx(cond), "a");
        assert_eq!(then_body.len(), 1);
        assert!(text_of(text, *span).starts_with("if a {") && text_of(text, *span).ends_with("y = 4\n  }"));
        let [Stmt::If { cond, then_body, else_body: inner_else, span }] = else_body.as_slice() else { panic!() };
        assert_eq!(sx(cond), "b");
        assert!(text_of(text, *span).starts_with("if b {"));
        assert_eq!(then_body.len(), 1);
        assert_eq!(inner_else.len(), 2);
        let Stmt::If { then_body, else_body, .. } = &body[1] else { panic!() };
        assert!(matches!(then_body.as_slice(), [Stmt::Return { .. }]));
        assert!(else_body.is_empty());
        assert!(matches!(&body[2], Stmt::If { .. }));
    }

    #[test]
    fn for_param_assert_return() {
        let text = "block b(x, n, bias = true,) {\n  for i in 0..n - 1 {\n    x = layer[layers.i](x)\n  }\n  param w: [d, 4 * d] = normal(0.0, 0.02)\n  param s: f32[] = zeros()\n  param t: i32[d,] = zeros()\n  assert d % 1 == 0\n  assert d > 0, \"d must be \\\"positive\\\"\"\n  return x\n}\n";
        // `%` is not an operator: one diagnostic, the other statements parse.
        let (file, diags) = parse_file(F, text);
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert_eq!(diags[0].message, "unexpected character `%`");
        let [Item::Block(block)] = file.items.as_slice() else { panic!() };
        assert_eq!(block.name.name, "b");
        let params: Vec<String> = block
            .params
            .iter()
            .map(|p| {
                format!("{}{}", p.name.name, p.default.as_ref().map(|d| format!("={}", sx(d))).unwrap_or_default())
            })
            .collect();
        assert_eq!(params, ["x", "n", "bias=true"]);
        // `assert d` is kept (the rest of its line is skipped): 7 statements.
        assert_eq!(block.body.len(), 7, "{:#?}", block.body);
        let Stmt::For { var, start, end, body, span } = &block.body[0] else { panic!() };
        assert_eq!((var.name.as_str(), sx(start).as_str(), sx(end).as_str()), ("i", "0", "(- n 1)"));
        assert_eq!(body.len(), 1);
        assert!(text_of(text, *span).starts_with("for i") && text_of(text, *span).ends_with("}"));
        let Stmt::Param { name, ty, init, span } = &block.body[1] else { panic!() };
        assert_eq!(name.name, "w");
        assert!(ty.dtype.is_none());
        assert_eq!(ty.dims.iter().map(sx).collect::<Vec<_>>(), ["d", "(* 4 d)"]);
        assert_eq!(text_of(text, ty.span), "[d, 4 * d]");
        assert_eq!(sx(init), "normal(0.0 0.02)");
        assert_eq!(text_of(text, *span), "param w: [d, 4 * d] = normal(0.0, 0.02)");
        let Stmt::Param { ty, .. } = &block.body[2] else { panic!() };
        assert_eq!(ty.dtype.as_ref().unwrap().name, "f32");
        assert!(ty.dims.is_empty());
        assert_eq!(text_of(text, ty.span), "f32[]");
        let Stmt::Param { ty, .. } = &block.body[3] else { panic!() };
        assert_eq!(ty.dtype.as_ref().unwrap().name, "i32");
        assert_eq!(ty.dims.len(), 1);
        let Stmt::Assert { cond, message, span } = &block.body[5] else { panic!() };
        assert_eq!(sx(cond), "(> d 0)");
        assert_eq!(message.as_deref(), Some("d must be \"positive\""));
        assert!(text_of(text, *span).starts_with("assert d > 0") && text_of(text, *span).ends_with("\\\"\""));

        let body = model_body("model m() {\n  assert ok\n  return x\n}");
        assert!(matches!(&body[0], Stmt::Assert { message: None, .. }));
        assert!(matches!(&body[1], Stmt::Return { value: Expr { kind: ExprKind::Name(n), .. }, .. } if n == "x"));
    }

    #[test]
    fn model_inputs() {
        let text =
            "model tiny(tokens: i32[batch, seq],\n           targets: i32[batch, seq], mask: [seq]) {\n  return 0\n}";
        let file = parse_ok(text);
        let [Item::Model(m)] = file.items.as_slice() else { panic!() };
        assert_eq!(m.name.name, "tiny");
        let inputs: Vec<String> = m
            .inputs
            .iter()
            .map(|i| {
                let dtype = i.ty.dtype.as_ref().map(|d| d.name.clone()).unwrap_or_default();
                format!("{}: {}{:?}", i.name.name, dtype, i.ty.dims.iter().map(sx).collect::<Vec<_>>())
            })
            .collect();
        assert_eq!(inputs, ["tokens: i32[\"batch\", \"seq\"]", "targets: i32[\"batch\", \"seq\"]", "mask: [\"seq\"]"]);
        assert_eq!(text_of(text, m.span), text);
        assert!(parse_ok("model m() {}").items.len() == 1);
    }

    const EXAMPLE: &str = r#"config {
  vocab = 256        # vocabulary size
  d = 256
  heads = 4
  head_dim = d / heads
  dropout = 0.1
}

block mlp(x, hidden) {
  h = gelu(linear[fc](x, dim(x, -1), hidden))
  return linear[proj](h, hidden, dim(x, -1))
}

block linear(x, d_in, d_out, bias = true) {
  bound = 1.0 / sqrt(d_in)
  param weight: [d_in, d_out] = uniform(-bound, bound)
  y = x @ weight
  if bias {
    param bias: [d_out] = uniform(-bound, bound)
    y = y + bias
  }
  return y
}

model tiny(tokens: i32[batch, seq], targets: i32[batch, seq]) {
  h = embedding[wte](tokens, vocab, d)
  for i in 0..layers {
    h = layer[layers.i](h)
  }
  return cross_entropy(linear[head](h, d, vocab), targets)
}
"#;

    #[test]
    fn example_parses() {
        let file = parse_ok(EXAMPLE);
        assert_eq!(file.items.len(), 4);
        let Item::Block(linear) = &file.items[2] else { panic!() };
        assert_eq!(linear.name.name, "linear");
        assert_eq!(linear.body.len(), 5);
        assert!(
            text_of(EXAMPLE, linear.span).starts_with("block linear(")
                && text_of(EXAMPLE, linear.span).ends_with("return y\n}")
        );
    }

    // ---- Errors ----

    #[test]
    fn missing_close_paren() {
        let text = "model m() {\n  h = f(x, g(y)\n  return h\n}\n";
        assert_eq!(messages(text), ["expected `)` or `,`, found newline"]);
        // The next statement is still parsed.
        let (file, _) = parse_file(F, text);
        let [Item::Model(m)] = file.items.as_slice() else { panic!() };
        assert!(matches!(m.body.as_slice(), [Stmt::Return { .. }]));
        assert_eq!(messages("model m() {\n  h = f(x d = 2)\n}\n"), ["expected `)` or `,`, found identifier `d`"]);
        assert_eq!(messages("model m() {\n  h = f(x\n}\n"), ["expected `)` or `,`, found newline"]);
        assert_eq!(messages("model m() {\n  h = (a + b\n}\n"), ["expected `)`, found newline"]);
    }

    #[test]
    fn stray_tokens() {
        assert_eq!(messages("model m() {\n  h = a b\n}\n"), ["expected newline, found identifier `b`"]);
        assert_eq!(messages("model m() {\n  ) = 1\n}\n"), ["expected statement, found `)`"]);
        assert_eq!(messages("x = 1\nmodel m() {}\n"), ["expected `config`, `block` or `model`, found identifier `x`"]);
        assert_eq!(messages("model m() {\n  h = 1 + \n}\n"), ["expected expression, found newline"]);
        assert_eq!(messages("model m() {\n  h = a +* b\n}\n"), ["expected expression, found `*`"]);
        assert_eq!(messages("model m() {\n  f(x)\n}\n"), ["expected `=`, found `(`"]);
        assert_eq!(messages("model m() {\n  w: [d] = zeros()\n}\n"), ["expected `=`, found `:`"]);
        assert_eq!(messages("model m() {\n  y = linear[a.b]\n}\n"), ["expected `(`, found newline"]);
        assert_eq!(messages("model m() {\n  y = f[a.](x)\n}\n"), ["expected identifier or number, found `]`"]);
        assert_eq!(messages("model m() {\n  y = x[0]\n}\n"), ["expected identifier, found number 0"]);
        assert_eq!(messages("model m() {\n  param w: d = zeros()\n}\n"), ["expected `[`, found `=`"]);
        assert_eq!(messages("model m() {\n  for i in 0 to n {\n  }\n}\n"), ["expected `..`, found identifier `to`"]);
        assert_eq!(messages("model m() {\n  assert x, 3\n}\n"), ["expected string, found number 3"]);
        assert_eq!(messages("model m() {\n  else {\n  }\n}\n"), ["expected statement, found keyword `else`"]);
        assert_eq!(messages("model m(x) {}"), ["expected `:`, found `)`"]);
        assert_eq!(messages("config {\n  model = 1\n  d = 2\n}\n"), ["expected identifier, found keyword `model`"]);
        assert_eq!(messages("model m() {\n  if a = b {\n  }\n}\n"), ["expected `{`, found `=`"]);
        // A `,` forgotten before a named argument on the next line.
        assert_eq!(
            messages("model m() {\n  y = f(x, d\n        bias=false)\n  return y\n}\n"),
            ["expected `)` or `,`, found identifier `bias`"]
        );
        assert_eq!(messages("block b(x y) {}"), ["expected `)` or `,`, found identifier `y`"]);
        assert_eq!(messages("model m() { x = 1 } }"), ["expected `config`, `block` or `model`, found `}`"]);
    }

    #[test]
    fn unterminated_string() {
        let text = "model m() {\n  assert x, \"oops\n  return x\n}\n";
        assert_eq!(messages(text), ["unterminated string"]);
        let (file, _) = parse_file(F, text);
        let [Item::Model(m)] = file.items.as_slice() else { panic!() };
        assert!(matches!(m.body.as_slice(), [Stmt::Return { .. }]), "{:?}", m.body);
        assert_eq!(messages("model m() {\n  y = f(\"oops)\n  z = 1\n}\n"), ["unterminated string"]);
    }

    #[test]
    fn chained_comparison() {
        assert_eq!(messages("model m() {\n  assert a < b < c\n}\n"), ["comparison operators cannot be chained"]);
        assert_eq!(messages("model m() {\n  assert a == b != c\n}\n"), ["comparison operators cannot be chained"]);
        assert_eq!(messages("model m() {\n  assert a < b and b < c\n}\n"), Vec::<String>::new());
    }

    #[test]
    fn missing_equals_in_config() {
        let text = "config {\n  vocab 256\n  d = 64\n}\n";
        assert_eq!(messages(text), ["expected `=`, found number 256"]);
        let (file, _) = parse_file(F, text);
        let [Item::Config(entries)] = file.items.as_slice() else { panic!() };
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].name.name, "d");
    }

    #[test]
    fn three_independent_statement_errors() {
        let text = "model m(x: [n]) {\n  a = (x + \n  b = x\n  c = f(x,, y)\n  d = b\n  e = 1 2\n  return d\n}\n";
        let (file, diags) = parse_file(F, text);
        let got: Vec<&str> = diags.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(
            got,
            [
                "expected expression, found newline",
                "expected expression, found `,`",
                "expected newline, found number 2"
            ]
        );
        let [Item::Model(m)] = file.items.as_slice() else { panic!() };
        let names: Vec<String> = m
            .body
            .iter()
            .map(|s| match s {
                Stmt::Assign { name, .. } => name.name.clone(),
                Stmt::Return { .. } => "return".to_string(),
                _ => "?".to_string(),
            })
            .collect();
        // `e = 1` is kept; the bad ones are dropped.
        assert_eq!(names, ["b", "d", "e", "return"]);
    }

    #[test]
    fn errors_in_several_items_all_reported() {
        let text =
            "config {\n  a = \n}\nblock b(x {\n  y = 1\n}\nblock c() {\n  return +\n}\nmodel m() {\n  return 1\n}\n";
        let (file, diags) = parse_file(F, text);
        let got: Vec<&str> = diags.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(
            got,
            ["expected expression, found newline", "expected `)` or `,`, found `{`", "expected expression, found `+`"]
        );
        let names: Vec<&str> = file
            .items
            .iter()
            .map(|i| match i {
                Item::Config(_) => "config",
                Item::Block(b) => b.name.name.as_str(),
                Item::Model(m) => m.name.name.as_str(),
            })
            .collect();
        assert_eq!(names, ["config", "c", "m"]);
    }

    #[test]
    fn unclosed_body() {
        let text = "block a() {\n  if x {\n    y = 1\n\nblock b() {\n  return 2\n}\n";
        let (file, diags) = parse_file(F, text);
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert_eq!(diags[0].message, "expected `}`, found keyword `block`");
        assert_eq!(file.items.len(), 2);
        assert_eq!(messages("model m() {\n  x = 1\n"), ["expected `}`, found end of file"]);
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let cases = [
            format!("model m() {{\n  x = {}\n}}\n", "(".repeat(10_000)),
            format!("model m() {{\n  x = {}1{}\n}}\n", "(".repeat(10_000), ")".repeat(10_000)),
            format!("model m() {{\n  x = {}1\n}}\n", "[".repeat(10_000)),
            format!("model m() {{\n  x = {}1\n}}\n", "-".repeat(10_000)),
            format!("model m() {{\n  x = {}1\n}}\n", "not ".repeat(10_000)),
            format!("model m() {{\n  x = 1{}\n}}\n", " ** 2".repeat(10_000)),
            format!("model m() {{\n  x = {}1\n}}\n", "f(".repeat(10_000)),
            format!("model m() {{\n{}{}}}\n", "if a {\n".repeat(10_000), "}\n".repeat(10_000)),
            format!("model m() {{\n  if a {{\n  }}{}\n}}\n", " else if a {\n  }".repeat(10_000)),
            format!("model m(x: {}) {{}}\n", "[".repeat(10_000)),
        ];
        for text in &cases {
            let (_, diags) = parse_file(F, text);
            assert_eq!(diags.len(), 1, "{:?}", diags);
            assert_eq!(diags[0].message, "nested too deeply: more than 256 levels");
        }
        // At the limit it still parses.
        let ok = format!("model m() {{\n  x = {}1{}\n}}\n", "(".repeat(200), ")".repeat(200));
        parse_ok(&ok);
    }

    // ---- Rendered diagnostics ----

    #[test]
    fn snapshot_missing_paren() {
        insta::assert_snapshot!(rendered("model m(x: [n]) {\n  h = linear[proj](x, d\n  return h\n}\n"));
    }

    #[test]
    fn snapshot_stray_token() {
        insta::assert_snapshot!(rendered(
            "block mlp(x, hidden) {\n  h = gelu(linear[fc](x, dim(x, -1), hidden)) hidden\n  return h\n}\n"
        ));
    }

    #[test]
    fn snapshot_unterminated_string() {
        insta::assert_snapshot!(rendered("model m() {\n  assert d > 0, \"d must be positive\n  return 0\n}\n"));
    }

    #[test]
    fn snapshot_chained_comparison() {
        insta::assert_snapshot!(rendered(
            "config {\n  d = 64\n}\nmodel m() {\n  assert 0 < d <= 1024, \"d out of range\"\n  return 0\n}\n"
        ));
    }

    #[test]
    fn snapshot_missing_equals_in_config() {
        insta::assert_snapshot!(rendered("config {\n  vocab = 256   # vocabulary size\n  d 512\n}\n"));
    }

    #[test]
    fn snapshot_several_errors() {
        insta::assert_snapshot!(rendered(
            "model m(tokens: i32[batch, seq]) {\n  h = embedding[wte](tokens, vocab d)\n  w: [d] = zeros()\n  h = h $ 2\n  return h\n"
        ));
    }

    #[test]
    fn snapshot_unclosed_if() {
        insta::assert_snapshot!(rendered(
            "block b(x) {\n  if x > 0 {\n    x = x - 1\n  return x\n}\n\nmodel m() {\n  return b(1)\n}\n"
        ));
    }

    // ---- Robustness ----

    const SAMPLE: &str = r#"# A small model covering every construct.
config {
  vocab = 256          # vocabulary size
  d = 64               # width
  layers = 2
  eps = 1e-5
  scale = 2.5 ** -0.5
  names = ["a", "b\t\"c\""]
}

block linear(x, d_in, d_out, bias = true) {
  bound = 1.0 / sqrt(d_in)
  param weight: [d_in, d_out] = uniform(-bound, bound)
  y = x @ weight
  if bias and not (d_out < 1) {
    param bias: f32[d_out] = zeros()
    y = y + bias
  } else if d_out == 0 {
    y = y * 0
  } else {
    y = -y ** 2
  }
  return y
}

block layer(h, heads = 4) {
  assert d % heads == 0, "heads must divide d"
  assert heads >= 1 or heads != 0
  q = linear[attn.q](h, d, d, bias=false)
  a = softmax(q @ transpose(q, [0, 2, 1]) / sqrt(d), axis=-1)
  return h + linear[attn.o](a @ q,
                            d, d)
}

model tiny(tokens: i32[batch, seq], targets: i32[batch, seq,]) {
  h = embedding[wte](tokens, vocab, d)
  for i in 0..layers - 1 {
    h = layer[layers.i](h)
  }
  h = layer[layers.0.x](h, heads = 2)
  return cross_entropy(linear[head](h, d, vocab), targets)
}
"#;

    #[test]
    fn sample_parses() {
        let (file, diags) = parse_file(F, SAMPLE);
        // The only error: `%` is not an operator.
        let got: Vec<&str> = diags.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(got, ["unexpected character `%`"]);
        assert_eq!(file.items.len(), 4);
        parse_ok(&SAMPLE.replace("d % heads", "d / heads"));
    }

    #[test]
    fn every_truncation_parses_without_panic() {
        for (i, _) in SAMPLE.char_indices().chain([(SAMPLE.len(), ' ')]) {
            let _ = parse_file(F, &SAMPLE[..i]);
        }
    }

    #[test]
    fn random_mutations_parse_without_panic() {
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        const INTERESTING: &[u8] = b"()[]{},:=.+-*/@<>!\"#\\\n 0123456789eE_aZ\t\r%$";
        for _ in 0..2_000 {
            let mut bytes = SAMPLE.as_bytes().to_vec();
            for _ in 0..1 + next() % 4 {
                let at = (next() % (bytes.len() as u64 + 1)) as usize;
                let byte = if next() % 4 == 0 {
                    next() as u8
                } else {
                    INTERESTING[(next() % INTERESTING.len() as u64) as usize]
                };
                match next() % 4 {
                    0 if at < bytes.len() => bytes[at] = byte,
                    1 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    2 => {
                        // Duplicate or drop a whole chunk.
                        let len = (next() % 40) as usize;
                        let end = (at + len).min(bytes.len());
                        if next() % 2 == 0 {
                            let chunk = bytes[at..end].to_vec();
                            bytes.splice(at..at, chunk);
                        } else {
                            bytes.drain(at..end);
                        }
                    }
                    _ => bytes.insert(at, byte),
                }
            }
            let text = String::from_utf8_lossy(&bytes);
            let (_, diags) = parse_file(F, &text);
            // Every diagnostic can be rendered.
            let mut map = SourceMap::new();
            let id = map.add("fuzz.lpa", text.to_string(), false);
            assert_eq!(id, F);
            let _ = render_all(&diags, &map);
        }
    }
}
