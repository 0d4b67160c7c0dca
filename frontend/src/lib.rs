//! lpac's model language: lexer, parser, name resolution, staged evaluation
//! (shape checking happens as the graph is built) and lowering to the graph IR.
//!
//! The entry point is [`compile()`] (or [`compile_file`]): source text and
//! `--set` overrides in, a [`Model`] with its forward graph out, or a
//! [`CompileError`] holding every diagnostic.

pub mod ast;
pub mod build;
pub mod builtins;
pub mod compile;
pub mod config;
pub mod diagnostic;
pub mod eval;
pub mod lexer;
pub mod parser;
pub mod resolve;
pub mod source;
pub mod value;

pub use compile::{CompileError, Model, PRELUDE, compile, compile_file};
pub use config::{Config, Override};
