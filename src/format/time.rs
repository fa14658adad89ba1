//! Times: the DateTime text Table Storage holds (100 ns, UTC), the text the
//! HTTP API shows (whole seconds, UTC), and the forms users type.

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime, PrimitiveDateTime, UtcOffset};

/// Formats a time as Table Storage's DateTime text: RFC 3339 in UTC with
/// seven fractional digits (its 100 ns resolution).
///
/// The time must be representable in UTC ([`to_utc`] checks it).
pub(crate) fn format_time(time: OffsetDateTime) -> String {
    let utc = to_utc(time).unwrap_or(time);
    let utc = utc
        .replace_nanosecond(utc.nanosecond() / 100 * 100)
        .expect("nanosecond in range");
    utc.format(format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:7]Z"
    ))
    .expect("a UTC time formats")
}

/// Reads stored DateTime text; `None` when it is not RFC 3339 or out of range.
pub(crate) fn parse_time(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339).ok().and_then(to_utc)
}

/// The same instant in UTC, if it falls in years 1 to 9999 there (what Table
/// Storage's DateTime holds); `None` otherwise.
pub(crate) fn to_utc(time: OffsetDateTime) -> Option<OffsetDateTime> {
    time.checked_to_offset(UtcOffset::UTC)
        .filter(|t| (1..=9999).contains(&t.year()))
}

/// `2017-10-06T18:30:24Z`: UTC, whole seconds, as the HTTP API shows times.
pub fn api_time(time: OffsetDateTime) -> String {
    let utc = time.checked_to_offset(UtcOffset::UTC).unwrap_or(time);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        utc.year(),
        u8::from(utc.month()),
        utc.day(),
        utc.hour(),
        utc.minute(),
        utc.second()
    )
}

/// A time as users and clients type it: ISO 8601 with an offset
/// (`2024-01-31T18:30:00Z`, `...+02:00`), or without one (read as UTC, as
/// Durable Functions does with universal times), or a date alone (midnight UTC).
pub fn parse_user_time(text: &str) -> Option<OffsetDateTime> {
    let text = text.trim();
    if let Ok(time) = OffsetDateTime::parse(text, &Rfc3339) {
        return Some(time);
    }
    let local = format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second][optional [.[subsecond]]]"
    );
    if let Ok(time) = PrimitiveDateTime::parse(text, local) {
        return Some(time.assume_utc());
    }
    Date::parse(text, format_description!("[year]-[month]-[day]"))
        .ok()
        .map(|d| d.midnight().assume_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2017-10-06 18:30:24.123456789 UTC);

    #[test]
    fn times_are_rfc3339_utc_with_seven_digits() {
        assert_eq!(format_time(NOW), "2017-10-06T18:30:24.1234567Z");
        let offset = datetime!(2017-10-06 20:30:24 +2);
        assert_eq!(format_time(offset), "2017-10-06T18:30:24.0000000Z");
        assert_eq!(
            parse_time("2017-10-06T18:30:24.1234567Z")
                .map(format_time)
                .as_deref(),
            Some("2017-10-06T18:30:24.1234567Z")
        );
    }

    #[test]
    fn times_outside_table_storage_range_are_refused_not_panics() {
        assert_eq!(parse_time("9999-12-31T23:30:00-01:00"), None);
        assert_eq!(parse_time("0001-01-01T00:30:00+01:00"), None);
        assert_eq!(to_utc(datetime!(9999-12-31 23:30 -1)), None);
        assert!(to_utc(datetime!(9999-12-31 22:30 -1)).is_some());
    }

    #[test]
    fn api_times_are_whole_seconds_in_utc() {
        assert_eq!(
            api_time(datetime!(2017-10-06 21:40:30.9 +2)),
            "2017-10-06T19:40:30Z"
        );
    }

    #[test]
    fn times_in_the_forms_clients_send() {
        assert_eq!(
            parse_user_time("2024-01-31T18:30:00Z"),
            Some(datetime!(2024-01-31 18:30 UTC))
        );
        assert_eq!(
            parse_user_time("2024-01-31T20:30:00+02:00"),
            Some(datetime!(2024-01-31 18:30 UTC))
        );
        assert_eq!(
            parse_user_time("2024-01-31T18:30:00.5"),
            Some(datetime!(2024-01-31 18:30:00.5 UTC))
        );
        assert_eq!(
            parse_user_time("2024-01-31"),
            Some(datetime!(2024-01-31 00:00 UTC))
        );
        assert_eq!(parse_user_time("yesterday"), None);
    }
}
