//! The arrival schedule of the open-loop generator: a rate (requests per second) as a
//! function of time, and the intended send time of every request it implies.
//!
//! The i-th request (counting from 0) is due when the integral of the rate since the start
//! reaches `i`: for a constant rate that is `i / rate`. Each request's time is computed on
//! its own from `i` (never by adding up intervals), so rounding errors do not accumulate
//! over a long run and the sequence does not depend on how late the generator runs.

use std::fmt;
use std::time::Duration;

use anyhow::{Result, bail};
use lab_chaos::spec::{format_duration, parse_duration};

/// The highest rate a schedule may ask for: far above what one generator process can send,
/// low enough that a typo (`constant:10000000`) is refused instead of tried.
pub const MAX_RATE: f64 = 100_000.0;

/// Tolerance on request counts, so that e.g. `constant:0.1` for 30 s is 3 requests, not 4.
const COUNT_EPSILON: f64 = 1e-9;

/// How the arrival rate varies over a run.
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    /// `constant:RATE`: the same rate throughout.
    Constant { rate: f64 },
    /// `ramp:FROM-TO`: linear from `from` at the start to `to` at the end of the run.
    Ramp { from: f64, to: f64 },
    /// `spike:BASE-PEAK@AT+LENGTH`: `base`, except `peak` from `at` for `length`.
    Spike {
        base: f64,
        peak: f64,
        at: Duration,
        length: Duration,
    },
}

/// A piece of the schedule over which the rate is linear: `r0` at `start`, `r1` at `end`
/// (seconds from the start of the run).
#[derive(Debug, Clone, Copy)]
struct Segment {
    start: f64,
    end: f64,
    r0: f64,
    r1: f64,
}

impl Segment {
    fn len(&self) -> f64 {
        self.end - self.start
    }

    /// Requests due in this segment: the integral of the rate over it.
    fn count(&self) -> f64 {
        (self.r0 + self.r1) / 2.0 * self.len()
    }

    /// Seconds after `start` at which `k` requests of this segment have become due,
    /// `0 <= k < count()`. Solves `r0·τ + s·τ²/2 = k` for the slope `s`, in the form that
    /// stays exact for a constant rate (`k / r0`) and stable when `r0` is 0.
    fn time_of(&self, k: f64) -> f64 {
        if k <= 0.0 {
            return 0.0;
        }
        let slope = if self.len() > 0.0 {
            (self.r1 - self.r0) / self.len()
        } else {
            0.0
        };
        let root = (self.r0 * self.r0 + 2.0 * slope * k).max(0.0).sqrt();
        2.0 * k / (self.r0 + root)
    }
}

impl Schedule {
    /// The rate (requests per second) at `t` into a run lasting `total`.
    pub fn rate_at(&self, t: Duration, total: Duration) -> f64 {
        match *self {
            Schedule::Constant { rate } => rate,
            Schedule::Ramp { from, to } => {
                if total.is_zero() {
                    return from;
                }
                let progress = (t.as_secs_f64() / total.as_secs_f64()).clamp(0.0, 1.0);
                from + (to - from) * progress
            }
            Schedule::Spike {
                base,
                peak,
                at,
                length,
            } => {
                if t >= at && t < at + length {
                    peak
                } else {
                    base
                }
            }
        }
    }

    /// Parses `constant:100`, `ramp:10-200` or `spike:50-500@10s+5s` (rates in requests per
    /// second, durations as `500ms`, `10s`, `1m`). Errors quote the value and show the form.
    pub fn parse(s: &str) -> Result<Self> {
        let text = s.trim();
        let (kind, args) = text.split_once(':').unwrap_or((text, ""));
        let schedule = match kind {
            "constant" => Schedule::Constant {
                rate: rate(s, args, "constant:RATE, e.g. constant:100")?,
            },
            "ramp" => {
                let form = "ramp:FROM-TO, e.g. ramp:10-200";
                let Some((from, to)) = args.split_once('-') else {
                    bail!("schedule `{s}`: expected {form}");
                };
                Schedule::Ramp {
                    from: rate(s, from, form)?,
                    to: rate(s, to, form)?,
                }
            }
            "spike" => {
                let form = "spike:BASE-PEAK@AT+LENGTH, e.g. spike:50-500@10s+5s";
                let Some((rates, window)) = args.split_once('@') else {
                    bail!("schedule `{s}`: expected {form}");
                };
                let (Some((base, peak)), Some((at, length))) =
                    (rates.split_once('-'), window.split_once('+'))
                else {
                    bail!("schedule `{s}`: expected {form}");
                };
                Schedule::Spike {
                    base: rate(s, base, form)?,
                    peak: rate(s, peak, form)?,
                    at: duration(s, at, form)?,
                    length: duration(s, length, form)?,
                }
            }
            _ => bail!(
                "schedule `{s}`: unknown kind `{kind}`; expected constant:RATE, ramp:FROM-TO \
                 or spike:BASE-PEAK@AT+LENGTH, e.g. constant:100"
            ),
        };
        schedule
            .validate()
            .map_err(|e| anyhow::anyhow!("schedule `{s}`: {e}"))?;
        Ok(schedule)
    }

    /// Checks the rates: finite, not negative, at most [`MAX_RATE`], and not zero
    /// throughout; a spike lasts a while and rises above its base.
    pub fn validate(&self) -> Result<()> {
        let rates: &[f64] = match self {
            Schedule::Constant { rate } => &[*rate],
            Schedule::Ramp { from, to } => &[*from, *to],
            Schedule::Spike { base, peak, .. } => &[*base, *peak],
        };
        for &r in rates {
            if !r.is_finite() || r < 0.0 {
                bail!("rate {r} must be a finite number of requests per second, at least 0");
            }
            if r > MAX_RATE {
                bail!("rate {r} is above the limit of {MAX_RATE} requests per second");
            }
        }
        match self {
            Schedule::Constant { rate } if *rate <= 0.0 => bail!("rate must be above 0"),
            Schedule::Ramp { from, to } if *from <= 0.0 && *to <= 0.0 => {
                bail!("a ramp from 0 to 0 sends nothing")
            }
            Schedule::Spike { base, peak, .. } if peak <= base => {
                bail!("the peak ({peak}) must be above the base ({base})")
            }
            Schedule::Spike { length, .. } if length.is_zero() => {
                bail!("the spike must last longer than 0 s")
            }
            _ => Ok(()),
        }
    }

    /// The highest rate the schedule reaches.
    pub fn peak_rate(&self) -> f64 {
        match *self {
            Schedule::Constant { rate } => rate,
            Schedule::Ramp { from, to } => from.max(to),
            Schedule::Spike { base, peak, .. } => base.max(peak),
        }
    }

    /// The schedule cut into pieces with a linear rate, clipped to `[0, total]`.
    fn segments(&self, total: Duration) -> Vec<Segment> {
        let end = total.as_secs_f64();
        match *self {
            Schedule::Constant { rate } => vec![Segment {
                start: 0.0,
                end,
                r0: rate,
                r1: rate,
            }],
            Schedule::Ramp { from, to } => vec![Segment {
                start: 0.0,
                end,
                r0: from,
                r1: to,
            }],
            Schedule::Spike {
                base,
                peak,
                at,
                length,
            } => {
                let at = at.as_secs_f64().min(end);
                let until = (at + length.as_secs_f64()).min(end);
                let constant = |start: f64, end: f64, rate: f64| Segment {
                    start,
                    end,
                    r0: rate,
                    r1: rate,
                };
                vec![
                    constant(0.0, at, base),
                    constant(at, until, peak),
                    constant(until, end, base),
                ]
            }
        }
    }

    /// How many requests a run of `total` issues: the integral of the rate, rounded up
    /// (request 0 is due at the start).
    pub fn request_count(&self, total: Duration) -> u64 {
        let due: f64 = self.segments(total).iter().map(Segment::count).sum();
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let count = (due - COUNT_EPSILON).max(0.0).ceil() as u64;
        count
    }

    /// When the `i`-th request (from 0) is due, as an offset from the start; `None` when it
    /// falls at or after `total`, i.e. `i >= request_count(total)`.
    pub fn intended_offset(&self, i: u64, total: Duration) -> Option<Duration> {
        #[allow(clippy::cast_precision_loss)]
        let i = i as f64;
        let mut before = 0.0;
        for segment in self.segments(total) {
            let count = segment.count();
            if before + count > i + COUNT_EPSILON {
                let t = segment.start + segment.time_of(i - before);
                return (t < total.as_secs_f64()).then(|| Duration::from_secs_f64(t));
            }
            before += count;
        }
        None
    }
}

/// `constant:100`, `ramp:10-200`, `spike:50-500@10s+5s`: what [`Schedule::parse`] reads.
impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Constant { rate } => write!(f, "constant:{rate}"),
            Schedule::Ramp { from, to } => write!(f, "ramp:{from}-{to}"),
            Schedule::Spike {
                base,
                peak,
                at,
                length,
            } => write!(
                f,
                "spike:{base}-{peak}@{}+{}",
                format_duration(*at),
                format_duration(*length)
            ),
        }
    }
}

impl std::str::FromStr for Schedule {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        Schedule::parse(s)
    }
}

fn rate(schedule: &str, value: &str, form: &str) -> Result<f64> {
    let value = value.trim();
    match value.parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 0.0 => Ok(r),
        _ => bail!(
            "schedule `{schedule}`: `{value}` is not a rate (requests per second, a number \
             >= 0); expected {form}"
        ),
    }
}

fn duration(schedule: &str, value: &str, form: &str) -> Result<Duration> {
    let value = value.trim();
    parse_duration(value).ok_or_else(|| {
        anyhow::anyhow!(
            "schedule `{schedule}`: `{value}` is not a duration (a number and ms, s, m or h, \
             e.g. 10s); expected {form}"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;
    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn schedules_parse_and_print_back() {
        assert_eq!(
            Schedule::parse("constant:100").unwrap(),
            Schedule::Constant { rate: 100.0 }
        );
        assert_eq!(
            Schedule::parse("ramp:10-200").unwrap(),
            Schedule::Ramp {
                from: 10.0,
                to: 200.0
            }
        );
        assert_eq!(
            Schedule::parse("spike:50-500@10s+5s").unwrap(),
            Schedule::Spike {
                base: 50.0,
                peak: 500.0,
                at: S(10),
                length: S(5)
            }
        );
        assert_eq!(
            Schedule::parse("spike:0-20@1500ms+0.5s").unwrap(),
            Schedule::Spike {
                base: 0.0,
                peak: 20.0,
                at: MS(1500),
                length: MS(500)
            }
        );
        for text in [
            "constant:100",
            "constant:0.5",
            "ramp:200-10",
            "spike:50-500@10s+5s",
            "spike:1-2@1500ms+2m",
        ] {
            let schedule = Schedule::parse(text).unwrap();
            assert_eq!(schedule.to_string(), text);
            assert_eq!(text.parse::<Schedule>().unwrap(), schedule);
        }
    }

    #[test]
    fn bad_schedules_name_the_value() {
        for (bad, names) in [
            ("constant:abc", "`abc`"),
            ("constant:-5", "`-5`"),
            ("constant:0", "above 0"),
            ("constant:NaN", "`NaN`"),
            ("constant:1e9", "limit"),
            ("ramp:10", "ramp:FROM-TO"),
            ("ramp:10-x", "`x`"),
            ("ramp:0-0", "sends nothing"),
            ("spike:50-500", "spike:BASE-PEAK@AT+LENGTH"),
            ("spike:50-500@10+5s", "`10`"),
            ("spike:50-500@10s+soon", "`soon`"),
            ("spike:500-50@10s+5s", "above the base"),
            ("spike:50-500@10s+0s", "longer than 0"),
            ("burst:5", "unknown kind `burst`"),
            ("100", "unknown kind `100`"),
        ] {
            let err = format!("{:#}", Schedule::parse(bad).unwrap_err());
            assert!(err.contains(&format!("`{bad}`")), "{bad}: {err}");
            assert!(err.contains(names), "{bad}: {err}");
        }
    }

    #[test]
    fn rate_at_follows_the_shape() {
        let total = S(10);
        let constant = Schedule::Constant { rate: 100.0 };
        assert_eq!(constant.rate_at(S(0), total), 100.0);
        assert_eq!(constant.rate_at(S(9), total), 100.0);

        let ramp = Schedule::Ramp {
            from: 10.0,
            to: 210.0,
        };
        assert_eq!(ramp.rate_at(S(0), total), 10.0);
        assert_eq!(ramp.rate_at(S(5), total), 110.0);
        assert_eq!(ramp.rate_at(S(10), total), 210.0);
        assert_eq!(ramp.rate_at(S(20), total), 210.0, "clamped past the end");

        let spike = Schedule::Spike {
            base: 50.0,
            peak: 500.0,
            at: S(4),
            length: S(2),
        };
        assert_eq!(spike.rate_at(MS(3999), total), 50.0);
        assert_eq!(spike.rate_at(S(4), total), 500.0);
        assert_eq!(spike.rate_at(MS(5999), total), 500.0);
        assert_eq!(spike.rate_at(S(6), total), 50.0);
    }

    fn all_offsets(schedule: &Schedule, total: Duration) -> Vec<f64> {
        let n = schedule.request_count(total);
        let offsets: Vec<f64> = (0..n)
            .map(|i| schedule.intended_offset(i, total).unwrap().as_secs_f64())
            .collect();
        assert_eq!(
            schedule.intended_offset(n, total),
            None,
            "request {n} is past the end"
        );
        assert!(
            offsets.windows(2).all(|w| w[0] <= w[1]),
            "never earlier than the one before"
        );
        offsets
    }

    #[test]
    fn constant_rate_is_start_plus_i_over_rate() {
        let schedule = Schedule::Constant { rate: 50.0 };
        assert_eq!(schedule.request_count(S(2)), 100);
        let offsets = all_offsets(&schedule, S(2));
        for (i, t) in offsets.iter().enumerate() {
            // Exact up to the nanosecond resolution of Duration.
            assert!((t - i as f64 / 50.0).abs() < 1e-9, "request {i}: {t}");
        }
        assert_eq!(schedule.intended_offset(99, S(2)), Some(MS(1980)));
        // Rounding does not add a request at the very end.
        assert_eq!(
            Schedule::Constant { rate: 0.1 }.request_count(S(30)),
            3,
            "0.1 rps for 30 s"
        );
        assert_eq!(Schedule::Constant { rate: 3.0 }.request_count(MS(1001)), 4);
        assert_eq!(Schedule::Constant { rate: 1000.0 }.request_count(S(0)), 0);
    }

    #[test]
    fn ramp_integrates_the_rate() {
        // 0 -> 100 rps over 10 s: N(t) = 5 t², 500 requests; the i-th at sqrt(i / 5).
        let schedule = Schedule::Ramp {
            from: 0.0,
            to: 100.0,
        };
        assert_eq!(schedule.request_count(S(10)), 500);
        let offsets = all_offsets(&schedule, S(10));
        for (i, t) in offsets.iter().enumerate() {
            assert!(
                (t - (i as f64 / 5.0).sqrt()).abs() < 1e-9,
                "request {i}: {t}"
            );
        }
        // Half of the requests come in the last 29 % of the time.
        assert!((offsets[250] - 50f64.sqrt()).abs() < 1e-9);

        // Downwards: 200 -> 0 over 2 s, 200 requests, denser at the start.
        let down = Schedule::Ramp {
            from: 200.0,
            to: 0.0,
        };
        let offsets = all_offsets(&down, S(2));
        assert_eq!(offsets.len(), 200);
        let first_second = offsets.iter().filter(|t| **t < 1.0).count();
        assert_eq!(first_second, 150, "N(1) = 200·1 − 50·1² = 150");
    }

    #[test]
    fn spike_is_base_then_peak_then_base() {
        // 10 rps for 2 s, 100 rps for 1 s, 10 rps for 2 s: 20 + 100 + 20 requests.
        let schedule = Schedule::Spike {
            base: 10.0,
            peak: 100.0,
            at: S(2),
            length: S(1),
        };
        let offsets = all_offsets(&schedule, S(5));
        assert_eq!(offsets.len(), 140);
        let per_second: Vec<usize> = (0..5)
            .map(|s| offsets.iter().filter(|t| t.floor() as usize == s).count())
            .collect();
        assert_eq!(per_second, [10, 10, 100, 10, 10]);
        assert_eq!(offsets[20], 2.0, "the spike starts on time");
        assert_eq!(offsets[120], 3.0, "and ends on time");

        // Zero base: nothing before the spike, the first request when it starts.
        let only_spike = Schedule::Spike {
            base: 0.0,
            peak: 10.0,
            at: S(1),
            length: S(1),
        };
        let offsets = all_offsets(&only_spike, S(3));
        assert_eq!(offsets.len(), 10);
        assert_eq!(offsets[0], 1.0);
        assert_eq!(offsets[9], 1.9);

        // A spike cut off by the end of the run.
        assert_eq!(schedule.request_count(MS(2500)), 70);
    }
}
