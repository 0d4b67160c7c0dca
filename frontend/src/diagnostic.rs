//! Diagnostics: a message, the place it is about, further labelled places and
//! notes, rendered the way compiler users expect:
//!
//! ```text
//! error: cannot add f32[16,128,256] and f32[16,128,512]
//!   --> models/tiny.lpa:14:9
//!    |
//! 14 |   h = a + b
//!    |         ^ here
//! ```

use crate::source::{SourceMap, Span};

#[derive(Clone, Debug, PartialEq)]
pub struct Label {
    pub span: Span,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    pub message: String,
    /// The primary place, with an optional label under the caret.
    pub span: Span,
    pub label: String,
    /// Further places that explain the error (where an operand came from).
    pub secondary: Vec<Label>,
    pub notes: Vec<String>,
}

impl Diagnostic {
    pub fn error(span: Span, message: impl Into<String>) -> Self {
        Diagnostic { message: message.into(), span, label: String::new(), secondary: Vec::new(), notes: Vec::new() }
    }

    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    pub fn with_secondary(mut self, span: Span, message: impl Into<String>) -> Self {
        self.secondary.push(Label { span, message: message.into() });
        self
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }

    /// The full text of the diagnostic, ending in a newline.
    pub fn render(&self, sources: &SourceMap) -> String {
        let mut out = format!("error: {}\n", self.message);
        render_snippet(&mut out, sources, self.span, &self.label);
        for label in &self.secondary {
            render_snippet(&mut out, sources, label.span, &label.message);
        }
        for note in &self.notes {
            out.push_str(&format!("   = note: {}\n", note));
        }
        out
    }
}

fn render_snippet(out: &mut String, sources: &SourceMap, span: Span, label: &str) {
    let file = sources.file(span.file);
    let (line, col) = file.line_col(span.start as usize);
    let (end_line, end_col) = file.line_col(span.end as usize);
    let text = file.line_text(line);
    let width = if end_line == line && end_col > col { end_col - col } else { 1 };
    let gutter = " ".repeat(line.to_string().len());
    out.push_str(&format!("{gutter}--> {}:{}:{}\n", file.name, line, col));
    out.push_str(&format!("{gutter} |\n"));
    out.push_str(&format!("{line} | {text}\n"));
    let pad: String = text.chars().take(col - 1).map(|c| if c == '\t' { '\t' } else { ' ' }).collect();
    let caret = "^".repeat(width);
    let label = if label.is_empty() { String::new() } else { format!(" {label}") };
    out.push_str(&format!("{gutter} | {pad}{caret}{label}\n"));
}

/// Renders a list of diagnostics, followed by a count when there are several.
pub fn render_all(diagnostics: &[Diagnostic], sources: &SourceMap) -> String {
    let mut out = String::new();
    for d in diagnostics {
        out.push_str(&d.render(sources));
        out.push('\n');
    }
    if diagnostics.len() > 1 {
        out.push_str(&format!("error: {} errors\n", diagnostics.len()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_caret_under_span() {
        let mut map = SourceMap::new();
        let f = map.add("m.lpa", "model m() {\n  h = a + bb\n}\n".to_string(), false);
        let d = Diagnostic::error(Span::new(f, 22, 24), "unknown name `bb`").with_label("not defined").with_note("n");
        let text = d.render(&map);
        assert_eq!(
            text,
            "error: unknown name `bb`\n --> m.lpa:2:11\n  |\n2 |   h = a + bb\n  |           ^^ not defined\n   = note: n\n"
        );
    }
}
