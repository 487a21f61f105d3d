//! Times and waits that servers send, shared by the parsers of `Retry-After` (retry.rs) and of
//! rate-limit resets (ratelimit.rs). A leaf: it imports nothing of the crate.

use std::time::Duration;

/// The longest wait a server hint is taken to ask for: about 24.8 days, Node's timer bound. An
/// absurd hint (`1e30`, year 99999) is clamped here; it is then over `maxTimeout` and fails the
/// call with the server's answer, never a sleep or a panic.
pub const MAX_HINT: Duration = Duration::from_millis(i32::MAX as u64);

/// Days since 1970-01-01 of a Gregorian date (Howard Hinnant's algorithm); `None` before 1970.
pub fn days_from_civil(year: u64, month: u64, day: u64) -> Option<u64> {
    let y = if month <= 2 { year - 1 } else { year } as i64;
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = month as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    u64::try_from(era * 146_097 + doe - 719_468).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_days() {
        assert_eq!(days_from_civil(1970, 1, 1), Some(0));
        assert_eq!(days_from_civil(2000, 3, 1), Some(11_017));
        assert_eq!(days_from_civil(1969, 12, 31), None);
    }
}
