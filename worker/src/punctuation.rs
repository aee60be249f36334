//! Punctuation knowledge shared by sentence splitting (`pipeline::segment`) and the
//! post-processing of space-joined model output (`model::seq2seq::detokenize`): opening and
//! closing quotes and brackets, and the abbreviations after which a `.` ends no sentence. One
//! home, so both sides agree on where a sentence ends.

/// Abbreviations after which a `.` does not end a sentence (compared without the final dot,
/// case sensitively). Sentence-final uses (`... at Apple Inc. The company ...`) therefore stay
/// in one segment; see `pipeline::segment`.
pub const ABBREVIATIONS: &[&str] = &[
    "Mr", "Mrs", "Ms", "Mx", "Dr", "Prof", "Sr", "Jr", "St", "Mt", "vs", "etc", "e.g", "E.g",
    "i.e", "I.e", "a.m", "p.m", "A.M", "P.M", "U.S", "U.K", "No", "Nos", "Fig", "Figs", "Inc",
    "Ltd", "Co", "Corp", "Jan", "Feb", "Mar", "Apr", "Jun", "Jul", "Aug", "Sep", "Sept", "Oct",
    "Nov", "Dec",
];

/// Whether `word` (without its final dot) is a known abbreviation, a single uppercase initial
/// or dotted initials (`U.S`, `Ph.D`, `e.g`: two or more parts of one or two letters).
pub(crate) fn is_abbreviation(word: &str) -> bool {
    if ABBREVIATIONS.contains(&word) {
        return true;
    }
    let mut chars = word.chars();
    if let (Some(c), None) = (chars.next(), chars.next())
        && c.is_uppercase()
    {
        return true;
    }
    word.contains('.')
        && word.split('.').all(|part| {
            let count = part.chars().count();
            (1..=2).contains(&count) && part.chars().all(char::is_alphabetic)
        })
}

/// Unambiguous closing quotes and brackets (straight quotes are handled separately).
pub(crate) fn is_closer(c: char) -> bool {
    matches!(
        c,
        '”' | '’' | ')' | ']' | '」' | '』' | '）' | '】' | '》' | '〉' | '〕' | '］' | '｝'
    )
}

pub(crate) fn is_opener(c: char) -> bool {
    matches!(
        c,
        '"' | '\''
            | '“'
            | '‘'
            | '('
            | '['
            | '{'
            | '「'
            | '『'
            | '（'
            | '【'
            | '《'
            | '〈'
            | '〔'
            | '［'
            | '｛'
            | '¿'
            | '¡'
    )
}
