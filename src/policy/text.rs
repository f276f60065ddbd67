//! Word-aware text matching: normalisation, and one Aho-Corasick automaton for all of a policy's terms.
//!
//! Text and terms are normalised the same way: split into words (runs of Unicode letters and
//! digits; an apostrophe inside a word joins it, so "aren't" is the word "arent"), lower-cased, and
//! reduced by a simple plural rule ("orders" → "order", "batches" → "batch", "entries" → "entry").
//! A phrase is a sequence of such words; it matches where the same words stand next to each other.
//! The normalised text is laid out as " w1 w2 … " so a pattern " a b " can only match whole words,
//! and every phrase of the policy is found in one left-to-right pass.

use std::ops::Range;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};

/// A text split into normalised words, remembering where each word stood in the original.
#[derive(Debug, Clone, Default)]
pub struct Words {
    /// " w1 w2 … wn " (leading and trailing space).
    laid_out: String,
    /// Byte offset in `laid_out` where each word starts.
    starts: Vec<usize>,
    /// Byte range of each word in the original text (only kept when asked for: explaining needs it,
    /// deciding does not).
    original: Vec<Range<usize>>,
    keep_spans: bool,
}

fn is_apostrophe(c: char) -> bool {
    c == '\'' || c == '\u{2019}'
}

/// Reduces a simple English plural to its singular; leaves other words alone.
pub fn stem(w: &str) -> String {
    let mut s = w.to_string();
    stem_in_place(&mut s, 0);
    s
}

/// Applies [`stem`] to the word at `buf[start..]`. Only ASCII suffixes are cut, so UTF-8 stays whole.
fn stem_in_place(buf: &mut String, start: usize) {
    let w = &buf[start..];
    if w.len() <= 3
        || w.chars().nth(3).is_none()
        || !w.ends_with('s')
        || w.ends_with("ss")
        || w.ends_with("us")
        || w.ends_with("is")
    {
        return;
    }
    if w.ends_with("ies") {
        let cut = buf.len() - 3;
        buf.truncate(cut);
        buf.push('y');
        return;
    }
    let drop = if ["ches", "shes", "xes", "zes"]
        .iter()
        .any(|s| w.ends_with(s))
    {
        2
    } else {
        1
    };
    let cut = buf.len() - drop;
    buf.truncate(cut);
}

impl Words {
    /// Splits and normalises `text`.
    pub fn new(text: &str) -> Words {
        Words::split(text, false)
    }

    /// Like [`Words::new`], also remembering where each word stood, for [`Words::original_span`].
    pub fn with_spans(text: &str) -> Words {
        Words::split(text, true)
    }

    fn split(text: &str, keep_spans: bool) -> Words {
        let mut w = Words {
            laid_out: String::with_capacity(text.len() + 2),
            keep_spans,
            ..Words::default()
        };
        w.laid_out.push(' ');
        // The word being read: where it began in `text`, and where it begins in `laid_out`.
        let mut start: Option<(usize, usize)> = None;
        let mut chars = text.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c.is_alphanumeric() {
                if start.is_none() {
                    start = Some((i, w.laid_out.len()));
                }
                if c.is_ascii() {
                    w.laid_out.push(c.to_ascii_lowercase());
                } else {
                    w.laid_out.extend(c.to_lowercase());
                }
            } else if is_apostrophe(c)
                && start.is_some()
                && chars.peek().is_some_and(|(_, n)| n.is_alphanumeric())
            {
                // "aren't": the apostrophe joins the word.
            } else if let Some((s, at)) = start.take() {
                w.end_word(s..i, at);
            }
        }
        if let Some((s, at)) = start {
            w.end_word(s..text.len(), at);
        }
        w
    }

    fn end_word(&mut self, original: Range<usize>, at: usize) {
        stem_in_place(&mut self.laid_out, at);
        self.starts.push(at);
        self.laid_out.push(' ');
        if self.keep_spans {
            self.original.push(original);
        }
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

    /// Byte range in the original text covered by words `first..=last` (empty unless made `with_spans`).
    pub fn original_span(&self, first: usize, last: usize) -> Range<usize> {
        match (self.original.get(first), self.original.get(last)) {
            (Some(a), Some(b)) => a.start..b.end,
            _ => 0..0,
        }
    }
}

/// A phrase as the automaton stores it: " w1 w2 ".
fn phrase_pattern(phrase: &str) -> Option<String> {
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
#[derive(Debug, Clone, Default)]
pub struct Phrases {
    patterns: Vec<String>,
    /// Each pattern as the author first wrote it, for `explain`.
    written: Vec<String>,
    /// Words per pattern.
    lengths: Vec<usize>,
    automaton: Option<AhoCorasick>,
}

impl Phrases {
    /// Registers a phrase (deduplicated) and returns its id; `None` when it has no words.
    pub fn add(&mut self, phrase: &str) -> Option<usize> {
        let pattern = phrase_pattern(phrase)?;
        Some(match self.patterns.iter().position(|p| *p == pattern) {
            Some(i) => i,
            None => {
                self.lengths.push(pattern.split_whitespace().count());
                self.patterns.push(pattern);
                self.written.push(phrase.trim().to_string());
                self.patterns.len() - 1
            }
        })
    }

    /// Builds the automaton; call once after every phrase is added.
    pub fn build(&mut self) -> Result<(), String> {
        if self.patterns.is_empty() {
            return Ok(());
        }
        // A DFA: the fastest search, bought with memory once per policy load.
        // No prefilter: every pattern starts with a space, which a prefilter would find every few bytes.
        let ac = AhoCorasickBuilder::new()
            .kind(Some(AhoCorasickKind::DFA))
            .prefilter(false)
            .match_kind(MatchKind::Standard)
            .build(&self.patterns)
            .map_err(|e| format!("cannot compile the policy's phrases: {e}"))?;
        self.automaton = Some(ac);
        Ok(())
    }

    /// Number of distinct phrases.
    pub fn len(&self) -> usize {
        self.patterns.len()
    }

    /// True when the policy has no phrases.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Phrase `id` as the author first wrote it, for messages.
    pub fn written(&self, id: usize) -> &str {
        self.written.get(id).map_or("", String::as_str)
    }

    /// A phrase's normalised pattern (the words it matches).
    pub fn pattern(&self, id: usize) -> &str {
        self.patterns.get(id).map_or("", |p| p.trim())
    }

    /// Every occurrence of every phrase in `words`, grouped by phrase, in text order.
    pub fn find(&self, words: &Words) -> Hits {
        let Some(ac) = &self.automaton else {
            return Hits::default();
        };
        let found: Vec<Hit> = ac
            .find_overlapping_iter(&words.laid_out)
            .map(|m| {
                let phrase = m.pattern().as_usize();
                let first = words.word_at(m.start() + 1);
                Hit {
                    phrase,
                    first,
                    last: first + self.lengths[phrase] - 1,
                }
            })
            .collect();
        // Counting sort by phrase (stable, so each phrase's hits stay in text order): linear, where
        // a comparison sort of thousands of hits would cost more than the scan itself.
        let mut offsets = vec![0usize; self.patterns.len() + 1];
        for h in &found {
            offsets[h.phrase + 1] += 1;
        }
        for i in 1..offsets.len() {
            offsets[i] += offsets[i - 1];
        }
        let mut next = offsets.clone();
        let mut items = vec![
            Hit {
                phrase: 0,
                first: 0,
                last: 0
            };
            found.len()
        ];
        for h in found {
            items[next[h.phrase]] = h;
            next[h.phrase] += 1;
        }
        Hits { offsets, items }
    }
}

/// The phrase occurrences in one text, grouped by phrase.
#[derive(Debug, Clone, Default)]
pub struct Hits {
    offsets: Vec<usize>,
    items: Vec<Hit>,
}

impl Hits {
    /// Ids of the phrases found (with repeats).
    pub fn found(&self) -> impl Iterator<Item = usize> + '_ {
        self.items.iter().map(|h| h.phrase)
    }

    /// The occurrences of one phrase, in text order.
    pub fn of(&self, phrase: usize) -> &[Hit] {
        match (self.offsets.get(phrase), self.offsets.get(phrase + 1)) {
            (Some(a), Some(b)) => &self.items[*a..*b],
            _ => &[],
        }
    }
}

/// Two phrases within `within` words of each other (either order): the first such pair in text order.
///
/// Both occurrence lists are in text order, so one merge walk over them finds a pair: linear in
/// the number of occurrences, and it stops at the first pair close enough.
pub fn near(hits: &Hits, a: usize, b: usize, within: usize) -> Option<(Hit, Hit)> {
    let (ha, hb) = (hits.of(a), hits.of(b));
    let (mut i, mut j) = (0, 0);
    while i < ha.len() && j < hb.len() {
        let (x, y) = (ha[i], hb[j]);
        // Overlapping occurrences are the same words, not two terms.
        let gap = if x.last < y.first {
            Some(y.first - x.last - 1)
        } else if y.last < x.first {
            Some(x.first - y.last - 1)
        } else {
            None
        };
        if gap.is_some_and(|g| g <= within) {
            return Some((x, y));
        }
        // Advance whichever occurrence comes first: it cannot be closer to anything later.
        if x.first <= y.first {
            i += 1;
        } else {
            j += 1;
        }
    }
    None
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
        let w = Words::with_spans(text);
        let hits = p.find(&w);
        assert_eq!(
            hits.of(not_syncing),
            &[Hit {
                phrase: not_syncing,
                first: 2,
                last: 3
            }]
        );
        assert_eq!(hits.of(order).len(), 1);
        assert!(
            hits.of(sync).is_empty(),
            "\"sync\" is not the word \"syncing\""
        );
        let h = hits.of(not_syncing)[0];
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
        let w = Words::with_spans(text);
        for i in 0..w.len() {
            let span = w.original_span(i, i);
            assert!(!text[span].is_empty());
        }
        assert_eq!(w.words()[1], "straße");
    }
}
