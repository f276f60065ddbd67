//! Word-aware text matching: normalisation, and one Aho-Corasick automaton for all of a policy's terms.
//!
//! Text and terms are normalised the same way: split into words (runs of Unicode letters and
//! digits; an apostrophe inside a word joins it, so "aren't" is the word "arent"), lower-cased, and
//! reduced by a simple plural rule ("orders" → "order", "batches" → "batch", "entries" → "entry").
//! A phrase is a sequence of such words; it matches where the same words stand next to each other.
//! The normalised text is laid out as " w1 w2 … " so a pattern " a b " can only match whole words,
//! and every phrase of the policy is found in one left-to-right pass.

use std::ops::Range;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

/// A text split into normalised words, remembering where each word stood in the original.
#[derive(Debug, Clone, Default)]
pub struct Words {
    /// " w1 w2 … wn " (leading and trailing space).
    laid_out: String,
    /// Byte offset in `laid_out` where each word starts.
    starts: Vec<usize>,
    /// Byte range of each word in the original text.
    original: Vec<Range<usize>>,
}

fn is_apostrophe(c: char) -> bool {
    c == '\'' || c == '\u{2019}'
}

/// Reduces a simple English plural to its singular; leaves other words alone.
pub fn stem(w: &str) -> String {
    let n = w.chars().count();
    if n <= 3 || !w.ends_with('s') || w.ends_with("ss") || w.ends_with("us") || w.ends_with("is") {
        return w.to_string();
    }
    if let Some(base) = w.strip_suffix("ies") {
        return format!("{base}y");
    }
    for suffix in ["ches", "shes", "xes", "sses", "zes"] {
        if w.ends_with(suffix) {
            return w[..w.len() - 2].to_string();
        }
    }
    w[..w.len() - 1].to_string()
}

impl Words {
    /// Splits and normalises `text`.
    pub fn new(text: &str) -> Words {
        let mut w = Words {
            laid_out: String::with_capacity(text.len() + 2),
            ..Words::default()
        };
        w.laid_out.push(' ');
        let mut current = String::new();
        let mut start = None;
        let mut chars = text.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c.is_alphanumeric() {
                start.get_or_insert(i);
                current.extend(c.to_lowercase());
            } else if is_apostrophe(c)
                && start.is_some()
                && chars.peek().is_some_and(|(_, n)| n.is_alphanumeric())
            {
                // "aren't": the apostrophe joins the word.
            } else if let Some(s) = start.take() {
                w.push(&current, s..i);
                current.clear();
            }
        }
        if let Some(s) = start {
            w.push(&current, s..text.len());
        }
        w
    }

    fn push(&mut self, word: &str, original: Range<usize>) {
        self.starts.push(self.laid_out.len());
        self.laid_out.push_str(&stem(word));
        self.laid_out.push(' ');
        self.original.push(original);
    }

    /// Number of words.
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    /// True when there are no words.
    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// The normalised words.
    pub fn words(&self) -> Vec<&str> {
        self.laid_out.split_whitespace().collect()
    }

    /// Index of the word starting at byte `offset` of the laid-out text.
    fn word_at(&self, offset: usize) -> usize {
        self.starts.partition_point(|s| *s < offset)
    }

    /// Byte range in the original text covered by words `first..=last`.
    pub fn original_span(&self, first: usize, last: usize) -> Range<usize> {
        match (self.original.get(first), self.original.get(last)) {
            (Some(a), Some(b)) => a.start..b.end,
            _ => 0..0,
        }
    }
}

/// A phrase as the automaton stores it: " w1 w2 ".
pub fn phrase_pattern(phrase: &str) -> Option<String> {
    let w = Words::new(phrase);
    if w.is_empty() {
        None
    } else {
        Some(w.laid_out)
    }
}

/// Where a phrase was found: word indices `first..=last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    /// Phrase id.
    pub phrase: usize,
    /// First word.
    pub first: usize,
    /// Last word.
    pub last: usize,
}

/// All phrases of a policy, compiled once into one automaton.
#[derive(Debug, Clone)]
pub struct Phrases {
    patterns: Vec<String>,
    automaton: Option<AhoCorasick>,
}

impl Default for Phrases {
    fn default() -> Self {
        Phrases {
            patterns: Vec::new(),
            automaton: None,
        }
    }
}

impl Phrases {
    /// Registers a phrase (deduplicated) and returns its id; `None` when it has no words.
    pub fn add(&mut self, phrase: &str) -> Option<usize> {
        let pattern = phrase_pattern(phrase)?;
        Some(match self.patterns.iter().position(|p| *p == pattern) {
            Some(i) => i,
            None => {
                self.patterns.push(pattern);
                self.patterns.len() - 1
            }
        })
    }

    /// Builds the automaton; call once after every phrase is added.
    pub fn build(&mut self) -> Result<(), String> {
        if self.patterns.is_empty() {
            return Ok(());
        }
        let ac = AhoCorasickBuilder::new()
            .match_kind(MatchKind::Standard)
            .build(&self.patterns)
            .map_err(|e| format!("cannot compile the policy's phrases: {e}"))?;
        self.automaton = Some(ac);
        Ok(())
    }

    /// The normalised form of phrase `id`, for messages.
    pub fn pattern(&self, id: usize) -> &str {
        self.patterns.get(id).map_or("", |p| p.trim())
    }

    /// Every occurrence of every phrase in `words`, sorted by phrase then position.
    pub fn find(&self, words: &Words) -> Vec<Hit> {
        let Some(ac) = &self.automaton else {
            return Vec::new();
        };
        let mut hits: Vec<Hit> = ac
            .find_overlapping_iter(&words.laid_out)
            .map(|m| {
                let first = words.word_at(m.start() + 1);
                let n = self.patterns[m.pattern().as_usize()]
                    .split_whitespace()
                    .count();
                Hit {
                    phrase: m.pattern().as_usize(),
                    first,
                    last: first + n - 1,
                }
            })
            .collect();
        hits.sort_by_key(|h| (h.phrase, h.first));
        hits
    }
}

/// The hits of one phrase.
pub fn hits_of(hits: &[Hit], phrase: usize) -> &[Hit] {
    let start = hits.partition_point(|h| h.phrase < phrase);
    let end = hits.partition_point(|h| h.phrase <= phrase);
    &hits[start..end]
}

/// Two phrases within `within` words of each other (either order): the closest pair, if any.
pub fn near(hits: &[Hit], a: usize, b: usize, within: usize) -> Option<(Hit, Hit)> {
    let (ha, hb) = (hits_of(hits, a), hits_of(hits, b));
    let mut best: Option<(usize, Hit, Hit)> = None;
    for x in ha {
        for y in hb {
            let gap = if x.last < y.first {
                y.first - x.last - 1
            } else if y.last < x.first {
                x.first - y.last - 1
            } else {
                continue; // overlapping occurrences are the same words, not two terms
            };
            if gap <= within && best.is_none_or(|(g, ..)| gap < g) {
                best = Some((gap, *x, *y));
            }
        }
    }
    best.map(|(_, x, y)| (x, y))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_case_punctuation_plurals_and_apostrophes() {
        let w = Words::new("URGENT!! Our Orders aren't syncing; the batches/entries… Café’s");
        assert_eq!(
            w.words(),
            vec!["urgent", "our", "order", "arent", "syncing", "the", "batch", "entry", "café"]
        );
        assert_eq!(stem("status"), "status");
        assert_eq!(stem("process"), "process");
        assert_eq!(stem("bus"), "bus");
    }

    #[test]
    fn finds_whole_word_phrases_with_original_spans() {
        let mut p = Phrases::default();
        let not_syncing = p.add("not syncing").unwrap();
        let order = p.add("Order").unwrap();
        let sync = p.add("sync").unwrap();
        p.build().unwrap();
        let text = "Orders are NOT syncing since 9am";
        let w = Words::new(text);
        let hits = p.find(&w);
        assert_eq!(
            hits_of(&hits, not_syncing),
            &[Hit {
                phrase: not_syncing,
                first: 2,
                last: 3
            }]
        );
        assert_eq!(hits_of(&hits, order).len(), 1);
        assert!(
            hits_of(&hits, sync).is_empty(),
            "\"sync\" is not the word \"syncing\""
        );
        let h = hits_of(&hits, not_syncing)[0];
        assert_eq!(&text[w.original_span(h.first, h.last)], "NOT syncing");
    }

    #[test]
    fn near_counts_words_between() {
        let mut p = Phrases::default();
        let orders = p.add("orders").unwrap();
        let not_syncing = p.add("not syncing").unwrap();
        p.build().unwrap();
        let w = Words::new("our orders from Shopify are still not syncing");
        let hits = p.find(&w);
        assert!(near(&hits, orders, not_syncing, 4).is_some());
        assert!(near(&hits, orders, not_syncing, 3).is_none());
        let w = Words::new("not syncing: the orders");
        assert!(
            near(&p.find(&w), orders, not_syncing, 1).is_some(),
            "either order"
        );
    }

    #[test]
    fn unicode_text_never_panics_and_keeps_spans() {
        let text = "Ünïcode Straße — ÉCOLE orders 注文 が 同期 しない";
        let w = Words::new(text);
        for i in 0..w.len() {
            let span = w.original_span(i, i);
            assert!(!text[span].is_empty());
        }
        assert_eq!(w.words()[1], "straße");
    }
}
