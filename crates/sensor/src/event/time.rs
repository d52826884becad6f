//! Timestamps: nanoseconds since the epoch as RFC 3339 (`@timestamp`).
//!
//! Owns: the proleptic Gregorian calendar qmwatch needs, without a date
//! crate. Must not: read the clock (callers pass packet or wall time).

/// Formats nanoseconds since the epoch as RFC 3339 UTC with microseconds.
pub fn rfc3339(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let micros = (ns % 1_000_000_000) / 1_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    if !(0..=9999).contains(&y) {
        return format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
            rem / 3600,
            (rem % 3600) / 60,
            rem % 60
        );
    }
    let mut b = *b"0000-00-00T00:00:00.000000Z";
    let mut put = |at: usize, width: usize, mut v: u64| {
        for i in (at..at + width).rev() {
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, y as u64);
    put(5, 2, u64::from(m));
    put(8, 2, u64::from(d));
    put(11, 2, rem / 3600);
    put(14, 2, (rem % 3600) / 60);
    put(17, 2, rem % 60);
    put(20, 6, micros);
    String::from_utf8_lossy(&b).into_owned()
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against Python's datetime: day and leap-year boundaries (2000 and
    /// 2024 leap, 2100 not), the largest u64, and random instants.
    #[test]
    fn timestamps_match_an_independent_calendar() {
        for (ns, want) in [
            (0, "1970-01-01T00:00:00.000000Z"),
            (999, "1970-01-01T00:00:00.000000Z"),
            (86_399_999_999_999, "1970-01-01T23:59:59.999999Z"),
            (86_400_000_000_000, "1970-01-02T00:00:00.000000Z"),
            (68_169_600_000_000_000, "1972-02-29T00:00:00.000000Z"),
            (951_782_399_999_999_999, "2000-02-28T23:59:59.999999Z"),
            (1_709_164_800_000_000_000, "2024-02-29T00:00:00.000000Z"),
            (4_102_444_799_999_999_000, "2099-12-31T23:59:59.999999Z"),
            (4_107_542_400_000_000_000, "2100-03-01T00:00:00.000000Z"),
            (u64::MAX, "2554-07-21T23:34:33.709551Z"),
            (8_655_628_691_030_458_795, "2244-04-14T21:18:11.030458Z"),
            (7_691_418_475_598_800_341, "2213-09-25T01:07:55.598800Z"),
            (107_979_628_678_664_349, "1973-06-03T18:20:28.678664Z"),
            (186_835_497_852_677_522, "1975-12-03T10:44:57.852677Z"),
            (15_032_457_632_618_298_465, "2446-05-11T18:40:32.618298Z"),
            (11_106_931_077_284_914_532, "2321-12-19T10:37:57.284914Z"),
        ] {
            assert_eq!(rfc3339(ns), want, "{ns}");
        }
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339(1_795_238_274_123_456_789),
            "2026-11-21T05:17:54.123456Z"
        );
        assert_eq!(
            rfc3339(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000000Z"
        );
    }
}
