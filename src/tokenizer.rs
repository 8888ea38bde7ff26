//! Instruction tokenization as the bundle declares it: a plain vocabulary file or a Hugging Face
//! `tokenizer.json`. Runs once per new instruction, never per frame.

use std::collections::HashMap;
use std::path::Path;

use crate::bundle::{InstructionSpec, TokenizerKind};

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("cannot read tokenizer file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("tokenizer file {path} is not valid: {problem}")]
    Invalid { path: String, problem: String },
    #[error("cannot tokenize instruction: {0}")]
    Encode(String),
}

pub struct InstructionEncoder {
    tokenizer: Tokenizer,
    pad_id: i64,
}

impl InstructionEncoder {
    pub fn for_bundle(bundle: &crate::bundle::Bundle) -> Result<Self, TokenizerError> {
        let spec = &bundle.manifest.instruction;
        Ok(InstructionEncoder {
            tokenizer: Tokenizer::load(spec, &bundle.dir)?,
            pad_id: spec.pad_id,
        })
    }

    /// Writes the instruction's ids into `out`, padded or truncated to its length.
    pub fn encode_into(&self, text: &str, out: &mut [i64]) -> Result<(), TokenizerError> {
        self.tokenizer.encode_into(text, self.pad_id, out)
    }
}

pub enum Tokenizer {
    /// Whitespace words, lowercased, ASCII punctuation stripped from both ends; id = line of the vocab file.
    Vocab {
        ids: HashMap<String, i64>,
        unk_id: i64,
    },
    HuggingFace(Box<tokenizers::Tokenizer>),
}

impl Tokenizer {
    pub fn load(spec: &InstructionSpec, bundle_dir: &Path) -> Result<Self, TokenizerError> {
        let path = bundle_dir.join(&spec.file);
        let shown = path.display().to_string();
        match spec.tokenizer {
            TokenizerKind::Vocab => {
                let text = std::fs::read_to_string(&path).map_err(|source| TokenizerError::Io {
                    path: shown.clone(),
                    source,
                })?;
                let mut ids = HashMap::new();
                for (i, word) in text.lines().enumerate() {
                    let word = word.trim();
                    if word.is_empty() {
                        return Err(TokenizerError::Invalid {
                            path: shown,
                            problem: format!("line {} is empty", i + 1),
                        });
                    }
                    ids.entry(word.to_string()).or_insert(i as i64);
                }
                Ok(Tokenizer::Vocab {
                    ids,
                    unk_id: spec.unk_id,
                })
            }
            // tokenizers panics on some malformed files (found by fuzzing): a panic is a refusal.
            TokenizerKind::HuggingFace => {
                match std::panic::catch_unwind(|| tokenizers::Tokenizer::from_file(&path)) {
                    Ok(Ok(t)) => Ok(Tokenizer::HuggingFace(Box::new(t))),
                    Ok(Err(e)) => Err(TokenizerError::Invalid {
                        path: shown,
                        problem: e.to_string(),
                    }),
                    Err(_) => Err(TokenizerError::Invalid {
                        path: shown,
                        problem: "the tokenizer library could not read it (it panicked)".into(),
                    }),
                }
            }
        }
    }

    /// Writes exactly `out.len()` ids: truncated, or padded with `pad_id`.
    pub fn encode_into(
        &self,
        text: &str,
        pad_id: i64,
        out: &mut [i64],
    ) -> Result<(), TokenizerError> {
        out.fill(pad_id);
        match self {
            Tokenizer::Vocab { ids, unk_id } => {
                let words = text
                    .split_whitespace()
                    .map(|w| {
                        w.trim_matches(|c: char| c.is_ascii_punctuation())
                            .to_lowercase()
                    })
                    .filter(|w| !w.is_empty());
                for (slot, word) in out.iter_mut().zip(words) {
                    *slot = ids.get(&word).copied().unwrap_or(*unk_id);
                }
            }
            Tokenizer::HuggingFace(t) => {
                let enc = t
                    .encode(text, true)
                    .map_err(|e| TokenizerError::Encode(e.to_string()))?;
                for (slot, id) in out.iter_mut().zip(enc.get_ids()) {
                    *slot = i64::from(*id);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab() -> Tokenizer {
        let ids = ["<pad>", "<unk>", "reach", "the", "red"]
            .iter()
            .enumerate()
            .map(|(i, w)| (w.to_string(), i as i64))
            .collect();
        Tokenizer::Vocab { ids, unk_id: 1 }
    }

    #[test]
    fn vocab_words_are_normalized_padded_and_truncated() {
        let mut out = [9i64; 5];
        vocab()
            .encode_into("Reach  the RED, banana!", 0, &mut out)
            .unwrap();
        assert_eq!(out, [2, 3, 4, 1, 0]);
        let mut short = [0i64; 2];
        vocab().encode_into("reach the red", 0, &mut short).unwrap();
        assert_eq!(short, [2, 3]);
        let mut empty = [7i64; 3];
        vocab().encode_into("  ...  ", 0, &mut empty).unwrap();
        assert_eq!(empty, [0, 0, 0]);
    }
}
