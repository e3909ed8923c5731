//! One checked reader for every number a profile holds: ParaView's `delay`, `process_wait` and
//! `timeout`, and pvlaunch's ports, counts and timeouts. A value is read once, by the rule of its
//! attribute, and the typed result is what the rest of the program uses.

/// What a number attribute accepts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rule {
    /// What the value is, for messages (`delay (seconds)`).
    pub what: &'static str,
    pub min: f64,
    pub max: f64,
    /// Only whole numbers.
    pub whole: bool,
    /// One value outside `min..=max` with a meaning of its own, and that meaning.
    pub special: Option<(f64, &'static str)>,
}

/// `<Command delay>`: seconds before connecting; -1 waits for the command to end.
pub const DELAY: Rule = Rule {
    what: "delay (seconds)",
    min: 0.0,
    max: 3600.0,
    whole: false,
    special: Some((-1.0, "waits for the command to end")),
};

/// `<Command process_wait>` (older files: `timeout`): seconds to wait for the process to start.
pub const PROCESS_WAIT: Rule = Rule {
    what: "process_wait (seconds)",
    min: 0.0,
    max: 3600.0,
    whole: false,
    special: None,
};

/// `<Server timeout>`: seconds ParaView waits for the connection; -1 waits forever.
pub const SERVER_TIMEOUT: Rule = Rule {
    what: "timeout (seconds)",
    min: 0.0,
    max: i32::MAX as f64,
    whole: true,
    special: Some((-1.0, "waits forever")),
};

/// A number that its rule refuses: the message and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub message: String,
    pub hint: String,
}

impl Rule {
    /// What the rule allows, in words.
    pub fn allowed(&self) -> String {
        let kind = if self.whole {
            "a whole number"
        } else {
            "a number"
        };
        let mut s = format!("{kind} from {} to {}", self.min, self.max);
        if let Some((v, meaning)) = self.special {
            s.push_str(&format!(", or {v} ({meaning})"));
        }
        s
    }

    /// Read `text` (surrounding whitespace allowed, as Qt's `toDouble`/`toInt` do).
    pub fn parse(&self, text: &str) -> Result<f64, Refused> {
        let refuse = |why: &str| Refused {
            message: format!("{} `{}` {why}", self.what, text.trim()),
            hint: format!("allowed: {}", self.allowed()),
        };
        let t = text.trim();
        let v = if self.whole {
            t.parse::<i64>()
                .map(|v| v as f64)
                .map_err(|_| refuse("is not a whole number"))?
        } else {
            t.parse::<f64>().map_err(|_| refuse("is not a number"))?
        };
        if !v.is_finite() {
            return Err(refuse("is not a finite number"));
        }
        if self.special.is_some_and(|(s, _)| s == v) || (self.min..=self.max).contains(&v) {
            Ok(v)
        } else {
            Err(refuse("is out of range"))
        }
    }
}

impl Rule {
    /// Read `text` as ParaView reads `delay` and `process_wait` ([`stream_prefix`]): `" 5 "`,
    /// `+3`, `1e1` and `2.5` are numbers; of `0x10` ParaView reads the leading `0`, and so does
    /// pvlaunch, with a note saying so (the second value). No number at the start, `nan`,
    /// `inf`, or a value outside the rule is refused.
    pub fn parse_stream(&self, text: &str) -> Result<(f64, Option<String>), Refused> {
        let shown = text.trim();
        let refuse = |why: &str| Refused {
            message: format!("{} `{shown}` {why}", self.what),
            hint: format!("allowed: {}", self.allowed()),
        };
        let (v, read) = stream_prefix(text).ok_or_else(|| {
            if shown.parse::<f64>().is_ok() {
                refuse("is not a finite number")
            } else {
                refuse("is not a number")
            }
        })?;
        if self.whole && v.fract() != 0.0 {
            return Err(refuse("is not a whole number"));
        }
        if !(self.special.is_some_and(|(s, _)| s == v) || (self.min..=self.max).contains(&v)) {
            return Err(refuse("is out of range"));
        }
        let note = (read.len() != shown.len()).then(|| {
            format!(
                "{} `{shown}`: ParaView reads only the leading `{read}` (= {v}) and ignores the rest; so does pvlaunch",
                self.what
            )
        });
        Ok((v, note))
    }
}

/// A whole number in `min..=max` (pvlaunch's ports, counts and timeouts).
pub fn whole(text: &str, what: &str, min: u64, max: u64) -> Result<u64, Refused> {
    let hint = format!("allowed: {min} to {max}");
    match text.trim().parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        Ok(n) => Err(Refused {
            message: format!("{what} {n} is out of range"),
            hint,
        }),
        Err(_) => Err(Refused {
            message: format!("{what} `{text}` is not a whole number"),
            hint,
        }),
    }
}

/// A number read the way `std::istream >> double` reads it (ParaView's `GetScalarAttribute`,
/// for `delay`, `process_wait` and `timeout`): leading whitespace skipped, then the longest
/// decimal number (sign, digits, point, exponent); whatever follows is ignored. `None` when no
/// number starts the text (ParaView then keeps its default), or when an exponent has no digits.
/// Returns the value and the text that was read.
pub fn stream_prefix(text: &str) -> Option<(f64, &str)> {
    let t = text.trim_start();
    let b = t.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    let digits_from = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let mut digits = i - digits_from;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let frac = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        digits += i - frac;
    }
    if digits == 0 {
        return None;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        // The stream takes the exponent mark and its sign; without digits the read fails.
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        let exp = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == exp {
            return None;
        }
    }
    let read = &t[..i];
    read.parse::<f64>().ok().map(|v| (v, read))
}

/// Qt's `QString::toLongLong()` in base 10: surrounding whitespace and a sign allowed, digits
/// only, no overflow.
pub fn qt_to_long_long(text: &str) -> Option<i64> {
    let t = text.trim();
    let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.strip_prefix('+').unwrap_or(t).parse::<i64>().ok()
}

/// Qt's `QString::toInt()`: [`qt_to_long_long`] within the `int` range.
pub fn qt_to_int(text: &str) -> Option<i32> {
    qt_to_long_long(text).and_then(|v| i32::try_from(v).ok())
}

/// A text stored in an `int` property through `QVariant` (Qt 5): read as a `long long`, then
/// cut to 32 bits (`99999999999` becomes 1215752191). `None`: the property keeps its value.
pub fn qt_variant_to_int(text: &str) -> Option<i32> {
    qt_to_long_long(text).map(|v| v as i32)
}

/// Qt's `QString::toDouble()`: surrounding whitespace allowed; only finite numbers here.
pub fn qt_to_double(text: &str) -> Option<f64> {
    let t = text.trim();
    let ok = !t.is_empty()
        && t.bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'));
    if !ok {
        return None;
    }
    t.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// Qt 5's `QVariant(double).toString()`: the shortest digits that read back the same, in
/// decimal form unless the exponent form is clearly shorter (`1e+06`, `1.2e+07`, but
/// `1200000`, `123456.79`); measured with ParaView 5.11's Qt.
pub fn qt_double_string(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    // Rust's `{:e}` gives the shortest round-trip digits: `-1.2e7`.
    let sci = format!("{:e}", v.abs());
    let (mantissa, exp) = sci.split_once('e').expect("exponent form");
    let exp: i32 = exp.parse().expect("exponent");
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let len = digits.len() as i32;
    let decpt = exp + 1;
    let sign = if v < 0.0 { "-" } else { "" };
    if decpt - 1 < -4 || decpt > len + 5 {
        let (first, rest) = digits.split_at(1);
        let dot = if rest.is_empty() { "" } else { "." };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{first}{dot}{rest}e{esign}{:02}", exp.abs())
    } else {
        format!("{sign}{}", v.abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_is_a_finite_number_of_seconds_or_minus_one() {
        for ok in ["0", " 2 ", "2.5", "3600", "-1", "-1.0", "1e3"] {
            assert!(DELAY.parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "nan", "NaN", "inf", "-inf", "infinity", "-1.5", "-2", "1e20", "3601", "", "x",
        ] {
            let e = DELAY.parse(bad).unwrap_err();
            assert!(e.hint.contains("0 to 3600"), "{bad}: {e:?}");
        }
        assert!(PROCESS_WAIT.parse("-1").is_err());
    }

    #[test]
    fn stream_reads_the_longest_number_at_the_start() {
        assert_eq!(stream_prefix(" 5 "), Some((5.0, "5")));
        assert_eq!(stream_prefix("+3"), Some((3.0, "+3")));
        assert_eq!(stream_prefix("0x10"), Some((0.0, "0")));
        assert_eq!(stream_prefix("1e1"), Some((10.0, "1e1")));
        assert_eq!(stream_prefix("2.5s"), Some((2.5, "2.5")));
        assert_eq!(stream_prefix(".5"), Some((0.5, ".5")));
        for none in ["", " ", "x", "nan", "inf", "-", ".", "1e", "1e+"] {
            assert_eq!(stream_prefix(none), None, "{none}");
        }
    }

    #[test]
    fn delay_forms_paraview_accepts() {
        assert_eq!(DELAY.parse_stream(" 5 "), Ok((5.0, None)));
        assert_eq!(DELAY.parse_stream("+3"), Ok((3.0, None)));
        assert_eq!(DELAY.parse_stream("1e1"), Ok((10.0, None)));
        let (v, note) = DELAY.parse_stream("0x10").unwrap();
        assert_eq!(v, 0.0);
        assert!(note.unwrap().contains("leading `0`"));
        for bad in ["nan", "inf", "-inf", "x", "", "1e20", "-2"] {
            assert!(DELAY.parse_stream(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn qt_conversions() {
        assert_eq!(qt_to_int(" +4 "), Some(4));
        assert_eq!(qt_to_int("99999999999"), None);
        assert_eq!(qt_variant_to_int("99999999999"), Some(1_215_752_191));
        assert_eq!(qt_variant_to_int("10.5"), None);
        assert_eq!(qt_to_double(" 1e3 "), Some(1000.0));
        assert_eq!(qt_to_double("abc"), None);
        assert_eq!(qt_to_double("inf"), None);
        for (v, s) in [
            (100000.0, "100000"),
            (1e6, "1e+06"),
            (1.2e6, "1200000"),
            (1.2e7, "1.2e+07"),
            (12_300_000.0, "12300000"),
            (1e10, "1e+10"),
            (99_999_999_999.0, "99999999999"),
            (123_456.79, "123456.79"),
            (-1e6, "-1e+06"),
            (0.01, "0.01"),
            (2.0, "2"),
            (100_000_000.5, "100000000.5"),
        ] {
            assert_eq!(qt_double_string(v), s, "{v}");
        }
    }

    #[test]
    fn whole_numbers() {
        assert_eq!(whole("22", "port", 1, 65535), Ok(22));
        assert!(whole("0", "port", 1, 65535).is_err());
        assert!(whole("99999999999999999999999", "port", 1, 65535).is_err());
        assert!(whole("1.5", "port", 1, 65535).is_err());
        assert_eq!(SERVER_TIMEOUT.parse("-1"), Ok(-1.0));
        assert!(SERVER_TIMEOUT.parse("1.5").is_err());
        assert!(SERVER_TIMEOUT.parse("99999999999").is_err());
    }
}
