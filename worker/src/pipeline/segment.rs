//! Text segmentation around translation: cutting a document into sentences while keeping its
//! layout byte for byte, and recognising segments that need no translation at all. (Tidying
//! the spacing of models that join their output tokens with spaces is model post-processing:
//! `model::seq2seq::detokenize`.)
//!
//! Everything here is a pure function over `&str`, linear in the input's length.
//!
//! # Sentence rules ([`split`])
//!
//! - **Line breaks** (`\n`, `\r`, VT, FF, NEL, U+2028, U+2029) always end a sentence. The whole
//!   whitespace run around them is a [`Piece::Gap`], so blank lines, CRLF and indentation come
//!   back exactly as they were.
//! - **Chinese**: a sentence ends right after `。！？；…` or the half-width `｡` (runs such as
//!   `……` or `？！` stay together), and after ASCII `!?;` or `…` when they follow a CJK
//!   character. Closing quotes and brackets right after the terminator (`」』”’）】》〉〕］` and
//!   `)`, `]`) belong to the sentence; a straight `"` or `'` does only when it closes a quote opened in the same
//!   sentence (odd count so far). No whitespace is needed after the terminator, so two
//!   [`Piece::Text`]s may be adjacent.
//! - **English** (and any other text): a sentence ends after a run of `.`, `!`, `?`, `…`
//!   (`?!`, `...` stay together), plus any closing quotes/brackets, when whitespace or the end
//!   of the text follows, except:
//!   - inside a token: `3.14`, `1,000.50`, `v2.0.1`, `example.com` never split, because no
//!     whitespace follows the dot;
//!   - after a single `.` ending an abbreviation: the fixed list [`ABBREVIATIONS`](crate::punctuation::ABBREVIATIONS) (case
//!     sensitive: `No.` is one, `no.` is not), a single uppercase initial (`J. K. Rowling`), or
//!     dotted initials whose parts are one or two letters (`U.S.A.`, `Ph.D.`, `e.g.`);
//!   - after a single `.` ending an enumeration marker that opens the sentence (`1. Install`,
//!     `a. First`, up to three digits or one letter);
//!   - when the next word (after any opening quote or bracket) starts with a lowercase letter.
//!     This is the "abbreviation-like token" rule, applied to every English terminator because
//!     it is the same phenomenon for unknown abbreviations (`approx. five`), ellipses
//!     (`Wait... what`) and quoted exclamations (`"Help!" she cried.`). Not splitting costs a
//!     longer segment; a wrong split costs a broken translation.
//!
//! A `.` right after a CJK character follows the English rule (it needs whitespace after it):
//! `版本2.0` and `网址是example.com` must not split.
//!
//! # Known limitations
//!
//! - Listed abbreviations never end a sentence, even when they do (`at Apple Inc. The firm`),
//!   and neither does a single capital letter (`Plan B. Next`, `So do I. Then`).
//! - A number ending a sentence before an uppercase word splits (`page 5. The`), except as the
//!   first word of a sentence (`1. Install`), which is taken as an enumeration marker.
//! - A sentence that really ends before a lowercase word (`Yes. then`) is not split.
//! - A `.` between CJK characters with no space (`我很好.你呢`) is not a boundary.
//! - There is no length limit: a long line without terminators is one segment.

use crate::punctuation::{is_abbreviation, is_closer, is_opener};

/// One piece of a document cut by [`split`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    /// A sentence to translate: never empty, never starts or ends with whitespace, never
    /// contains a line break.
    Text(&'a str),
    /// Layout between sentences (spaces, tabs, line breaks, U+3000, a BOM), never empty, to be
    /// copied to the output as is.
    Gap(&'a str),
}

impl<'a> Piece<'a> {
    /// The piece's text, whichever kind it is.
    pub fn as_str(&self) -> &'a str {
        match *self {
            Piece::Text(s) | Piece::Gap(s) => s,
        }
    }

    pub fn is_text(&self) -> bool {
        matches!(self, Piece::Text(_))
    }
}

/// Cuts `text` into sentences and the layout between them. Concatenating the pieces' strings
/// in order gives back `text` exactly. Two `Text`s are adjacent when nothing separated the
/// sentences (typical in Chinese: `好。对！`); a caller translating into a language that
/// separates sentences with spaces should insert one there.
pub fn split(text: &str) -> Vec<Piece<'_>> {
    let breaks = sentence_breaks(text);
    let is_break = |at: usize| breaks.binary_search(&at).is_ok();
    let mut pieces = Vec::new();
    let mut text_start: Option<usize> = None;
    let mut iter = text.char_indices().peekable();
    while let Some((at, c)) = iter.next() {
        if is_layout(c) {
            let mut end = at + c.len_utf8();
            let mut line_break = is_line_break(c);
            while let Some(&(next_at, d)) = iter.peek() {
                if !is_layout(d) {
                    break;
                }
                line_break |= is_line_break(d);
                end = next_at + d.len_utf8();
                iter.next();
            }
            if at == 0 || end == text.len() || line_break || is_break(at) {
                if let Some(start) = text_start.take() {
                    pieces.push(Piece::Text(&text[start..at]));
                }
                pieces.push(Piece::Gap(&text[at..end]));
            }
            // Otherwise the run is inside a sentence and stays in its text.
        } else {
            match text_start {
                Some(start) if is_break(at) => {
                    pieces.push(Piece::Text(&text[start..at]));
                    text_start = Some(at);
                }
                Some(_) => {}
                None => text_start = Some(at),
            }
        }
    }
    if let Some(start) = text_start {
        pieces.push(Piece::Text(&text[start..]));
    }
    pieces
}

/// Byte offsets (ascending) right after each sentence-ending terminator (and its closers).
/// Line breaks are handled by [`split`] itself.
fn sentence_breaks(text: &str) -> Vec<usize> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let n = chars.len();
    let byte_at = |k: usize| chars.get(k).map_or(text.len(), |&(b, _)| b);
    let ch = |k: usize| chars.get(k).map(|&(_, c)| c);

    let mut breaks = Vec::new();
    // Index of the first non-layout character of the current sentence, once seen.
    let mut sentence_first: Option<usize> = None;
    // Straight quotes seen in the current sentence (for telling closing from opening ones).
    let mut double_quotes = 0usize;
    let mut single_quotes = 0usize;
    let mut k = 0;
    while k < n {
        let c = chars[k].1;
        if is_layout(c) {
            let mut j = k;
            let mut line_break = false;
            while let Some(d) = ch(j).filter(|&d| is_layout(d)) {
                line_break |= is_line_break(d);
                j += 1;
            }
            if line_break {
                sentence_first = None;
                double_quotes = 0;
                single_quotes = 0;
            }
            k = j;
            continue;
        }
        let first = *sentence_first.get_or_insert(k);
        let after_cjk = k > 0 && is_cjk(chars[k - 1].1);
        let mut cjk = is_cjk_terminator(c) || (matches!(c, '!' | '?' | ';' | '…') && after_cjk);
        if !cjk && !is_latin_terminator(c) {
            match c {
                '"' => double_quotes += 1,
                '\'' => single_quotes += 1,
                _ => {}
            }
            k += 1;
            continue;
        }

        // The terminator run.
        let mut j = k + 1;
        while let Some(d) = ch(j) {
            if is_cjk_terminator(d) {
                cjk = true;
            } else if !(is_latin_terminator(d) || (cjk && d == ';')) {
                break;
            }
            j += 1;
        }
        let single_dot = j == k + 1 && c == '.';

        // Closing quotes and brackets.
        while let Some(d) = ch(j) {
            let closes = match d {
                '"' => !cjk || double_quotes % 2 == 1,
                '\'' => !cjk || single_quotes % 2 == 1,
                _ => is_closer(d),
            };
            if !closes {
                break;
            }
            match d {
                '"' => double_quotes += 1,
                '\'' => single_quotes += 1,
                _ => {}
            }
            j += 1;
        }

        let ends = cjk || {
            // English: whitespace (or the end) must follow, and the rest of the rules.
            let followed_by_space = ch(j).is_none_or(is_layout);
            followed_by_space
                && !(single_dot && is_abbreviation_or_marker(text, &chars, first, k))
                && !next_word_is_lowercase(&chars, j)
        };
        if ends {
            breaks.push(byte_at(j));
            sentence_first = None;
            double_quotes = 0;
            single_quotes = 0;
        }
        k = j;
    }
    breaks
}

/// Whether the word ending at the `.` at char index `dot` is an abbreviation, an initial or an
/// enumeration marker opening the sentence (which starts at char index `first`).
fn is_abbreviation_or_marker(
    text: &str,
    chars: &[(usize, char)],
    first: usize,
    dot: usize,
) -> bool {
    let mut start = dot;
    while start > first && !is_layout(chars[start - 1].1) {
        start -= 1;
    }
    let word = &text[chars[start].0..chars[dot].0];
    let trimmed = word.trim_start_matches(is_opener);
    if is_abbreviation(trimmed) {
        return true;
    }
    // An enumeration marker: `1.`, `12.`, `a.` as the sentence's first word.
    start == first
        && !word.is_empty()
        && ((word.len() <= 3 && word.bytes().all(|b| b.is_ascii_digit()))
            || (word.len() == 1 && word.bytes().all(|b| b.is_ascii_alphabetic())))
}

/// Whether the next word from char index `from` (after layout and opening punctuation) starts
/// with a lowercase letter. A line break in between never matters: it ends the sentence anyway.
fn next_word_is_lowercase(chars: &[(usize, char)], from: usize) -> bool {
    chars[from.min(chars.len())..]
        .iter()
        .map(|&(_, c)| c)
        .find(|&c| !is_layout(c) && !is_opener(c))
        .is_some_and(char::is_lowercase)
}

fn is_line_break(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r' | '\u{0B}' | '\u{0C}' | '\u{85}' | '\u{2028}' | '\u{2029}'
    )
}

/// Layout characters: Unicode white space (which includes tabs, line breaks, NBSP and the
/// full-width space U+3000) and the byte-order mark.
fn is_layout(c: char) -> bool {
    c.is_whitespace() || c == '\u{FEFF}'
}

fn is_cjk_terminator(c: char) -> bool {
    matches!(c, '。' | '！' | '？' | '；' | '｡')
}

fn is_latin_terminator(c: char) -> bool {
    matches!(c, '.' | '!' | '?' | '…')
}

/// CJK ideographs, kana, hangul, bopomofo, CJK punctuation and full-width forms.
fn is_cjk(c: char) -> bool {
    matches!(
        c,
        '\u{2E80}'..='\u{2FDF}'
            | '\u{3001}'..='\u{33FF}'
            | '\u{3400}'..='\u{4DBF}'
            | '\u{4E00}'..='\u{9FFF}'
            | '\u{A960}'..='\u{A97F}'
            | '\u{AC00}'..='\u{D7AF}'
            | '\u{F900}'..='\u{FAFF}'
            | '\u{FE30}'..='\u{FE4F}'
            | '\u{FF00}'..='\u{FFEF}'
            | '\u{20000}'..='\u{323AF}'
    )
}

/// CJK ideographs proper (Han characters), for [`is_passthrough`].
fn is_cjk_ideograph(c: char) -> bool {
    matches!(
        c,
        '\u{3400}'..='\u{4DBF}'
            | '\u{4E00}'..='\u{9FFF}'
            | '\u{F900}'..='\u{FAFF}'
            | '\u{20000}'..='\u{323AF}'
    )
}

/// Whether a segment should be copied to the output instead of translated: it has no
/// alphabetic character (Unicode `Alphabetic`, which covers Latin, Cyrillic, kana, hangul, ...)
/// and no CJK ideograph. So digits and numbers (`2024`, `3.14`, `1,000`), emoji, symbols and
/// punctuation pass through; anything with a letter, URLs included, does not. The empty and
/// whitespace-only strings pass through.
pub fn is_passthrough(text: &str) -> bool {
    !text
        .chars()
        .any(|c| c.is_alphabetic() || is_cjk_ideograph(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    use Piece::{Gap, Text};

    fn texts(s: &str) -> Vec<&str> {
        split(s)
            .into_iter()
            .filter(Piece::is_text)
            .map(|p| p.as_str())
            .collect()
    }

    /// The invariants every split must satisfy.
    fn check_invariants(doc: &str) {
        let pieces = split(doc);
        let joined: String = pieces.iter().map(Piece::as_str).collect();
        assert_eq!(joined, doc, "round trip of {doc:?}");
        for (i, piece) in pieces.iter().enumerate() {
            match *piece {
                Text(s) => {
                    assert!(!s.is_empty(), "empty text in {doc:?}");
                    assert!(!s.starts_with(is_layout), "text {s:?} starts with layout");
                    assert!(!s.ends_with(is_layout), "text {s:?} ends with layout");
                    assert!(!s.contains(is_line_break), "text {s:?} has a line break");
                }
                Gap(s) => {
                    assert!(!s.is_empty(), "empty gap in {doc:?}");
                    assert!(s.chars().all(is_layout), "gap {s:?} has non-layout");
                    if let Some(Gap(_)) = pieces.get(i + 1) {
                        panic!("two adjacent gaps in {doc:?}");
                    }
                }
            }
        }
        if let Some(first) = doc.chars().next()
            && is_layout(first)
        {
            assert!(matches!(pieces.first(), Some(Gap(_))), "{doc:?}");
        }
        if let Some(last) = doc.chars().last()
            && is_layout(last)
        {
            assert!(matches!(pieces.last(), Some(Gap(_))), "{doc:?}");
        }
    }

    const CORPUS: &[&str] = &[
        "",
        " ",
        "\n",
        "\r\n\r\n",
        " \t\u{3000}\n ",
        "\u{FEFF}Hello. World.",
        "😀",
        "😀👍🎉",
        "  😀  ",
        "Hello.",
        "Hello",
        "  Hello world.  ",
        "我用iPhone 15。它很好！ It works. 3.5 stars.",
        "今天天气很好。我们去公园吧！你觉得呢？好的；走吧……",
        "他说：“你好。”然后走了。",
        "「好啊。」她说。『真的？』",
        "第一段。\n\n第二段第一句。第二句！\n　　第三段缩进。",
        "第一段。\r\n\r\n第二段。\r\n",
        "Mr. Smith met Dr. Jones at 3 p.m. on Jan. 5. They talked.",
        "J. K. Rowling wrote it. The U.S. economy grew 3.5% in 2024.",
        "Pi is 3.14. It costs $1,000.50. Use v2.0.1 now.",
        "\"Help!\" she cried. Nobody came.",
        "Wait... what? Really?! Yes.",
        "He said \"yes.\" Then he left.",
        "(This is an aside.) The main text continues.",
        "1. Install the package.\n2. Run it.\n3. Profit!",
        "Line one\nLine two\n\nLine four",
        "\tTabbed.\tStill tabbed?\t",
        "A.B.C. is a company. e.g. this one.",
        "Visit example.com. Then leave.",
        "  \n\n  leading and trailing  \n\n  ",
        "End with closers.)\" ",
        "...",
        "!!!",
        "。。。",
        "？！",
        "a\u{2028}b\u{2029}c\u{85}d\u{0B}e\u{0C}f",
        "你好!世界?好的;再见…",
        "版本2.0已发布。网址是example.com.很好",
        "混合 English 句子. 然后中文。Then English!",
        "Ünïcödé ßtraße. Ελληνικά. Русский текст. 日本語の文。한국어 문장.",
        "Trailing abbreviation etc.",
        "Trailing space after dot. ",
        "Spaces   inside   a   sentence.   Another   one.",
        "'Single quoted.' Next.",
        "好。\"引号\"测试。",
        "他说：\"好。\"然后走了。",
        "No. 5 is here. No. It is not.",
        "\u{00A0}nbsp\u{00A0}lead. And\u{00A0}inside.",
        "Emoji 😀. Next 🎉! Done?",
        "x",
        ".",
        " . ",
        "a. b. c.",
        "What?!?! No way!!! Okay.",
    ];

    #[test]
    fn corpus_round_trips_and_keeps_invariants() {
        for doc in CORPUS {
            check_invariants(doc);
        }
    }

    #[test]
    fn generated_documents_round_trip() {
        // Every combination of three fragments from a tricky alphabet (as prefix, middle and
        // suffix), and a deterministic pseudo-random mix of longer ones.
        let fragments = [
            "", " ", "\n", "\r\n", "\t", "\u{3000}", "。", "！", "…", "……", ".", "?!", "\"", "'",
            "」", ")", "Mr.", "a", "A", "3.5", "你", "好", "x.y", "😀", "  \n  ", "e.g.", "“", "”",
            ";", "；",
        ];
        for a in fragments {
            for b in fragments {
                for c in fragments {
                    check_invariants(&format!("{a}{b}{c}"));
                    check_invariants(&format!("{a} {b}{c} "));
                }
            }
        }
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..2000 {
            let mut doc = String::new();
            let len = (state % 24) as usize;
            for _ in 0..len {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                doc.push_str(fragments[(state % fragments.len() as u64) as usize]);
            }
            check_invariants(&doc);
            state = state.wrapping_add(1);
        }
    }

    #[test]
    fn empty_and_layout_only() {
        assert_eq!(split(""), []);
        assert_eq!(split(" "), [Gap(" ")]);
        assert_eq!(split(" \t\u{3000}\r\n "), [Gap(" \t\u{3000}\r\n ")]);
        assert_eq!(split("😀👍"), [Text("😀👍")]);
    }

    #[test]
    fn leading_and_trailing_whitespace_are_gaps() {
        assert_eq!(
            split("  Hello world.  "),
            [Gap("  "), Text("Hello world."), Gap("  ")]
        );
        assert_eq!(split("\nHi\n"), [Gap("\n"), Text("Hi"), Gap("\n")]);
        assert_eq!(split("\u{FEFF}Hi."), [Gap("\u{FEFF}"), Text("Hi.")]);
    }

    #[test]
    fn chinese_sentences() {
        assert_eq!(
            split("今天天气很好。我们去公园吧！你觉得呢？"),
            [
                Text("今天天气很好。"),
                Text("我们去公园吧！"),
                Text("你觉得呢？")
            ]
        );
        assert_eq!(
            texts("好的；走吧……然后呢？！嗯。"),
            ["好的；", "走吧……", "然后呢？！", "嗯。"]
        );
        assert_eq!(
            texts("他说：“你好。”然后走了。"),
            ["他说：“你好。”", "然后走了。"]
        );
        assert_eq!(
            texts("「好啊。」她说。『真的？』"),
            ["「好啊。」", "她说。", "『真的？』"]
        );
        assert_eq!(
            texts("（注意！）【重要。】《书名。》"),
            ["（注意！）", "【重要。】", "《书名。》"]
        );
    }

    #[test]
    fn ascii_terminators_after_cjk() {
        assert_eq!(
            texts("你好!世界?好的;再见…结束"),
            ["你好!", "世界?", "好的;", "再见…", "结束"]
        );
        // A dot after CJK needs whitespace, like English.
        assert_eq!(
            texts("版本2.0已发布。网址是example.com.很好"),
            ["版本2.0已发布。", "网址是example.com.很好"]
        );
        assert_eq!(texts("我很好. 你呢"), ["我很好.", "你呢"]);
    }

    #[test]
    fn straight_quotes_in_chinese_close_only_when_open() {
        assert_eq!(
            texts("他说：\"好。\"然后走了。"),
            ["他说：\"好。\"", "然后走了。"]
        );
        assert_eq!(texts("好。\"引号\"测试。"), ["好。", "\"引号\"测试。"]);
    }

    #[test]
    fn mixed_chinese_and_english() {
        assert_eq!(
            split("我用iPhone 15。它很好！ It works. 3.5 stars."),
            [
                Text("我用iPhone 15。"),
                Text("它很好！"),
                Gap(" "),
                Text("It works."),
                Gap(" "),
                Text("3.5 stars."),
            ]
        );
        assert_eq!(
            texts("混合 English 句子. 然后中文。Then English!"),
            ["混合 English 句子.", "然后中文。", "Then English!"]
        );
    }

    #[test]
    fn english_sentences() {
        assert_eq!(
            split("Hello there. How are you? Fine!"),
            [
                Text("Hello there."),
                Gap(" "),
                Text("How are you?"),
                Gap(" "),
                Text("Fine!")
            ]
        );
        assert_eq!(
            texts("Wait... What? Really?! Yes."),
            ["Wait...", "What?", "Really?!", "Yes."]
        );
        assert_eq!(
            texts("What?!?! No way!!! Okay."),
            ["What?!?!", "No way!!!", "Okay."]
        );
        assert_eq!(
            texts("Spaces   inside   a   sentence.   Another   one."),
            ["Spaces   inside   a   sentence.", "Another   one."]
        );
    }

    #[test]
    fn numbers_do_not_split() {
        assert_eq!(
            texts("Pi is 3.14. It costs $1,000.50. Use v2.0.1 now."),
            ["Pi is 3.14.", "It costs $1,000.50.", "Use v2.0.1 now."]
        );
        assert_eq!(
            texts("Visit example.com. Then leave."),
            ["Visit example.com.", "Then leave."]
        );
        assert_eq!(texts("I have 5. You have 3."), ["I have 5.", "You have 3."]);
    }

    #[test]
    fn abbreviations_and_initials_do_not_split() {
        assert_eq!(
            texts("Mr. Smith met Dr. Jones at 3 p.m. on Jan. 5. They talked."),
            [
                "Mr. Smith met Dr. Jones at 3 p.m. on Jan. 5.",
                "They talked."
            ]
        );
        assert_eq!(
            texts("J. K. Rowling wrote it. The U.S. economy grew. Ph.D. Students came."),
            [
                "J. K. Rowling wrote it.",
                "The U.S. economy grew.",
                "Ph.D. Students came."
            ]
        );
        assert_eq!(
            texts("Apples vs. Oranges, e.g. Fuji, i.e. Red. (Fig. 3) shows it."),
            [
                "Apples vs. Oranges, e.g. Fuji, i.e. Red.",
                "(Fig. 3) shows it."
            ]
        );
        // `No.` is an abbreviation, `no.` is a word.
        assert_eq!(
            texts("See No. 5 here. He said no. Then left."),
            ["See No. 5 here.", "He said no.", "Then left."]
        );
        assert_eq!(
            texts("Trailing abbreviation etc."),
            ["Trailing abbreviation etc."]
        );
    }

    #[test]
    fn lowercase_next_word_does_not_split() {
        assert_eq!(
            texts("\"Help!\" she cried. Nobody came."),
            ["\"Help!\" she cried.", "Nobody came."]
        );
        assert_eq!(
            texts("It is approx. five. Wait... what. OK."),
            ["It is approx. five.", "Wait... what.", "OK."]
        );
        assert_eq!(texts("a. b. c."), ["a. b. c."]);
    }

    #[test]
    fn closing_quotes_and_brackets_stay_with_the_sentence() {
        assert_eq!(
            texts("He said \"yes.\" Then he left."),
            ["He said \"yes.\"", "Then he left."]
        );
        assert_eq!(
            texts("(This is an aside.) The main text continues."),
            ["(This is an aside.)", "The main text continues."]
        );
        assert_eq!(
            texts("She wrote “Done!” Then ‘Really?’ Yes."),
            ["She wrote “Done!”", "Then ‘Really?’", "Yes."]
        );
        assert_eq!(
            texts("'Single quoted.' Next."),
            ["'Single quoted.'", "Next."]
        );
    }

    #[test]
    fn line_breaks_are_layout() {
        assert_eq!(
            split("Line one\nLine two\n\nLine four"),
            [
                Text("Line one"),
                Gap("\n"),
                Text("Line two"),
                Gap("\n\n"),
                Text("Line four")
            ]
        );
        assert_eq!(
            split("第一段。\r\n\r\n第二段。\r\n"),
            [
                Text("第一段。"),
                Gap("\r\n\r\n"),
                Text("第二段。"),
                Gap("\r\n")
            ]
        );
        assert_eq!(
            split("第二句！\n\u{3000}\u{3000}第三段缩进。"),
            [
                Text("第二句！"),
                Gap("\n\u{3000}\u{3000}"),
                Text("第三段缩进。")
            ]
        );
        // Even an abbreviation or a lowercase continuation cannot join lines.
        assert_eq!(texts("Dr.\nsmith"), ["Dr.", "smith"]);
    }

    #[test]
    fn tabs_and_enumerations() {
        assert_eq!(
            split("\tTabbed.\tStill tabbed?\t"),
            [
                Gap("\t"),
                Text("Tabbed."),
                Gap("\t"),
                Text("Still tabbed?"),
                Gap("\t")
            ]
        );
        assert_eq!(
            texts("1. Install the package.\n2. Run it.\n3. Profit!"),
            ["1. Install the package.", "2. Run it.", "3. Profit!"]
        );
        assert_eq!(
            texts("Steps: 1. Go. 2. Stop."),
            ["Steps: 1.", "Go.", "2. Stop."]
        );
    }

    #[test]
    fn passthrough() {
        assert!(is_passthrough(""));
        assert!(is_passthrough("   "));
        assert!(is_passthrough("2024"));
        assert!(is_passthrough("3.14"));
        assert!(is_passthrough("1,000.50 %"));
        assert!(is_passthrough("😀👍🎉"));
        assert!(is_passthrough("!!! ??? ..."));
        assert!(is_passthrough("— · • → ★ © ™"));
        assert!(is_passthrough("。！？…"));
        assert!(is_passthrough("$100 #1 :)"));
        assert!(!is_passthrough("a"));
        assert!(!is_passthrough("2024年"));
        assert!(!is_passthrough("好"));
        assert!(!is_passthrough("😀 ok"));
        assert!(!is_passthrough("https://example.com"));
        assert!(!is_passthrough("v2.0.1"));
        assert!(!is_passthrough("カタカナ"));
        assert!(!is_passthrough("한국어"));
        assert!(!is_passthrough("Привет"));
        assert!(!is_passthrough("𠀀")); // CJK extension B
    }
}
