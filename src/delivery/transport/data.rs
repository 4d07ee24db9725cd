//! The DATA phase's content in one pass: lettre's `message()` dot-stuffs byte by byte into
//! a second buffer (a quarter of the worker's CPU on 20 KB emails); here every `.` that
//! starts a line (after CRLF, or at the very start) is doubled by copying the runs between
//! `memchr`-found `\r\n.` sequences, and the terminating `\r\n.\r\n` appended. The bytes on
//! the wire are the same as lettre's.

use std::fmt;

/// A message ready to follow a `354` reply, sent with lettre's `command()` (which writes it
/// whole and reads the final reply as for any command). The stuffing is done as lettre
/// formats it into its write buffer, so the message is copied once.
pub(super) struct DataContent<'a>(&'a str);

impl<'a> DataContent<'a> {
    /// `None` for a message that is not UTF-8 (then lettre's own path sends it).
    pub(super) fn new(message: &'a [u8]) -> Option<DataContent<'a>> {
        std::str::from_utf8(message).ok().map(DataContent)
    }
}

impl fmt::Display for DataContent<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0;
        if text.starts_with('.') {
            f.write_str(".")?;
        }
        let mut from = 0;
        for at in memchr::memmem::find_iter(text.as_bytes(), b"\r\n.") {
            // Up to and including the dot's CRLF, then the extra dot; the dot itself starts
            // the next run.
            f.write_str(&text[from..at + 2])?;
            f.write_str(".")?;
            from = at + 2;
        }
        f.write_str(&text[from..])?;
        f.write_str("\r\n.\r\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// lettre 0.11's `ClientCodec::encode` and `message_iter`'s terminator, as the oracle.
    fn lettre_data(frame: &[u8]) -> Vec<u8> {
        #[derive(Clone, Copy)]
        enum S {
            Middle,
            Cr,
            Start,
        }
        let mut status = S::Start;
        let mut buf = Vec::new();
        for &b in frame {
            buf.push(b);
            match (b, status) {
                (b'\r', _) => status = S::Cr,
                (b'\n', S::Cr) => status = S::Start,
                (_, S::Cr) => status = S::Middle,
                (b'.', S::Start) => {
                    status = S::Middle;
                    buf.push(b'.');
                }
                (_, S::Start) => status = S::Middle,
                _ => {}
            }
        }
        buf.extend_from_slice(b"\r\n.\r\n");
        buf
    }

    #[test]
    fn dots_that_start_a_line_are_doubled() {
        let d = DataContent::new(b".a\r\n.b\r\n..c\r\nd.\r\n\r\n.\r\n").unwrap();
        assert_eq!(
            d.to_string(),
            "..a\r\n..b\r\n...c\r\nd.\r\n\r\n..\r\n\r\n.\r\n"
        );
        assert!(DataContent::new(b"\xff\r\n").is_none());
    }

    proptest! {
        #[test]
        fn the_same_bytes_as_lettre(s in "[.\r\na-c\u{e9}]{0,64}") {
            let d = DataContent::new(s.as_bytes()).unwrap();
            prop_assert_eq!(d.to_string().into_bytes(), lettre_data(s.as_bytes()));
        }
    }
}
