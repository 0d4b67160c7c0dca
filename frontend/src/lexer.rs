//! The lexer: source text to a flat list of [`Token`]s, always ending in
//! [`TokenKind::Eof`].
//!
//! - Comments (`#` to end of line) produce no token. A comment that follows a
//!   token on the same line is attached to the last token of that line as
//!   [`Token::trailing_comment`] (config entries use it as their doc).
//! - `NEWLINE` tokens separate statements. Runs of blank lines give one token,
//!   and none is emitted while the innermost open bracket is `(` or `[`, so calls
//!   and lists can span lines. Inside `{ }` newlines are emitted.
//! - Brackets are matched here (for the newline rule) with some recovery: `{`,
//!   `}` and the keywords that can only start a statement or an item (`param`,
//!   `if`, `for`, `return`, `assert`, `else`, `config`, `block`, `model`) close
//!   any `(` or `[` left open since the enclosing `{`. If a newline was swallowed
//!   there, a `NEWLINE` token is put back before them, so a missing `)` costs one
//!   statement, not the rest of the file.
//! - Malformed input (unknown characters, unterminated strings, bad numbers)
//!   gives a diagnostic and an [`TokenKind::Error`] token; the parser reports
//!   nothing further for an `Error` token, so there are no cascading messages.

use crate::diagnostic::Diagnostic;
use crate::source::{FileId, Span};

#[derive(Clone, Debug, PartialEq)]
pub enum TokenKind {
    Ident(String),
    Int(i64),
    Float(f64),
    /// A string literal, escapes resolved.
    Str(String),

    // Keywords.
    Config,
    Block,
    Model,
    Param,
    If,
    Else,
    For,
    In,
    Return,
    Assert,
    And,
    Or,
    Not,
    True,
    False,

    // Punctuation.
    LParen,
    RParen,
    LBracket,
    RBracket,
    LBrace,
    RBrace,
    Comma,
    Colon,
    /// `=`
    Assign,
    Dot,
    DotDot,
    Plus,
    Minus,
    Star,
    Slash,
    At,
    StarStar,
    Lt,
    Le,
    Gt,
    Ge,
    EqEq,
    Ne,

    Newline,
    Eof,
    /// Malformed input, already reported by the lexer.
    Error,
}

impl TokenKind {
    /// The keyword spelled `word`, if it is one.
    pub fn keyword(word: &str) -> Option<TokenKind> {
        Some(match word {
            "config" => TokenKind::Config,
            "block" => TokenKind::Block,
            "model" => TokenKind::Model,
            "param" => TokenKind::Param,
            "if" => TokenKind::If,
            "else" => TokenKind::Else,
            "for" => TokenKind::For,
            "in" => TokenKind::In,
            "return" => TokenKind::Return,
            "assert" => TokenKind::Assert,
            "and" => TokenKind::And,
            "or" => TokenKind::Or,
            "not" => TokenKind::Not,
            "true" => TokenKind::True,
            "false" => TokenKind::False,
            _ => return None,
        })
    }

    pub fn is_keyword(&self) -> bool {
        use TokenKind::*;
        matches!(
            self,
            Config | Block | Model | Param | If | Else | For | In | Return | Assert | And | Or | Not | True | False
        )
    }

    /// Keywords that can only begin a statement or an item, never appear
    /// inside brackets.
    pub fn starts_statement_or_item(&self) -> bool {
        use TokenKind::*;
        matches!(self, Config | Block | Model | Param | If | Else | For | Return | Assert)
    }

    /// How the token is written, for keywords and punctuation; `""` for tokens
    /// that carry a value and for `Newline`, `Eof` and `Error`.
    pub fn symbol(&self) -> &'static str {
        use TokenKind::*;
        match self {
            Config => "config",
            Block => "block",
            Model => "model",
            Param => "param",
            If => "if",
            Else => "else",
            For => "for",
            In => "in",
            Return => "return",
            Assert => "assert",
            And => "and",
            Or => "or",
            Not => "not",
            True => "true",
            False => "false",
            LParen => "(",
            RParen => ")",
            LBracket => "[",
            RBracket => "]",
            LBrace => "{",
            RBrace => "}",
            Comma => ",",
            Colon => ":",
            Assign => "=",
            Dot => ".",
            DotDot => "..",
            Plus => "+",
            Minus => "-",
            Star => "*",
            Slash => "/",
            At => "@",
            StarStar => "**",
            Lt => "<",
            Le => "<=",
            Gt => ">",
            Ge => ">=",
            EqEq => "==",
            Ne => "!=",
            Ident(_) | Int(_) | Float(_) | Str(_) | Newline | Eof | Error => "",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Token {
    pub kind: TokenKind,
    pub span: Span,
    /// The text of a `#` comment that follows this token on the same line,
    /// without the `#` and trimmed. Only the last token of a line has one.
    pub trailing_comment: Option<String>,
}

impl Token {
    /// The token as a message names it: `identifier \`foo\``, `number 12`,
    /// `keyword \`if\``, `` `)` ``, `newline`, `end of file`.
    pub fn describe(&self, text: &str) -> String {
        let written = text.get(self.span.start as usize..self.span.end as usize).unwrap_or("");
        match &self.kind {
            TokenKind::Ident(name) => format!("identifier `{name}`"),
            TokenKind::Int(_) | TokenKind::Float(_) => format!("number {written}"),
            TokenKind::Str(_) => {
                let mut shown: String = written.chars().take(24).collect();
                if shown.len() < written.len() {
                    shown.push('…');
                }
                format!("string {shown}")
            }
            TokenKind::Newline => "newline".to_string(),
            TokenKind::Eof => "end of file".to_string(),
            TokenKind::Error => "invalid token".to_string(),
            k if k.is_keyword() => format!("keyword `{}`", k.symbol()),
            k => format!("`{}`", k.symbol()),
        }
    }
}

/// Splits `text` into tokens (ending in `Eof`) and reports malformed input.
pub fn lex(file: FileId, text: &str) -> (Vec<Token>, Vec<Diagnostic>) {
    let mut lexer = Lexer {
        file,
        text,
        bytes: text.as_bytes(),
        pos: 0,
        tokens: Vec::new(),
        diags: Vec::new(),
        stack: Vec::new(),
        swallowed_newline: None,
        line_has_token: false,
        line_comment: None,
    };
    lexer.run();
    (lexer.tokens, lexer.diags)
}

struct Lexer<'a> {
    file: FileId,
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    tokens: Vec<Token>,
    diags: Vec<Diagnostic>,
    /// Open brackets: `(`, `[` or `{`.
    stack: Vec<u8>,
    /// Where the first newline swallowed (inside brackets) since the last
    /// token was.
    swallowed_newline: Option<(usize, usize)>,
    /// Whether a token was produced on the current line.
    line_has_token: bool,
    /// Byte offset of the `#` of a comment on the current line.
    line_comment: Option<usize>,
}

impl Lexer<'_> {
    fn span(&self, start: usize, end: usize) -> Span {
        Span::new(self.file, start, end)
    }

    fn peek_byte(&self, offset: usize) -> Option<u8> {
        self.bytes.get(self.pos + offset).copied()
    }

    fn push(&mut self, kind: TokenKind, start: usize, end: usize) {
        let span = self.span(start, end);
        self.tokens.push(Token { kind, span, trailing_comment: None });
        self.swallowed_newline = None;
        self.line_has_token = true;
    }

    fn error(&mut self, start: usize, end: usize, message: impl Into<String>) -> &mut Diagnostic {
        let span = self.span(start, end);
        self.diags.push(Diagnostic::error(span, message));
        self.diags.last_mut().unwrap()
    }

    /// Closes the `(` and `[` left open since the innermost `{`; puts back a
    /// newline swallowed since the last token.
    fn close_open_parens(&mut self) {
        let mut popped = false;
        while let Some(&top) = self.stack.last() {
            if top == b'{' {
                break;
            }
            self.stack.pop();
            popped = true;
        }
        if popped && let Some((start, end)) = self.swallowed_newline.take() {
            self.push_newline(start, end);
        }
    }

    fn push_newline(&mut self, start: usize, end: usize) {
        let last_is_newline = matches!(self.tokens.last(), None | Some(Token { kind: TokenKind::Newline, .. }));
        if !last_is_newline {
            let keep = self.line_has_token;
            self.push(TokenKind::Newline, start, end);
            self.line_has_token = keep;
        }
    }

    /// Pops the stack down to and including the innermost `open` above the
    /// innermost `{`; leaves it alone when there is none (a stray closer).
    fn close(&mut self, open: u8) {
        let Some(i) = self.stack.iter().rposition(|&b| b == open || b == b'{') else { return };
        if self.stack[i] == open {
            self.stack.truncate(i);
        }
    }

    fn in_parens(&self) -> bool {
        matches!(self.stack.last(), Some(b'(') | Some(b'['))
    }

    fn run(&mut self) {
        while self.pos < self.bytes.len() {
            let start = self.pos;
            let b = self.bytes[self.pos];
            match b {
                b'\n' => {
                    // The newline's span: the `#` of a comment on the line, or
                    // the line break itself, so a caret lands at the line end.
                    let (s, e) = match self.line_comment {
                        Some(c) => (c, c + 1),
                        None if start > 0 && self.bytes[start - 1] == b'\r' => (start - 1, start),
                        None => (start, start + 1),
                    };
                    if self.in_parens() {
                        if self.swallowed_newline.is_none() {
                            self.swallowed_newline = Some((s, e));
                        }
                    } else {
                        self.push_newline(s, e);
                    }
                    self.pos += 1;
                    self.line_has_token = false;
                    self.line_comment = None;
                }
                b' ' | b'\t' | b'\r' | 0x0c => self.pos += 1,
                b'#' => self.comment(),
                b'0'..=b'9' => self.number(),
                b'a'..=b'z' | b'A'..=b'Z' | b'_' => self.word(),
                b'"' => self.string(),
                _ => self.punct(),
            }
        }
        let end = self.text.trim_end().len();
        self.push(TokenKind::Eof, end, end);
    }

    fn comment(&mut self) {
        let start = self.pos;
        let end = self.bytes[start..].iter().position(|&b| b == b'\n').map_or(self.bytes.len(), |i| start + i);
        self.pos = end;
        self.line_comment = Some(start);
        if self.line_has_token
            && let Some(last) = self.tokens.last_mut()
        {
            let body = self.text[start + 1..end].trim();
            last.trailing_comment = Some(body.to_string());
        }
    }

    fn word(&mut self) {
        let start = self.pos;
        while let Some(b) = self.peek_byte(0) {
            if b.is_ascii_alphanumeric() || b == b'_' {
                self.pos += 1;
            } else {
                break;
            }
        }
        let word = &self.text[start..self.pos];
        match TokenKind::keyword(word) {
            Some(kind) => {
                if kind.starts_statement_or_item() {
                    self.close_open_parens();
                }
                self.push(kind, start, self.pos);
            }
            None => {
                if self.starts_assignment_in_parens() {
                    self.close_open_parens();
                }
                self.push(TokenKind::Ident(word.to_string()), start, self.pos)
            }
        }
    }

    /// Whether the word just lexed, at `self.pos`, begins a line inside
    /// brackets with `name =` where no named argument can be: a `)` or `]` is
    /// missing on the line before, and this is the next statement.
    fn starts_assignment_in_parens(&self) -> bool {
        if !self.in_parens() || self.swallowed_newline.is_none() {
            return false;
        }
        // A named argument follows `(` or `,`.
        if matches!(self.tokens.last(), Some(t) if matches!(t.kind, TokenKind::LParen | TokenKind::Comma)) {
            return false;
        }
        let rest = self.text[self.pos..].trim_start_matches([' ', '\t']);
        if !rest.starts_with('=') || rest.starts_with("==") {
            return false;
        }
        // `bias=false)`: a named argument after a forgotten `,`, since the
        // line closes a bracket it did not open.
        let mut depth = 0i32;
        let mut chars = rest.chars();
        while let Some(c) = chars.next() {
            match c {
                '\n' | '#' => break,
                '(' | '[' => depth += 1,
                ')' | ']' => {
                    depth -= 1;
                    if depth < 0 {
                        return false;
                    }
                }
                '"' => {
                    while let Some(c) = chars.next() {
                        match c {
                            '"' | '\n' => break,
                            '\\' => {
                                chars.next();
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        true
    }

    fn digits(&mut self) {
        while let Some(b) = self.peek_byte(0) {
            if b.is_ascii_digit() || b == b'_' {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    fn number(&mut self) {
        let start = self.pos;
        self.digits();
        // After `.` (a scope path such as `layers.0.1`) a number is a plain
        // integer: no fraction, no exponent.
        let after_dot =
            matches!(self.tokens.last(), Some(t) if t.kind == TokenKind::Dot && t.span.end as usize == start);
        let mut is_float = false;
        if !after_dot {
            if self.peek_byte(0) == Some(b'.') && self.peek_byte(1).is_some_and(|b| b.is_ascii_digit()) {
                self.pos += 1;
                self.digits();
                is_float = true;
            }
            if matches!(self.peek_byte(0), Some(b'e' | b'E')) {
                let digit_at = if matches!(self.peek_byte(1), Some(b'+' | b'-')) { 2 } else { 1 };
                if self.peek_byte(digit_at).is_some_and(|b| b.is_ascii_digit()) {
                    self.pos += digit_at;
                    self.digits();
                    is_float = true;
                }
            }
        }
        // A letter right after a number (`12abc`, `1e`) makes it malformed.
        if self.peek_byte(0).is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_') {
            while self.peek_byte(0).is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_') {
                self.pos += 1;
            }
            let written = &self.text[start..self.pos];
            let d = self.error(start, self.pos, format!("invalid number `{written}`"));
            if written.contains(['e', 'E']) {
                d.notes.push("an exponent needs digits, as in `1e-5`".to_string());
            }
            self.push(TokenKind::Error, start, self.pos);
            return;
        }
        let written = &self.text[start..self.pos];
        let cleaned: String = written.chars().filter(|&c| c != '_').collect();
        if is_float {
            match cleaned.parse::<f64>() {
                Ok(v) if v.is_finite() => self.push(TokenKind::Float(v), start, self.pos),
                _ => {
                    self.error(start, self.pos, format!("number `{written}` is out of range"));
                    self.push(TokenKind::Error, start, self.pos);
                }
            }
        } else {
            match cleaned.parse::<i64>() {
                Ok(v) => self.push(TokenKind::Int(v), start, self.pos),
                Err(_) => {
                    self.error(start, self.pos, format!("integer `{written}` is too large"))
                        .notes
                        .push(format!("integers must be at most {}", i64::MAX));
                    self.push(TokenKind::Error, start, self.pos);
                }
            }
        }
    }

    fn string(&mut self) {
        let start = self.pos;
        self.pos += 1;
        let mut value = String::new();
        while let Some(c) = self.text[self.pos..].chars().next() {
            match c {
                '"' => {
                    self.pos += 1;
                    self.push(TokenKind::Str(value), start, self.pos);
                    return;
                }
                '\n' => break,
                '\\' => {
                    let esc_start = self.pos;
                    self.pos += 1;
                    let Some(e) = self.text[self.pos..].chars().next() else { break };
                    if e == '\n' {
                        break;
                    }
                    self.pos += e.len_utf8();
                    match e {
                        '"' => value.push('"'),
                        '\\' => value.push('\\'),
                        'n' => value.push('\n'),
                        't' => value.push('\t'),
                        other => {
                            self.error(esc_start, self.pos, format!("unknown escape `\\{}`", other.escape_debug()))
                                .notes
                                .push(r#"the escapes are \" \\ \n \t"#.to_string());
                            value.push(other);
                        }
                    }
                }
                c => {
                    value.push(c);
                    self.pos += c.len_utf8();
                }
            }
        }
        // Unterminated: the string ran to the end of the line. It probably
        // swallowed a closing bracket, so close those the line opened.
        let d = self.error(start, start + 1, "unterminated string");
        d.label = "this string has no closing `\"`".to_string();
        d.notes.push("a string must end on the line it starts".to_string());
        self.push(TokenKind::Error, start, self.pos);
        while self.in_parens() {
            self.stack.pop();
        }
    }

    fn punct(&mut self) {
        use TokenKind::*;
        let start = self.pos;
        let b = self.bytes[start];
        let next = self.peek_byte(1);
        let (kind, len) = match (b, next) {
            (b'(', _) => (LParen, 1),
            (b')', _) => (RParen, 1),
            (b'[', _) => (LBracket, 1),
            (b']', _) => (RBracket, 1),
            (b'{', _) => (LBrace, 1),
            (b'}', _) => (RBrace, 1),
            (b',', _) => (Comma, 1),
            (b':', _) => (Colon, 1),
            (b'.', Some(b'.')) => (DotDot, 2),
            (b'.', _) => (Dot, 1),
            (b'+', _) => (Plus, 1),
            (b'-', _) => (Minus, 1),
            (b'*', Some(b'*')) => (StarStar, 2),
            (b'*', _) => (Star, 1),
            (b'/', _) => (Slash, 1),
            (b'@', _) => (At, 1),
            (b'<', Some(b'=')) => (Le, 2),
            (b'<', _) => (Lt, 1),
            (b'>', Some(b'=')) => (Ge, 2),
            (b'>', _) => (Gt, 1),
            (b'=', Some(b'=')) => (EqEq, 2),
            (b'=', _) => (Assign, 1),
            (b'!', Some(b'=')) => (Ne, 2),
            _ => return self.unknown(),
        };
        match kind {
            LParen => self.stack.push(b'('),
            LBracket => self.stack.push(b'['),
            LBrace => {
                // No `{` is ever inside brackets: those are unclosed.
                self.close_open_parens();
                self.stack.push(b'{');
            }
            RBrace => {
                self.close_open_parens();
                if self.stack.last() == Some(&b'{') {
                    self.stack.pop();
                }
            }
            RParen => self.close(b'('),
            RBracket => self.close(b'['),
            _ => {}
        }
        self.pos += len;
        self.push(kind, start, self.pos);
    }

    /// A run of characters that begin no token.
    fn unknown(&mut self) {
        let start = self.pos;
        let first = self.text[start..].chars().next().unwrap_or('\u{fffd}');
        self.pos += first.len_utf8();
        if first != '!' {
            while let Some(c) = self.text[self.pos..].chars().next() {
                if c.is_ascii_alphanumeric() || c.is_ascii_whitespace() || "_()[]{},:=.+-*/@<>!\"#".contains(c) {
                    break;
                }
                self.pos += c.len_utf8();
            }
        }
        let written = &self.text[start..self.pos];
        let shown: String = written.chars().flat_map(char::escape_debug).collect();
        let message = if written.chars().count() == 1 {
            format!("unexpected character `{shown}`")
        } else {
            format!("unexpected characters `{shown}`")
        };
        let note = match first {
            '!' => Some("use `not` for negation and `!=` for inequality"),
            '&' => Some("use `and`"),
            '|' => Some("use `or`"),
            ';' => Some("statements end at the end of the line; no `;` is needed"),
            '\'' => Some("strings are written in double quotes"),
            '%' => Some("there is no `%` operator"),
            _ => None,
        };
        let d = self.error(start, self.pos, message);
        if let Some(note) = note {
            d.notes.push(note.to_string());
        }
        self.push(TokenKind::Error, start, self.pos);
    }
}

#[cfg(test)]
mod tests {
    use super::TokenKind::*;
    use super::*;

    fn kinds(text: &str) -> Vec<TokenKind> {
        let (tokens, diags) = lex(FileId(0), text);
        assert!(diags.is_empty(), "unexpected diagnostics for {text:?}: {diags:?}");
        tokens.into_iter().map(|t| t.kind).collect()
    }

    fn ident(s: &str) -> TokenKind {
        Ident(s.to_string())
    }

    #[test]
    fn ranges_are_not_floats() {
        assert_eq!(kinds("0..n"), vec![Int(0), DotDot, ident("n"), Eof]);
        assert_eq!(kinds("1..2"), vec![Int(1), DotDot, Int(2), Eof]);
        assert_eq!(kinds("0 .. layers"), vec![Int(0), DotDot, ident("layers"), Eof]);
    }

    #[test]
    fn numbers() {
        assert_eq!(kinds("1e-5"), vec![Float(1e-5), Eof]);
        assert_eq!(kinds("2.5"), vec![Float(2.5), Eof]);
        assert_eq!(kinds("3E+2 4e2"), vec![Float(300.0), Float(400.0), Eof]);
        assert_eq!(kinds("0.02e1"), vec![Float(0.2), Eof]);
        assert_eq!(kinds("1_000_000 007"), vec![Int(1_000_000), Int(7), Eof]);
        assert_eq!(kinds("9223372036854775807"), vec![Int(i64::MAX), Eof]);
        // `5.` is an integer and a dot; `x.0.1` is a scope path of integers.
        assert_eq!(kinds("5."), vec![Int(5), Dot, Eof]);
        assert_eq!(kinds("a.0.1"), vec![ident("a"), Dot, Int(0), Dot, Int(1), Eof]);
        assert_eq!(kinds("1.5.2"), vec![Float(1.5), Dot, Int(2), Eof]);
    }

    #[test]
    fn bad_numbers() {
        let (tokens, diags) = lex(FileId(0), "x = 99999999999999999999 + 1e + 12ab + 1e999");
        let messages: Vec<&str> = diags.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "integer `99999999999999999999` is too large",
                "invalid number `1e`",
                "invalid number `12ab`",
                "number `1e999` is out of range"
            ]
        );
        let errors = tokens.iter().filter(|t| t.kind == Error).count();
        assert_eq!(errors, 4);
    }

    #[test]
    fn keywords_identifiers_and_operators() {
        assert_eq!(
            kinds("if x_1 and not true or false else _y"),
            vec![If, ident("x_1"), And, Not, True, Or, False, Else, ident("_y"), Eof]
        );
        assert_eq!(
            kinds("( ) [ ] { } , : = . .. + - * / @ ** < <= > >= == !="),
            vec![
                LParen, RParen, LBracket, RBracket, LBrace, RBrace, Comma, Colon, Assign, Dot, DotDot, Plus, Minus,
                Star, Slash, At, StarStar, Lt, Le, Gt, Ge, EqEq, Ne, Eof
            ]
        );
        assert_eq!(kinds("a**-2"), vec![ident("a"), StarStar, Minus, Int(2), Eof]);
        assert_eq!(
            kinds("config block model param for in return assert"),
            vec![Config, Block, Model, Param, For, In, Return, Assert, Eof]
        );
    }

    #[test]
    fn strings() {
        assert_eq!(
            kinds(r#""a \"b\" \\ \n \t" "é""#),
            vec![Str("a \"b\" \\ \n \t".to_string()), Str("é".to_string()), Eof]
        );
        let (tokens, diags) = lex(FileId(0), "\"abc\\q\"");
        assert_eq!(tokens[0].kind, Str("abcq".to_string()));
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].message, "unknown escape `\\q`");
    }

    #[test]
    fn unterminated_string_continues_on_next_line() {
        let (tokens, diags) = lex(FileId(0), "{\nx = f(\"abc)\ny = 2\n}");
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].message, "unterminated string");
        assert_eq!((diags[0].span.start, diags[0].span.end), (8, 9));
        let kinds: Vec<TokenKind> = tokens.into_iter().map(|t| t.kind).collect();
        assert_eq!(
            kinds,
            vec![
                LBrace,
                Newline,
                ident("x"),
                Assign,
                ident("f"),
                LParen,
                Error,
                Newline,
                ident("y"),
                Assign,
                Int(2),
                Newline,
                RBrace,
                Eof
            ]
        );
    }

    #[test]
    fn comments_and_newlines() {
        let text = "# header\n\n\na = 1   # the doc \nb = 2\n# alone\n\nc = 3 #\n";
        let (tokens, diags) = lex(FileId(0), text);
        assert!(diags.is_empty());
        let kinds: Vec<TokenKind> = tokens.iter().map(|t| t.kind.clone()).collect();
        assert_eq!(
            kinds,
            vec![
                ident("a"),
                Assign,
                Int(1),
                Newline,
                ident("b"),
                Assign,
                Int(2),
                Newline,
                ident("c"),
                Assign,
                Int(3),
                Newline,
                Eof
            ]
        );
        assert_eq!(tokens[2].trailing_comment.as_deref(), Some("the doc"));
        assert_eq!(tokens[6].trailing_comment, None, "a comment on its own line belongs to no token");
        assert_eq!(tokens[10].trailing_comment.as_deref(), Some(""));
        // The newline after `a = 1   # the doc` points at the `#`.
        assert_eq!(&text[tokens[3].span.start as usize..tokens[3].span.end as usize], "#");
    }

    #[test]
    fn no_newlines_inside_parens_and_brackets() {
        let text = "{\n  y = f(a,\n    b, [1,\n  2]\n  )\n  z = 1\n}\n";
        assert_eq!(
            kinds(text),
            vec![
                LBrace,
                Newline,
                ident("y"),
                Assign,
                ident("f"),
                LParen,
                ident("a"),
                Comma,
                ident("b"),
                Comma,
                LBracket,
                Int(1),
                Comma,
                Int(2),
                RBracket,
                RParen,
                Newline,
                ident("z"),
                Assign,
                Int(1),
                Newline,
                RBrace,
                Newline,
                Eof
            ]
        );
    }

    #[test]
    fn unclosed_paren_is_closed_by_statement_keyword_or_brace() {
        // The missing `)` on the first line does not swallow the next statements.
        let text = "{\n  y = f(a\n  return y\n}\nblock";
        assert_eq!(
            kinds(text),
            vec![
                LBrace,
                Newline,
                ident("y"),
                Assign,
                ident("f"),
                LParen,
                ident("a"),
                Newline,
                Return,
                ident("y"),
                Newline,
                RBrace,
                Newline,
                Block,
                Eof
            ]
        );
        assert_eq!(
            kinds("{ y = [a\n}\nz"),
            vec![LBrace, ident("y"), Assign, LBracket, ident("a"), Newline, RBrace, Newline, ident("z"), Eof]
        );
        // So is one followed by a line `name = ...`, unless that can be a
        // named argument.
        assert_eq!(
            kinds("{\n y = f(a +\n z = 1\n}"),
            vec![
                LBrace,
                Newline,
                ident("y"),
                Assign,
                ident("f"),
                LParen,
                ident("a"),
                Plus,
                Newline,
                ident("z"),
                Assign,
                Int(1),
                Newline,
                RBrace,
                Eof
            ]
        );
        assert_eq!(
            kinds("{ y = f(a,\n z = 1) }"),
            vec![
                LBrace,
                ident("y"),
                Assign,
                ident("f"),
                LParen,
                ident("a"),
                Comma,
                ident("z"),
                Assign,
                Int(1),
                RParen,
                RBrace,
                Eof
            ]
        );
        assert_eq!(
            kinds("{ y = f(a\n z = \")\" + g(1)) }"),
            vec![
                LBrace,
                ident("y"),
                Assign,
                ident("f"),
                LParen,
                ident("a"),
                ident("z"),
                Assign,
                Str(")".to_string()),
                Plus,
                ident("g"),
                LParen,
                Int(1),
                RParen,
                RParen,
                RBrace,
                Eof
            ]
        );
        assert_eq!(
            kinds("{ y = f(a\n == b) }"),
            vec![LBrace, ident("y"), Assign, ident("f"), LParen, ident("a"), EqEq, ident("b"), RParen, RBrace, Eof]
        );
        // A stray closer does not disturb the brace.
        assert_eq!(kinds("{ ) \n }"), vec![LBrace, RParen, Newline, RBrace, Eof]);
    }

    #[test]
    fn unknown_characters() {
        let (tokens, diags) = lex(FileId(0), "a $ b €€ c; !d");
        let messages: Vec<&str> = diags.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "unexpected character `$`",
                "unexpected characters `€€`",
                "unexpected character `;`",
                "unexpected character `!`"
            ]
        );
        let kinds: Vec<TokenKind> = tokens.into_iter().map(|t| t.kind).collect();
        assert_eq!(kinds, vec![ident("a"), Error, ident("b"), Error, ident("c"), Error, Error, ident("d"), Eof]);
    }

    #[test]
    fn spans_and_descriptions() {
        let text = "x = f(12, 2.5) # c\n";
        let (tokens, _) = lex(FileId(3), text);
        let described: Vec<String> = tokens.iter().map(|t| t.describe(text)).collect();
        assert_eq!(
            described,
            [
                "identifier `x`",
                "`=`",
                "identifier `f`",
                "`(`",
                "number 12",
                "`,`",
                "number 2.5",
                "`)`",
                "newline",
                "end of file"
            ]
        );
        assert_eq!(tokens[4].span, Span::new(FileId(3), 6, 8));
        // End of file points just after the last non-blank text.
        assert_eq!(tokens.last().unwrap().span, Span::new(FileId(3), 18, 18));
    }
}
