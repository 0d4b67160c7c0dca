//! Every complete program in the language reference compiles.
//!
//! `docs/language.md` marks its code blocks by info string: `lpa` is a
//! complete model file, compiled here with no overrides; `lpa-fragment` is a
//! piece of one and `text` shows output (error messages), neither compiled.

use lpac_frontend::compile;

const DOC: &str = include_str!("../../docs/language.md");

/// The fenced code blocks of a Markdown text: (info string, body, line of the
/// opening fence). A fence is a line of three or more backticks; it is closed
/// by a line of at least as many backticks and nothing else.
fn code_blocks(text: &str) -> Vec<(String, String, usize)> {
    let mut blocks = Vec::new();
    let mut open: Option<(usize, String, String, usize)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let ticks = trimmed.chars().take_while(|&c| c == '`').count();
        match &mut open {
            None if ticks >= 3 => open = Some((ticks, trimmed[ticks..].trim().to_string(), String::new(), i + 1)),
            None => {}
            Some((fence, _, _, _)) if ticks >= *fence && trimmed[ticks..].trim().is_empty() => {
                let (_, info, body, line) = open.take().unwrap();
                blocks.push((info, body, line));
            }
            Some((_, _, body, _)) => {
                body.push_str(line);
                body.push('\n');
            }
        }
    }
    assert!(open.is_none(), "docs/language.md has a code block that is never closed");
    blocks
}

#[test]
fn every_lpa_example_compiles() {
    let programs: Vec<(String, usize)> =
        code_blocks(DOC).into_iter().filter(|(info, _, _)| info == "lpa").map(|(_, body, line)| (body, line)).collect();
    assert!(programs.len() >= 5, "expected at least 5 complete `lpa` examples, found {}", programs.len());
    let mut failures = Vec::new();
    for (n, (text, line)) in programs.iter().enumerate() {
        let name = format!("docs/language.md#example-{}", n + 1);
        if let Err(e) = compile(&name, text, &[]) {
            failures.push(format!("{name} (the block at line {line} of docs/language.md):\n{}", e.render()));
        }
    }
    assert!(failures.is_empty(), "{} example(s) do not compile:\n\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn code_blocks_are_found() {
    let text = "a\n```lpa\nx\n```\n````text\n```\n````\n```lpa-fragment\ny\n```\n";
    let blocks = code_blocks(text);
    let infos: Vec<&str> = blocks.iter().map(|(i, _, _)| i.as_str()).collect();
    assert_eq!(infos, ["lpa", "text", "lpa-fragment"]);
    assert_eq!(blocks[0].1, "x\n");
    assert_eq!(blocks[1].1, "```\n");
    assert_eq!(blocks[0].2, 2);
}
