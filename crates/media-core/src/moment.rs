//! Points in time as operators write them on a command line (`--before`, `--older-than`,
//! `--unaccessed-since`): every tool accepts the same three forms, parsed here once.
//!
//! * an RFC 3339 date or time: `2026-01-31` (midnight UTC), `2026-01-31T12:00:00Z`,
//!   `2026-01-31T12:00:00.250+02:00`;
//! * a Unix time in milliseconds, as matrix-media-repo's `before_ts` and Synapse's admin
//!   API take it: `1769817600000`;
//! * an age, counted back from now: `90s`, `15m`, `12h`, `30d`, `2w`.
//!
//! ```
//! use media_core::moment::Moment;
//!
//! let now = Moment::parse("2026-01-31T00:00:00Z", 0)?.unix_ms();
//! assert_eq!(Moment::parse("2026-01-31", now)?.unix_ms(), now);
//! assert_eq!(Moment::parse("1d", now)?.to_string(), "2026-01-30T00:00:00Z");
//! assert_eq!(Moment::parse("1769817600000", now)?.unix_ms(), now);
//! # Ok::<(), media_core::moment::MomentError>(())
//! ```

use std::fmt;
use std::str::FromStr;

/// Milliseconds in one day.
const DAY_MS: i64 = 86_400_000;

/// A point in time, in milliseconds since the Unix epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Moment(i64);

/// Why a point in time could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{text:?} is not a point in time ({why}): give a date (2026-01-31), a time \
     (2026-01-31T12:00:00Z), Unix milliseconds (1769817600000) or an age (30d, 12h, 15m, 90s, 2w)"
)]
pub struct MomentError {
    /// The text given.
    pub text: String,
    /// What is wrong with it.
    pub why: &'static str,
}

impl Moment {
    /// The moment `unix_ms` milliseconds after the Unix epoch.
    pub const fn from_unix_ms(unix_ms: i64) -> Self {
        Self(unix_ms)
    }

    /// Now, by the system clock.
    pub fn now() -> Self {
        Self(crate::now_ms())
    }

    /// Milliseconds since the Unix epoch.
    pub const fn unix_ms(self) -> i64 {
        self.0
    }

    /// Reads one of the accepted forms (see the module documentation); an age counts back
    /// from `now_ms`.
    pub fn parse(text: &str, now_ms: i64) -> Result<Self, MomentError> {
        let fail = |why| MomentError {
            text: text.to_owned(),
            why,
        };
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(fail("it is empty"));
        }
        if trimmed.bytes().all(|b| b.is_ascii_digit()) {
            return trimmed
                .parse()
                .map(Self)
                .map_err(|_| fail("the number is too large"));
        }
        if let Some(age) = parse_age(trimmed) {
            let age = age.map_err(fail)?;
            return now_ms
                .checked_sub(age)
                .map(Self)
                .ok_or_else(|| fail("the age reaches before the year 0"));
        }
        parse_rfc3339(trimmed).map(Self).map_err(fail)
    }
}

impl FromStr for Moment {
    type Err = MomentError;

    /// Reads a moment; an age counts back from now.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text, crate::now_ms())
    }
}

/// A moment's calendar date and time of day in UTC (proleptic Gregorian calendar).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtcTime {
    /// The year.
    pub year: i64,
    /// The month, 1 to 12.
    pub month: i64,
    /// The day of the month, from 1.
    pub day: i64,
    /// The hour, 0 to 23.
    pub hour: i64,
    /// The minute, 0 to 59.
    pub minute: i64,
    /// The second, 0 to 59.
    pub second: i64,
    /// The millisecond, 0 to 999.
    pub millisecond: i64,
}

impl Moment {
    /// The calendar date and time of day of this moment, in UTC.
    pub fn utc(self) -> UtcTime {
        let (year, month, day) = civil_from_days(self.0.div_euclid(DAY_MS));
        let of_day = self.0.rem_euclid(DAY_MS);
        let secs = of_day / 1000;
        UtcTime {
            year,
            month,
            day,
            hour: secs / 3600,
            minute: secs / 60 % 60,
            second: secs % 60,
            millisecond: of_day % 1000,
        }
    }
}

impl fmt::Display for Moment {
    /// RFC 3339 in UTC, with milliseconds only when there are some.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.utc();
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            t.year, t.month, t.day, t.hour, t.minute, t.second
        )?;
        if t.millisecond != 0 {
            write!(f, ".{:03}", t.millisecond)?;
        }
        f.write_str("Z")
    }
}

/// An age such as `30d`: `None` when `text` is not shaped like one, else its length in
/// milliseconds.
fn parse_age(text: &str) -> Option<Result<i64, &'static str>> {
    let unit_at = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(unit_at);
    if number.is_empty() {
        return None;
    }
    let unit_ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => DAY_MS,
        "w" => 7 * DAY_MS,
        _ if unit.starts_with('-') => return None,
        _ => return Some(Err("an age's unit is one of s, m, h, d, w")),
    };
    Some(
        number
            .parse::<i64>()
            .ok()
            .and_then(|n| n.checked_mul(unit_ms))
            .ok_or("the age is too large"),
    )
}

/// `YYYY-MM-DD`, optionally followed by `THH:MM:SS[.fff]` and `Z` or `±HH:MM`.
fn parse_rfc3339(text: &str) -> Result<i64, &'static str> {
    const NOT_A_DATE: &str = "not a date: YYYY-MM-DD";
    let (date, time) = match text.find(['T', 't', ' ']) {
        Some(at) => (&text[..at], Some(&text[at + 1..])),
        None => (text, None),
    };
    let mut parts = date.split('-');
    let (Some(year), Some(month), Some(day), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(NOT_A_DATE);
    };
    let year = fixed_digits(year, 4).ok_or(NOT_A_DATE)?;
    let month = fixed_digits(month, 2).ok_or(NOT_A_DATE)?;
    let day = fixed_digits(day, 2).ok_or(NOT_A_DATE)?;
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return Err("no such day");
    }
    let mut ms = days_from_civil(year, month, day) * DAY_MS;
    if let Some(time) = time {
        ms += parse_time_of_day(time)?;
    }
    Ok(ms)
}

/// `HH:MM:SS[.fff…](Z|±HH:MM)` → milliseconds after midnight UTC (may be negative or
/// past a day once the offset is applied).
fn parse_time_of_day(text: &str) -> Result<i64, &'static str> {
    const NOT_A_TIME: &str = "not a time: HH:MM:SS followed by Z or an offset such as +02:00";
    let zone_at = text.find(['Z', 'z', '+', '-']).ok_or(NOT_A_TIME)?;
    let (clock, zone) = text.split_at(zone_at);
    let (clock, fraction) = match clock.split_once('.') {
        Some((clock, fraction)) => (clock, Some(fraction)),
        None => (clock, None),
    };
    let mut fields = clock.split(':');
    let (Some(h), Some(m), Some(s), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(NOT_A_TIME);
    };
    let (h, m, s) = (
        fixed_digits(h, 2).ok_or(NOT_A_TIME)?,
        fixed_digits(m, 2).ok_or(NOT_A_TIME)?,
        fixed_digits(s, 2).ok_or(NOT_A_TIME)?,
    );
    if h > 23 || m > 59 || s > 60 {
        return Err("no such time of day");
    }
    let millis = match fraction {
        None => 0,
        Some(f) if !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()) => {
            // Milliseconds: the first three digits, padded.
            let mut digits: String = f.chars().take(3).collect();
            while digits.len() < 3 {
                digits.push('0');
            }
            digits.parse::<i64>().map_err(|_| NOT_A_TIME)?
        }
        Some(_) => return Err(NOT_A_TIME),
    };
    let offset_minutes = match zone {
        "Z" | "z" => 0,
        _ => {
            let sign = if zone.starts_with('-') { -1 } else { 1 };
            let (oh, om) = zone[1..].split_once(':').ok_or(NOT_A_TIME)?;
            let (oh, om) = (
                fixed_digits(oh, 2).ok_or(NOT_A_TIME)?,
                fixed_digits(om, 2).ok_or(NOT_A_TIME)?,
            );
            if oh > 23 || om > 59 {
                return Err("no such offset");
            }
            sign * (oh * 60 + om)
        }
    };
    Ok(((h * 60 + m - offset_minutes) * 60 + s) * 1000 + millis)
}

/// A field of exactly `width` ASCII digits.
fn fixed_digits(text: &str, width: usize) -> Option<i64> {
    (text.len() == width && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

/// Whether `year` has a 29th of February.
fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

/// The number of days in a month of the proleptic Gregorian calendar.
fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a civil date: whole 400-year eras (146,097 days each), then
/// the day within the era counting years from March, so that the leap day falls last.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The civil date of a day counted from 1970-01-01 (the inverse of [`days_from_civil`]).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    const JAN_31_2026: i64 = 1_769_817_600_000;

    fn ms(text: &str) -> i64 {
        Moment::parse(text, JAN_31_2026).unwrap().unix_ms()
    }

    #[test]
    fn dates_and_times_are_read_as_utc_unless_they_say_otherwise() {
        assert_eq!(ms("1970-01-01"), 0);
        assert_eq!(ms("2026-01-31"), JAN_31_2026);
        assert_eq!(ms("2026-01-31T12:00:00Z"), JAN_31_2026 + DAY_MS / 2);
        assert_eq!(
            ms("2026-01-31T12:00:00+02:00"),
            JAN_31_2026 + 10 * 3_600_000
        );
        assert_eq!(ms("2026-01-31T00:00:00-01:30"), JAN_31_2026 + 5_400_000);
        assert_eq!(ms("2026-01-31T00:00:01.25Z"), JAN_31_2026 + 1_250);
        assert_eq!(ms("2024-02-29"), 1_709_164_800_000);
        assert_eq!(ms("1969-12-31"), -DAY_MS);
    }

    #[test]
    fn digits_alone_are_unix_milliseconds() {
        assert_eq!(ms("1769817600000"), JAN_31_2026);
        assert_eq!(ms("0"), 0);
    }

    #[test]
    fn ages_count_back_from_now() {
        assert_eq!(ms("30d"), JAN_31_2026 - 30 * DAY_MS);
        assert_eq!(ms("12h"), JAN_31_2026 - DAY_MS / 2);
        assert_eq!(ms("15m"), JAN_31_2026 - 900_000);
        assert_eq!(ms("90s"), JAN_31_2026 - 90_000);
        assert_eq!(ms("2w"), JAN_31_2026 - 14 * DAY_MS);
    }

    #[test]
    fn display_is_rfc3339_utc_and_reads_back() {
        for text in [
            "1970-01-01T00:00:00Z",
            "2026-01-31T12:34:56Z",
            "2024-02-29T23:59:59.999Z",
            "1969-07-20T20:17:40Z",
            "2400-03-01T00:00:00Z",
        ] {
            let moment = Moment::parse(text, 0).unwrap();
            assert_eq!(moment.to_string(), text);
        }
        // Every day over four centuries goes there and back.
        let mut day = days_from_civil(1900, 1, 1);
        while day < days_from_civil(2300, 1, 1) {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
            assert!(d >= 1 && d <= days_in_month(y, m));
            day += 1;
        }
    }

    #[test]
    fn what_is_not_a_moment_is_refused_with_the_accepted_forms() {
        for text in [
            "",
            "yesterday",
            "30x",
            "-5d",
            "2026-02-30",
            "2026-13-01",
            "2026-1-31",
            "2026-01-31T25:00:00Z",
            "2026-01-31T12:00:00",
            "2026-01-31T12:00Z",
            "99999999999999999999",
            "9999999999999999d",
        ] {
            let err = Moment::parse(text, JAN_31_2026).unwrap_err();
            assert!(err.to_string().contains("30d"), "{text}: {err}");
        }
    }
}
