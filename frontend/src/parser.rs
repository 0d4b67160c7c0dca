//! The parser: tokens to an [`ast::File`], by recursive descent (precedence
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

/// Parses one file. Diagnostics (lexer and parser) come in source order.
pub fn parse_file(file: FileId, text: &str) -> (File, Vec<Diagnostic>) {
    let (tokens, mut diags) = lex(file, text);
    let mut parser = Parser { text, tokens, pos: 0, prev: Span::new(file, 0, 0), diags: Vec::new(), depth: 0, last_error_at: None };
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
                TokenKind::RBrace => return (entries, self.bump().span),
                k if *k == TokenKind::Eof || Self::is_item_keyword(k) => {
                    let d = self.expected_diag("`}`").with_secondary(open, "this `{` is not closed");
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
        self.expect(&TokenKind::DotDot)?;
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
    fn comma_list<X>(&mut self, close: TokenKind, mut item: impl FnMut(&mut Self) -> PResult<X>) -> PResult<(Vec<X>, Span)> {
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
        loop {
            let Some((op, power)) = binary_op(self.kind()) else { break };
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

