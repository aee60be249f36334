//! PII rules: e-mail addresses, phone numbers, Chinese mobile numbers and resident IDs,
//! payment cards and IP addresses, found by pattern plus validation (checksums, calendar
//! dates, octet ranges, `Ipv6Addr` parsing) on the folded text (so full-width `１３８…` and
//! `＠` count) and reported as original char offsets.
//!
//! Where candidates of different kinds overlap, the more specific kind wins, in this order:
//! e-mail, resident ID, payment card, Chinese mobile, IP address, phone. Within a kind the
//! earlier, then the longer, candidate wins.

use std::{net::Ipv6Addr, sync::LazyLock};

use chrono::{Datelike, NaiveDate, Utc};
use regex::Regex;
use serde::Serialize;

use super::normalize::{Folded, fold};

/// What a PII match is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PiiKind {
    Email,
    Phone,
    CnMobile,
    CnResidentId,
    PaymentCard,
    IpAddress,
}

impl PiiKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Phone => "phone",
            Self::CnMobile => "cn_mobile",
            Self::CnResidentId => "cn_resident_id",
            Self::PaymentCard => "payment_card",
            Self::IpAddress => "ip_address",
        }
    }

    /// Overlap precedence: lower wins.
    fn rank(self) -> u8 {
        match self {
            Self::Email => 0,
            Self::CnResidentId => 1,
            Self::PaymentCard => 2,
            Self::CnMobile => 3,
            Self::IpAddress => 4,
            Self::Phone => 5,
        }
    }
}

/// One PII match, in original char offsets `[start, end)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PiiMatch {
    pub kind: PiiKind,
    pub start: usize,
    pub end: usize,
}

fn regex(pattern: &str) -> Regex {
    Regex::new(pattern).expect("a built-in PII pattern compiles")
}

// All patterns run on folded (NFKC, lowercased) text and spell digits `[0-9]` because the
// regex crate's `\d` is Unicode-wide.

/// A practical address: dot-separated atoms of the common local-part characters, then a
/// domain of LDH labels ending in an alphabetic or punycode TLD.
static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"[a-z0-9_%+-]+(?:\.[a-z0-9_%+-]+)*@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+(?:xn--[a-z0-9-]{1,59}|[a-z]{2,63})",
    )
});

/// `1[3-9]` + 9 digits, optionally `138-1234-5678` / `138 1234 5678`, optionally after
/// `+86`, `0086`, `86` or `(+86)`.
static CN_MOBILE: LazyLock<Regex> = LazyLock::new(|| {
    regex(r"(?:(?:\+|00)86[ -]?|\(\+?86\)[ -]?|86[ -]?)?1[3-9][0-9](?:[ -]?[0-9]{4}){2}")
});

/// Area code (first digit 1–8), birth date, sequence, check char (folded to lowercase).
static CN_RESIDENT_ID: LazyLock<Regex> = LazyLock::new(|| regex(r"[1-8][0-9]{16}[0-9x]"));

/// Grouped (first group of four, then 2–4 groups of 3–6 after single spaces or hyphens)
/// or contiguous 13–19 digits.
static PAYMENT_CARD: LazyLock<Regex> =
    LazyLock::new(|| regex(r"[2-6][0-9]{3}(?:[ -][0-9]{3,6}){2,4}|[2-6][0-9]{12,18}"));

static IPV4: LazyLock<Regex> = LazyLock::new(|| regex(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}"));

/// A maximal run of hex digits, colons and dots holding at least two colons.
static IPV6: LazyLock<Regex> = LazyLock::new(|| regex(r"[0-9a-f:]*:[0-9a-f:]*:[0-9a-f:.]*"));

/// Phone formats, each with the digit count it must hold.
static PHONES: LazyLock<Vec<(Regex, std::ops::RangeInclusive<usize>)>> = LazyLock::new(|| {
    vec![
        // International, E.164-like: `+` country code, groups with optional separators.
        (
            regex(r"\+[0-9]{1,3}(?:[ .-]?(?:\([0-9]{1,4}\)|[0-9]{1,6})){1,8}"),
            8..=15,
        ),
        // North American: `(555) 123-4567`, `555-123-4567`, `555.123.4567`, `1-800-…`.
        (
            regex(r"(?:1[ .-])?(?:\([2-9][0-9]{2}\) ?|[2-9][0-9]{2}[.-])[0-9]{3}[.-][0-9]{4}"),
            10..=11,
        ),
        // Chinese landline: `010-12345678`, `0755-1234567`, `(010) 12345678`.
        (
            regex(r"(?:0[0-9]{2,3}[ -]|\(0[0-9]{2,3}\) ?)[1-9][0-9]{6,7}"),
            10..=12,
        ),
        // Other national formats with a trunk prefix: `03-1234-5678`, `090-1234-5678`.
        (regex(r"0[0-9]{1,4}-[0-9]{1,4}-[0-9]{4}"), 10..=11),
    ]
});

/// A candidate in folded byte offsets.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    kind: PiiKind,
    start: usize,
    end: usize,
}

/// Finds the PII in `text`: original char offsets, sorted by start, non-overlapping.
pub fn find_pii(text: &str) -> Vec<PiiMatch> {
    let folded = fold(text);
    let t = folded.text.as_str();
    let mut candidates = Vec::new();

    scan(t, &EMAIL, PiiKind::Email, &mut candidates, |_, s, e| {
        Some((s, e))
    });
    scan(
        t,
        &CN_RESIDENT_ID,
        PiiKind::CnResidentId,
        &mut candidates,
        |t, s, e| (digit_free(t, s, e) && valid_resident_id(&t[s..e])).then_some((s, e)),
    );
    scan(
        t,
        &PAYMENT_CARD,
        PiiKind::PaymentCard,
        &mut candidates,
        card,
    );
    scan(
        t,
        &CN_MOBILE,
        PiiKind::CnMobile,
        &mut candidates,
        |t, s, e| digit_free(t, s, e).then_some((s, e)),
    );
    scan(t, &IPV4, PiiKind::IpAddress, &mut candidates, |t, s, e| {
        let letter = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphabetic());
        let ok = dotted_free(t, s, e)
            && !letter(char_before(t, s))
            && !letter(char_at(t, e))
            && valid_ipv4(&t[s..e]);
        ok.then_some((s, e))
    });
    ipv6(t, &mut candidates);
    for (re, digits) in PHONES.iter() {
        scan(t, re, PiiKind::Phone, &mut candidates, |t, s, e| {
            let count = t[s..e].bytes().filter(u8::is_ascii_digit).count();
            let letter_before = char_before(t, s).is_some_and(|c| c.is_ascii_alphabetic());
            (digits.contains(&count) && dotted_free(t, s, e) && !letter_before).then_some((s, e))
        });
    }

    resolve(&folded, candidates)
}

/// Keeps the winning candidates and maps them back to original char offsets.
fn resolve(folded: &Folded, mut candidates: Vec<Candidate>) -> Vec<PiiMatch> {
    candidates.sort_by_key(|c| (c.kind.rank(), c.start, std::cmp::Reverse(c.end)));
    // Accepted folded ranges, start → end; non-overlapping, so the one with the greatest
    // start below a candidate's end is the only one that can overlap it.
    let mut taken = std::collections::BTreeMap::<usize, usize>::new();
    let mut matches = Vec::new();
    for c in candidates {
        let overlaps = taken
            .range(..c.end)
            .next_back()
            .is_some_and(|(_, &end)| end > c.start);
        if overlaps {
            continue;
        }
        taken.insert(c.start, c.end);
        let (start, end) = folded.original_span(c.start, c.end);
        matches.push(PiiMatch {
            kind: c.kind,
            start,
            end,
        });
    }
    matches.sort_by_key(|m| (m.start, m.end));
    // Two folded ranges can share one original char (a ligature split in two); keep the
    // first of any such pair.
    let mut last_end = 0;
    matches.retain(|m| {
        let keep = m.start >= last_end;
        if keep {
            last_end = m.end;
        }
        keep
    });
    matches
}

/// Collects the matches of `re` that `accept` takes (possibly narrowed). A refused match
/// is retried one char later, so a valid candidate overlapping a refused one is still found.
fn scan(
    text: &str,
    re: &Regex,
    kind: PiiKind,
    out: &mut Vec<Candidate>,
    mut accept: impl FnMut(&str, usize, usize) -> Option<(usize, usize)>,
) {
    let mut pos = 0;
    while pos < text.len() {
        let Some(m) = re.find_at(text, pos) else {
            break;
        };
        let next_char = m.start() + char_at(text, m.start()).map_or(1, char::len_utf8);
        match accept(text, m.start(), m.end()) {
            Some((start, end)) if start < end => {
                out.push(Candidate { kind, start, end });
                pos = end.max(next_char);
            }
            _ => pos = next_char,
        }
    }
}

fn char_before(text: &str, at: usize) -> Option<char> {
    text.get(..at)?.chars().next_back()
}

fn char_at(text: &str, at: usize) -> Option<char> {
    text.get(at..)?.chars().next()
}

fn is_digit(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_ascii_digit())
}

/// No digit right before or after `[s, e)`.
fn digit_free(text: &str, s: usize, e: usize) -> bool {
    !is_digit(char_before(text, s)) && !is_digit(char_at(text, e))
}

/// No digit, nor a dot continuing the number (`1.` before, `.5` after), next to `[s, e)`:
/// so `1.2.3.4.5` holds no IP address.
fn dotted_free(text: &str, s: usize, e: usize) -> bool {
    if !digit_free(text, s, e) {
        return false;
    }
    let dot_before = char_before(text, s) == Some('.') && is_digit(char_before(text, s - 1));
    let dot_after = char_at(text, e) == Some('.') && is_digit(char_at(text, e + 1));
    !dot_before && !dot_after
}

/// Four octets 0–255 with no leading zeros.
fn valid_ipv4(s: &str) -> bool {
    s.split('.').all(|octet| {
        !(octet.len() > 1 && octet.starts_with('0')) && octet.parse::<u16>().is_ok_and(|n| n <= 255)
    })
}

/// IPv6 candidates: maximal runs of hex digits, colons and dots, less a lone leading colon
/// (`ip:2001:db8::1`) and trailing punctuation, that parse as `Ipv6Addr`. A run must hold
/// a decimal digit, so `dead::beef` or `a::b` (code, not addresses) is not one, and must not
/// touch a letter, digit or `_`, so `std::net`'s `d::` is not one either.
fn ipv6(text: &str, out: &mut Vec<Candidate>) {
    for m in IPV6.find_iter(text) {
        let (mut s, mut e) = (m.start(), m.end());
        let token = m.as_str();
        if token.starts_with(':') && !token.starts_with("::") {
            s += 1;
        }
        let trimmed = text[s..e].trim_end_matches('.');
        e = s + trimmed.len();
        if trimmed.ends_with(':') && !trimmed.ends_with("::") {
            e -= 1;
        }
        let Some(candidate) = text.get(s..e) else {
            continue;
        };
        let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        let ok = candidate.len() <= 45
            && candidate.bytes().filter(|&b| b == b':').count() >= 2
            && candidate.bytes().any(|b| b.is_ascii_digit())
            && !word(char_before(text, s))
            && !word(char_at(text, e))
            && candidate.parse::<Ipv6Addr>().is_ok();
        if ok {
            out.push(Candidate {
                kind: PiiKind::IpAddress,
                start: s,
                end: e,
            });
        }
    }
}

/// 17 digits and a check char: area code, a real birth date from 1900 to today, sequence,
/// and an ISO 7064 MOD 11-2 check char.
fn valid_resident_id(id: &str) -> bool {
    let b = id.as_bytes();
    if b.len() != 18 || !b[..17].iter().all(u8::is_ascii_digit) {
        return false;
    }
    let num = |r: std::ops::Range<usize>| id.get(r).and_then(|s| s.parse::<u32>().ok());
    let (Some(year), Some(month), Some(day)) = (num(6..10), num(10..12), num(12..14)) else {
        return false;
    };
    let today = Utc::now().date_naive();
    let Ok(year) = i32::try_from(year) else {
        return false;
    };
    let date_ok = year >= 1900
        && year <= today.year()
        && NaiveDate::from_ymd_opt(year, month, day).is_some_and(|d| d <= today);
    date_ok && resident_id_check_char(&b[..17]) == Some(b[17].to_ascii_uppercase())
}

/// The ISO 7064 MOD 11-2 check char of a resident ID's first 17 digits (uppercase `X`).
fn resident_id_check_char(digits: &[u8]) -> Option<u8> {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    const CHECK: &[u8; 11] = b"10X98765432";
    if digits.len() != 17 {
        return None;
    }
    let sum: u32 = digits
        .iter()
        .zip(WEIGHTS)
        .map(|(d, w)| u32::from(d.wrapping_sub(b'0')) * w)
        .sum();
    CHECK.get(usize::try_from(sum % 11).ok()?).copied()
}

/// A card candidate `[s, e)`: not touching digits, 13–19 digits, Luhn-valid. A grouped
/// candidate that fails as a whole is retried without its trailing groups (so a year after
/// the number, `4111 1111 1111 1111 2025`, does not hide the card).
fn card(text: &str, s: usize, e: usize) -> Option<(usize, usize)> {
    if is_digit(char_before(text, s)) {
        return None;
    }
    let candidate = &text[s..e];
    // Ends of each prefix of whole groups, longest first.
    let mut ends: Vec<usize> = candidate
        .match_indices([' ', '-'])
        .map(|(i, _)| i)
        .chain([candidate.len()])
        .collect();
    ends.reverse();
    for (n, &end) in ends.iter().enumerate() {
        if n == 0 && is_digit(char_at(text, e)) {
            continue;
        }
        let digits: Vec<u8> = candidate[..end]
            .bytes()
            .filter(u8::is_ascii_digit)
            .map(|b| b - b'0')
            .collect();
        if (13..=19).contains(&digits.len()) && luhn(&digits) {
            return Some((s, s + end));
        }
    }
    None
}

fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The (kind, matched original substring) pairs found in `text`.
    fn found(text: &str) -> Vec<(PiiKind, String)> {
        find_pii(text)
            .into_iter()
            .map(|m| {
                (
                    m.kind,
                    text.chars().skip(m.start).take(m.end - m.start).collect(),
                )
            })
            .collect()
    }

    fn one(text: &str, kind: PiiKind, matched: &str) {
        assert_eq!(found(text), [(kind, matched.to_string())], "in {text:?}");
    }

    fn none(text: &str) {
        assert_eq!(found(text), [], "in {text:?}");
    }

    /// A valid resident ID from its first 17 digits (computed independently of the rule).
    fn resident_id(first17: &str) -> String {
        let weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
        let sum: u32 = first17
            .chars()
            .zip(weights)
            .map(|(c, w)| c.to_digit(10).expect("digit") * w)
            .sum();
        let check = ['1', '0', 'X', '9', '8', '7', '6', '5', '4', '3', '2'][(sum % 11) as usize];
        format!("{first17}{check}")
    }

    /// A Luhn-valid number from all but its last digit.
    fn luhn_complete(prefix: &str) -> String {
        (0..10)
            .map(|d| format!("{prefix}{d}"))
            .find(|n| luhn(&n.bytes().map(|b| b - b'0').collect::<Vec<_>>()))
            .expect("one check digit fits")
    }

    #[test]
    fn kinds_have_stable_names() {
        for (kind, name) in [
            (PiiKind::Email, "email"),
            (PiiKind::Phone, "phone"),
            (PiiKind::CnMobile, "cn_mobile"),
            (PiiKind::CnResidentId, "cn_resident_id"),
            (PiiKind::PaymentCard, "payment_card"),
            (PiiKind::IpAddress, "ip_address"),
        ] {
            assert_eq!(kind.as_str(), name);
            assert_eq!(serde_json::to_value(kind).expect("json"), name);
        }
    }

    #[test]
    fn emails() {
        one(
            "mail me at john.doe+tag@example.co.uk.",
            PiiKind::Email,
            "john.doe+tag@example.co.uk",
        );
        one("邮箱abc_1@qq.com谢谢", PiiKind::Email, "abc_1@qq.com");
        one(
            "ＴＥＳＴ＠ＥＸＡＭＰＬＥ．ＣＯＭ",
            PiiKind::Email,
            "ＴＥＳＴ＠ＥＸＡＭＰＬＥ．ＣＯＭ",
        );
        one(
            "x@example.xn--fiqs8s",
            PiiKind::Email,
            "x@example.xn--fiqs8s",
        );
        // A phone number as the local part is still one e-mail address.
        one("13812345678@qq.com", PiiKind::Email, "13812345678@qq.com");
        none("user@localhost, @handle, a@b, foo@.com, name at example dot com");
    }

    #[test]
    fn chinese_mobiles() {
        for text in [
            "13812345678",
            "138-1234-5678",
            "138 1234 5678",
            "+8613812345678",
            "+86 138 1234 5678",
            "+86-13812345678",
            "0086 13812345678",
            "8613812345678",
            "(+86) 19912345678",
        ] {
            one(&format!("call {text} now"), PiiKind::CnMobile, text);
        }
        one(
            "１３８１２３４５６７８",
            PiiKind::CnMobile,
            "１３８１２３４５６７８",
        );
        one("电话：13912345678。", PiiKind::CnMobile, "13912345678");
        // Adjacent digits, a wrong second digit, too short.
        none("213812345678 1381234567 12812345678 138123456789");
    }

    #[test]
    fn phones() {
        for text in [
            "+1 415 555 2671",
            "+44 20 7946 0958",
            "+49-30-1234567",
            "(555) 123-4567",
            "555-123-4567",
            "555.123.4567",
            "1-800-555-1234",
            "010-12345678",
            "0755-1234567",
            "(010) 12345678",
            "03-1234-5678",
        ] {
            one(&format!("tel {text}."), PiiKind::Phone, text);
        }
        none("+1 2 3, +12345, 555-1234, 1.2.3, 12:30, 2023-11-05, 05-11-2023");
    }

    #[test]
    fn resident_ids() {
        let id = resident_id("11010519491231002");
        assert_eq!(id, "11010519491231002X");
        one(&format!("身份证{id}号"), PiiKind::CnResidentId, &id);
        one(
            &format!("id {} ok", id.to_lowercase()),
            PiiKind::CnResidentId,
            &id.to_lowercase(),
        );
        let leap = resident_id("44030420000229123");
        one(&leap, PiiKind::CnResidentId, &leap);
        let full_width: String = leap
            .chars()
            .map(|c| match c {
                'X' => 'Ｘ',
                c => char::from_u32(c as u32 - '0' as u32 + '０' as u32).expect("digit"),
            })
            .collect();
        one(&full_width, PiiKind::CnResidentId, &full_width);

        // A wrong check char.
        let bad = format!("{}{}", &id[..17], if id.ends_with('0') { '1' } else { '0' });
        assert!(
            found(&bad).iter().all(|(k, _)| *k != PiiKind::CnResidentId),
            "{bad}"
        );
        // Not a real date: 1999-02-29, month 13, year 1899, a future year.
        for first17 in [
            "44030419990229123",
            "44030419991301123",
            "44030418990101123",
            "44030430000101123",
        ] {
            let id = resident_id(first17);
            assert!(
                found(&id).iter().all(|(k, _)| *k != PiiKind::CnResidentId),
                "{id}"
            );
        }
        // Area code starting with 9 or 0; adjacent to digits.
        for first17 in ["91010519491231002", "01010519491231002"] {
            let id = resident_id(first17);
            assert!(
                found(&id).iter().all(|(k, _)| *k != PiiKind::CnResidentId),
                "{id}"
            );
        }
        assert!(
            found(&format!("1{id}"))
                .iter()
                .all(|(k, _)| *k != PiiKind::CnResidentId)
        );
    }

    #[test]
    fn resident_ids_beat_cards() {
        // Find a valid resident ID that is also Luhn-valid with a card-like first digit.
        let id = (0..1000)
            .map(|seq| resident_id(&format!("44010619900101{seq:03}")))
            .find(|id| {
                id.bytes().all(|b| b.is_ascii_digit())
                    && luhn(&id.bytes().map(|b| b - b'0').collect::<Vec<_>>())
            })
            .expect("some sequence number is Luhn-valid too");
        one(&id, PiiKind::CnResidentId, &id);
    }

    #[test]
    fn payment_cards() {
        for text in [
            "4111111111111111",
            "4111 1111 1111 1111",
            "4111-1111-1111-1111",
            "5500 0000 0000 0004",
            "3782 822463 10005",
            "378282246310005",
            "6011111111111117",
            "4222222222222",
        ] {
            one(
                &format!("card: {text}, exp 12/29"),
                PiiKind::PaymentCard,
                text,
            );
        }
        let nineteen = luhn_complete("620000000000000000");
        one(&nineteen, PiiKind::PaymentCard, &nineteen);
        one(
            "４１１１ １１１１ １１１１ １１１１",
            PiiKind::PaymentCard,
            "４１１１ １１１１ １１１１ １１１１",
        );
        one(
            "4111 1111 1111 1111 2025",
            PiiKind::PaymentCard,
            "4111 1111 1111 1111",
        );
        // Luhn-invalid, adjacent digits, first digit 1/7–9, double separators, too long.
        none("4111111111111112 4111 1111 1111 1112 14111111111111111 7111111111111111");
        none("4111  1111  1111  1111 41111111111111111111");
    }

    #[test]
    fn ip_addresses() {
        for text in ["192.168.1.1", "8.8.8.8", "0.0.0.0", "255.255.255.255"] {
            one(&format!("host {text}."), PiiKind::IpAddress, text);
        }
        for text in [
            "2001:db8::1",
            "::1",
            "fe80::1ff:fe23:4567:890a",
            "2001:0db8:0000:0000:0000:ff00:0042:8329",
            "::ffff:192.168.1.1",
        ] {
            one(&format!("addr {text}."), PiiKind::IpAddress, text);
        }
        one("ip:2001:db8::1", PiiKind::IpAddress, "2001:db8::1");
        one("[2001:DB8::1]:8080", PiiKind::IpAddress, "2001:DB8::1");
        none("version 1.2.3.4.5, 256.1.1.1, 1.2.3, 01.2.3.4, 1.2.3.999, v1.2.3.4.");
        none("std::net, dead::beef, 12:30:45, 00:1a:2b:3c:4d:5e, ::, a::b");
    }

    #[test]
    fn ordinary_numbers_are_not_pii() {
        none("Price $1,299.99 or ¥8888, on 2023-11-05 (2023/11/05), in 1999 and 2024.");
        none("order 20231105, ticket #123456, version 10.0.19045, 3.14159, 50% off, 12:30 pm");
        none("It costs 1234567 yuan, 12345678901234 is a plain number.");
    }

    #[test]
    fn offsets_count_chars_after_emoji_and_cjk() {
        let text = "😀👍🏽中文 13812345678 and a@b.io";
        let m = find_pii(text);
        assert_eq!(
            m,
            [
                PiiMatch {
                    kind: PiiKind::CnMobile,
                    start: 6,
                    end: 17
                },
                PiiMatch {
                    kind: PiiKind::Email,
                    start: 22,
                    end: 28
                },
            ]
        );
    }

    #[test]
    fn several_kinds_sorted_and_disjoint() {
        let id = resident_id("11010519491231002");
        let text =
            format!("{id} / 4111111111111111 / 13812345678 / 10.0.0.1 / a@b.cn / +1 415 555 2671");
        let kinds: Vec<PiiKind> = find_pii(&text).into_iter().map(|m| m.kind).collect();
        assert_eq!(
            kinds,
            [
                PiiKind::CnResidentId,
                PiiKind::PaymentCard,
                PiiKind::CnMobile,
                PiiKind::IpAddress,
                PiiKind::Email,
                PiiKind::Phone,
            ]
        );
    }

    #[test]
    fn weird_strings_never_panic() {
        let pieces = [
            "\u{0}", "\u{200B}", "\u{200E}", "\u{202E}", "\u{301}", "\u{FF9E}", "ｶ", "１", "1",
            "3", "8", ".", ":", "@", "+", "-", " ", "x", "a", "😀", "中", "\u{FDFA}", "ﬁ", "İ",
            "\u{1100}", "\u{1161}", "\u{FEFF}", "\t", "\n", "(", ")",
        ];
        let mut state = 0x2545_f491_u32;
        for len in 0..400 {
            let mut s = String::new();
            for _ in 0..(len % 60) {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                s.push_str(pieces[state as usize % pieces.len()]);
            }
            let chars = s.chars().count();
            let mut last_end = 0;
            for m in find_pii(&s) {
                assert!(m.start < m.end && m.end <= chars, "{m:?} in {s:?}");
                assert!(m.start >= last_end, "overlap in {s:?}");
                last_end = m.end;
            }
        }
    }
}
