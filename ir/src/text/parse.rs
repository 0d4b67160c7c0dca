//! Parsing the text form back into a [`Graph`].
//!
//! The text is line-oriented: every statement (header, node, output, closing
//! brace) is one line, so each line is lexed on its own and errors always name
//! the line and column of the offending token. Nodes are checked as they are
//! read — ids in order, operands defined earlier, types by
//! [`result_type`] — so a graph that parses is well-typed. Names are checked
//! too (unique outputs, inputs and parameter paths; well-formed paths), so a
//! parsed graph passes [`crate::verify::verify`].

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use super::{is_bare_name, is_name_char};
use crate::graph::{Graph, Node, NodeId, Origin, Span};
use crate::op::{BinaryOp, Init, Op, ReduceOp, UnaryOp};
use crate::types::{DType, TensorType};
use crate::typing::result_type;
use crate::verify::{is_valid_param_path, sizes_fit};

/// A problem in the text, at a 1-based line and column (in characters).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// The source name given to [`parse`].
    pub file: String,
    pub line: u32,
    pub col: u32,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.col, self.message)
    }
}

impl std::error::Error for ParseError {}

impl ParseError {
    /// The error with the offending source line and a caret under the column,
    /// ending in a newline. `source` is the text that was given to [`parse`].
    ///
    /// ```text
    /// error: expected `=`, found `:`
    ///   --> FILE:3:15
    ///    |
    ///  3 |   %2 : f32[2] : exp %1
    ///    |               ^
    /// ```
    pub fn render(&self, source: &str) -> String {
        let line_index = (self.line as usize).saturating_sub(1);
        let text = source.split('\n').nth(line_index).unwrap_or("");
        let text = text.strip_suffix('\r').unwrap_or(text);
        // Columns count characters; keep tabs so the caret lines up under them.
        let pad: String = text
            .chars()
            .take((self.col as usize).saturating_sub(1))
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        let width = self.line.to_string().len().max(2);
        let gutter = " ".repeat(width);
        format!(
            "error: {}\n{gutter}--> {}:{}:{}\n{gutter} |\n{:>width$} | {}\n{gutter} | {}^\n",
            self.message, self.file, self.line, self.col, self.line, text, pad
        )
    }
}

/// Parses the canonical text form. `source_name` is only used in errors.
pub fn parse(text: &str, source_name: &str) -> Result<Graph, ParseError> {
    let mut parser = Parser::new();
    let mut end_of_input = (1, 1);
    for (index, raw) in text.split('\n').enumerate() {
        let line = Line::new(source_name, index, raw);
        end_of_input = (line.number, line.end_col());
        if !line.is_blank_or_comment() {
            parser.statement(&line)?;
        }
    }
    parser.finish(source_name, end_of_input)
}

/// One line of the input, as characters so that columns count characters.
struct Line<'a> {
    file: &'a str,
    number: u32,
    chars: Vec<char>,
}

impl<'a> Line<'a> {
    fn new(file: &'a str, index: usize, raw: &str) -> Self {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        Line { file, number: to_u32(index + 1), chars: raw.chars().collect() }
    }

    fn end_col(&self) -> u32 {
        to_u32(self.chars.len() + 1)
    }

    fn is_blank_or_comment(&self) -> bool {
        let first = self.chars.iter().find(|c| !matches!(c, ' ' | '\t'));
        matches!(first, None | Some('#'))
    }

    fn error(&self, col: u32, message: impl Into<String>) -> ParseError {
        ParseError { file: self.file.to_string(), line: self.number, col, message: message.into() }
    }
}

/// Lines and columns are u32 (as in [`Span`]); inputs that long are absurd,
/// so saturate rather than fail.
fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

// ---------------------------------------------------------------------------
// Characters

/// A position in a line's characters.
struct Cursor<'a> {
    chars: &'a [char],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(chars: &'a [char], pos: usize) -> Self {
        Cursor { chars, pos }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn col(&self) -> u32 {
        to_u32(self.pos + 1)
    }

    fn at_end(&self) -> bool {
        self.pos >= self.chars.len()
    }

    fn skip_spaces(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.pos += 1;
        }
    }

    fn take_while(&mut self, keep: impl Fn(char) -> bool) -> String {
        let start = self.pos;
        while self.peek().is_some_and(&keep) {
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect()
    }

    /// Whether the next characters are `word` followed by a space or the end.
    fn at_keyword(&self, word: &str) -> bool {
        let n = word.chars().count();
        let rest = self.chars.get(self.pos..).unwrap_or(&[]);
        rest.len() >= n
            && rest.iter().zip(word.chars()).all(|(a, b)| *a == b)
            && rest.get(n).is_none_or(|c| matches!(c, ' ' | '\t'))
    }
}

/// Characters of a bare word: identifiers, keywords, integers and floats
/// (`-0.0625`, `1e-5`, `-inf`, `NaN`). The parser decides what a word means
/// from where it stands.
fn is_word_char(c: char) -> bool {
    is_name_char(c) || c == '+'
}

/// A double-quoted string with the escapes [`super::print::quote`] writes.
/// The cursor is on the opening quote.
fn lex_string(cur: &mut Cursor, line: &Line) -> Result<String, ParseError> {
    let start = cur.col();
    cur.bump();
    let mut text = String::new();
    loop {
        match cur.bump() {
            None => return Err(line.error(start, "unterminated string: expected a closing `\"`")),
            Some('"') => return Ok(text),
            Some('\\') => text.push(lex_escape(cur, line)?),
            Some(c) => text.push(c),
        }
    }
}

/// The character an escape stands for; the cursor is just past the `\`.
fn lex_escape(cur: &mut Cursor, line: &Line) -> Result<char, ParseError> {
    let col = cur.col() - 1;
    match cur.bump() {
        Some('n') => Ok('\n'),
        Some('r') => Ok('\r'),
        Some('t') => Ok('\t'),
        Some('"') => Ok('"'),
        Some('\\') => Ok('\\'),
        Some('u') => {
            let bad = || line.error(col, "malformed escape: expected `\\u{HEX}` naming a character");
            if cur.bump() != Some('{') {
                return Err(bad());
            }
            let hex = cur.take_while(|c| c.is_ascii_hexdigit());
            if cur.bump() != Some('}') {
                return Err(bad());
            }
            u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32).ok_or_else(bad)
        }
        Some(c) => {
            Err(line.error(col, format!("unknown escape `\\{}` (use \\\", \\\\, \\n, \\r, \\t or \\u{{HEX}})", c)))
        }
        None => Err(line.error(col, "unterminated string: expected a closing `\"`")),
    }
}

// ---------------------------------------------------------------------------
// Tokens

#[derive(Clone, Debug, PartialEq)]
enum Kind {
    Word(String),
    /// `%12`
    Ref(u32),
    Str(String),
    Punct(char),
    /// A `#`: the rest of the line is a comment, parsed separately.
    Comment,
    End,
}

#[derive(Clone, Debug)]
struct Token {
    kind: Kind,
    col: u32,
}

fn describe(kind: &Kind) -> String {
    match kind {
        Kind::Word(w) => format!("`{w}`"),
        Kind::Ref(n) => format!("`%{n}`"),
        Kind::Str(_) => "a string".to_string(),
        Kind::Punct(c) => format!("`{c}`"),
        Kind::Comment => "a comment".to_string(),
        Kind::End => "end of line".to_string(),
    }
}

/// The line's tokens, always ending in [`Kind::End`]; a `#` outside a string
/// yields [`Kind::Comment`] and ends lexing.
fn lex(line: &Line) -> Result<Vec<Token>, ParseError> {
    let mut cur = Cursor::new(&line.chars, 0);
    let mut tokens = Vec::new();
    loop {
        cur.skip_spaces();
        let col = cur.col();
        let Some(c) = cur.peek() else {
            tokens.push(Token { kind: Kind::End, col });
            return Ok(tokens);
        };
        let kind = match c {
            '#' => {
                tokens.push(Token { kind: Kind::Comment, col });
                tokens.push(Token { kind: Kind::End, col: line.end_col() });
                return Ok(tokens);
            }
            '"' => Kind::Str(lex_string(&mut cur, line)?),
            '%' => Kind::Ref(lex_ref(&mut cur, line)?),
            ':' | '=' | ',' | '[' | ']' | '(' | ')' | '{' | '}' => {
                cur.bump();
                Kind::Punct(c)
            }
            c if is_word_char(c) => Kind::Word(cur.take_while(is_word_char)),
            c => return Err(line.error(col, format!("unexpected character `{}`", c.escape_debug()))),
        };
        tokens.push(Token { kind, col });
    }
}

fn lex_ref(cur: &mut Cursor, line: &Line) -> Result<u32, ParseError> {
    let col = cur.col();
    cur.bump();
    let digits = cur.take_while(|c| c.is_ascii_digit());
    if digits.is_empty() {
        return Err(line.error(col, "expected a node number after `%`"));
    }
    digits.parse().map_err(|_| line.error(col, format!("node number %{digits} is too large")))
}

/// The tokens of one line, consumed left to right.
struct Tokens<'l, 'a> {
    line: &'l Line<'a>,
    tokens: Vec<Token>,
    pos: usize,
}

impl<'l, 'a> Tokens<'l, 'a> {
    fn new(line: &'l Line<'a>) -> Result<Self, ParseError> {
        Ok(Tokens { line, tokens: lex(line)?, pos: 0 })
    }

    fn peek(&self) -> &Token {
        // `lex` always ends with End and `next` never moves past it.
        &self.tokens[self.pos]
    }

    fn next(&mut self) -> Token {
        let token = self.peek().clone();
        if token.kind != Kind::End {
            self.pos += 1;
        }
        token
    }

    fn is_punct(&self, c: char) -> bool {
        self.peek().kind == Kind::Punct(c)
    }

    fn unexpected(&self, token: &Token, expected: &str) -> ParseError {
        self.line.error(token.col, format!("expected {expected}, found {}", describe(&token.kind)))
    }

    fn punct(&mut self, c: char) -> Result<u32, ParseError> {
        let token = self.next();
        if token.kind == Kind::Punct(c) { Ok(token.col) } else { Err(self.unexpected(&token, &format!("`{c}`"))) }
    }

    fn word(&mut self, expected: &str) -> Result<(String, u32), ParseError> {
        let token = self.next();
        match token.kind {
            Kind::Word(w) => Ok((w, token.col)),
            _ => Err(self.unexpected(&token, expected)),
        }
    }

    fn keyword(&mut self, keyword: &str) -> Result<u32, ParseError> {
        let token = self.next();
        match &token.kind {
            Kind::Word(w) if w == keyword => Ok(token.col),
            _ => Err(self.unexpected(&token, &format!("`{keyword}`"))),
        }
    }

    fn reference(&mut self, expected: &str) -> Result<(u32, u32), ParseError> {
        let token = self.next();
        match token.kind {
            Kind::Ref(n) => Ok((n, token.col)),
            _ => Err(self.unexpected(&token, expected)),
        }
    }

    fn string(&mut self, expected: &str) -> Result<(String, u32), ParseError> {
        let token = self.next();
        match token.kind {
            Kind::Str(s) => Ok((s, token.col)),
            _ => Err(self.unexpected(&token, expected)),
        }
    }

    /// A graph or output name: a bare name or a quoted string.
    fn name(&mut self, expected: &str) -> Result<(String, u32), ParseError> {
        let token = self.next();
        match token.kind {
            Kind::Word(w) if is_bare_name(&w) => Ok((w, token.col)),
            Kind::Str(s) => Ok((s, token.col)),
            _ => Err(self.unexpected(&token, expected)),
        }
    }

    /// A word read as a number of type `T` (`usize`, `u64`, `f64`, ...).
    fn number<T: FromStr>(&mut self, expected: &str) -> Result<T, ParseError> {
        let (word, col) = self.word(expected)?;
        word.parse().map_err(|_| {
            let all_digits = word.bytes().all(|b| b.is_ascii_digit());
            let why = if all_digits { "is out of range" } else { "is not valid" };
            self.line.error(col, format!("expected {expected}, found `{word}`, which {why}"))
        })
    }

    fn integer<T: FromStr>(&mut self) -> Result<T, ParseError> {
        self.number("a non-negative integer")
    }

    fn float(&mut self) -> Result<f64, ParseError> {
        self.number("a number such as `0.5`, `1e-5`, `-inf` or `NaN`")
    }

    /// `name=`, before an attribute's value.
    fn attribute(&mut self, name: &str) -> Result<(), ParseError> {
        let token = self.next();
        match &token.kind {
            Kind::Word(w) if w == name => {}
            _ => return Err(self.unexpected(&token, &format!("`{name}=`"))),
        }
        self.punct('=').map(|_| ())
    }

    fn integer_attribute<T: FromStr>(&mut self, name: &str) -> Result<T, ParseError> {
        self.attribute(name)?;
        self.integer()
    }

    fn float_attribute(&mut self, name: &str) -> Result<f64, ParseError> {
        self.attribute(name)?;
        self.float()
    }

    /// `name=true` or `name=false`.
    fn bool_attribute(&mut self, name: &str) -> Result<bool, ParseError> {
        self.attribute(name)?;
        let (word, col) = self.word("`true` or `false`")?;
        match word.as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(self.line.error(col, format!("expected `true` or `false`, found `{word}`"))),
        }
    }

    /// `name=q`, `name=k` or `name=v`: which attention operand (0, 1, 2).
    fn operand_attribute(&mut self, name: &str) -> Result<usize, ParseError> {
        self.attribute(name)?;
        let (word, col) = self.word("`q`, `k` or `v`")?;
        ["q", "k", "v"]
            .iter()
            .position(|w| *w == word)
            .ok_or_else(|| self.line.error(col, format!("expected `q`, `k` or `v`, found `{word}`")))
    }

    fn list_attribute(&mut self, name: &str) -> Result<Vec<usize>, ParseError> {
        self.attribute(name)?;
        self.list()
    }

    /// `[1,0]`, `[]`: dimensions or axes.
    fn list(&mut self) -> Result<Vec<usize>, ParseError> {
        self.punct('[')?;
        let mut items = Vec::new();
        if self.is_punct(']') {
            self.next();
            return Ok(items);
        }
        loop {
            items.push(self.integer()?);
            if !self.is_punct(',') {
                break;
            }
            self.next();
        }
        self.punct(']')?;
        Ok(items)
    }

    /// `f32[16,128]`, with the column where it starts.
    fn tensor_type(&mut self) -> Result<(TensorType, u32), ParseError> {
        let (name, col) = self.word("a type such as `f32[2,3]`")?;
        let dtype = DType::from_name(&name).ok_or_else(|| {
            let known: Vec<&str> = DType::ALL.iter().map(|d| d.name()).collect();
            self.line.error(col, format!("unknown dtype `{name}` (expected one of {})", known.join(", ")))
        })?;
        let shape = self.list()?;
        Ok((TensorType::new(dtype, shape), col))
    }

    /// `%a, %b, ...`, possibly none, with each operand's column. Whether they
    /// exist is checked later, once the whole line has been read.
    fn operands(&mut self) -> Result<Vec<(u32, u32)>, ParseError> {
        let mut operands = Vec::new();
        if !matches!(self.peek().kind, Kind::Ref(_)) {
            return Ok(operands);
        }
        loop {
            operands.push(self.reference("an operand such as `%3`")?);
            if !self.is_punct(',') {
                return Ok(operands);
            }
            self.next();
        }
    }

    /// `normal(MEAN, STD)`, `uniform(LO, HI)` or `const(V)`.
    fn init(&mut self) -> Result<Init, ParseError> {
        let token = self.next();
        let kind = match &token.kind {
            Kind::Word(w) if matches!(w.as_str(), "normal" | "uniform" | "const") => w.clone(),
            _ => {
                let expected = "an initialiser: `normal(MEAN, STD)`, `uniform(LO, HI)` or `const(V)`";
                return Err(self.unexpected(&token, expected));
            }
        };
        self.punct('(')?;
        let first = self.float()?;
        let init = match kind.as_str() {
            "normal" => Init::Normal { mean: first, std: self.next_float()? },
            "uniform" => Init::Uniform { lo: first, hi: self.next_float()? },
            _ => Init::Const { value: first },
        };
        self.punct(')')?;
        Ok(init)
    }

    /// `, V`: the second argument of an initialiser.
    fn next_float(&mut self) -> Result<f64, ParseError> {
        self.punct(',')?;
        self.float()
    }

    /// The arguments that follow the operands, by mnemonic; `None` when the
    /// mnemonic names no op (the caller reports it at the mnemonic).
    fn op_arguments(&mut self, mnemonic: &str) -> Result<Option<Op>, ParseError> {
        let op = match mnemonic {
            "input" => Op::Input { name: self.string("the input's name, a string")?.0 },
            "param" => {
                let path = self.string("the parameter's path, a string")?.0;
                self.attribute("init")?;
                Op::Param { path, init: self.init()? }
            }
            "const" => Op::Const { value: self.float()? },
            "iota" => Op::Iota { axis: self.integer_attribute("axis")? },
            "random_uniform" => Op::RandomUniform { key: self.integer_attribute("key")? },
            "select" => Op::Select,
            "reduce_sum" => Op::Reduce { op: ReduceOp::Sum, axes: self.list_attribute("axes")? },
            "reduce_max" => Op::Reduce { op: ReduceOp::Max, axes: self.list_attribute("axes")? },
            "reshape" => Op::Reshape,
            "permute" => Op::Permute { perm: self.list_attribute("perm")? },
            "broadcast" => Op::Broadcast { dims: self.list_attribute("dims")? },
            "slice" => Op::Slice {
                axis: self.integer_attribute("axis")?,
                start: self.integer_attribute("start")?,
                end: self.integer_attribute("end")?,
            },
            "concat" => Op::Concat { axis: self.integer_attribute("axis")? },
            "pad" => Op::Pad {
                axis: self.integer_attribute("axis")?,
                lo: self.integer_attribute("lo")?,
                hi: self.integer_attribute("hi")?,
                value: self.float_attribute("value")?,
            },
            "matmul" => Op::MatMul,
            "gather" => Op::Gather,
            "scatter_add" => Op::ScatterAdd,
            "cast" => Op::Cast,
            "attention" => {
                Op::Attention { scale: self.float_attribute("scale")?, causal: self.bool_attribute("causal")? }
            }
            "attention_grad" => Op::AttentionGrad {
                scale: self.float_attribute("scale")?,
                causal: self.bool_attribute("causal")?,
                wrt: self.operand_attribute("wrt")?,
            },
            other => match (UnaryOp::from_name(other), BinaryOp::from_name(other)) {
                (Some(u), _) => Op::Unary(u),
                (None, Some(b)) => Op::Binary(b),
                (None, None) => return Ok(None),
            },
        };
        Ok(Some(op))
    }

    /// The provenance comment of a node line, if any (see [`parse_provenance`]).
    fn provenance(&mut self) -> Result<Origin, ParseError> {
        if self.peek().kind != Kind::Comment {
            return Ok(Origin::default());
        }
        let hash_col = self.next().col;
        // Columns are 1-based, so the `#` at column c is index c-1 and the
        // comment's text starts at index c.
        let mut cur = Cursor::new(&self.line.chars, hash_col as usize);
        parse_provenance(self.line, &mut cur)
    }

    /// The end of a statement; a trailing comment is allowed and ignored.
    fn end(&mut self) -> Result<(), ParseError> {
        if self.peek().kind == Kind::Comment {
            self.next();
        }
        let token = self.next();
        if token.kind == Kind::End { Ok(()) } else { Err(self.unexpected(&token, "end of line")) }
    }
}

// ---------------------------------------------------------------------------
// Provenance comments: `# FILE:LINE:COL via PASS,PASS`

/// The text after a node's `#`: a span, ` via ` and pass names, or both.
fn parse_provenance(line: &Line, cur: &mut Cursor) -> Result<Origin, ParseError> {
    let mut origin = Origin::default();
    cur.skip_spaces();
    if !cur.at_keyword("via") {
        if cur.at_end() {
            return Err(line.error(cur.col(), "expected a source location `FILE:LINE:COL` or `via PASSES` after `#`"));
        }
        origin.span = Some(parse_span(line, cur)?);
        cur.skip_spaces();
        if cur.at_end() {
            return Ok(origin);
        }
        if !cur.at_keyword("via") {
            let rest: String = cur.chars[cur.pos..].iter().collect();
            return Err(line.error(cur.col(), format!("expected `via` or end of line, found `{rest}`")));
        }
    }
    cur.pos += "via".len();
    origin.passes = parse_passes(line, cur)?;
    Ok(origin)
}

/// `file:line:col`, the file bare (up to the first whitespace) or quoted.
fn parse_span(line: &Line, cur: &mut Cursor) -> Result<Span, ParseError> {
    let start = cur.col();
    let (file, numbers_col, numbers) = if cur.peek() == Some('"') {
        let file = lex_string(cur, line)?;
        let numbers_col = cur.col();
        let rest = cur.take_while(|c| !c.is_whitespace());
        let numbers = rest.strip_prefix(':').and_then(|r| r.split_once(':')).and_then(line_col);
        (file, numbers_col, numbers)
    } else {
        let token = cur.take_while(|c| !c.is_whitespace());
        // Line and col are the last two `:` fields, so a bare file may hold `:`.
        let fields = token.rsplit_once(':').and_then(|(rest, col)| Some((rest.rsplit_once(':')?, col)));
        match fields {
            Some(((file, l), c)) if !file.is_empty() => (file.to_string(), start, line_col((l, c))),
            _ => return Err(line.error(start, format!("expected a source location `FILE:LINE:COL`, found `{token}`"))),
        }
    };
    let Some((span_line, span_col)) = numbers else {
        return Err(line.error(numbers_col, "expected `:LINE:COL` after the file name, with numbers"));
    };
    Ok(Span { file: Arc::from(file), line: span_line, col: span_col })
}

fn line_col((line, col): (&str, &str)) -> Option<(u32, u32)> {
    Some((line.parse().ok()?, col.parse().ok()?))
}

/// `PASS,PASS,...` after `via`: bare names or quoted strings.
fn parse_passes(line: &Line, cur: &mut Cursor) -> Result<Vec<String>, ParseError> {
    let mut passes = Vec::new();
    loop {
        cur.skip_spaces();
        let col = cur.col();
        if cur.peek() == Some('"') {
            passes.push(lex_string(cur, line)?);
        } else {
            let bare = cur.take_while(is_name_char);
            if bare.is_empty() {
                return Err(line.error(col, "expected a pass name"));
            }
            passes.push(bare);
        }
        cur.skip_spaces();
        match cur.bump() {
            None => return Ok(passes),
            Some(',') => {}
            Some(c) => {
                let message = format!("expected `,` or end of line after a pass name, found `{}`", c.escape_debug());
                return Err(line.error(cur.col() - 1, message));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Statements

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Before `graph NAME {`.
    Header,
    Nodes,
    /// After the first `output`: only outputs and `}` may follow.
    Outputs,
    /// After `}`: only blank and comment lines may follow.
    Done,
}

/// The graph read so far and the names already used, to reject duplicates
/// where they are written.
struct Parser {
    graph: Graph,
    stage: Stage,
    param_paths: HashMap<String, NodeId>,
    input_names: HashMap<String, NodeId>,
}

impl Parser {
    fn new() -> Self {
        Parser { graph: Graph::new(""), stage: Stage::Header, param_paths: HashMap::new(), input_names: HashMap::new() }
    }

    fn statement(&mut self, line: &Line) -> Result<(), ParseError> {
        let mut tokens = Tokens::new(line)?;
        match self.stage {
            Stage::Header => self.header(&mut tokens),
            Stage::Nodes | Stage::Outputs => self.body_statement(&mut tokens),
            Stage::Done => Err(line.error(tokens.peek().col, "unexpected text after the graph's closing `}`")),
        }
    }

    fn finish(self, file: &str, (line, col): (u32, u32)) -> Result<Graph, ParseError> {
        let expected = match self.stage {
            Stage::Done => return Ok(self.graph),
            Stage::Header => "expected `graph NAME {`, found end of input",
            Stage::Nodes | Stage::Outputs => "expected `}` to close the graph, found end of input",
        };
        Err(ParseError { file: file.to_string(), line, col, message: expected.to_string() })
    }

    /// `graph NAME {`
    fn header(&mut self, tokens: &mut Tokens) -> Result<(), ParseError> {
        tokens.keyword("graph")?;
        self.graph.name = tokens.name("the graph's name")?.0;
        tokens.punct('{')?;
        tokens.end()?;
        self.stage = Stage::Nodes;
        Ok(())
    }

    fn body_statement(&mut self, tokens: &mut Tokens) -> Result<(), ParseError> {
        let first = tokens.peek().clone();
        match &first.kind {
            Kind::Ref(_) if self.stage == Stage::Outputs => {
                Err(tokens.line.error(first.col, "nodes must come before the outputs"))
            }
            Kind::Ref(_) => self.node(tokens),
            Kind::Word(w) if w == "output" => {
                self.stage = Stage::Outputs;
                self.output(tokens)
            }
            Kind::Punct('}') => {
                tokens.next();
                tokens.end()?;
                self.stage = Stage::Done;
                Ok(())
            }
            _ => Err(tokens.unexpected(&first, "a node `%N : TYPE = OP ...`, `output NAME = %N` or `}`")),
        }
    }

    /// `output NAME = %ID`
    fn output(&mut self, tokens: &mut Tokens) -> Result<(), ParseError> {
        let line = tokens.line;
        tokens.keyword("output")?;
        let (name, name_col) = tokens.name("the output's name")?;
        tokens.punct('=')?;
        let (id, id_col) = tokens.reference("a node such as `%3`")?;
        tokens.end()?;
        if id as usize >= self.graph.len() {
            return Err(line.error(id_col, format!("output `{name}` refers to %{id}, which is not defined")));
        }
        if self.graph.output(&name).is_some() {
            return Err(line.error(name_col, format!("output `{name}` is defined twice")));
        }
        self.graph.add_output(name, NodeId(id));
        Ok(())
    }

    /// `%ID : TYPE = MNEMONIC OPERANDS ARGUMENTS   # PROVENANCE`
    fn node(&mut self, tokens: &mut Tokens) -> Result<(), ParseError> {
        let line = tokens.line;
        let (id, id_col) = tokens.reference("a node id")?;
        let expected_id = self.graph.len();
        if id as usize != expected_id {
            let message = format!("expected node id %{expected_id}, found %{id}: ids count up from %0 in order");
            return Err(line.error(id_col, message));
        }
        tokens.punct(':')?;
        let (ty, ty_col) = tokens.tensor_type()?;
        tokens.punct('=')?;
        let (mnemonic, op_col) = tokens.word("an operation such as `add` or `matmul`")?;
        let operands = tokens.operands()?;
        let arguments_col = tokens.peek().col;
        let op = tokens.op_arguments(&mnemonic)?;
        let op = op.ok_or_else(|| line.error(op_col, format!("unknown operation `{mnemonic}`")))?;
        let origin = tokens.provenance()?;
        tokens.end()?;

        let inputs = self.check_operands(line, &operands)?;
        self.check_type(line, &op, &inputs, &ty, (ty_col, op_col))?;
        self.check_names(line, &op, NodeId(id), arguments_col)?;
        self.graph.push_unchecked(Node { op, inputs, ty, origin });
        Ok(())
    }

    fn check_operands(&self, line: &Line, operands: &[(u32, u32)]) -> Result<Vec<NodeId>, ParseError> {
        let defined = self.graph.len();
        let check = |&(id, col): &(u32, u32)| {
            if (id as usize) < defined {
                Ok(NodeId(id))
            } else {
                Err(line.error(col, format!("operand %{id} is not defined before node %{defined}")))
            }
        };
        operands.iter().map(check).collect()
    }

    /// The declared type must be what the op produces; errors about the
    /// declared type alone point at it, the rest at the mnemonic.
    fn check_type(
        &self,
        line: &Line,
        op: &Op,
        inputs: &[NodeId],
        ty: &TensorType,
        (ty_col, op_col): (u32, u32),
    ) -> Result<(), ParseError> {
        sizes_fit(op, &[], ty).map_err(|message| line.error(ty_col, message))?;
        let input_types: Vec<&TensorType> = inputs.iter().map(|&i| self.graph.ty(i)).collect();
        sizes_fit(op, &input_types, ty).map_err(|message| line.error(op_col, message))?;
        result_type(op, &input_types, Some(ty)).map_err(|message| line.error(op_col, message))?;
        Ok(())
    }

    /// Parameter paths and input names are unique (they name checkpoint
    /// entries and fed values); paths are dotted identifiers.
    fn check_names(&mut self, line: &Line, op: &Op, id: NodeId, col: u32) -> Result<(), ParseError> {
        let (name, seen, what) = match op {
            Op::Param { path, .. } => {
                if !is_valid_param_path(path) {
                    let message = format!("parameter path \"{path}\" is not dotted identifiers like `layers.0.w`");
                    return Err(line.error(col, message));
                }
                (path, &mut self.param_paths, "parameter path")
            }
            Op::Input { name } => (name, &mut self.input_names, "input name"),
            _ => return Ok(()),
        };
        if let Some(first) = seen.get(name) {
            return Err(line.error(col, format!("{what} \"{name}\" is already used by {first}")));
        }
        seen.insert(name.clone(), id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "graph g {\n  %0 : f32[2] = input \"x\"\n  %1 : f32[2] = exp %0\n  output y = %1\n}\n";

    fn error(text: &str) -> ParseError {
        parse(text, "bad.ir").expect_err("the text should not parse")
    }

    /// GOOD with line `index` (0-based) replaced.
    fn with_line(index: usize, replacement: &str) -> String {
        let mut lines: Vec<&str> = GOOD.lines().collect();
        lines[index] = replacement;
        lines.join("\n") + "\n"
    }

    fn at(err: &ParseError) -> (u32, u32) {
        (err.line, err.col)
    }

    #[test]
    fn parses_a_small_graph() {
        let g = parse(GOOD, "good.ir").unwrap();
        assert_eq!(g.name, "g");
        assert_eq!(g.len(), 2);
        assert_eq!(g.node(NodeId(1)).op, Op::Unary(UnaryOp::Exp));
        assert_eq!(g.output("y"), Some(NodeId(1)));
    }

    #[test]
    fn blank_lines_comments_and_crlf_are_ignored() {
        let text = "# leading comment\n\ngraph g {\r\n\n  # a note\n  %0 : f32[2] = input \"x\"\r\n}\n# trailing\n";
        let g = parse(text, "t").unwrap();
        assert_eq!(g.len(), 1);
    }

    #[test]
    fn display_is_line_col_message() {
        let err = error(&with_line(2, "  %1 : f32[2] : exp %0"));
        assert_eq!(err.to_string(), "3:15: expected `=`, found `:`");
    }

    #[test]
    fn wrong_separator_renders_with_caret() {
        let text = with_line(2, "  %1 : f32[2] : exp %0");
        insta::assert_snapshot!("expected_equals", error(&text).render(&text));
    }

    #[test]
    fn unknown_mnemonic() {
        let text = with_line(2, "  %1 : f32[2] = frobnicate %0");
        let err = error(&text);
        assert_eq!(at(&err), (3, 17));
        insta::assert_snapshot!("unknown_mnemonic", err.render(&text));
    }

    #[test]
    fn unknown_operand() {
        let text = with_line(2, "  %1 : f32[2] = exp %7");
        let err = error(&text);
        assert_eq!(at(&err), (3, 21));
        insta::assert_snapshot!("unknown_operand", err.render(&text));
        // An operand may not refer to the node itself either.
        assert_eq!(at(&error(&with_line(2, "  %1 : f32[2] = exp %1"))), (3, 21));
    }

    #[test]
    fn type_mismatch() {
        let text = with_line(2, "  %1 : f32[3] = exp %0");
        let err = error(&text);
        assert_eq!(at(&err), (3, 17));
        assert!(err.message.contains("declared as f32[3]"), "{err}");
        insta::assert_snapshot!("type_mismatch", err.render(&text));
    }

    #[test]
    fn ids_must_count_up() {
        let err = error(&with_line(2, "  %2 : f32[2] = exp %0"));
        assert_eq!(at(&err), (3, 3));
        assert!(err.message.contains("expected node id %1"), "{err}");
    }

    #[test]
    fn syntax_errors_point_at_the_token() {
        let cases: [(&str, (u32, u32)); 10] = [
            ("  %1 : f32[2 = exp %0", (3, 14)),
            ("  %1 : f64[2] = exp %0", (3, 8)),
            ("  %1 : f32[2] = exp %0 axis=1", (3, 24)),
            ("  %1 : f32[2] = exp %0 $", (3, 24)),
            ("  %1 : f32[2] = exp %", (3, 21)),
            ("  %1 : f32[2] = exp %0, ", (3, 25)),
            ("  %1 : f32[2] = exp %0   # nowhere", (3, 28)),
            ("  %1 : f32[2] = exp %0   # a.lpa:1:x", (3, 28)),
            ("  %1 : f32[2] = exp %0   # a.lpa:1:2 via", (3, 41)),
            ("  %1 : f32[2] = exp %0   # a.lpa:1:2 by cse", (3, 38)),
        ];
        for (line, expected) in cases {
            let err = error(&with_line(2, line));
            assert_eq!(at(&err), expected, "{line:?} gave {err}");
        }
    }

    #[test]
    fn attribute_errors() {
        let text = "graph g {\n  %0 : f32[4,2] = input \"x\"\n  %1 : f32[4,1] = slice %0 axis=1 begin=0 end=1\n}\n";
        let err = error(text);
        assert_eq!(at(&err), (3, 35));
        assert_eq!(err.message, "expected `start=`, found `begin`");
        let text = "graph g {\n  %0 : f32[4] = param \"w\" init=gaussian(0.0, 1.0)\n}\n";
        assert_eq!(at(&error(text)), (2, 32));
        let text = "graph g {\n  %0 : f32[4] = const 1.5x\n}\n";
        assert!(error(text).message.contains("`1.5x`, which is not valid"));
    }

    #[test]
    fn strings_and_escapes() {
        let text = "graph g {\n  %0 : f32[2] = input \"a\\\"b\\\\c\\nd\\u{7}\"\n}\n";
        let g = parse(text, "t").unwrap();
        assert_eq!(g.inputs().next().unwrap().1, "a\"b\\c\nd\u{7}");
        assert_eq!(at(&error("graph g {\n  %0 : f32[2] = input \"abc\n}\n")), (2, 23));
        assert_eq!(at(&error("graph g {\n  %0 : f32[2] = input \"a\\qb\"\n}\n")), (2, 25));
    }

    #[test]
    fn structure_errors() {
        assert_eq!(error("").message, "expected `graph NAME {`, found end of input");
        assert_eq!(at(&error("graf g {\n}\n")), (1, 1));
        let unclosed = error("graph g {\n  %0 : f32[2] = input \"x\"\n");
        assert_eq!(
            (unclosed.line, unclosed.message.as_str()),
            (3, "expected `}` to close the graph, found end of input")
        );
        assert_eq!(at(&error(&(GOOD.to_string() + "graph h {\n"))), (6, 1));
        let late_node = GOOD.replace("}\n", "  %2 : f32[2] = exp %1\n}\n");
        assert!(error(&late_node).message.contains("before the outputs"));
        assert_eq!(at(&error(&GOOD.replace("%1\n}", "%9\n}"))), (4, 14));
        let twice = GOOD.replace("}\n", "  output y = %0\n}\n");
        assert_eq!(at(&error(&twice)), (5, 10));
    }

    #[test]
    fn names_are_checked() {
        let dup = "graph g {\n  %0 : f32[2] = input \"x\"\n  %1 : f32[2] = input \"x\"\n}\n";
        let err = error(dup);
        assert_eq!(at(&err), (3, 23));
        assert!(err.message.contains("already used by %0"), "{err}");
        let bad_path = "graph g {\n  %0 : f32[2] = param \"a..b\" init=const(0.0)\n}\n";
        assert_eq!(at(&error(bad_path)), (2, 23));
    }

    #[test]
    fn huge_types_are_errors_not_overflows() {
        let text = "graph g {\n  %0 : f32[4294967296,4294967296,4294967296] = input \"x\"\n}\n";
        assert_eq!(at(&error(text)), (2, 8));
        let pad = "graph g {\n  %0 : f32[2] = input \"x\"\n  %1 : f32[2] = pad %0 axis=0 lo=18446744073709551615 hi=1 value=0.0\n}\n";
        assert_eq!(at(&error(pad)), (3, 17));
    }

    #[test]
    fn render_counts_characters_and_keeps_tabs() {
        let err = ParseError { file: "f".into(), line: 1, col: 4, message: "m".into() };
        assert_eq!(err.render("\té x"), "error: m\n  --> f:1:4\n   |\n 1 | \té x\n   | \t  ^\n");
        let far = ParseError { file: "f".into(), line: 120, col: 1, message: "m".into() };
        assert!(far.render("").contains("\n    |\n120 | \n    | ^\n"), "{}", far.render(""));
    }
}
