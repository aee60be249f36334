//! Post-processing of models whose target tokens are joined with spaces (manifest
//! `"detokenize": "join_spaces"`, e.g. cn2en-gru's `i don't know .`): spacing around
//! punctuation, quotes and contractions, and optional capitalisation of sentence starts. A
//! pure function over `&str`, linear in the input's length.

use crate::punctuation::{is_abbreviation, is_closer, is_opener};

/// Fixes the spacing of output whose tokens were joined with spaces (`i don't know .`), and
/// optionally capitalises sentence starts. Words are never added, dropped or reordered; only
/// whitespace changes (and, with `capitalize`, the case of sentence-initial letters).
///
/// - Whitespace runs of any kind become single spaces; the result is trimmed.
/// - No space before a token made of `. , ! ? ; : % ) ] }` `…` and their full-width forms
///   (`。，！？；：、）」』】》`), possibly followed by closing quotes (`."`, `?)`).
/// - No space after a token made of opening brackets `( [ {` `（「『【《“‘`.
/// - Straight double quotes `"` standing alone are paired: an opening one attaches to the next
///   token, a closing one to the previous. Quotes inside other tokens (`"yes`) count for the
///   pairing. Curly `“` opens and `”` closes.
/// - Contraction pieces (`n't`, `'s`, `'re`, `'ve`, `'ll`, `'d`, `'m`) attach to the previous
///   word; apostrophes inside words are untouched. A lone `'` is left alone (quote or plural
///   possessive cannot be told apart).
/// - Digits are left alone: a `.`, `,` or `:` token between two numbers keeps both spaces
///   (`3 . 5` may be 3.5 or two sentences).
/// - With `capitalize`, the first letter of the text and of each sentence after `.`, `!` or
///   `?` (not after an ellipsis or a known abbreviation) is uppercased, unless the word already
///   has an uppercase letter later (`iPhone`), looks like a URL or e-mail, or has no
///   single-character uppercase (`ß`).
pub fn detokenize_spaced(text: &str, capitalize: bool) -> String {
    let tokens: Vec<&str> = text.split_whitespace().collect();
    let mut out = String::with_capacity(text.len());
    let mut quote_open = false;
    let mut glue_next = false;
    let mut capitalize_next = capitalize;
    for (i, &token) in tokens.iter().enumerate() {
        let prev = i.checked_sub(1).and_then(|p| tokens.get(p).copied());
        let next = tokens.get(i + 1).copied();
        let lone_quote = token == "\"";
        let between_numbers = matches!(token, "." | "," | ":")
            && prev.is_some_and(|p| p.ends_with(|c: char| c.is_ascii_digit()))
            && next.is_some_and(|n| n.starts_with(|c: char| c.is_ascii_digit()));
        let glue_prev = if lone_quote {
            quote_open
        } else {
            (attaches_left(token) && !between_numbers)
                || (is_clitic(token)
                    && prev.is_some_and(|p| p.ends_with(|c: char| c.is_alphabetic())))
        };
        if !out.is_empty() && !glue_prev && !glue_next {
            out.push(' ');
        }

        if capitalize_next && token.chars().any(char::is_alphanumeric) {
            push_capitalized(&mut out, token);
            capitalize_next = false;
        } else {
            out.push_str(token);
        }

        if lone_quote {
            glue_next = !quote_open;
            quote_open = !quote_open;
        } else {
            if token.matches('"').count() % 2 == 1 {
                quote_open = !quote_open;
            }
            glue_next = !token.is_empty() && token.chars().all(is_opening_bracket);
        }
        if capitalize && !between_numbers && ends_sentence(token, prev) {
            capitalize_next = true;
        }
    }
    out
}

/// Tokens that attach to the previous one: closing punctuation, possibly with closing quotes.
fn attaches_left(token: &str) -> bool {
    token.starts_with(is_attaching_punct)
        && token
            .chars()
            .all(|c| is_attaching_punct(c) || is_closer(c) || c == '"' || c == '\'')
}

fn is_attaching_punct(c: char) -> bool {
    matches!(
        c,
        '.' | ','
            | '!'
            | '?'
            | ';'
            | ':'
            | '%'
            | ')'
            | ']'
            | '}'
            | '…'
            | '。'
            | '，'
            | '！'
            | '？'
            | '；'
            | '：'
            | '、'
            | '）'
            | '」'
            | '』'
            | '】'
            | '》'
            | '”'
    )
}

fn is_opening_bracket(c: char) -> bool {
    matches!(
        c,
        '(' | '[' | '{' | '（' | '「' | '『' | '【' | '《' | '“' | '‘' | '¿' | '¡'
    )
}

fn is_clitic(token: &str) -> bool {
    let lower = token.to_lowercase().replace('’', "'");
    matches!(
        lower.as_str(),
        "n't" | "'s" | "'re" | "'ve" | "'ll" | "'d" | "'m"
    )
}

/// Whether `token` ends a sentence for capitalisation purposes: it ends (before closing
/// quotes/brackets) with `!`, `?`, a CJK terminator or a single `.` that does not end an
/// abbreviation (for a lone `.`, the previous token is checked).
fn ends_sentence(token: &str, prev: Option<&str>) -> bool {
    let core = token.trim_end_matches(|c: char| is_closer(c) || c == '"' || c == '\'');
    if core.ends_with(['!', '?', '。', '！', '？']) {
        return true;
    }
    let Some(word) = core.strip_suffix('.') else {
        return false;
    };
    if word.ends_with(['.', '…']) {
        return false; // an ellipsis
    }
    let word = if word.is_empty() {
        match prev {
            Some(p) => p,
            None => return true,
        }
    } else {
        word
    };
    !is_abbreviation(word.trim_start_matches(is_opener))
}

/// Appends `token` with its first alphanumeric character uppercased when that is safe.
fn push_capitalized(out: &mut String, token: &str) {
    let looks_like_address = token.contains("://") || token.contains('@');
    let Some((at, c)) = token.char_indices().find(|&(_, c)| c.is_alphanumeric()) else {
        out.push_str(token);
        return;
    };
    let rest = &token[at + c.len_utf8()..];
    let mut upper = c.to_uppercase();
    let single_upper = match (upper.next(), upper.next()) {
        (Some(u), None) if u != c && u.to_lowercase().eq(std::iter::once(c)) => Some(u),
        _ => None,
    };
    match single_upper {
        Some(u)
            if c.is_lowercase() && !looks_like_address && !rest.chars().any(char::is_uppercase) =>
        {
            out.push_str(&token[..at]);
            out.push(u);
            out.push_str(rest);
        }
        _ => out.push_str(token),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detokenize_examples() {
        assert_eq!(detokenize_spaced("i don't know .", true), "I don't know.");
        assert_eq!(detokenize_spaced("see you !", true), "See you!");
        assert_eq!(
            detokenize_spaced("it is very cold .", true),
            "It is very cold."
        );
        assert_eq!(
            detokenize_spaced("he said , \" yes . \"", true),
            "He said, \"yes.\""
        );
        assert_eq!(detokenize_spaced("i don't know .", false), "i don't know.");
        assert_eq!(
            detokenize_spaced("hello , world ! how are you ? fine .", true),
            "Hello, world! How are you? Fine."
        );
        assert_eq!(
            detokenize_spaced("  lots   of \t space  .  ", false),
            "lots of space."
        );
        assert_eq!(
            detokenize_spaced("a ( small ) test [ 1 ] { x } .", false),
            "a (small) test [1] {x}."
        );
        assert_eq!(
            detokenize_spaced("50 % off ; ok : yes", false),
            "50% off; ok: yes"
        );
        assert_eq!(
            detokenize_spaced("\" hi , \" he said . \" bye . \" then left", true),
            "\"Hi,\" he said. \"Bye.\" Then left"
        );
        assert_eq!(
            detokenize_spaced("wait ... what ?!", true),
            "Wait... what?!"
        );
        assert_eq!(
            detokenize_spaced("i do n't know . it 's fine", true),
            "I don't know. It's fine"
        );
        assert_eq!(
            detokenize_spaced("we 're here , they 've gone", false),
            "we're here, they've gone"
        );
        assert_eq!(
            detokenize_spaced("the students ' books", false),
            "the students ' books"
        );
    }

    #[test]
    fn detokenize_leaves_digits_alone() {
        assert_eq!(
            detokenize_spaced("it costs 3 . 5 dollars", true),
            "It costs 3 . 5 dollars"
        );
        assert_eq!(
            detokenize_spaced("at 10 : 30 , 1 , 000", false),
            "at 10 : 30 , 1 , 000"
        );
        assert_eq!(
            detokenize_spaced("i have 3 . you have 4 .", true),
            "I have 3. You have 4."
        );
        assert_eq!(detokenize_spaced("3.14 is pi .", true), "3.14 is pi.");
    }

    #[test]
    fn detokenize_capitalisation_is_careful() {
        assert_eq!(
            detokenize_spaced("iphone is good . iphone too", true),
            "Iphone is good. Iphone too"
        );
        assert_eq!(
            detokenize_spaced("iPhone is good . eBay too", true),
            "iPhone is good. eBay too"
        );
        assert_eq!(
            detokenize_spaced("see http://x.com . a@b.c mail", true),
            "See http://x.com. a@b.c mail"
        );
        assert_eq!(
            detokenize_spaced("mr . smith e.g. this . done", true),
            "Mr. Smith e.g. this. Done"
        );
        assert_eq!(detokenize_spaced("ß is a letter", true), "ß is a letter");
        assert_eq!(detokenize_spaced("élan ! über", true), "Élan! Über");
        assert_eq!(
            detokenize_spaced("( hello ) . \" quoted \"", true),
            "(Hello). \"Quoted\""
        );
        assert_eq!(detokenize_spaced("", true), "");
        assert_eq!(detokenize_spaced("   ", true), "");
        assert_eq!(
            detokenize_spaced("我 很 好 。 你 呢 ？", true),
            "我 很 好。 你 呢？"
        );
    }

    #[test]
    fn detokenize_never_changes_words() {
        let inputs = [
            "i don't know .",
            "he said , \" yes . \"",
            "it costs 3 . 5 dollars",
            "\" \" \" unbalanced \" quotes \"",
            "( [ { nested } ] ) .",
            "ß straße . ǆ digraph ! ŉ odd",
            "mr . smith , e.g . etc . ...",
            "a\tb\nc  d",
            "?! ... . , ; : % ) ]",
            "do n't it 's we 're I 'm they 'll he 'd you 've",
            "“ curly ” ‘ single ’ 「 括号 」",
            "iPhone eBay http://x.y a@b.c",
            "",
        ];
        let normalise = |s: &str| -> String {
            s.chars()
                .filter(|c| !c.is_whitespace())
                .flat_map(char::to_lowercase)
                .collect()
        };
        for input in inputs {
            for capitalize in [false, true] {
                let out = detokenize_spaced(input, capitalize);
                assert_eq!(normalise(&out), normalise(input), "{input:?} -> {out:?}");
                assert_eq!(out.trim(), out);
                assert!(!out.contains("  "), "{out:?}");
            }
        }
    }
}
