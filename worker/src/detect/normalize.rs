//! Text folding for the deterministic detectors: compatibility normalisation (NFKC) and
//! Unicode lowercasing, with a map from every byte of the folded text back to the original
//! text's char offsets, so matches found on the folded text are reported against the
//! original.
//!
//! Folding works on small groups of chars rather than the whole text, so that offsets stay
//! exact: a group is one char plus whatever follows it that NFKC would fold into it
//! (combining marks, half-width katakana voicing marks `ﾞ`/`ﾟ`, conjoining Hangul jamo).
//! So `ｶﾞ` folds to `ガ` and `e\u{301}` to `é`, as whole-text NFKC would. A group holds at
//! most [`MAX_GROUP_CHARS`] chars (the stream-safe limit), so runs of marks stay linear.
//!
//! Invisible format characters (zero-width space/joiners, soft hyphen, bidi marks and
//! embeddings, word joiner, BOM) fold to nothing, so `b\u{200B}ad` reads as `bad`.

use unicode_normalization::{
    UnicodeNormalization,
    char::{canonical_combining_class, compose, decompose_compatible},
};

/// The most chars one folding group holds.
const MAX_GROUP_CHARS: usize = 32;

/// Folded text and its way back to the original.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Folded {
    /// The folded text: NFKC, then lowercase.
    pub text: String,
    /// For every byte of `text`, the index into `groups` of the original chars it came from.
    byte_group: Vec<usize>,
    /// The original char range `[start, end)` of every folding group, in order.
    groups: Vec<(usize, usize)>,
    /// The original text's length in chars.
    char_count: usize,
}

impl Folded {
    /// The original text's length in chars.
    pub fn original_char_count(&self) -> usize {
        self.char_count
    }

    /// The original char offsets `[start, end)` that the folded byte range
    /// `[byte_start, byte_end)` came from. Out-of-range bytes are clamped; an empty range
    /// gives an empty span at the original position of `byte_start`.
    pub fn original_span(&self, byte_start: usize, byte_end: usize) -> (usize, usize) {
        let len = self.byte_group.len();
        let byte_end = byte_end.min(len);
        let group_start = |byte: usize| {
            self.byte_group
                .get(byte)
                .and_then(|&g| self.groups.get(g))
                .map_or(self.char_count, |&(start, _)| start)
        };
        if byte_start >= byte_end {
            let at = group_start(byte_start);
            return (at, at);
        }
        let start = group_start(byte_start);
        let end = self
            .byte_group
            .get(byte_end - 1)
            .and_then(|&g| self.groups.get(g))
            .map_or(self.char_count, |&(_, end)| end);
        (start, end.max(start))
    }

    /// The folded char just before folded byte `byte` (`None` at the start).
    pub fn char_before(&self, byte: usize) -> Option<char> {
        self.text.get(..byte)?.chars().next_back()
    }

    /// The folded char starting at folded byte `byte` (`None` at the end).
    pub fn char_at(&self, byte: usize) -> Option<char> {
        self.text.get(byte..)?.chars().next()
    }

    /// Folds and appends one group of original chars `[start, end)`.
    fn push_group(&mut self, group: &str, start: usize, end: usize) {
        if group.is_empty() {
            return;
        }
        let index = self.groups.len();
        self.groups.push((start, end));
        let before = self.text.len();
        if group.is_ascii() {
            self.text
                .extend(group.chars().map(|c| c.to_ascii_lowercase()));
        } else {
            for c in group.nfkc() {
                self.text.extend(c.to_lowercase());
            }
        }
        let added = self.text.len() - before;
        self.byte_group.extend(std::iter::repeat_n(index, added));
    }
}

/// Invisible format characters that fold to nothing.
fn is_ignorable(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{FEFF}'
    )
}

/// Whether NFKC would fold `c` into the group before it.
fn joins(group: &str, c: char) -> bool {
    if c.is_ascii() {
        // No ASCII char is a combining mark or the second half of a composition.
        return false;
    }
    let mut first = None;
    decompose_compatible(c, |d| {
        first.get_or_insert(d);
    });
    let Some(first) = first else {
        return false;
    };
    if canonical_combining_class(first) != 0 {
        return true;
    }
    group
        .nfkc()
        .last()
        .is_some_and(|last| compose(last, first).is_some())
}

/// Folds `text`: per group of chars NFKC (full-width `ＡＢＣ１２３` → `ABC123`, half-width
/// katakana → full-width), then Unicode lowercase. Each original char maps to zero or more
/// folded chars.
pub fn fold(text: &str) -> Folded {
    let mut folded = Folded {
        text: String::with_capacity(text.len()),
        byte_group: Vec::with_capacity(text.len()),
        groups: Vec::new(),
        char_count: 0,
    };
    let mut group = String::new();
    let mut group_start = 0;
    let mut group_chars = 0;
    let mut count = 0;
    for (i, c) in text.chars().enumerate() {
        count = i + 1;
        if is_ignorable(c) {
            folded.push_group(&group, group_start, i);
            group.clear();
            group_chars = 0;
            continue;
        }
        if group_chars > 0 && group_chars < MAX_GROUP_CHARS && joins(&group, c) {
            group.push(c);
            group_chars += 1;
            continue;
        }
        folded.push_group(&group, group_start, i);
        group.clear();
        group.push(c);
        group_start = i;
        group_chars = 1;
    }
    folded.push_group(&group, group_start, count);
    folded.char_count = count;
    folded
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The original substring a folded byte range maps back to.
    fn back(original: &str, folded: &Folded, start: usize, end: usize) -> String {
        let (s, e) = folded.original_span(start, end);
        original.chars().skip(s).take(e - s).collect()
    }

    #[test]
    fn folds_width_and_case() {
        assert_eq!(fold("ＡＢＣ１２３").text, "abc123");
        assert_eq!(
            fold("ＴＥＳＴ＠ＥＸＡＭＰＬＥ．ＣＯＭ").text,
            "test@example.com"
        );
        assert_eq!(fold("ﾃｽﾄ").text, "テスト");
        assert_eq!(fold("ｶﾞｷﾞ").text, "ガギ");
        assert_eq!(fold("e\u{301}").text, "\u{e9}");
        assert_eq!(fold("ＢａＤ Word").text, "bad word");
        assert_eq!(fold("ΣΑΣ").text, "σασ");
        assert_eq!(fold("").text, "");
    }

    #[test]
    fn conjoining_jamo_compose() {
        // ᄀ + ᅡ + ᆨ compose to 각 under NFKC.
        let f = fold("x\u{1100}\u{1161}\u{11A8}y");
        assert_eq!(f.text, "x각y");
        let at = f.text.find('각').expect("syllable");
        assert_eq!(f.original_span(at, at + '각'.len_utf8()), (1, 4));
    }

    #[test]
    fn invisible_characters_fold_to_nothing() {
        let f = fold("b\u{200B}a\u{200D}d\u{FEFF}");
        assert_eq!(f.text, "bad");
        assert_eq!(f.original_span(0, 3), (0, 5));
        assert_eq!(f.original_char_count(), 6);
    }

    #[test]
    fn spans_map_back_to_original_chars() {
        let original = "😀中文 ＴＥＳＴ ﬁne";
        let f = fold(original);
        assert_eq!(f.text, "😀中文 test fine");
        let t = f.text.find("test").expect("test");
        assert_eq!(f.original_span(t, t + 4), (4, 8));
        assert_eq!(back(original, &f, t, t + 4), "ＴＥＳＴ");
        // The ligature ﬁ folds to two chars; any part of it maps to the whole char.
        let fi = f.text.find("fi").expect("fi");
        assert_eq!(f.original_span(fi, fi + 1), (9, 10));
        assert_eq!(f.original_span(fi + 1, fi + 4), (9, 12));
        // Empty and out-of-range spans.
        assert_eq!(f.original_span(t, t), (4, 4));
        assert_eq!(f.original_span(f.text.len(), f.text.len() + 5), (12, 12));
        assert_eq!(f.original_span(0, 1_000), (0, 12));
    }

    #[test]
    fn long_runs_of_marks_stay_bounded() {
        let text = format!("a{}", "\u{301}".repeat(10_000));
        let f = fold(&text);
        assert_eq!(f.original_char_count(), 10_001);
        assert_eq!(f.original_span(0, f.text.len()), (0, 10_001));
    }
}
