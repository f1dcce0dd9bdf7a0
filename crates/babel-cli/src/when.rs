//! The server's times (RFC 3339 UTC, `2026-11-29T18:20:00Z`) as people
//! read them, and the length between two of them. Pure: no clock.

/// Seconds since 1970-01-01T00:00:00Z, or `None` for anything that is not
/// an RFC 3339 time (fractions of a second are dropped; an offset other
/// than `Z` is applied).
pub fn epoch_seconds(t: &str) -> Option<i64> {
    let t = t.trim();
    let (date, rest) = t.split_once(['T', 't', ' '])?;
    let mut d = date.splitn(3, '-');
    let (y, m, day): (i64, i64, i64) = (d.next()?.parse().ok()?, d.next()?.parse().ok()?, d.next()?.parse().ok()?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    // The offset: `Z`, or `+HH:MM` / `-HH:MM`.
    let (clock, offset) = if let Some(c) = rest.strip_suffix(['Z', 'z']) {
        (c, 0)
    } else {
        let at = rest.rfind(['+', '-'])?;
        let (c, o) = rest.split_at(at);
        let sign = if o.starts_with('-') { -1 } else { 1 };
        let (oh, om) = o[1..].split_once(':')?;
        (c, sign * (oh.parse::<i64>().ok()? * 3600 + om.parse::<i64>().ok()? * 60))
    };
    let clock = clock.split('.').next()?;
    let mut c = clock.splitn(3, ':');
    let (h, min, s): (i64, i64, i64) = (c.next()?.parse().ok()?, c.next()?.parse().ok()?, c.next()?.parse().ok()?);
    if h > 23 || min > 59 || s > 60 {
        return None;
    }
    Some(days_from_civil(y, m, day) * 86_400 + h * 3600 + min * 60 + s - offset)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `2026-11-29 18:20` (UTC, as the server gives it); a time that does not
/// parse is shown as it came.
pub fn short(t: &str) -> String {
    match t.split_once(['T', 't']) {
        Some((date, rest)) if epoch_seconds(t).is_some() => {
            let hm: String = rest.chars().take(5).collect();
            format!("{date} {hm}")
        }
        _ => t.to_owned(),
    }
}

/// The seconds from `a` to `b`, when both are times and `b` is not before
/// `a`.
pub fn between(a: &str, b: &str) -> Option<u64> {
    u64::try_from(epoch_seconds(b)? - epoch_seconds(a)?).ok()
}

/// `42 s`, `3 min 05 s`, `1 h 02 min`.
pub fn length(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min {:02} s", secs / 60, secs % 60),
        _ => format!("{} h {:02} min", secs / 3600, secs % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_to_epoch_seconds() {
        assert_eq!(epoch_seconds("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(epoch_seconds("2000-03-01T00:00:00Z"), Some(951_868_800));
        assert_eq!(epoch_seconds("2026-11-29T18:20:00Z"), Some(1_795_976_400));
        assert_eq!(epoch_seconds("2026-11-29T18:20:00.123Z"), Some(1_795_976_400));
        assert_eq!(epoch_seconds("2026-11-29T19:20:00+01:00"), Some(1_795_976_400));
        for bad in ["", "yesterday", "2026-13-01T00:00:00Z", "2026-11-29T25:00:00Z", "2026-11-29"] {
            assert_eq!(epoch_seconds(bad), None, "{bad}");
        }
    }

    #[test]
    fn times_read_short_and_lengths_read_as_words() {
        assert_eq!(short("2026-11-29T18:20:05Z"), "2026-11-29 18:20");
        assert_eq!(short("soon"), "soon");
        assert_eq!(between("2026-11-29T18:20:00Z", "2026-11-29T18:23:05Z"), Some(185));
        assert_eq!(between("2026-11-29T18:20:00Z", "2026-11-29T18:19:00Z"), None);
        assert_eq!(between("", "2026-11-29T18:19:00Z"), None);
        assert_eq!(length(42), "42 s");
        assert_eq!(length(185), "3 min 05 s");
        assert_eq!(length(3720), "1 h 02 min");
    }
}
