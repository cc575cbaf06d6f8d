//! Durations given in seconds on the command line: one parser for every flag, so that
//! each takes fractions, refuses what is not a duration (negative, not a number,
//! infinite, past what a `Duration` holds) with a message instead of a panic, and
//! means the same by 0.

use std::time::Duration;

/// A number of seconds (fractions allowed), 0 or more.
pub(crate) fn seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs).map_err(|_| {
        format!("{text:?} is not a duration (0 or more seconds, at most about 5.8e11 years)")
    })
}

/// A number of seconds over 0.
pub(crate) fn positive_seconds(text: &str) -> Result<Duration, String> {
    match seconds(text)? {
        Duration::ZERO => Err("must be over 0".into()),
        duration => Ok(duration),
    }
}

/// A duration where 0 turns the thing off.
pub(crate) fn unless_zero(duration: Duration) -> Option<Duration> {
    (!duration.is_zero()).then_some(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_flag_value_is_a_duration_or_an_error_never_a_panic() {
        assert_eq!(seconds("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(seconds(" 0 "), Ok(Duration::ZERO));
        assert_eq!(
            seconds("1e19"),
            Ok(Duration::from_secs(10_000_000_000_000_000_000))
        );
        for bad in ["-1", "NaN", "inf", "-inf", "1e30", "1e400", "", "x", "1s"] {
            assert!(seconds(bad).is_err(), "{bad}");
        }
        assert!(positive_seconds("0").is_err());
        assert_eq!(positive_seconds("0.001"), Ok(Duration::from_millis(1)));
        assert_eq!(unless_zero(Duration::ZERO), None);
    }
}
