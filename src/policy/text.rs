//! Word-aware text matching: normalisation, word forms, typo tolerance, and one Aho-Corasick
//! automaton for all of a policy's terms.
//!
//! Text and terms are normalised the same way: split into words (runs of Unicode letters and
//! digits; an apostrophe inside a word joins it, so "aren't" is the word "arent"), lower-cased, and
//! reduced to a word form: the English Snowball (Porter2) stem by default ("pricing", "priced",
//! "prices" → "price"), or with `stemming = false` a simple plural rule ("orders" → "order").
//! A phrase is a sequence of such words; it matches where the same words stand next to each other.
//! The normalised text is laid out as " w1 w2 … " so a pattern " a b " can only match whole words,
//! and every phrase of the policy is found in one left-to-right pass.
//!
//! Stemming a word costs about 0.4 µs (measured, rust-stemmers), too much for every word of a long
//! ticket, so a word is only stemmed when its stem could be one of the policy's words: a Porter2
//! stem's first four letters, less a final "e" or "i", always begin the word it came from (checked
//! over the 104,334 words of Debian's wamerican list; dying, lying, tying and skies are the
//! exceptions, handled by name). Words no phrase could match only keep their place.
//!
//! Typo tolerance (opt-in per policy or per vocabulary) reads a word as a phrase word one edit
//! away (Damerau-Levenshtein: a letter added, dropped, changed, or two swapped), for words of five
//! letters or more, never for negations. Candidates come from a deletion-neighbourhood index (each
//! target word and its one-letter deletions), so a text word costs a few lookups, never a scan of
//! the vocabulary. A corrected word is laid out as "target~", which only typo-tolerant patterns
//! contain: a rule without typo tolerance never sees a correction.

use std::ops::Range;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use rust_stemmers::{Algorithm, Stemmer};
// Fx hashing: the keys are short words and packed prefixes hashed on every text word, where the
// default SipHash (built against flooding, which a policy's own words cannot do) costs 3× more.
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

/// Words that negate: never corrected, and never a correction's target.
const NEGATIONS: &[&str] = &[
    "not", "no", "never", "none", "nothing", "nobody", "nowhere", "neither", "nor", "without",
    "cannot", "cant", "dont", "doesnt", "didnt", "isnt", "arent", "wasnt", "werent", "wont",
    "wouldnt", "shouldnt", "couldnt", "havent", "hasnt", "hadnt", "aint", "unable", "nope",
];

/// Prefixes that turn a word into its opposite ("able" / "unable"): a correction never adds or
/// drops one.
const NEGATING_PREFIXES: &[&str] = &["un", "non", "dis"];

/// Shortest word (in letters) that typo tolerance applies to.
pub const TYPO_MIN_LETTERS: usize = 5;

/// Stands in the laid-out text for a word no phrase can match (not a word character).
const UNMATCHABLE: char = '_';

/// Most automaton patterns one typo-tolerant phrase may expand to.
const MAX_TYPO_VARIANTS: usize = 16;

fn is_apostrophe(c: char) -> bool {
    c == '\'' || c == '\u{2019}'
}

fn is_negation(w: &str) -> bool {
    NEGATIONS.contains(&w)
}

fn negating_prefix(w: &str) -> Option<&'static str> {
    NEGATING_PREFIXES.iter().copied().find(|p| w.starts_with(p))
}

/// Reduces a simple English plural to its singular; leaves other words alone.
pub fn plural_stem(w: &str) -> String {
    let mut s = w.to_string();
    plural_in_place(&mut s, 0);
    s
}

/// Applies [`plural_stem`] to the word at `buf[start..]`. Only ASCII suffixes are cut, so UTF-8 stays whole.
fn plural_in_place(buf: &mut String, start: usize) {
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

/// The first letters every word with this stem begins with (see the module notes).
fn root(stem: &str) -> &str {
    let mut k = stem.len().min(4);
    while !stem.is_char_boundary(k) {
        k -= 1;
    }
    let r = &stem[..k];
    if r.len() > 1 && (r.ends_with('e') || r.ends_with('i')) {
        &r[..r.len() - 1]
    } else {
        r
    }
}

/// Porter2's exceptions whose stem does not begin with the word's first letters.
fn stem_exception(w: &[u8]) -> bool {
    w.len() == 5 && (&w[1..] == b"ying" || w == b"skies")
}

/// Packs up to four bytes into a key (words hold no NUL byte, so lengths cannot collide).
fn pack(b: &[u8]) -> u32 {
    b.iter()
        .take(4)
        .enumerate()
        .fold(0, |k, (i, x)| k | (u32::from(*x) << (8 * i)))
}

/// Which text words are worth stemming: those that begin with the root of a phrase word's stem.
///
/// A filter, not a set: a false "yes" only costs stemming a word (its stem then matches nothing),
/// while a "no" is always right. Bits keep the test to a few array reads per word.
#[derive(Debug, Clone)]
struct StemGate {
    /// Single-letter phrase words (a one-letter stem only comes from that very word).
    one: [bool; 256],
    /// First two bytes of every longer root: most words are turned away by this bit alone.
    two: Vec<u64>,
    /// First two bytes of the two-byte roots: such a prefix admits the word outright.
    whole_two: Vec<u64>,
    /// Hashed three- and four-byte roots.
    longer: Vec<u64>,
}

const LONGER_BITS: usize = 1 << 16;

fn bit(bits: &[u64], k: usize) -> bool {
    bits[k / 64] & (1 << (k % 64)) != 0
}

fn set_bit(bits: &mut [u64], k: usize) {
    bits[k / 64] |= 1 << (k % 64);
}

fn longer_key(b: &[u8]) -> usize {
    (pack(b).wrapping_mul(0x9E37_79B9) >> 16) as usize % LONGER_BITS
}

impl Default for StemGate {
    fn default() -> Self {
        StemGate {
            one: [false; 256],
            two: vec![0; 1024],
            whole_two: vec![0; 1024],
            longer: vec![0; LONGER_BITS / 64],
        }
    }
}

impl StemGate {
    fn insert(&mut self, stem: &str) {
        let r = root(stem).as_bytes();
        match r {
            [] => {}
            [b] if stem.len() == 1 => self.one[usize::from(*b)] = true,
            [b] => {
                // A one-letter root of a longer stem: every word starting with it qualifies.
                for second in 0..256usize {
                    let k = (usize::from(*b) << 8) | second;
                    set_bit(&mut self.two, k);
                    set_bit(&mut self.whole_two, k);
                }
            }
            _ => {
                let k = (usize::from(r[0]) << 8) | usize::from(r[1]);
                set_bit(&mut self.two, k);
                if r.len() == 2 {
                    set_bit(&mut self.whole_two, k);
                } else {
                    set_bit(&mut self.longer, longer_key(r));
                }
            }
        }
    }

    fn admits(&self, w: &[u8]) -> bool {
        match w {
            [] => false,
            [b] => self.one[usize::from(*b)],
            _ => {
                let k = (usize::from(w[0]) << 8) | usize::from(w[1]);
                if !bit(&self.two, k) {
                    return stem_exception(w);
                }
                bit(&self.whole_two, k)
                    || (w.len() >= 3 && bit(&self.longer, longer_key(&w[..3])))
                    || (w.len() >= 4 && bit(&self.longer, longer_key(&w[..4])))
                    || stem_exception(w)
            }
        }
    }
}

/// Damerau-Levenshtein distance of at most one (adjacent swaps count as one edit).
fn within_one_edit(a: &[u8], b: &[u8]) -> bool {
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    if long.len() - short.len() > 1 {
        return false;
    }
    let prefix = short.iter().zip(long).take_while(|(x, y)| x == y).count();
    if short.len() == long.len() {
        if prefix == short.len() {
            return true;
        }
        // One substitution, or one swap of neighbours.
        short[prefix + 1..] == long[prefix + 1..]
            || (prefix + 1 < short.len()
                && short[prefix] == long[prefix + 1]
                && short[prefix + 1] == long[prefix]
                && short[prefix + 2..] == long[prefix + 2..])
    } else {
        short[prefix..] == long[prefix + 1..]
    }
}

/// Typo targets and their deletion neighbourhood.
#[derive(Debug, Clone, Default)]
struct TypoIndex {
    /// Target stems, and the word as an author wrote it (for `explain`).
    targets: Vec<(String, String)>,
    /// Each target and each of its one-letter deletions → the targets it came from.
    neighbours: HashMap<String, Vec<u32>>,
    /// Bits of the three-letter prefixes of every neighbourhood key: a cheap first test.
    trigrams: Vec<u64>,
}

fn trigram_bit(b: [u8; 3]) -> usize {
    (usize::from(b[0]) * 961 + usize::from(b[1]) * 31 + usize::from(b[2])) % (1 << 15)
}

fn deletions(w: &str) -> impl Iterator<Item = String> + '_ {
    w.char_indices().map(move |(i, c)| {
        let mut d = String::with_capacity(w.len());
        d.push_str(&w[..i]);
        d.push_str(&w[i + c.len_utf8()..]);
        d
    })
}

impl TypoIndex {
    fn add(&mut self, stem: &str, written: &str) -> u32 {
        if let Some(i) = self.targets.iter().position(|(s, _)| s == stem) {
            return i as u32;
        }
        let id = self.targets.len() as u32;
        self.targets.push((stem.to_string(), written.to_string()));
        if self.trigrams.is_empty() {
            self.trigrams = vec![0; (1 << 15) / 64];
        }
        for key in std::iter::once(stem.to_string()).chain(deletions(stem)) {
            if let [a, b, c, ..] = key.as_bytes() {
                let bit = trigram_bit([*a, *b, *c]);
                self.trigrams[bit / 64] |= 1 << (bit % 64);
            }
            let ids = self.neighbours.entry(key).or_default();
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        id
    }

    /// Whether a word could be one edit from a target: one of its three-letter prefixes (as
    /// written, or with one of its first three letters dropped) begins a neighbourhood key.
    fn may_hold(&self, w: &[u8]) -> bool {
        // Bytes, not letters: a word of five letters has at least five bytes.
        if self.targets.is_empty() || w.len() < TYPO_MIN_LETTERS {
            return false;
        }
        let bit = |t: [u8; 3]| {
            let b = trigram_bit(t);
            self.trigrams[b / 64] & (1 << (b % 64)) != 0
        };
        bit([w[0], w[1], w[2]])
            || bit([w[1], w[2], w[3]])
            || bit([w[0], w[2], w[3]])
            || bit([w[0], w[1], w[3]])
    }

    /// The target one edit from `stem`, if any (the first added when several are).
    fn correct(&self, stem: &str) -> Option<u32> {
        let mut best: Option<u32> = None;
        for key in std::iter::once(stem.to_string()).chain(deletions(stem)) {
            for id in self.neighbours.get(&key).into_iter().flatten() {
                let (target, _) = &self.targets[*id as usize];
                if target != stem
                    && within_one_edit(target.as_bytes(), stem.as_bytes())
                    && negating_prefix(target) == negating_prefix(stem)
                    && best.is_none_or(|b| *id < b)
                {
                    best = Some(*id);
                }
            }
        }
        best
    }
}

/// How a text word was read.
#[derive(Debug, Clone)]
struct Reading {
    token: Box<str>,
    /// The typo target it was read as.
    corrected: Option<u32>,
}

/// Most words the policy remembers the reading of, across tickets.
const CACHE_LIMIT: usize = 100_000;

/// Readings of words seen in earlier tickets: ticket vocabulary repeats, and stemming a word costs
/// more than the rest of reading it. A clone starts empty.
#[derive(Debug, Default)]
struct ReadCache(std::sync::RwLock<HashMap<Box<str>, Reading>>);

impl Clone for ReadCache {
    fn clone(&self) -> Self {
        ReadCache::default()
    }
}

/// What one text's reading knows: the policy's cache, and the words first met in this text.
struct Memo<'a> {
    shared: &'a HashMap<Box<str>, Reading>,
    local: HashMap<Box<str>, u32>,
    readings: Vec<Reading>,
}

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
    /// Words read as a typo target: (word index, target), when spans are kept.
    corrections: Vec<(usize, u32)>,
    keep_spans: bool,
}

impl Words {
    /// Number of words.
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    /// True when there are no words.
    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// The normalised words (a typo-corrected word ends in `~`; a word no phrase can match is `_`).
    pub fn words(&self) -> Vec<&str> {
        self.laid_out.split_whitespace().collect()
    }

    /// Byte range in the original text covered by words `first..=last` (empty unless made with spans).
    pub fn original_span(&self, first: usize, last: usize) -> Range<usize> {
        match (self.original.get(first), self.original.get(last)) {
            (Some(a), Some(b)) => a.start..b.end,
            _ => 0..0,
        }
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

/// A word of the text read as a phrase word one edit away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Correction {
    /// Byte range of the word in the original text.
    pub span: Range<usize>,
    /// The phrase word it was read as, as the author wrote it.
    pub read_as: String,
}

/// All phrases of a policy, compiled once into one automaton, with the policy's reading rules.
#[derive(Debug, Clone)]
pub struct Phrases {
    stemming: bool,
    /// Each phrase: its normalised words and whether it tolerates typos (the dedup key).
    keys: Vec<(String, bool)>,
    /// Each phrase as the author first wrote it, for `explain`.
    written: Vec<String>,
    /// Words per phrase.
    lengths: Vec<usize>,
    /// The automaton's patterns and the phrase each stands for.
    patterns: Vec<String>,
    pattern_phrase: Vec<usize>,
    /// Every word form any phrase contains.
    known: HashSet<String>,
    gate: StemGate,
    typos: TypoIndex,
    automaton: Option<AhoCorasick>,
    cache: ReadCache,
}

impl Default for Phrases {
    fn default() -> Self {
        Phrases::new(true)
    }
}

thread_local! {
    static STEMMER: Stemmer = Stemmer::create(Algorithm::English);
}

fn porter2(w: &str) -> String {
    STEMMER.with(|s| s.stem(w).into_owned())
}

impl Phrases {
    /// An empty set; `stemming` chooses Snowball stems (true) or the plural rule (false).
    pub fn new(stemming: bool) -> Self {
        Phrases {
            stemming,
            keys: Vec::new(),
            written: Vec::new(),
            lengths: Vec::new(),
            patterns: Vec::new(),
            pattern_phrase: Vec::new(),
            known: HashSet::default(),
            gate: StemGate::default(),
            typos: TypoIndex::default(),
            automaton: None,
            cache: ReadCache::default(),
        }
    }

    /// A word's form, computed in full (phrase words, and text words that pass the gate).
    fn form(&self, word: &str) -> String {
        if self.stemming {
            porter2(word)
        } else {
            plural_stem(word)
        }
    }

    /// Registers a phrase (deduplicated) and returns its id; `None` when it has no words.
    /// With `typos`, each of its words of five letters or more (not a negation) also matches a
    /// word one edit away.
    pub fn add(&mut self, phrase: &str, typos: bool) -> Option<usize> {
        let split = self.split(phrase, false, true);
        let raw: Vec<&str> = split.words();
        if raw.is_empty() {
            return None;
        }
        let forms: Vec<String> = raw.iter().map(|w| self.form(w)).collect();
        let key = format!(" {} ", forms.join(" "));
        if let Some(i) = self.keys.iter().position(|(k, t)| *k == key && *t == typos) {
            return Some(i);
        }
        let id = self.keys.len();
        for f in &forms {
            self.known.insert(f.clone());
            self.gate.insert(f);
        }
        // Patterns: the words as normalised, and with typos, each eligible word either as is or
        // as a correction ("word~"), up to MAX_TYPO_VARIANTS combinations.
        let mut variants = vec![String::from(" ")];
        for (w, f) in raw.iter().zip(&forms) {
            let eligible = typos && w.chars().count() >= TYPO_MIN_LETTERS && !is_negation(w);
            if eligible {
                self.typos.add(f, w);
            }
            let mut next = Vec::new();
            for v in &variants {
                next.push(format!("{v}{f} "));
                if eligible && variants.len() * 2 <= MAX_TYPO_VARIANTS {
                    next.push(format!("{v}{f}~ "));
                }
            }
            variants = next;
        }
        for v in variants {
            self.patterns.push(v);
            self.pattern_phrase.push(id);
        }
        self.keys.push((key, typos));
        self.lengths.push(forms.len());
        self.written.push(phrase.trim().to_string());
        Some(id)
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
        self.keys.len()
    }

    /// True when the policy has no phrases.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Phrase `id` as the author first wrote it, for messages.
    pub fn written(&self, id: usize) -> &str {
        self.written.get(id).map_or("", String::as_str)
    }

    /// A phrase's normalised words.
    pub fn pattern(&self, id: usize) -> &str {
        self.keys.get(id).map_or("", |(p, _)| p.trim())
    }

    /// Splits and normalises `text` the way this policy's phrases were.
    pub fn words(&self, text: &str) -> Words {
        self.split(text, false, false)
    }

    /// Like [`Phrases::words`], also remembering where each word stood, for quotes.
    pub fn words_with_spans(&self, text: &str) -> Words {
        self.split(text, true, false)
    }

    /// Splits `text` into words; `raw` keeps them lower-cased only (how phrases are split before
    /// their words' forms are taken), otherwise each is read as this policy reads it.
    fn split(&self, text: &str, keep_spans: bool, raw: bool) -> Words {
        let mut w = Words {
            laid_out: String::with_capacity(text.len() + 2),
            // About one word per six bytes of prose: room enough to rarely grow.
            starts: Vec::with_capacity(text.len() / 6 + 1),
            keep_spans,
            ..Words::default()
        };
        w.laid_out.push(' ');
        // A poisoned lock only means a reader panicked; the readings themselves are whole.
        let shared = self.cache.0.read().unwrap_or_else(|e| e.into_inner());
        let mut memo = Memo {
            shared: &shared,
            local: HashMap::default(),
            readings: Vec::new(),
        };
        // The word being read: where it began in `text`, and where it begins in `laid_out`.
        let mut start: Option<(usize, usize)> = None;
        let bytes = text.as_bytes();
        let mut i = 0;
        // Bytes, with chars decoded only outside ASCII: most ticket text is ASCII, and this loop
        // runs over every byte of every ticket.
        while i < bytes.len() {
            let (c, width) = match bytes[i] {
                b if b < 0x80 => (char::from(b), 1),
                _ => match text[i..].chars().next() {
                    Some(c) => (c, c.len_utf8()),
                    None => break,
                },
            };
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
                && text[i + width..]
                    .chars()
                    .next()
                    .is_some_and(char::is_alphanumeric)
            {
                // "aren't": the apostrophe joins the word.
            } else if let Some((s, at)) = start.take() {
                self.end_word(&mut w, &mut memo, s..i, at, raw);
            }
            i += width;
        }
        if let Some((s, at)) = start {
            self.end_word(&mut w, &mut memo, s..text.len(), at, raw);
        }
        let Memo {
            local, readings, ..
        } = memo;
        drop(shared);
        if !local.is_empty() {
            let mut cache = self.cache.0.write().unwrap_or_else(|e| e.into_inner());
            let mut readings: Vec<Option<Reading>> = readings.into_iter().map(Some).collect();
            for (word, i) in local {
                if cache.len() >= CACHE_LIMIT {
                    break;
                }
                if let Some(r) = readings.get_mut(i as usize).and_then(Option::take) {
                    cache.insert(word, r);
                }
            }
        }
        w
    }

    fn end_word(
        &self,
        w: &mut Words,
        memo: &mut Memo<'_>,
        original: Range<usize>,
        at: usize,
        raw: bool,
    ) {
        let word = &w.laid_out[at..];
        let index = w.starts.len();
        let stemmable = !raw && self.stemming && self.gate.admits(word.as_bytes());
        let typo = !raw && self.typos.may_hold(word.as_bytes());
        if raw {
            // Lower-cased, as it is.
        } else if stemmable || typo {
            let reading = match memo.shared.get(word) {
                Some(r) => r,
                None => {
                    let i = match memo.local.get(word) {
                        Some(i) => *i as usize,
                        None => {
                            memo.readings.push(self.read(word));
                            let i = memo.readings.len() - 1;
                            memo.local.insert(word.into(), i as u32);
                            i
                        }
                    };
                    &memo.readings[i]
                }
            };
            w.laid_out.truncate(at);
            w.laid_out.push_str(&reading.token);
            if let (Some(t), true) = (reading.corrected, w.keep_spans) {
                w.corrections.push((index, t));
            }
        } else if !self.stemming {
            plural_in_place(&mut w.laid_out, at);
        } else {
            // No phrase word can be this word's stem (the gate never turns one away): it keeps
            // its place, but as one byte, so the automaton has less text to read.
            w.laid_out.truncate(at);
            w.laid_out.push(UNMATCHABLE);
        }
        w.starts.push(at);
        w.laid_out.push(' ');
        if w.keep_spans {
            w.original.push(original);
        }
    }

    /// How one lower-cased text word reads: its form, or a typo target one edit away.
    fn read(&self, word: &str) -> Reading {
        let form = self.form(word);
        if !self.known.contains(&form)
            && word.chars().count() >= TYPO_MIN_LETTERS
            && !is_negation(word)
        {
            if let Some(t) = self.typos.correct(&form) {
                let token = format!("{}~", self.typos.targets[t as usize].0);
                return Reading {
                    token: token.into(),
                    corrected: Some(t),
                };
            }
        }
        Reading {
            token: form.into(),
            corrected: None,
        }
    }

    /// The words of `first..=last` read as typo targets, for `explain`.
    pub fn corrections(&self, words: &Words, first: usize, last: usize) -> Vec<Correction> {
        words
            .corrections
            .iter()
            .filter(|(i, _)| (first..=last).contains(i))
            .filter_map(|(i, t)| {
                let (_, written) = self.typos.targets.get(*t as usize)?;
                Some(Correction {
                    span: words.original.get(*i)?.clone(),
                    read_as: written.clone(),
                })
            })
            .collect()
    }

    /// Every occurrence of every phrase in `words`, grouped by phrase, in text order.
    pub fn find(&self, words: &Words) -> Hits {
        let Some(ac) = &self.automaton else {
            return Hits::default();
        };
        // Matches come in order of where they end, so the word a match ends on is found by a
        // cursor that only moves forward, not by a search per match.
        let mut cursor = 0;
        let mut found: Vec<Hit> = Vec::new();
        for m in ac.find_overlapping_iter(&words.laid_out) {
            let phrase = self.pattern_phrase[m.pattern().as_usize()];
            while words.starts.get(cursor).is_some_and(|s| *s < m.end()) {
                cursor += 1;
            }
            let Some(first) = (cursor + 1).checked_sub(self.lengths[phrase] + 1) else {
                continue;
            };
            found.push(Hit {
                phrase,
                first,
                last: cursor - 1,
            });
        }
        // Counting sort by phrase (stable, so each phrase's hits stay in text order): linear, where
        // a comparison sort of thousands of hits would cost more than the scan itself.
        let mut offsets = vec![0usize; self.keys.len() + 1];
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

/// The occurrences of any of `ids`, in text order.
fn occurrences<'h>(hits: &'h Hits, ids: &[usize]) -> std::borrow::Cow<'h, [Hit]> {
    match ids {
        [one] => std::borrow::Cow::Borrowed(hits.of(*one)),
        _ => {
            let mut all: Vec<Hit> = ids.iter().flat_map(|id| hits.of(*id)).copied().collect();
            all.sort_by_key(|h| (h.first, h.last));
            std::borrow::Cow::Owned(all)
        }
    }
}

/// A phrase of `a` and a phrase of `b` within `within` words of each other (either order): the
/// first such pair in text order.
///
/// Both occurrence lists are in text order, so one merge walk over them finds a pair: linear in
/// the number of occurrences, and it stops at the first pair close enough.
pub fn near(hits: &Hits, a: &[usize], b: &[usize], within: usize) -> Option<(Hit, Hit)> {
    let (ha, hb) = (occurrences(hits, a), occurrences(hits, b));
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

    fn built(list: &[&str], stemming: bool, typos: bool) -> (Phrases, Vec<usize>) {
        let mut p = Phrases::new(stemming);
        let ids = list.iter().map(|s| p.add(s, typos).unwrap()).collect();
        p.build().unwrap();
        (p, ids)
    }

    #[test]
    fn plural_rule_when_stemming_is_off() {
        let (p, _) = built(&["order"], false, false);
        let w = p.words("URGENT!! Our Orders aren't syncing; the batches/entries… Café’s");
        assert_eq!(
            w.words(),
            vec!["urgent", "our", "order", "arent", "syncing", "the", "batch", "entry", "café"]
        );
        assert_eq!(plural_stem("status"), "status");
        assert_eq!(plural_stem("process"), "process");
        assert_eq!(plural_stem("bus"), "bus");
    }

    #[test]
    fn stems_match_every_form_of_a_word() {
        let (p, ids) = built(
            &["price", "cancel", "duplicate", "not syncing", "sync"],
            true,
            false,
        );
        let [price, cancel, duplicate, not_syncing, sync] = ids[..] else {
            panic!("five phrases")
        };
        for (text, id) in [
            ("priced wrongly", price),
            ("the pricing page", price),
            ("all prices", price),
            ("we are cancelling", cancel),
            ("it was canceled", cancel),
            ("a cancellation", cancel),
            ("orders duplicating", duplicate),
            ("Duplicated!", duplicate),
            ("orders not synced", not_syncing),
            ("it does not sync", not_syncing),
            ("re-synced twice", sync),
        ] {
            let hits = p.find(&p.words(text));
            assert_eq!(
                hits.of(id).len(),
                1,
                "{text:?} should match {}",
                p.written(id)
            );
        }
        // Words no phrase could match are never stemmed: they only keep their place.
        assert_eq!(
            p.words("hello team, pricing").words(),
            vec!["_", "_", "price"]
        );
    }

    #[test]
    fn a_stems_root_begins_the_word_it_came_from() {
        // The property the stemming gate relies on; the module notes give the full-list check.
        for w in [
            "using",
            "hoping",
            "happily",
            "relational",
            "organization",
            "sensibility",
            "cries",
            "agreed",
            "hopping",
            "generously",
            "communication",
            "its",
            "ties",
            "early",
            "only",
            "ugly",
            "gently",
            "skis",
            "news",
            "syncing",
            "fulfillments",
            "shipping",
            "availability",
        ] {
            assert!(w.starts_with(root(&porter2(w))), "{w} → {}", porter2(w));
        }
        for w in ["dying", "lying", "tying", "skies"] {
            assert!(stem_exception(w.as_bytes()));
        }
        let (p, _) = built(&["die", "sky"], true, false);
        assert_eq!(p.words("dying skies").words(), vec!["die", "sky"]);
    }

    #[test]
    fn a_second_reading_from_the_cache_is_the_same() {
        let (p, ids) = built(&["orders", "price"], true, true);
        let text = "oders and pricing, oders again";
        let first = p.words_with_spans(text);
        let second = p.words_with_spans(text);
        assert_eq!(first.words(), vec!["order~", "_", "price", "order~", "_"]);
        assert_eq!(second.words(), first.words());
        assert_eq!(p.corrections(&second, 0, 4), p.corrections(&first, 0, 4));
        assert_eq!(p.corrections(&second, 0, 4).len(), 2);
        assert_eq!(p.find(&second).of(ids[0]).len(), 2);
        // Another policy reads the same word by its own phrases.
        let (strict, _) = built(&["orders"], true, false);
        assert_eq!(strict.words("oders").words(), vec!["_"]);
    }

    #[test]
    fn one_edit_damerau_levenshtein() {
        let one = |a: &str, b: &str| within_one_edit(a.as_bytes(), b.as_bytes());
        assert!(one("order", "oder"));
        assert!(one("order", "orders"));
        assert!(one("invoice", "invioce"));
        assert!(one("shipment", "shippment"));
        assert!(one("price", "prize"));
        assert!(one("same", "same"));
        assert!(!one("order", "odrer1"));
        assert!(!one("invoice", "inviocee"));
        assert!(!one("abcde", "badce"));
    }

    #[test]
    fn typos_are_read_as_the_target_only_for_tolerant_phrases() {
        let (p, ids) = built(&["orders", "invoice", "shipment not received"], true, true);
        let (strict, sid) = built(&["orders"], true, false);
        let text = "the oders and the invioce; shippment not recieved";
        let w = p.words_with_spans(text);
        let hits = p.find(&w);
        assert_eq!(hits.of(ids[0]).len(), 1);
        assert_eq!(hits.of(ids[1]).len(), 1);
        assert_eq!(
            hits.of(ids[2]).len(),
            1,
            "two typos in one phrase: {:?}",
            w.words()
        );
        let c = p.corrections(&w, 1, 1);
        assert_eq!(
            c,
            vec![Correction {
                span: 4..9,
                read_as: "orders".into()
            }]
        );
        assert!(strict.find(&strict.words(text)).of(sid[0]).is_empty());
    }

    #[test]
    fn typos_never_touch_short_words_or_negations() {
        let (p, ids) = built(&["sync", "enable", "nothing", "cannon"], true, true);
        // "sinc" is one edit from "sync" but four letters: short words are never corrected.
        assert!(p.find(&p.words("sinc")).of(ids[0]).is_empty());
        // "unable" is one edit from "enable" and means its opposite.
        assert!(p.find(&p.words("unable")).of(ids[1]).is_empty());
        // A negation is never a target, and never corrected.
        assert!(p.find(&p.words("nothinf")).of(ids[2]).is_empty());
        assert_eq!(
            p.words("cannot").words(),
            vec!["cannot"],
            "not read as \"cannon~\""
        );
        assert!(p.find(&p.words("cannot")).of(ids[3]).is_empty());
        assert_eq!(p.find(&p.words("cannom")).of(ids[3]).len(), 1);
    }

    #[test]
    fn finds_whole_word_phrases_with_original_spans() {
        let (p, ids) = built(&["not syncing", "Order", "synchronise"], true, false);
        let text = "Orders are NOT syncing since 9am";
        let w = p.words_with_spans(text);
        let hits = p.find(&w);
        assert_eq!(
            hits.of(ids[0]),
            &[Hit {
                phrase: ids[0],
                first: 2,
                last: 3
            }]
        );
        assert_eq!(hits.of(ids[1]).len(), 1);
        assert!(
            hits.of(ids[2]).is_empty(),
            "\"synchronise\" is not \"syncing\""
        );
        let h = hits.of(ids[0])[0];
        assert_eq!(&text[w.original_span(h.first, h.last)], "NOT syncing");
    }

    #[test]
    fn near_counts_words_between() {
        let (p, ids) = built(&["orders", "not syncing", "stuck"], true, false);
        let (orders, not_syncing, stuck) = (ids[0], ids[1], ids[2]);
        let hits = p.find(&p.words("our orders from Shopify are still not syncing"));
        assert!(near(&hits, &[orders], &[not_syncing], 4).is_some());
        assert!(near(&hits, &[orders], &[not_syncing], 3).is_none());
        let hits = p.find(&p.words("not syncing: the orders"));
        assert!(
            near(&hits, &[orders], &[not_syncing], 1).is_some(),
            "either order"
        );
        // A term may be a vocabulary: any of its phrases.
        let hits = p.find(&p.words("orders are stuck, and far later not syncing"));
        assert!(near(&hits, &[orders], &[not_syncing, stuck], 1).is_some());
    }

    #[test]
    fn unicode_text_never_panics_and_keeps_spans() {
        let (p, _) = built(&["straße", "注文"], true, true);
        let text = "Ünïcode Straße — ÉCOLE orders 注文 が 同期 しない";
        let w = p.words_with_spans(text);
        for i in 0..w.len() {
            let span = w.original_span(i, i);
            assert!(!text[span].is_empty());
        }
        assert_eq!(w.words()[1], "straße");
    }

    /// Optimal string alignment distance, the plain quadratic way: the reference for the fast test.
    fn osa(a: &[u8], b: &[u8]) -> usize {
        let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
        for (i, row) in d.iter_mut().enumerate() {
            row[0] = i;
        }
        for (j, cell) in d[0].iter_mut().enumerate() {
            *cell = j;
        }
        for i in 1..=a.len() {
            for j in 1..=b.len() {
                let cost = usize::from(a[i - 1] != b[j - 1]);
                d[i][j] = (d[i - 1][j] + 1)
                    .min(d[i][j - 1] + 1)
                    .min(d[i - 1][j - 1] + cost);
                if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                    d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
                }
            }
        }
        d[a.len()][b.len()]
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(500))]

            #[test]
            fn one_edit_agrees_with_the_reference(a in "[abc]{0,7}", b in "[abc]{0,7}") {
                prop_assert_eq!(within_one_edit(a.as_bytes(), b.as_bytes()), osa(a.as_bytes(), b.as_bytes()) <= 1);
            }

            #[test]
            fn any_text_reads_the_same_twice_with_spans_inside_it(text in "\\PC{0,200}") {
                let (p, _) = built(&["orders", "not syncing", "café", "straße"], true, true);
                let first = p.words_with_spans(&text);
                let second = p.words_with_spans(&text);
                prop_assert_eq!(first.words(), second.words());
                for i in 0..first.len() {
                    let span = first.original_span(i, i);
                    prop_assert!(text.get(span.clone()).is_some_and(|w| !w.is_empty()), "{:?}", span);
                }
                let _ = p.find(&first);
            }
        }
    }
}
