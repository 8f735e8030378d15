//! The one timestamp a reproducible image carries: `SOURCE_DATE_EPOCH`.

use std::fmt;

/// Seconds since 1970-01-01T00:00:00Z used for every mtime in a layer and for
/// the image's `created` field.
///
/// Values are clamped to what a ustar header can hold (11 octal digits,
/// 8589934591, in the year 2242), so no entry needs a PAX `mtime` record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceDateEpoch(u64);

/// `SOURCE_DATE_EPOCH` is not a number.
#[derive(Debug, thiserror::Error)]
#[error(
    "SOURCE_DATE_EPOCH=`{0}` is not a whole number of seconds since 1970: set it to e.g. `git log -1 --format=%ct` or unset it"
)]
pub struct ParseEpochError(String);

impl SourceDateEpoch {
    /// The environment variable the reproducible-builds convention reads.
    pub const ENV: &'static str = "SOURCE_DATE_EPOCH";

    /// Used when `SOURCE_DATE_EPOCH` is unset: 1980-01-01T00:00:00Z, the
    /// earliest time zip archives (Python wheels, jars) can represent, so
    /// tools that repack files from the image do not choke on it.
    pub const DEFAULT: Self = Self(315_532_800);

    /// The largest value a ustar mtime field holds.
    pub const MAX: u64 = 0o777_7777_7777;

    /// An epoch of `seconds`, clamped to [`MAX`](Self::MAX).
    #[must_use]
    pub fn new(seconds: u64) -> Self {
        Self(seconds.min(Self::MAX))
    }

    /// Parse the value of `SOURCE_DATE_EPOCH`; empty means
    /// [`DEFAULT`](Self::DEFAULT), negative values clamp to 0.
    ///
    /// # Errors
    /// The value is not an integer.
    pub fn parse(value: &str) -> Result<Self, ParseEpochError> {
        let v = value.trim();
        if v.is_empty() {
            return Ok(Self::DEFAULT);
        }
        let bad = || ParseEpochError(value.chars().take(40).collect());
        if let Some(neg) = v.strip_prefix('-') {
            return if !neg.is_empty() && neg.bytes().all(|b| b.is_ascii_digit()) {
                Ok(Self(0))
            } else {
                Err(bad())
            };
        }
        if !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        // All digits: only overflow can fail, and that clamps.
        Ok(Self::new(v.parse::<u64>().unwrap_or(u64::MAX)))
    }

    /// Read `SOURCE_DATE_EPOCH` from the environment (unset: the default).
    ///
    /// # Errors
    /// The variable is set but not an integer.
    pub fn from_env() -> Result<Self, ParseEpochError> {
        match std::env::var(Self::ENV) {
            Ok(v) => Self::parse(&v),
            Err(_) => Ok(Self::DEFAULT),
        }
    }

    /// Seconds since the Unix epoch.
    #[must_use]
    pub fn seconds(self) -> u64 {
        self.0
    }

    /// RFC 3339 in UTC, e.g. `1980-01-01T00:00:00Z`.
    #[must_use]
    pub fn rfc3339(self) -> String {
        self.to_string()
    }
}

impl Default for SourceDateEpoch {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl fmt::Display for SourceDateEpoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.0 / 86_400;
        let rem = self.0 % 86_400;
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
            rem / 3600,
            rem / 60 % 60,
            rem % 60
        )
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day), after
/// Howard Hinnant's well-known `civil_from_days` algorithm.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(SourceDateEpoch::new(0).rfc3339(), "1970-01-01T00:00:00Z");
        assert_eq!(SourceDateEpoch::DEFAULT.rfc3339(), "1980-01-01T00:00:00Z");
        assert_eq!(
            SourceDateEpoch::new(1_709_251_199).rfc3339(),
            "2024-02-29T23:59:59Z"
        );
        assert_eq!(
            SourceDateEpoch::new(951_782_400).rfc3339(),
            "2000-02-29T00:00:00Z"
        );
    }

    #[test]
    fn parses_and_clamps() {
        assert_eq!(
            SourceDateEpoch::parse("").unwrap(),
            SourceDateEpoch::DEFAULT
        );
        assert_eq!(SourceDateEpoch::parse(" 42 ").unwrap().seconds(), 42);
        assert_eq!(SourceDateEpoch::parse("-5").unwrap().seconds(), 0);
        assert_eq!(
            SourceDateEpoch::parse("99999999999999999999999")
                .unwrap()
                .seconds(),
            SourceDateEpoch::MAX
        );
        for bad in ["abc", "1.5", "-", "12a"] {
            let e = SourceDateEpoch::parse(bad).unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
    }
}
