//! Quoted-printable (RFC 2045 6.7) encoding of a text body with CRLF line endings: byte for
//! byte what the `quoted_printable` crate's `encode` produces (the encoder lettre uses; the
//! tests compare the two on the benchmark's newsletter and on thousands of random inputs),
//! in a fraction of its time. It was the largest item in the worker's profile
//! (bench/results/profile.txt): the crate pushes every output byte as a `char` into a
//! `String`; here runs of literal bytes are copied as slices.

/// Longest encoded line, without its CRLF.
const LIMIT: usize = 76;
const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Bytes that stand for themselves (inside a line): tab and printable ASCII but `=`.
const LITERAL: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = (b == 0x09 || (b >= 0x20 && b <= 0x7e)) && b != 0x3d;
        b += 1;
    }
    t
};

fn literal(b: u8) -> bool {
    LITERAL[usize::from(b)]
}

struct Encoder {
    out: Vec<u8>,
    /// Bytes on the current output line.
    on_line: usize,
    /// Where the last token appended starts: a soft break that no longer fits after it goes
    /// before it.
    backup: usize,
}

impl Encoder {
    fn append(&mut self, token: &[u8]) {
        if self.on_line + token.len() > LIMIT {
            if self.on_line == LIMIT {
                self.on_line = self.out.len() - self.backup;
                let at = self.backup;
                self.out.splice(at..at, *b"=\r\n");
            } else {
                self.out.extend_from_slice(b"=\r\n");
                self.on_line = 0;
            }
        }
        self.out.extend_from_slice(token);
        self.on_line += token.len();
        self.backup = self.out.len() - token.len();
    }

    fn encode_byte(&mut self, b: u8) {
        match b {
            b'=' => self.append(b"=3D"),
            b'\t' | b' '..=b'~' => self.append(&[b]),
            _ => self.append(&[b'=', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0x0f)]]),
        }
    }

    /// A space or tab may not end an encoded line: re-append it encoded.
    fn encode_trailing_space_tab(&mut self) {
        let encoded: &[u8] = match self.out.last() {
            Some(b' ') => b"=20",
            Some(b'\t') => b"=09",
            _ => return,
        };
        self.on_line = self.on_line.saturating_sub(1);
        self.out.pop();
        self.append(encoded);
    }
}

/// Encodes `input` as text: CRLF pairs are line breaks, anything else is encoded as needed,
/// and lines are wrapped at 76 characters with soft breaks.
pub fn encode(input: &[u8]) -> Vec<u8> {
    let mut e = Encoder {
        out: Vec::with_capacity(input.len() + input.len() / 8),
        on_line: 0,
        backup: 0,
    };
    let mut was_cr = false;
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        if was_cr {
            if b == b'\n' {
                e.encode_trailing_space_tab();
                e.out.extend_from_slice(b"\r\n");
                e.on_line = 0;
                was_cr = false;
                i += 1;
                continue;
            }
            e.append(b"=0D");
        }
        was_cr = b == b'\r';
        if was_cr {
            i += 1;
            continue;
        }
        if LIMIT - e.on_line >= 3 && literal(b) {
            let max_run = LIMIT - e.on_line - 2;
            let window = &input[i..input.len().min(i + max_run)];
            let run = window
                .iter()
                .position(|&c| !literal(c))
                .unwrap_or(window.len());
            e.out.extend_from_slice(&input[i..i + run]);
            e.on_line += run;
            e.backup = e.out.len();
            i += run;
            continue;
        }
        e.encode_byte(b);
        i += 1;
    }
    if was_cr {
        e.append(b"=0D");
    } else {
        e.encode_trailing_space_tab();
    }
    e.out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same_as_the_crate(input: &[u8]) {
        assert_eq!(
            String::from_utf8_lossy(&encode(input)),
            String::from_utf8_lossy(&quoted_printable::encode(input)),
            "input: {:?}",
            String::from_utf8_lossy(input)
        );
    }

    #[test]
    fn matches_the_crate_on_edge_cases() {
        for input in [
            "",
            "a",
            "=",
            " ",
            "\t",
            "a \r\nb\t\r\n",
            "\r",
            "a\rb",
            "\r\r\n",
            "trailing space ",
            "Adopt Don't Shop · Helping rescues find homes\r\n",
        ] {
            same_as_the_crate(input.as_bytes());
        }
        for n in 70..=160 {
            same_as_the_crate("x".repeat(n).as_bytes());
            same_as_the_crate(format!("{}=", "x".repeat(n)).as_bytes());
            same_as_the_crate(format!("{} \r\n", "x".repeat(n)).as_bytes());
            same_as_the_crate(format!("{}é·", "x".repeat(n)).as_bytes());
        }
    }

    #[test]
    fn matches_the_crate_on_random_text() {
        // A small deterministic generator: no seed to manage, the same inputs every run.
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet: [&[u8]; 12] = [
            b"a",
            b"Z",
            b" ",
            b"\t",
            b"=",
            b"\r",
            b"\n",
            b"\r\n",
            "é".as_bytes(),
            "·".as_bytes(),
            b"~",
            b"\x00",
        ];
        for _ in 0..3000 {
            let len = (next() % 400) as usize;
            let mut input = Vec::with_capacity(len);
            for _ in 0..len {
                // Mostly letters, so long literal runs (the fast path) are exercised too.
                let pick = next() % 40;
                let piece = if pick < 28 {
                    b"x" as &[u8]
                } else {
                    alphabet[(pick % 12) as usize]
                };
                input.extend_from_slice(piece);
            }
            same_as_the_crate(&input);
        }
    }
}
