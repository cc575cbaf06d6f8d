//! Numbers for `bench`: latency percentiles from an HDR histogram, and CPU time from
//! `/proc`, ours and the server's, so a run can show which side was the bottleneck.
//!
//! CPU time is read from `/proc/PID/stat` (user + system time of every thread of the
//! process, in clock ticks of 1/100 s, the `USER_HZ` that Linux reports there on every
//! architecture it runs on) rather than through `getrusage`, to stay free of `libc`
//! and to measure another process the same way as this one. Elsewhere it is `None`.

use std::collections::VecDeque;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

/// Linux's `USER_HZ`: the unit of the times in `/proc/PID/stat`.
const CLOCK_TICKS_PER_SECOND: u64 = 100;

/// Latencies are recorded in nanoseconds, 3 significant digits, up to this.
const MAX_LATENCY_NS: u64 = 60_000_000_000;

/// An empty latency histogram (nanoseconds).
pub(crate) fn latency_histogram() -> Histogram<u64> {
    // Invariant: constant bounds that hdrhistogram accepts (low >= 1, high >= 2 * low,
    // at most 5 significant figures), so this cannot fail.
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("valid constant bounds")
}

/// The messages in flight on one connection, and the latencies of those answered.
///
/// Messages are counted in bursts (the time a burst was written, and how many of its
/// messages are unanswered): echoes come back in order, so the oldest burst is
/// answered first, and the echoes taken in one wake-up share one receive time. A
/// wake-up's echoes are recorded as one latency per burst they answer, not one per
/// message: with 16 in flight, recording each would cost the generator about as much
/// as parsing the frame.
pub(crate) struct InFlight {
    bursts: VecDeque<(Instant, u64)>,
    len: u64,
    histogram: Histogram<u64>,
}

impl InFlight {
    pub(crate) fn new() -> Self {
        InFlight {
            bursts: VecDeque::new(),
            len: 0,
            histogram: latency_histogram(),
        }
    }

    /// Messages sent and not answered yet.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// `count` messages were written at `at`.
    pub(crate) fn sent(&mut self, at: Instant, count: u64) {
        if count > 0 {
            self.bursts.push_back((at, count));
            self.len += count;
        }
    }

    /// `count` echoes arrived at `now`: the oldest messages are answered. Returns how
    /// many of them matched a message in flight (fewer when the peer sent more).
    pub(crate) fn answered(&mut self, now: Instant, mut count: u64) -> u64 {
        let mut matched = 0;
        while count > 0 {
            let Some((sent, unanswered)) = self.bursts.front_mut() else {
                break;
            };
            let n = count.min(*unanswered);
            record_n(&mut self.histogram, now.duration_since(*sent), n);
            *unanswered -= n;
            if *unanswered == 0 {
                self.bursts.pop_front();
            }
            count -= n;
            matched += n;
        }
        self.len -= matched;
        matched
    }

    /// The histogram of the latencies recorded.
    pub(crate) fn into_histogram(self) -> Histogram<u64> {
        self.histogram
    }
}

/// Record `count` messages of `latency`, clamped to the histogram's range.
fn record_n(histogram: &mut Histogram<u64>, latency: Duration, count: u64) {
    let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
    histogram.saturating_record_n(ns.clamp(1, MAX_LATENCY_NS), count);
}

/// The latency figures `bench` reports, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Latency {
    pub(crate) p50: f64,
    pub(crate) p90: f64,
    pub(crate) p99: f64,
    pub(crate) p99_9: f64,
    pub(crate) max: f64,
    pub(crate) mean: f64,
}

impl Latency {
    /// The percentiles of `histogram` (all zero when it is empty).
    pub(crate) fn of(histogram: &Histogram<u64>) -> Latency {
        let us = |ns: u64| ns as f64 / 1000.0;
        if histogram.is_empty() {
            return Latency {
                p50: 0.0,
                p90: 0.0,
                p99: 0.0,
                p99_9: 0.0,
                max: 0.0,
                mean: 0.0,
            };
        }
        Latency {
            p50: us(histogram.value_at_quantile(0.50)),
            p90: us(histogram.value_at_quantile(0.90)),
            p99: us(histogram.value_at_quantile(0.99)),
            p99_9: us(histogram.value_at_quantile(0.999)),
            max: us(histogram.max()),
            mean: histogram.mean() / 1000.0,
        }
    }
}

/// A duration in microseconds, the way a person reads it: `87 µs`, `1.25 ms`, `2.1 s`.
pub(crate) fn human_us(us: f64) -> String {
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else if us < 1_000_000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{:.2} s", us / 1_000_000.0)
    }
}

/// The CPU time (user + system, all threads) a process has used so far: this one with
/// `None`. `None` when `/proc` cannot tell (not Linux, no such process).
pub(crate) fn cpu_time(pid: Option<u32>) -> Option<Duration> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    parse_cpu_time(&std::fs::read_to_string(path).ok()?)
}

/// utime + stime of a `/proc/PID/stat` line. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted from its closing parenthesis.
fn parse_cpu_time(stat: &str) -> Option<Duration> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Field 3 (state) is fields[0], so utime (14) and stime (15) are 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let ticks = utime + stime;
    Some(Duration::from_millis(ticks * 1000 / CLOCK_TICKS_PER_SECOND))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_proc_stat_with_a_strange_name() {
        let line = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 500 0 0 0 250 75 0 0 20 0 \
                    4 0 100 1000000 200 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0";
        assert_eq!(parse_cpu_time(line), Some(Duration::from_millis(3250)));
        assert_eq!(parse_cpu_time("garbage"), None);
    }

    #[test]
    fn reads_our_own_cpu_time() {
        if cfg!(target_os = "linux") {
            assert!(cpu_time(None).is_some());
        }
    }

    #[test]
    fn percentiles_in_microseconds() {
        let start = Instant::now();
        let mut recorder = InFlight::new();
        for us in 1..=1000u64 {
            recorder.sent(start, 1);
            recorder.answered(start + Duration::from_micros(us), 1);
        }
        let l = Latency::of(&recorder.into_histogram());
        assert!((l.p50 - 500.0).abs() < 1.0, "{l:?}");
        assert!((l.p99 - 990.0).abs() < 1.0, "{l:?}");
        assert!((l.max - 1000.0).abs() < 1.0, "{l:?}");
        assert_eq!(Latency::of(&latency_histogram()).max, 0.0);

        // Two bursts of 3, answered 2 then 3 then 2 (one more than was sent).
        let mut in_flight = InFlight::new();
        in_flight.sent(start, 3);
        in_flight.sent(start + Duration::from_micros(2), 3);
        assert_eq!(in_flight.len(), 6);
        assert_eq!(in_flight.answered(start + Duration::from_micros(5), 2), 2);
        assert_eq!(in_flight.answered(start + Duration::from_micros(9), 3), 3);
        assert_eq!(in_flight.answered(start + Duration::from_micros(9), 2), 1);
        assert_eq!(in_flight.len(), 0);
        let h = in_flight.into_histogram();
        assert_eq!(h.len(), 6);
        assert_eq!(h.count_at(5_000), 2);
        assert_eq!(h.count_at(9_000), 1);
        assert_eq!(h.count_at(7_000), 3);
        assert_eq!(human_us(87.2), "87 µs");
        assert_eq!(human_us(1250.0), "1.25 ms");
    }
}
