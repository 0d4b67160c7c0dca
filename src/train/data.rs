//! The training corpus: loading, the held-out split, and batches.
//!
//! A corpus is one text file, tokenized as a whole into one token stream. The
//! **last** `test_fraction` of the stream (5% by default) is held out for
//! evaluation; the rest is for training. Splitting the stream at its end (not
//! sampling documents) keeps the held-out text contiguous and unseen.
//!
//! Training batches are `batch` windows of `seq + 1` tokens at offsets drawn
//! from the counter-based random stream ([`lpac_ir::random`]) keyed by the
//! seed and the step number: batch `k` of a run is a pure function of
//! `(tokens, seed, k)`, so a run resumed from a checkpoint at step `k` draws
//! exactly the batches the uninterrupted run would have drawn.
//!
//! Evaluation walks the held-out split in non-overlapping blocks (see
//! [`eval_blocks`]).

use std::path::Path;

use lpac_ir::random;

use super::tokenizer::Tokenizer;

/// Domain tag mixed into the key of the batch-offset stream (ASCII "data"), so
/// it never coincides with the parameter or dropout streams.
pub const DATA_DOMAIN: u64 = 0x6461_7461;

/// The default fraction of the token stream held out for evaluation.
pub const DEFAULT_TEST_FRACTION: f64 = 0.05;

/// A tokenized corpus split into training and held-out tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct Corpus {
    /// The first part of the token stream.
    pub train: Vec<u32>,
    /// The last `test_fraction` of the token stream.
    pub test: Vec<u32>,
    /// Where the tokens came from (the file's path), for messages.
    pub source: String,
}

/// Reads `path`, tokenizes it with `tok` and holds out the last
/// `test_fraction` of the tokens (rounded up, so at least one token).
///
/// Errors name the path and say what is wrong: the file is missing, a
/// directory, unreadable, empty, not UTF-8 (with the byte offset and line of
/// the first bad byte), cannot be tokenized, or is too short to give both
/// splits at least two tokens (one prediction each).
pub fn load_corpus(path: &Path, tok: &dyn Tokenizer, test_fraction: f64) -> Result<Corpus, String> {
    let shown = path.display();
    if !(test_fraction > 0.0 && test_fraction < 1.0) {
        return Err(format!("the held-out fraction must lie strictly between 0 and 1, got {test_fraction}"));
    }
    let metadata = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("corpus `{shown}` does not exist"),
        _ => format!("cannot read corpus `{shown}`: {e}"),
    })?;
    if metadata.is_dir() {
        return Err(format!("corpus `{shown}` is a directory; expected a text file"));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read corpus `{shown}`: {e}"))?;
    if bytes.is_empty() {
        return Err(format!("corpus `{shown}` is empty"));
    }
    let text = match std::str::from_utf8(&bytes) {
        Ok(text) => text,
        Err(e) => {
            let offset = e.valid_up_to();
            let line = 1 + bytes[..offset].iter().filter(|&&b| b == b'\n').count();
            return Err(format!(
                "corpus `{shown}` is not valid UTF-8: invalid byte 0x{:02x} at byte offset {offset} (line {line})",
                bytes[offset]
            ));
        }
    };
    let tokens = tok.encode(text).map_err(|e| format!("cannot tokenize corpus `{shown}`: {e}"))?;
    let n = tokens.len();
    let n_test = ((n as f64) * test_fraction).ceil() as usize;
    let n_train = n.saturating_sub(n_test);
    if n_test < 2 || n_train < 2 {
        return Err(format!(
            "corpus `{shown}` is too short: {n} tokens ({}) leave {n_train} for training and {n_test} held out \
             ({:.1}%); each split needs at least 2",
            tok.name(),
            test_fraction * 100.0
        ));
    }
    let mut train = tokens;
    let test = train.split_off(n_train);
    Ok(Corpus { train, test, source: shown.to_string() })
}

/// Checks that both splits hold at least one window of `seq + 1` tokens (a
/// row of `seq` inputs and their `seq` next-token targets), and that `batch`
/// and `seq` are positive. Windows are drawn with replacement, so one window
/// per split is enough for any `batch`.
pub fn check_fits(corpus: &Corpus, batch: usize, seq: usize) -> Result<(), String> {
    if batch == 0 || seq == 0 {
        return Err(format!("batch and seq must be positive, got batch {batch} and seq {seq}"));
    }
    for (name, tokens) in [("training", &corpus.train), ("held-out", &corpus.test)] {
        if tokens.len() < seq + 1 {
            return Err(format!(
                "the {name} split of `{}` has {} tokens, shorter than one batch: each of the {batch} rows needs \
                 seq + 1 = {} tokens",
                corpus.source,
                tokens.len(),
                seq + 1
            ));
        }
    }
    Ok(())
}

/// The key of the batch-offset stream at one step.
fn batch_key(seed: u64, step: u64) -> u64 {
    random::mix(random::mix(seed, DATA_DOMAIN), step)
}

/// The start offsets of the `batch` windows of step `step`: row `r` starts at
/// `floor(uniform(key, r) * (len - seq))` where `key = mix(mix(seed,
/// DATA_DOMAIN), step)`, i.e. uniformly in `0..=len - seq - 1`.
///
/// Panics when `tokens.len() < seq + 1` (call [`check_fits`] first).
pub fn batch_offsets(len: usize, batch: usize, seq: usize, seed: u64, step: u64) -> Vec<usize> {
    assert!(len > seq, "training_batch needs at least seq + 1 = {} tokens, got {len}", seq + 1);
    let starts = len - seq;
    let key = batch_key(seed, step);
    (0..batch as u64).map(|row| ((random::uniform(key, row) * starts as f64) as usize).min(starts - 1)).collect()
}

/// The training batch of step `step`: `batch` windows of `seq + 1` tokens at
/// offsets drawn from the Philox stream keyed by `(seed, step)` (see
/// [`batch_offsets`]). Returns `(inputs, targets)`, each row-major
/// `[batch, seq]`: row `r`'s inputs are `window[..seq]` and its targets
/// `window[1..]`.
///
/// Token ids are converted to `i32` as they are; the caller checks them
/// against the model's vocabulary first ([`max_token`]). Panics when
/// `tokens.len() < seq + 1` (call [`check_fits`] first).
pub fn training_batch(tokens: &[u32], batch: usize, seq: usize, seed: u64, step: u64) -> (Vec<i32>, Vec<i32>) {
    let mut inputs = Vec::with_capacity(batch * seq);
    let mut targets = Vec::with_capacity(batch * seq);
    for start in batch_offsets(tokens.len(), batch, seq, seed, step) {
        let window = &tokens[start..start + seq + 1];
        inputs.extend(window[..seq].iter().map(|&t| t as i32));
        targets.extend(window[1..].iter().map(|&t| t as i32));
    }
    (inputs, targets)
}

/// The held-out split as evaluation rows: non-overlapping blocks of `seq + 1`
/// tokens at stride `seq` (block `k` is `tokens[k*seq ..= k*seq + seq]`), each
/// as `(inputs, targets)` of length `seq`.
///
/// Consecutive blocks share one token — the last target of one block is the
/// first input of the next — so every token after the first is predicted
/// exactly once, from a context that restarts at each block boundary. The
/// trailing tokens that do not fill a whole block (fewer than `seq`) are
/// dropped, so the count of predictions is `blocks * seq`. Yields nothing when
/// `seq` is 0 or `tokens` holds fewer than `seq + 1` tokens.
pub fn eval_blocks(tokens: &[u32], seq: usize) -> impl Iterator<Item = (Vec<i32>, Vec<i32>)> + '_ {
    let blocks = if seq == 0 || tokens.len() < seq + 1 { 0 } else { (tokens.len() - 1) / seq };
    (0..blocks).map(move |k| {
        let window = &tokens[k * seq..k * seq + seq + 1];
        let inputs = window[..seq].iter().map(|&t| t as i32).collect();
        let targets = window[1..].iter().map(|&t| t as i32).collect();
        (inputs, targets)
    })
}

/// The largest token id in `tokens` (0 when empty): the caller checks it is
/// below the model's `vocab` before training.
pub fn max_token(tokens: &[u32]) -> u32 {
    tokens.iter().copied().max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::tokenizer::ByteTokenizer;
    use std::path::PathBuf;

    fn scratch_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lpac-train-data-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        dir
    }

    fn corpus(train: Vec<u32>, test: Vec<u32>) -> Corpus {
        Corpus { train, test, source: "mem".into() }
    }

    #[test]
    fn load_corpus_holds_out_the_last_five_percent() {
        let dir = scratch_dir("split");
        let path = dir.join("c.txt");
        let text: String = (0..1000).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
        std::fs::write(&path, &text).unwrap();
        let c = load_corpus(&path, &ByteTokenizer, DEFAULT_TEST_FRACTION).unwrap();
        assert_eq!(c.train.len(), 950);
        assert_eq!(c.test.len(), 50);
        let all: Vec<u32> = c.train.iter().chain(&c.test).copied().collect();
        assert_eq!(all, ByteTokenizer.encode(&text).unwrap());
        assert_eq!(c.source, path.display().to_string());
        // Rounds the held-out part up.
        std::fs::write(&path, &text[..101]).unwrap();
        let c = load_corpus(&path, &ByteTokenizer, 0.05).unwrap();
        assert_eq!((c.train.len(), c.test.len()), (95, 6));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn load_corpus_errors_name_the_path() {
        let dir = scratch_dir("errors");
        let missing = dir.join("missing.txt");
        let err = load_corpus(&missing, &ByteTokenizer, 0.05).unwrap_err();
        assert!(err.contains("missing.txt") && err.contains("does not exist"), "{err}");

        let err = load_corpus(&dir, &ByteTokenizer, 0.05).unwrap_err();
        assert!(err.contains("is a directory"), "{err}");

        let empty = dir.join("empty.txt");
        std::fs::write(&empty, "").unwrap();
        let err = load_corpus(&empty, &ByteTokenizer, 0.05).unwrap_err();
        assert!(err.contains("empty.txt") && err.contains("is empty"), "{err}");

        let latin1 = dir.join("latin1.txt");
        std::fs::write(&latin1, b"ab\ncaf\xe9 au lait").unwrap();
        let err = load_corpus(&latin1, &ByteTokenizer, 0.05).unwrap_err();
        assert!(err.contains("latin1.txt") && err.contains("not valid UTF-8"), "{err}");
        assert!(err.contains("byte offset 6") && err.contains("line 2") && err.contains("0xe9"), "{err}");

        let short = dir.join("short.txt");
        std::fs::write(&short, "abc").unwrap();
        let err = load_corpus(&short, &ByteTokenizer, 0.05).unwrap_err();
        assert!(err.contains("short.txt") && err.contains("too short"), "{err}");

        std::fs::write(&short, "abcdefghijklmnopqrstuvwxyz").unwrap();
        let err = load_corpus(&short, &ByteTokenizer, 1.5).unwrap_err();
        assert!(err.contains("between 0 and 1"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[cfg(unix)]
    #[test]
    fn load_corpus_reports_unreadable_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = scratch_dir("unreadable");
        let path = dir.join("secret.txt");
        std::fs::write(&path, "some text here").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
        // Root can read anything; only check the message when the read fails.
        if std::fs::read(&path).is_err() {
            let err = load_corpus(&path, &ByteTokenizer, 0.05).unwrap_err();
            assert!(err.contains("cannot read corpus") && err.contains("secret.txt"), "{err}");
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn check_fits_needs_seq_plus_one_tokens_in_both_splits() {
        let c = corpus((0..100).collect(), (0..9).collect());
        assert!(check_fits(&c, 4, 8).is_ok());
        let err = check_fits(&c, 4, 9).unwrap_err();
        assert!(err.contains("held-out") && err.contains("shorter than one batch"), "{err}");
        assert!(err.contains("has 9 tokens") && err.contains("10 tokens"), "{err}");
        let c = corpus((0..5).collect(), (0..100).collect());
        let err = check_fits(&c, 2, 8).unwrap_err();
        assert!(err.contains("training split") && err.contains("has 5 tokens"), "{err}");
        assert!(check_fits(&c, 0, 2).is_err());
        assert!(check_fits(&c, 2, 0).is_err());
    }

    #[test]
    fn training_batches_are_windows_shifted_by_one() {
        let tokens: Vec<u32> = (0..500).map(|i| i * 3).collect();
        let (batch, seq) = (6, 16);
        let (inputs, targets) = training_batch(&tokens, batch, seq, 7, 3);
        assert_eq!(inputs.len(), batch * seq);
        assert_eq!(targets.len(), batch * seq);
        for row in 0..batch {
            let x = &inputs[row * seq..(row + 1) * seq];
            let y = &targets[row * seq..(row + 1) * seq];
            // Contiguous windows of the stream, targets one ahead of inputs.
            let start = (x[0] / 3) as usize;
            assert!(start + seq < tokens.len());
            for i in 0..seq {
                assert_eq!(x[i], tokens[start + i] as i32);
                assert_eq!(y[i], tokens[start + i + 1] as i32);
            }
        }
    }

    #[test]
    fn training_batches_depend_only_on_seed_and_step() {
        let tokens: Vec<u32> = (0..10_000).collect();
        let a = training_batch(&tokens, 8, 32, 42, 17);
        assert_eq!(a, training_batch(&tokens, 8, 32, 42, 17), "same seed and step, same batch");
        assert_ne!(a, training_batch(&tokens, 8, 32, 42, 18), "another step");
        assert_ne!(a, training_batch(&tokens, 8, 32, 43, 17), "another seed");
        // Drawing step 17 after other steps (a resumed run) changes nothing.
        for step in 0..17 {
            let _ = training_batch(&tokens, 8, 32, 42, step);
        }
        assert_eq!(a, training_batch(&tokens, 8, 32, 42, 17));
        // The offsets are pinned: they are part of the reproducibility contract.
        let key = random::mix(random::mix(42, DATA_DOMAIN), 17);
        let expected: Vec<usize> = (0..8).map(|r| (random::uniform(key, r) * (10_000 - 32) as f64) as usize).collect();
        assert_eq!(batch_offsets(10_000, 8, 32, 42, 17), expected);
    }

    #[test]
    fn training_batch_offsets_cover_the_whole_range() {
        // With len = seq + 1 the only window is the whole stream.
        let tokens: Vec<u32> = (0..9).collect();
        let (x, y) = training_batch(&tokens, 3, 8, 1, 0);
        assert_eq!(x, [0, 1, 2, 3, 4, 5, 6, 7].repeat(3));
        assert_eq!(y, [1, 2, 3, 4, 5, 6, 7, 8].repeat(3));
        // Small range: 12 tokens hold windows of 9 at starts 0..=3; every one
        // is reachable, none beyond.
        let mut seen = [false; 5];
        for step in 0..200 {
            for start in batch_offsets(12, 4, 8, 5, step) {
                seen[start] = true;
            }
        }
        assert_eq!(seen, [true, true, true, true, false]);
    }

    #[test]
    fn eval_blocks_predict_every_token_once() {
        let tokens: Vec<u32> = (0..23).collect();
        let blocks: Vec<_> = eval_blocks(&tokens, 5).collect();
        // (23 - 1) / 5 = 4 blocks; tokens 21 and 22 are never targets.
        assert_eq!(blocks.len(), 4);
        assert_eq!(blocks[0], (vec![0, 1, 2, 3, 4], vec![1, 2, 3, 4, 5]));
        assert_eq!(blocks[1], (vec![5, 6, 7, 8, 9], vec![6, 7, 8, 9, 10]));
        let targets: Vec<i32> = blocks.iter().flat_map(|(_, y)| y.clone()).collect();
        assert_eq!(targets, (1..=20).collect::<Vec<i32>>());
        // Exactly divisible: no token lost.
        let tokens: Vec<u32> = (0..21).collect();
        let targets: Vec<i32> = eval_blocks(&tokens, 5).flat_map(|(_, y)| y).collect();
        assert_eq!(targets, (1..=20).collect::<Vec<i32>>());
        // Too short or degenerate: nothing.
        assert_eq!(eval_blocks(&tokens[..5], 5).count(), 0);
        assert_eq!(eval_blocks(&tokens[..6], 5).count(), 1);
        assert_eq!(eval_blocks(&tokens, 0).count(), 0);
    }

    #[test]
    fn max_token_finds_the_largest_id() {
        assert_eq!(max_token(&[3, 900, 7]), 900);
        assert_eq!(max_token(&[]), 0);
    }
}
