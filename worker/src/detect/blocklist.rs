//! A tenant's blocklist compiled into one Aho–Corasick automaton over the folded terms,
//! matched against folded text, so matching ignores case and full-/half-width forms.
//!
//! Rules:
//! - Terms and text are folded with [`fold`]; a term is also trimmed of surrounding
//!   whitespace, and a term empty after that is skipped.
//! - Every occurrence is reported, overlapping ones included (`MatchKind::Standard` with
//!   overlapping search).
//! - Terms that fold to the same text share one pattern, and a match reports every entry
//!   with that spelling (each entry index, in order), since entries may differ in
//!   category or level.
//! - Word boundaries: if a term's first (last) folded char is ASCII alphanumeric, the
//!   folded char before (after) a match must not be, so `ass` does not fire inside
//!   `class`; other terms (CJK, punctuation) match anywhere.

use std::collections::HashMap;

use aho_corasick::{AhoCorasick, BuildError, MatchKind};
use gatehouse_common::moderation::BlockTerm;

use super::normalize::fold;

/// One blocklist occurrence: `term` indexes the slice given to [`Blocklist::new`];
/// `start`/`end` are original char offsets `[start, end)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockMatch {
    pub term: usize,
    pub start: usize,
    pub end: usize,
}

/// One distinct folded term.
#[derive(Debug, Clone)]
struct Pattern {
    /// The entries spelled this way, ascending.
    terms: Vec<usize>,
    /// The match must not follow an ASCII alphanumeric.
    bounded_start: bool,
    /// The match must not precede an ASCII alphanumeric.
    bounded_end: bool,
}

/// A compiled blocklist; cheap to share behind an `Arc` (it is `Send + Sync`).
#[derive(Debug, Clone)]
pub struct Blocklist {
    automaton: AhoCorasick,
    patterns: Vec<Pattern>,
    entries: usize,
}

impl Blocklist {
    /// Compiles `terms` into one automaton.
    pub fn new(terms: &[BlockTerm]) -> Result<Self, BuildError> {
        let mut index = HashMap::<String, usize>::new();
        let mut texts = Vec::new();
        let mut patterns: Vec<Pattern> = Vec::new();
        let mut entries = 0;
        for (i, term) in terms.iter().enumerate() {
            let folded = fold(&term.term).text;
            let folded = folded.trim();
            let (Some(first), Some(last)) = (folded.chars().next(), folded.chars().next_back())
            else {
                continue;
            };
            entries += 1;
            if let Some(&p) = index.get(folded) {
                if let Some(pattern) = patterns.get_mut(p) {
                    pattern.terms.push(i);
                }
                continue;
            }
            index.insert(folded.to_string(), patterns.len());
            texts.push(folded.to_string());
            patterns.push(Pattern {
                terms: vec![i],
                bounded_start: first.is_ascii_alphanumeric(),
                bounded_end: last.is_ascii_alphanumeric(),
            });
        }
        let automaton = AhoCorasick::builder()
            .match_kind(MatchKind::Standard)
            .build(&texts)?;
        Ok(Self {
            automaton,
            patterns,
            entries,
        })
    }

    /// No searchable term (every term was empty after folding, or there were none).
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// How many entries are searched (terms empty after folding are not).
    pub fn len(&self) -> usize {
        self.entries
    }

    /// Every occurrence of every term in `text`, sorted by start (then end, then term).
    pub fn find(&self, text: &str) -> Vec<BlockMatch> {
        if self.is_empty() || text.is_empty() {
            return Vec::new();
        }
        let folded = fold(text);
        let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
        let mut matches = Vec::new();
        for m in self.automaton.find_overlapping_iter(folded.text.as_str()) {
            let Some(pattern) = self.patterns.get(m.pattern().as_usize()) else {
                continue;
            };
            if (pattern.bounded_start && alnum(folded.char_before(m.start())))
                || (pattern.bounded_end && alnum(folded.char_at(m.end())))
            {
                continue;
            }
            let (start, end) = folded.original_span(m.start(), m.end());
            matches.extend(
                pattern
                    .terms
                    .iter()
                    .map(|&term| BlockMatch { term, start, end }),
            );
        }
        matches.sort_by_key(|m| (m.start, m.end, m.term));
        matches
    }
}

#[cfg(test)]
mod tests {
    use gatehouse_common::moderation::{Category, Level};

    use super::*;

    fn terms(words: &[&str]) -> Vec<BlockTerm> {
        words
            .iter()
            .map(|w| BlockTerm {
                term: w.to_string(),
                category: Category::UnethicalActs,
                level: Level::Unsafe,
            })
            .collect()
    }

    fn list(words: &[&str]) -> Blocklist {
        Blocklist::new(&terms(words)).expect("builds")
    }

    fn hit(term: usize, start: usize, end: usize) -> BlockMatch {
        BlockMatch { term, start, end }
    }

    #[test]
    fn shared_across_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Blocklist>();
    }

    #[test]
    fn empty_lists_and_empty_terms() {
        let empty = list(&[]);
        assert!(empty.is_empty());
        assert_eq!(empty.len(), 0);
        assert_eq!(empty.find("anything"), []);
        let blanks = list(&["", "  ", "\u{200B}"]);
        assert!(blanks.is_empty());
        assert_eq!(blanks.find("  \u{200B} "), []);
        let some = list(&["", "bad"]);
        assert_eq!(some.len(), 1);
        assert_eq!(some.find("so bad"), [hit(1, 3, 6)]);
    }

    #[test]
    fn case_and_width_insensitive() {
        let b = list(&["bad", "ＷＯＲＳＥ", "ﾃｽﾄ"]);
        assert_eq!(b.find("ＢａＤ"), [hit(0, 0, 3)]);
        assert_eq!(b.find("BAD worse"), [hit(0, 0, 3), hit(1, 4, 9)]);
        assert_eq!(b.find("テスト"), [hit(2, 0, 3)]);
        assert_eq!(b.find("ﾃｽﾄ"), [hit(2, 0, 3)]);
        assert_eq!(b.find("b\u{200B}ad"), [hit(0, 0, 4)]);
        assert_eq!(b.find("good"), []);
    }

    #[test]
    fn cjk_terms_match_inside_sentences() {
        let b = list(&["违禁词", "ガ"]);
        assert_eq!(b.find("这是一个违禁词的例子"), [hit(0, 4, 7)]);
        assert_eq!(b.find("😀这是违禁词"), [hit(0, 3, 6)]);
        // Half-width katakana with a voicing mark folds to the precomposed char.
        assert_eq!(b.find("ｶﾞｶﾞ"), [hit(1, 0, 2), hit(1, 2, 4)]);
    }

    #[test]
    fn word_boundaries_for_ascii_edges() {
        let b = list(&["ass", "c++", "@@"]);
        assert_eq!(b.find("class assignment"), []);
        assert_eq!(b.find("you ass!"), [hit(0, 4, 7)]);
        assert_eq!(b.find("ass"), [hit(0, 0, 3)]);
        assert_eq!(b.find("中文ass中文"), [hit(0, 2, 5)]);
        assert_eq!(b.find("ＣＬＡＳＳ"), []);
        // `c++` needs a boundary before only; `@@` none at all.
        assert_eq!(b.find("abc++ c++x"), [hit(1, 6, 9)]);
        assert_eq!(b.find("a@@b"), [hit(2, 1, 3)]);
    }

    #[test]
    fn overlapping_terms_are_all_reported() {
        let b = list(&["he said", "said it", "sai"]);
        assert_eq!(b.find("he said it"), [hit(0, 0, 7), hit(1, 3, 10)]);
        let cjk = list(&["中国", "国人", "中国人"]);
        assert_eq!(
            cjk.find("中国人"),
            [hit(0, 0, 2), hit(2, 0, 3), hit(1, 1, 3)]
        );
    }

    #[test]
    fn duplicate_spellings_report_every_entry() {
        let b = list(&["Bad", "ｂａｄ", "bad "]);
        assert_eq!(b.len(), 3);
        assert_eq!(b.find("bad"), [hit(0, 0, 3), hit(1, 0, 3), hit(2, 0, 3)]);
    }

    #[test]
    fn many_terms_on_a_long_text() {
        let words: Vec<String> = (0..20_000)
            .map(|i| {
                if i % 2 == 0 {
                    format!("term{i:05}x")
                } else {
                    // Distinct CJK terms.
                    let a = char::from_u32(0x4E00 + i / 100).expect("cjk");
                    let b = char::from_u32(0x5E00 + i % 100).expect("cjk");
                    format!("{a}{b}禁")
                }
            })
            .collect();
        let refs: Vec<&str> = words.iter().map(String::as_str).collect();
        let b = list(&refs);
        assert_eq!(b.len(), 20_000);

        let mut text = String::new();
        let mut expected = Vec::new();
        let mut chars = 0;
        for (n, i) in [17_usize, 4_242, 19_999, 12_000].into_iter().enumerate() {
            let filler: String = " lorem ipsum 文本".repeat(150 + n * 10) + " ";
            chars += filler.chars().count();
            text.push_str(&filler);
            let word = &words[i];
            let len = word.chars().count();
            expected.push(hit(i, chars, chars + len));
            chars += len;
            text.push_str(word);
        }
        let tail = "x".repeat(10_000 - chars);
        text.push_str(&tail);
        assert_eq!(text.chars().count(), 10_000);
        // The ASCII term at the end is glued to `xxx…`, so its boundary rule drops it.
        expected.retain(|m| m.term % 2 == 1 || m.term != 12_000);
        assert_eq!(b.find(&text), expected);
    }

    #[test]
    fn weird_strings_never_panic() {
        let b = list(&[
            "a", "ab", "中", "\u{301}", "e\u{301}", "ﬁ", "ss", "i\u{307}",
        ]);
        let pieces = [
            "\u{0}", "\u{200B}", "\u{200F}", "\u{202E}", "\u{301}", "\u{FF9E}", "ｶ", "a", "b", "e",
            "A", "中", "😀", "ﬁ", "ß", "İ", "\u{FDFA}", "\u{1100}", "\u{1161}", "\u{11A8}", " ",
        ];
        let mut state = 0x9e37_79b9_u32;
        for len in 0..400 {
            let mut s = String::new();
            for _ in 0..(len % 50) {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                s.push_str(pieces[state as usize % pieces.len()]);
            }
            let chars = s.chars().count();
            let found = b.find(&s);
            for m in &found {
                assert!(m.start < m.end && m.end <= chars, "{m:?} in {s:?}");
                assert!(m.term < 8);
            }
            assert!(found.windows(2).all(|w| w[0].start <= w[1].start));
        }
    }
}
