//! Offset expressions: `4096`, `0x1000`, `4K`, `1M`, `0x200+512*3`, `2*(1M-4K)`.

/// Parse an offset expression: integers (decimal, `0x` hex) with optional K/M/G/T suffixes
/// (powers of 1024), `+ - * /` with the usual precedence, and parentheses. Overflow is an error.
pub fn parse(s: &str) -> Result<u64, String> {
    let mut p = Parser { s: s.as_bytes(), i: 0 };
    let v = p.expr()?;
    p.ws();
    if p.i != p.s.len() {
        return Err(format!("unexpected '{}' in offset '{}'", &s[p.i..], s));
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.i).copied()
    }

    fn expr(&mut self) -> Result<u64, String> {
        let mut v = self.term()?;
        while let Some(op @ (b'+' | b'-')) = self.peek() {
            self.i += 1;
            let r = self.term()?;
            v = if op == b'+' { v.checked_add(r) } else { v.checked_sub(r) }
                .ok_or_else(|| "offset expression overflows".to_string())?;
        }
        Ok(v)
    }

    fn term(&mut self) -> Result<u64, String> {
        let mut v = self.atom()?;
        while let Some(op @ (b'*' | b'/')) = self.peek() {
            self.i += 1;
            let r = self.atom()?;
            v = if op == b'*' {
                v.checked_mul(r).ok_or_else(|| "offset expression overflows".to_string())?
            } else {
                v.checked_div(r).ok_or_else(|| "division by zero in offset expression".to_string())?
            };
        }
        Ok(v)
    }

    fn atom(&mut self) -> Result<u64, String> {
        match self.peek() {
            Some(b'(') => {
                self.i += 1;
                let v = self.expr()?;
                if self.peek() != Some(b')') {
                    return Err("missing ')' in offset expression".into());
                }
                self.i += 1;
                Ok(v)
            }
            Some(c) if c.is_ascii_digit() => self.number(),
            Some(c) => Err(format!("unexpected '{}' in offset expression", c as char)),
            None => Err("empty offset expression".into()),
        }
    }

    fn number(&mut self) -> Result<u64, String> {
        let rest = &self.s[self.i..];
        let (radix, skip) = if rest.len() > 2 && rest[0] == b'0' && (rest[1] | 0x20) == b'x' { (16, 2) } else { (10, 0) };
        let start = self.i + skip;
        let mut end = start;
        while end < self.s.len() && (self.s[end] as char).is_digit(radix) {
            end += 1;
        }
        if end == start {
            return Err("missing digits in offset expression".into());
        }
        let text = std::str::from_utf8(&self.s[start..end]).unwrap();
        let mut v = u64::from_str_radix(text, radix).map_err(|_| format!("number '{}' is too large", text))?;
        self.i = end;
        if let Some(&c) = self.s.get(self.i) {
            let shift = match c.to_ascii_uppercase() {
                b'K' => 10,
                b'M' => 20,
                b'G' => 30,
                b'T' => 40,
                b'S' => 9, // sectors
                _ => 0,
            };
            if shift > 0 {
                self.i += 1;
                // accept "KiB"/"MB" spellings
                if self.s.get(self.i).map(|c| c.to_ascii_uppercase()) == Some(b'I') {
                    self.i += 1;
                }
                if self.s.get(self.i).map(|c| c.to_ascii_uppercase()) == Some(b'B') {
                    self.i += 1;
                }
                v = v.checked_mul(1 << shift).ok_or_else(|| "offset expression overflows".to_string())?;
            }
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn forms() {
        assert_eq!(parse("4096"), Ok(4096));
        assert_eq!(parse("0x1000"), Ok(4096));
        assert_eq!(parse("4K"), Ok(4096));
        assert_eq!(parse("1M"), Ok(1 << 20));
        assert_eq!(parse("0x200+512*3"), Ok(0x200 + 1536));
        assert_eq!(parse("2*(1M-4K)"), Ok(2 * ((1 << 20) - 4096)));
        assert_eq!(parse(" 1G / 2 "), Ok(1 << 29));
        assert_eq!(parse("8s"), Ok(4096));
        assert!(parse("").is_err());
        assert!(parse("0x").is_err());
        assert!(parse("1-2").is_err());
        assert!(parse("99999999999999999999").is_err());
        assert!(parse("16E").is_err());
        assert!(parse("1/0").is_err());
        assert!(parse("(1").is_err());
    }
}
