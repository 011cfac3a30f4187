//! Progress of long work (at start-up: loading the store, filling the maps; at any time:
//! reading a zone file and filling the maps for it, whether it comes with `--zone-file`, a reload
//! or the API), as operators of Knot or NSD expect: every few seconds a log line with how many
//! records are done, the rate and the time left, and the same as systemd's `STATUS=` when the
//! daemon runs under systemd (at start-up).
//!
//! The loops call [`Progress::add`] per record; it only compares two integers, and reads the
//! clock once every [`CHECK_EVERY`] records, so a loop of millions of records pays nothing
//! noticeable for it.
//!
//! Log fields (stable, for whoever parses the JSON log): `stage`, `done`, `total` (when known),
//! `rate` (records per second), `eta_s` (seconds left, when the total is known), `finished`
//! (true on the last line of a stage).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tracing::info;

/// Records between two looks at the clock.
pub const CHECK_EVERY: u64 = 4096;

/// How often a stage reports by default.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);

/// Overrides [`DEFAULT_INTERVAL`], in milliseconds. Not a documented setting: the tests set it
/// to 0 so that a zone of a few hundred thousand records, read in well under the default
/// interval on a fast machine, still reports mid-way (every [`CHECK_EVERY`] records).
pub const INTERVAL_ENV: &str = "EDGEDNS_PROGRESS_INTERVAL_MS";

type StatusHook = Arc<dyn Fn(&str) + Send + Sync>;

/// Where stages report: the log, and an optional `STATUS=` hook. Cheap to clone; one is made
/// by the daemon and handed to each stage.
#[derive(Clone)]
pub struct Reporter {
    enabled: bool,
    /// Report a stage's end only if it reported part way (see [`Reporter::long_only`]).
    long_only: bool,
    interval: Duration,
    status: Option<StatusHook>,
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter")
            .field("enabled", &self.enabled)
            .field("long_only", &self.long_only)
            .field("interval", &self.interval)
            .field("status", &self.status.is_some())
            .finish()
    }
}

impl Default for Reporter {
    /// Logs every [`DEFAULT_INTERVAL`] (or what [`INTERVAL_ENV`] says), no `STATUS=`.
    fn default() -> Self {
        let interval = std::env::var(INTERVAL_ENV)
            .ok()
            .and_then(|ms| ms.parse().ok())
            .map_or(DEFAULT_INTERVAL, Duration::from_millis);
        Self {
            enabled: true,
            long_only: false,
            interval,
            status: None,
        }
    }
}

impl Reporter {
    /// Reports nothing: for the same work done where nobody waits on a log (the CLI's local
    /// check of a file, a change that is not an import).
    pub fn silent() -> Self {
        Self {
            enabled: false,
            long_only: false,
            interval: DEFAULT_INTERVAL,
            status: None,
        }
    }

    /// Also passes each report's one-line summary to `status` (systemd's `STATUS=`).
    pub fn with_status(mut self, status: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.status = Some(Arc::new(status));
        self
    }

    /// Says nothing of a stage that ends before its first report part way: for work that is
    /// usually small and only sometimes long (a zone file loaded through the API or a reload),
    /// so that the log of a small one stays its own few lines.
    pub fn long_only(mut self) -> Self {
        self.long_only = true;
        self
    }

    /// Whether this reporter reports at all (not [`Reporter::silent`]).
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Starts counting a stage of `total` records (if known).
    pub fn start(&self, stage: &'static str, total: Option<u64>) -> Progress {
        let now = Instant::now();
        Progress {
            reporter: self.clone(),
            stage,
            total,
            done: 0,
            next_check: if self.enabled { CHECK_EVERY } else { u64::MAX },
            started: now,
            last: now,
            reported: false,
        }
    }
}

/// One stage's count. Report the end with [`Progress::finish`].
pub struct Progress {
    reporter: Reporter,
    stage: &'static str,
    total: Option<u64>,
    done: u64,
    /// `done` at which to look at the clock next.
    next_check: u64,
    started: Instant,
    /// When the last report went out.
    last: Instant,
    /// Whether a report went out before the end.
    reported: bool,
}

/// Rate and time left, from the count so far.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    /// Records per second since the start.
    pub rate: f64,
    /// Seconds left at that rate; `None` without a total or before any record.
    pub eta_s: Option<f64>,
}

impl Estimate {
    pub fn new(done: u64, total: Option<u64>, elapsed: Duration) -> Self {
        let secs = elapsed.as_secs_f64();
        let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
        let eta_s = total
            .filter(|_| rate > 0.0)
            .map(|total| total.saturating_sub(done) as f64 / rate);
        Self { rate, eta_s }
    }
}

impl Progress {
    /// Counts `n` more records done.
    #[inline]
    pub fn add(&mut self, n: u64) {
        self.done += n;
        if self.done >= self.next_check {
            self.check(Instant::now());
        }
    }

    /// Sets the count without a look at the clock: for a stage that finishes in one step.
    pub fn set_done(&mut self, done: u64) {
        self.done = done;
    }

    pub fn done(&self) -> u64 {
        self.done
    }

    #[cold]
    fn check(&mut self, now: Instant) {
        self.next_check = self.done.saturating_add(CHECK_EVERY);
        // At the total the stage's end line says it (a last piece can bring the count there
        // before the stage ends).
        if self.total.is_some_and(|t| self.done >= t) {
            return;
        }
        if now.saturating_duration_since(self.last) >= self.reporter.interval {
            self.last = now;
            self.report(now, false);
        }
    }

    /// Reports now, whatever the interval: the start of a stage that runs as one step, so that
    /// the log says what the time until its end went to.
    pub fn report_now(&mut self) {
        if self.reporter.enabled {
            let now = Instant::now();
            self.last = now;
            self.report(now, false);
        }
    }

    /// Reports the stage's end (whatever the interval; with [`Reporter::long_only`], only if
    /// the stage reported before).
    pub fn finish(mut self) {
        if self.reporter.enabled && (self.reported || !self.reporter.long_only) {
            self.report(Instant::now(), true);
        }
    }

    fn report(&mut self, now: Instant, finished: bool) {
        self.reported = true;
        let est = Estimate::new(
            self.done,
            self.total,
            now.saturating_duration_since(self.started),
        );
        // Whole records per second and seconds are plenty for a person and keep the JSON short.
        let rate = est.rate.round() as u64;
        let eta_s = est.eta_s.map(|s| s.ceil() as u64);
        info!(
            stage = self.stage,
            done = self.done,
            total = self.total,
            rate,
            eta_s,
            finished,
            "progress"
        );
        if let Some(status) = &self.reporter.status {
            status(&self.summary(rate, eta_s, finished));
        }
    }

    /// "loading the store: 40960/200000 records, 81920/s, 2 s left".
    fn summary(&self, rate: u64, eta_s: Option<u64>, finished: bool) -> String {
        let mut s = format!("{}: {}", self.stage, self.done);
        if let Some(total) = self.total {
            s.push_str(&format!("/{total}"));
        }
        s.push_str(&format!(" records, {rate}/s"));
        match (finished, eta_s) {
            (true, _) => s.push_str(", done"),
            (false, Some(eta)) => s.push_str(&format!(", {eta} s left")),
            (false, None) => {}
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn rate_and_time_left() {
        let e = Estimate::new(1000, Some(5000), Duration::from_secs(2));
        assert_eq!(e.rate, 500.0);
        assert_eq!(e.eta_s, Some(8.0));
        // No total: a rate, no time left.
        let e = Estimate::new(1000, None, Duration::from_millis(500));
        assert_eq!(e.rate, 2000.0);
        assert_eq!(e.eta_s, None);
        // Nothing done yet or no time passed: no estimate rather than a division by zero.
        assert_eq!(
            Estimate::new(0, Some(10), Duration::from_secs(1)).eta_s,
            None
        );
        assert_eq!(Estimate::new(10, Some(10), Duration::ZERO).rate, 0.0);
        // More done than the total announced (a count that grew): nothing left, not negative.
        assert_eq!(
            Estimate::new(20, Some(10), Duration::from_secs(1)).eta_s,
            Some(0.0)
        );
    }

    fn recording(interval: Duration) -> (Reporter, Arc<Mutex<Vec<String>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let reporter = Reporter::default()
            .with_interval(interval)
            .with_status(move |s| sink.lock().unwrap().push(s.to_string()));
        (reporter, seen)
    }

    #[test]
    fn reports_at_most_once_per_interval_and_at_the_end() {
        let (reporter, seen) = recording(Duration::from_secs(1));
        let mut p = reporter.start("loading the store", Some(3 * CHECK_EVERY));
        let t0 = p.started;
        // The clock is only looked at every CHECK_EVERY records.
        p.done = CHECK_EVERY - 1;
        assert!(p.done < p.next_check);
        // Half a second in: too early.
        p.done = CHECK_EVERY;
        p.check(t0 + Duration::from_millis(500));
        assert!(seen.lock().unwrap().is_empty());
        assert_eq!(p.next_check, 2 * CHECK_EVERY);
        // A second in: a report, with the rate and time left of that moment.
        p.done = 2 * CHECK_EVERY;
        p.check(t0 + Duration::from_secs(1));
        assert_eq!(
            *seen.lock().unwrap(),
            [format!(
                "loading the store: {}/{} records, {}/s, 1 s left",
                2 * CHECK_EVERY,
                3 * CHECK_EVERY,
                2 * CHECK_EVERY
            )]
        );
        // Another half second: too early again, the interval counts from the last report.
        p.done = 3 * CHECK_EVERY;
        p.check(t0 + Duration::from_millis(1500));
        assert_eq!(seen.lock().unwrap().len(), 1);
        p.finish();
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert!(seen[1].ends_with(", done"), "{seen:?}");
    }

    #[test]
    fn report_now_ignores_the_interval() {
        let (reporter, seen) = recording(Duration::from_secs(3600));
        let mut p = reporter.start("importing zone file", Some(10));
        p.report_now();
        p.set_done(10);
        assert_eq!(
            *seen.lock().unwrap(),
            ["importing zone file: 0/10 records, 0/s"]
        );
    }

    #[test]
    fn long_only_reports_the_end_of_stages_that_reported_before() {
        let (reporter, seen) = recording(Duration::ZERO);
        let reporter = reporter.long_only();
        let mut quick = reporter.start("reading zone file", Some(CHECK_EVERY - 1));
        quick.add(CHECK_EVERY - 1);
        quick.finish();
        assert!(seen.lock().unwrap().is_empty());
        let mut long = reporter.start("reading zone file", Some(CHECK_EVERY + 1));
        long.add(CHECK_EVERY);
        long.add(1);
        long.finish();
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(seen[1].ends_with(", done"), "{seen:?}");
    }

    #[test]
    fn silent_reporter_never_reports() {
        let seen = Arc::new(Mutex::new(0));
        let sink = Arc::clone(&seen);
        let reporter = Reporter::silent()
            .with_interval(Duration::ZERO)
            .with_status(move |_| *sink.lock().unwrap() += 1);
        let mut p = reporter.start("x", None);
        for _ in 0..3 * CHECK_EVERY {
            p.add(1);
        }
        assert_eq!(p.done(), 3 * CHECK_EVERY);
        p.report_now();
        p.finish();
        assert_eq!(*seen.lock().unwrap(), 0);
    }
}
