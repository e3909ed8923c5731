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
