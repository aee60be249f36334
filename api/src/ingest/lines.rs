//! Splitting a byte stream into lines with bounded memory: one line at a time, each at most
//! `max_line_bytes` (a longer one is reported, its bytes skipped, not buffered). Lines end at
//! `\n` (a trailing `\r` is dropped); a last line without one counts; blank lines are skipped
//! but keep their number.

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt, stream::BoxStream};

/// One line, numbered from 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Text(i32, String),
    /// Over the length bound, or not UTF-8.
    Bad(i32, BadLine),
}

/// Why a line could not be read at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadLine {
    TooLong,
    NotUtf8,
}

impl BadLine {
    pub fn code(self) -> &'static str {
        match self {
            BadLine::TooLong => "line_too_long",
            BadLine::NotUtf8 => "invalid_utf8",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            BadLine::TooLong => "the line is longer than GATEHOUSE_MAX_LINE_BYTES allows",
            BadLine::NotUtf8 => "the line is not valid UTF-8",
        }
    }
}

struct Splitter<S> {
    input: S,
    buf: BytesMut,
    line_no: i32,
    /// Skipping the rest of an over-long line.
    skipping: bool,
    done: bool,
    max: usize,
}

fn finish(raw: &[u8], line_no: i32) -> Option<Line> {
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    if raw.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    Some(match std::str::from_utf8(raw) {
        Ok(text) => Line::Text(line_no, text.to_string()),
        Err(_) => Line::Bad(line_no, BadLine::NotUtf8),
    })
}

/// The lines of `input`; errors of the stream pass through as they come.
pub fn split<S, E>(input: S, max_line_bytes: usize) -> BoxStream<'static, Result<Line, E>>
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
    E: Send + 'static,
{
    let state = Splitter {
        input,
        buf: BytesMut::new(),
        line_no: 0,
        skipping: false,
        done: false,
        max: max_line_bytes,
    };
    futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(pos) = st.buf.iter().position(|b| *b == b'\n') {
                let raw = st.buf.split_to(pos + 1);
                st.line_no += 1;
                if st.skipping {
                    st.skipping = false;
                    continue;
                }
                if pos > st.max {
                    return Some((Ok(Line::Bad(st.line_no, BadLine::TooLong)), st));
                }
                if let Some(line) = finish(&raw[..pos], st.line_no) {
                    return Some((Ok(line), st));
                }
                continue;
            }
            if !st.skipping && st.buf.len() > st.max {
                // Report the over-long line once, then drop its bytes as they arrive.
                st.skipping = true;
                let line_no = st.line_no + 1;
                st.buf.clear();
                return Some((Ok(Line::Bad(line_no, BadLine::TooLong)), st));
            }
            if st.skipping {
                st.buf.clear();
            }
            if st.done {
                if st.buf.is_empty() {
                    return None;
                }
                let raw = st.buf.split();
                st.line_no += 1;
                if st.skipping {
                    return None;
                }
                return finish(&raw, st.line_no).map(|line| (Ok(line), st));
            }
            match st.input.next().await {
                Some(Ok(mut chunk)) => {
                    while chunk.has_remaining() {
                        let n = chunk.len();
                        st.buf.extend_from_slice(&chunk[..n]);
                        chunk.advance(n);
                    }
                }
                Some(Err(e)) => return Some((Err(e), st)),
                None => st.done = true,
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(chunks: &[&[u8]], max: usize) -> Vec<Line> {
        let input = futures_util::stream::iter(
            chunks
                .iter()
                .map(|c| Ok::<_, std::convert::Infallible>(Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        );
        split(input, max)
            .map(|l| l.expect("no errors"))
            .collect()
            .await
    }

    #[tokio::test]
    async fn lines_cross_chunks_and_keep_their_numbers() {
        let got = lines(&[b"ab", b"c\n\nde\r\n", b"f"], 100).await;
        assert_eq!(
            got,
            vec![
                Line::Text(1, "abc".into()),
                Line::Text(3, "de".into()),
                Line::Text(4, "f".into())
            ]
        );
    }

    #[tokio::test]
    async fn overlong_and_broken_lines_are_reported_not_buffered() {
        let long = vec![b'x'; 50];
        let got = lines(
            &[
                b"ok\n",
                &long,
                &long,
                b"\n",
                b"\xff\xfe\n",
                b"0123456789abc\nend",
            ],
            10,
        )
        .await;
        assert_eq!(
            got,
            vec![
                Line::Text(1, "ok".into()),
                Line::Bad(2, BadLine::TooLong),
                Line::Bad(3, BadLine::NotUtf8),
                Line::Bad(4, BadLine::TooLong),
                Line::Text(5, "end".into()),
            ]
        );
    }
}
