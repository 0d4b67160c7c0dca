//! Tokenizers: text to token ids and back.
//!
//! Two kinds are provided:
//!
//! - [`ByteTokenizer`]: every UTF-8 byte is one token (vocabulary 256). Needs no
//!   file, never fails, and works for any text; the default for small models.
//! - [`HfTokenizer`]: a Hugging Face `tokenizer.json` (BPE, WordPiece, Unigram,
//!   WordLevel, with their normalisers and pre-tokenizers), read with the
//!   `tokenizers` crate.
//!
//! Training text is encoded *without* special tokens: a corpus is one long
//! token stream, not a batch of sentences, so no `[CLS]`/`<s>` markers are
//! inserted by post-processors.

use std::path::{Path, PathBuf};

/// Text to token ids and back.
pub trait Tokenizer {
    /// The ids of `text`. Fails only for tokenizers that cannot represent some
    /// text (for example a WordLevel vocabulary without an unknown token).
    fn encode(&self, text: &str) -> Result<Vec<u32>, String>;
    /// The text of `ids`. Never fails: bytes that do not form UTF-8 become
    /// U+FFFD, and ids the tokenizer does not know are skipped.
    fn decode(&self, ids: &[u32]) -> String;
    /// The number of distinct ids the tokenizer can produce; every id it
    /// returns is below this.
    fn vocab_size(&self) -> usize;
    /// A short description for logs and checkpoint metadata, e.g. `bytes` or
    /// `hf:tokenizer.json`.
    fn name(&self) -> String;
}

/// One token per UTF-8 byte; ids are the byte values (0..=255).
#[derive(Clone, Copy, Debug, Default)]
pub struct ByteTokenizer;

impl Tokenizer for ByteTokenizer {
    fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        Ok(text.bytes().map(u32::from).collect())
    }

    /// Ids above 255 are skipped (they cannot come from [`encode`]); byte
    /// sequences that are not UTF-8 (a sampled model can produce them) decode
    /// lossily.
    ///
    /// [`encode`]: Tokenizer::encode
    fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids.iter().filter_map(|&id| u8::try_from(id).ok()).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn vocab_size(&self) -> usize {
        256
    }

    fn name(&self) -> String {
        "bytes".to_string()
    }
}

/// A Hugging Face tokenizer loaded from a `tokenizer.json`.
pub struct HfTokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    vocab_size: usize,
}

impl HfTokenizer {
    /// Loads `path` (a `tokenizer.json`). Errors name the file and say whether
    /// it is missing, unreadable or not a tokenizer the crate understands.
    pub fn from_file(path: &Path) -> Result<HfTokenizer, String> {
        let shown = path.display();
        let metadata = std::fs::metadata(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => format!("tokenizer file `{shown}` does not exist"),
            _ => format!("cannot read tokenizer file `{shown}`: {e}"),
        })?;
        if metadata.is_dir() {
            return Err(format!("tokenizer file `{shown}` is a directory; expected a tokenizer.json file"));
        }
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read tokenizer file `{shown}`: {e}"))?;
        let inner = tokenizers::Tokenizer::from_bytes(&bytes)
            .map_err(|e| format!("`{shown}` is not a valid Hugging Face tokenizer.json: {e}"))?;
        // Added tokens may sit above the model's own vocabulary: count them,
        // and make room for the largest id in case the ids have gaps.
        let max_id = inner.get_vocab(true).values().copied().max().map_or(0, |id| id as usize + 1);
        let vocab_size = inner.get_vocab_size(true).max(max_id);
        Ok(HfTokenizer { inner, path: path.to_path_buf(), vocab_size })
    }

    /// The file this tokenizer was loaded from.
    #[cfg(test)]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Tokenizer for HfTokenizer {
    fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        let encoding = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| format!("tokenizer `{}` cannot encode the text: {e}", self.path.display()))?;
        Ok(encoding.get_ids().to_vec())
    }

    fn decode(&self, ids: &[u32]) -> String {
        // The crate skips ids it does not know; an error (a broken decoder
        // configuration) falls back to the tokens joined by spaces.
        match self.inner.decode(ids, false) {
            Ok(text) => text,
            Err(_) => ids.iter().filter_map(|&id| self.inner.id_to_token(id)).collect::<Vec<_>>().join(" "),
        }
    }

    fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    fn name(&self) -> String {
        let file =
            self.path.file_name().map_or_else(|| self.path.display().to_string(), |f| f.to_string_lossy().into());
        format!("hf:{file}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lpac-train-tokenizer-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        dir
    }

    const WORD_LEVEL_JSON: &str = r#"{
  "version": "1.0",
  "truncation": null,
  "padding": null,
  "added_tokens": [],
  "normalizer": null,
  "pre_tokenizer": { "type": "Whitespace" },
  "post_processor": null,
  "decoder": null,
  "model": {
    "type": "WordLevel",
    "vocab": { "[UNK]": 0, "hello": 1, "world": 2, "!": 3, "the": 4, "cat": 5 },
    "unk_token": "[UNK]"
  }
}"#;

    #[test]
    fn byte_tokenizer_round_trips_utf8() {
        let tok = ByteTokenizer;
        let text = "héllo, wörld — ∑ 🦀\n";
        let ids = tok.encode(text).unwrap();
        assert_eq!(ids.len(), text.len());
        assert!(ids.iter().all(|&id| (id as usize) < tok.vocab_size()));
        assert_eq!(ids[0], u32::from(b'h'));
        assert_eq!(tok.decode(&ids), text);
        assert_eq!(tok.vocab_size(), 256);
        assert_eq!(tok.name(), "bytes");
    }

    #[test]
    fn byte_tokenizer_decodes_broken_utf8_lossily() {
        let tok = ByteTokenizer;
        // "é" is [0xC3, 0xA9]; cut after the first byte, and an id above 255.
        assert_eq!(tok.decode(&[u32::from(b'a'), 0xC3, u32::from(b'b'), 300]), "a\u{FFFD}b");
        assert_eq!(tok.decode(&[]), "");
    }

    #[test]
    fn hf_word_level_tokenizer_loads_encodes_and_decodes() {
        let dir = scratch_dir("wordlevel");
        let path = dir.join("tokenizer.json");
        std::fs::write(&path, WORD_LEVEL_JSON).unwrap();
        let tok = HfTokenizer::from_file(&path).unwrap();
        assert_eq!(tok.vocab_size(), 6);
        assert_eq!(tok.name(), "hf:tokenizer.json");
        assert_eq!(tok.path(), path.as_path());
        assert_eq!(tok.encode("hello world!").unwrap(), vec![1, 2, 3]);
        // Unknown words map to the unknown token.
        assert_eq!(tok.encode("the dog").unwrap(), vec![4, 0]);
        // No decoder configured: the crate joins tokens with spaces.
        assert_eq!(tok.decode(&[4, 5]), "the cat");
        // Unknown ids are skipped rather than failing.
        assert_eq!(tok.decode(&[4, 99, 5]), "the cat");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn hf_tokenizer_errors_name_the_file() {
        let dir = scratch_dir("errors");
        let missing = dir.join("nope.json");
        let err = HfTokenizer::from_file(&missing).err().unwrap();
        assert!(err.contains("does not exist") && err.contains("nope.json"), "{err}");

        let bad = dir.join("bad.json");
        std::fs::write(&bad, "{ \"model\": 42 }").unwrap();
        let err = HfTokenizer::from_file(&bad).err().unwrap();
        assert!(err.contains("bad.json") && err.contains("not a valid Hugging Face tokenizer.json"), "{err}");

        let err = HfTokenizer::from_file(&dir).err().unwrap();
        assert!(err.contains("is a directory"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn hf_tokenizer_without_unknown_token_reports_encode_errors() {
        let dir = scratch_dir("nounk");
        let path = dir.join("tokenizer.json");
        std::fs::write(&path, WORD_LEVEL_JSON.replace(r#""unk_token": "[UNK]""#, r#""unk_token": "<missing>""#))
            .unwrap();
        let tok = HfTokenizer::from_file(&path).unwrap();
        assert_eq!(tok.encode("hello").unwrap(), vec![1]);
        let err = tok.encode("zebra").err().unwrap();
        assert!(err.contains("tokenizer.json") && err.contains("cannot encode"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
