//! The command line's error: already-rendered text (diagnostics carry their own
//! formatting) or a plain message. Every error exits with status 1.

use lpac_frontend::CompileError;

#[derive(Debug)]
pub enum CliError {
    /// Diagnostics from the frontend, rendered with source snippets.
    Compile(CompileError),
    /// A message about a file, a flag or an I/O failure.
    Message(String),
    /// Text that is already a complete, formatted error report.
    Rendered(String),
}

impl CliError {
    pub fn render(&self) -> String {
        match self {
            CliError::Compile(e) => e.render(),
            CliError::Message(m) => format!("error: {m}\n"),
            CliError::Rendered(text) => text.clone(),
        }
    }
}

impl From<CompileError> for CliError {
    fn from(e: CompileError) -> Self {
        CliError::Compile(e)
    }
}

impl From<String> for CliError {
    fn from(m: String) -> Self {
        CliError::Message(m)
    }
}

pub type CliResult = Result<(), CliError>;
