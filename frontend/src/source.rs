//! Source files and spans. A [`Span`] is a byte range in one file of a
//! [`SourceMap`]; line and column are computed only when a message is shown.

use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(pub u32);

/// A byte range `start..end` in one source file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Span {
    pub file: FileId,
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub fn new(file: FileId, start: usize, end: usize) -> Self {
        Span { file, start: start as u32, end: end as u32 }
    }

    /// The smallest span covering both (same file assumed; else `self`).
    pub fn to(self, other: Span) -> Span {
        if self.file != other.file {
            return self;
        }
        Span { file: self.file, start: self.start.min(other.start), end: self.end.max(other.end) }
    }
}

pub struct SourceFile {
    pub name: Arc<str>,
    pub text: String,
    /// Byte offset of the start of each line.
    line_starts: Vec<usize>,
    /// True for the built-in prelude: provenance skips over it to the user's file.
    pub is_prelude: bool,
}

impl SourceFile {
    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        let line_text = &self.text[self.line_starts[line]..offset];
        (line + 1, line_text.chars().count() + 1)
    }

    /// The text of a 1-based line, without its newline.
    pub fn line_text(&self, line: usize) -> &str {
        let start = self.line_starts[line - 1];
        let end = self.line_starts.get(line).copied().unwrap_or(self.text.len());
        self.text[start..end].trim_end_matches(['\n', '\r'])
    }
}

/// Every file a compilation reads: the prelude and the user's model.
#[derive(Default)]
pub struct SourceMap {
    files: Vec<SourceFile>,
}

impl SourceMap {
    pub fn new() -> Self {
        SourceMap::default()
    }

    pub fn add(&mut self, name: &str, text: String, is_prelude: bool) -> FileId {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        self.files.push(SourceFile { name: name.into(), text, line_starts, is_prelude });
        FileId(self.files.len() as u32 - 1)
    }

    pub fn file(&self, id: FileId) -> &SourceFile {
        &self.files[id.0 as usize]
    }

    /// `file:line:col` of the start of a span.
    pub fn location(&self, span: Span) -> String {
        let file = self.file(span.file);
        let (line, col) = file.line_col(span.start as usize);
        format!("{}:{}:{}", file.name, line, col)
    }

    /// The span as the IR records provenance.
    pub fn ir_span(&self, span: Span) -> lpac_ir::Span {
        let file = self.file(span.file);
        let (line, col) = file.line_col(span.start as usize);
        lpac_ir::Span { file: file.name.clone(), line: line as u32, col: col as u32 }
    }

    /// The source text a span covers.
    pub fn snippet(&self, span: Span) -> &str {
        let text = &self.file(span.file).text;
        let end = (span.end as usize).min(text.len());
        text.get(span.start as usize..end).unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column() {
        let mut map = SourceMap::new();
        let f = map.add("m.lpa", "ab\ncdé f\n".to_string(), false);
        let file = map.file(f);
        assert_eq!(file.line_col(0), (1, 1));
        assert_eq!(file.line_col(3), (2, 1));
        assert_eq!(file.line_col(8), (2, 5), "columns count characters, not bytes");
        assert_eq!(file.line_text(2), "cdé f");
        assert_eq!(map.location(Span::new(f, 4, 5)), "m.lpa:2:2");
    }
}
