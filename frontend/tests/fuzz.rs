//! Bad input never panics: every prefix of the shipped models and thousands of
//! deterministic mutations of them go through the whole frontend (parse,
//! resolve, evaluate, verify) and must come back as a model or as diagnostics
//! that render.

use lpac_frontend::compile;

const MODELS: [(&str, &str); 3] = [
    ("tiny.lpa", include_str!("../../models/tiny.lpa")),
    ("gpt.lpa", include_str!("../../models/gpt.lpa")),
    ("llama.lpa", include_str!("../../models/llama.lpa")),
];

/// Small, fast overrides are not used: mutations rename keys, and an unknown
/// key would stop every run before evaluation. Instead each mutant is compiled
/// as is; the size limits of the frontend keep even absurd configs quick.
fn survives(name: &str, text: &str) {
    match compile(name, text, &[]) {
        Ok(model) => assert!(lpac_ir::verify(&model.graph).is_ok(), "{name}: a compiled graph must verify"),
        Err(e) => assert!(!e.render().is_empty(), "{name}: errors must render"),
    }
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn every_prefix_of_tiny_is_handled() {
    let (name, text) = MODELS[0];
    let cuts: Vec<usize> = (0..=text.len()).filter(|&i| text.is_char_boundary(i)).step_by(3).collect();
    for cut in cuts {
        survives(name, &text[..cut]);
    }
}

#[test]
fn prefixes_of_the_paper_models_are_handled() {
    for (name, text) in &MODELS[1..] {
        for cut in (0..text.len()).step_by(97).filter(|&i| text.is_char_boundary(i)) {
            survives(name, &text[..cut]);
        }
    }
}

/// Byte edits that keep the text UTF-8: delete, duplicate, swap, or replace
/// with a character that matters to the grammar.
fn mutate(text: &str, rng: &mut XorShift) -> String {
    const INTERESTING: &[&str] = &[
        "(",
        ")",
        "[",
        "]",
        "{",
        "}",
        ",",
        "=",
        ".",
        "..",
        "@",
        "-",
        "0",
        "99999999999",
        "\n",
        "#",
        "\"",
        "x",
        "param",
        "return",
        "1e999",
        "-1",
        "if",
        "for",
    ];
    let mut bytes = text.as_bytes().to_vec();
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(bytes.len().max(1));
        match rng.below(4) {
            0 if !bytes.is_empty() => {
                bytes.remove(at.min(bytes.len() - 1));
            }
            1 => {
                let token = INTERESTING[rng.below(INTERESTING.len())].as_bytes();
                bytes.splice(at..at, token.iter().copied());
            }
            2 if bytes.len() > 1 => {
                let (first, other) = (at.min(bytes.len() - 1), rng.below(bytes.len()));
                bytes.swap(first, other);
            }
            _ => {
                let end = (at + 1 + rng.below(8)).min(bytes.len());
                let chunk: Vec<u8> = bytes[at.min(end)..end].to_vec();
                bytes.splice(at..at, chunk);
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// `LPAC_FUZZ_ROUNDS=200000 cargo test --release -p lpac-frontend --test fuzz`
/// runs a longer campaign; the default keeps the suite quick.
#[test]
fn mutated_models_never_panic() {
    let rounds = std::env::var("LPAC_FUZZ_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(1500);
    let mut rng = XorShift(0x5EED_1234_ABCD_0001);
    for round in 0..rounds {
        let (name, text) = MODELS[round % MODELS.len()];
        let mutant = mutate(text, &mut rng);
        survives(name, &mutant);
    }
}

#[test]
fn hostile_inputs() {
    let deep = "(".repeat(10_000);
    let cases = [
        String::new(),
        "\u{0}\u{1}\u{7f}".to_string(),
        deep.clone(),
        format!("model m(x: [2]) {{ return {deep} }}"),
        "model m(x: [2]) { return sum(x) }".to_string(),
        "config { d = 99999999999999999999999 }".to_string(),
        "model m(x: [0]) {\n  return sum(x)\n}\n".to_string(),
        "model m(x: [2]) {\n  return sum(reshape(x, [-1, -1]))\n}\n".to_string(),
        "model m(x: [2]) {\n  return sum(slice(x, 0, 5, 1))\n}\n".to_string(),
        "model m(x: [2]) {\n  return sum(permute(x, [1]))\n}\n".to_string(),
        "model m(x: [2]) {\n  return sum(x) / 0\n}\n".to_string(),
        "config {\n  d = 2 ** 70\n}\nmodel m(x: [2]) {\n  return sum(x)\n}\n".to_string(),
        "model m(x: [2]) {\n  return sum(iota([2], 5))\n}\n".to_string(),
        "model m(x: [2]) {\n  return sum(concat([], 0))\n}\n".to_string(),
        "model m(t: i32[2]) {\n  return sum(gather(t, t))\n}\n".to_string(),
        "model m(x: [2, 3]) {\n  return sum(x @ x)\n}\n".to_string(),
        "model m(x: [2]) {\n  big = 9223372036854775807\n  a = -big - 1\n  b = -a\n  return sum(x)\n}\n".to_string(),
        "model m(x: [2]) {\n  big = 9223372036854775807\n  a = (-big - 1) / -1\n  return sum(x)\n}\n".to_string(),
        "model m(x: [2]) {\n  big = 9223372036854775807\n  return sum(reshape(x, [big, big, -1]))\n}\n".to_string(),
        "model m(x: [2]) {\n  big = 9223372036854775807\n  for i in -big..big {\n    x = x + 1.0\n  }\n  return sum(x)\n}\n".to_string(),
    ];
    for (i, case) in cases.iter().enumerate() {
        survives(&format!("hostile-{i}.lpa"), case);
    }
}
