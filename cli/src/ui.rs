//! Output helpers: sizes, times, progress bars on a terminal.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// An error and its causes on one line, without repeating a cause already in the message.
pub fn chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for c in e.chain() {
        let s = c.to_string();
        if out.contains(&s) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&s);
    }
    out
}

/// Names each damaged snapshot file on stderr, and what was done without it; returns the
/// exit code (3 when any was damaged).
pub fn warn_damaged(
    damaged: &[(cairn_store::SnapshotId, cairn_store::Error)],
    left_out: &str,
) -> u8 {
    for (id, e) in damaged {
        eprintln!(
            "warning: snapshot {} is not {left_out}: {e} (`cairn check` reports it, \
             `cairn repair snapshots` sets it aside)",
            id.short()
        );
    }
    if damaged.is_empty() {
        crate::exit::OK
    } else {
        crate::exit::PARTIAL
    }
}

/// Bytes as "12.3 MiB".
pub fn size(n: u64) -> String {
    cairn_store::human_size(n)
}

/// `n` and `what`, with an s unless `n` is 1: "1 file", "2 files".
pub fn plural(n: u64, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// Nanoseconds since the epoch as "2026-11-26 08:38:23" (UTC).
pub fn time(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A byte-count progress bar on stderr when it is a terminal and not quiet; hidden otherwise.
pub struct Bar(ProgressBar);

impl Bar {
    pub fn new(quiet: bool, what: &str) -> Self {
        if quiet || !std::io::stderr().is_terminal() {
            return Self(ProgressBar::hidden());
        }
        let pb = ProgressBar::new_spinner();
        pb.set_style(
            ProgressStyle::with_template("{spinner} {msg} {bytes} ({bytes_per_sec}) {elapsed}")
                .expect("valid template"),
        );
        pb.set_message(what.to_string());
        pb.enable_steady_tick(std::time::Duration::from_millis(200));
        Self(pb)
    }
    /// Prints a line above the bar (or plainly when there is none).
    pub fn println(&self, msg: &str) {
        if self.0.is_hidden() {
            crate::outln!("{msg}");
        } else {
            self.0.println(msg);
        }
    }
    pub fn finish(&self) {
        self.0.finish_and_clear();
    }
}

impl cairn_store::archiver::Progress for Bar {
    fn bytes(&self, n: u64) {
        self.0.inc(n);
    }
    fn warn(&self, msg: &str) {
        self.0.suspend(|| eprintln!("warning: {msg}"));
    }
}

impl cairn_store::restorer::Progress for Bar {
    fn bytes(&self, n: u64) {
        self.0.inc(n);
    }
    fn warn(&self, msg: &str) {
        self.0.suspend(|| eprintln!("warning: {msg}"));
    }
}

/// Parses a point in time: `YYYY-MM-DD`, `YYYY-MM-DD HH:MM[:SS]` (also with `T`, and an
/// optional trailing `Z`), all UTC, or `@SECONDS` since the epoch. Returns ns since the epoch.
pub fn parse_time(s: &str) -> anyhow::Result<i64> {
    let bad = || {
        anyhow::anyhow!("{s:?} is not a time: use YYYY-MM-DD[ HH:MM[:SS]] (UTC) or @UNIX-SECONDS")
    };
    if let Some(secs) = s.strip_prefix('@') {
        let secs: i64 = secs.parse().map_err(|_| bad())?;
        return Ok(secs * 1_000_000_000);
    }
    let s2 = s.trim().trim_end_matches('Z');
    let (date, time) = match s2.split_once([' ', 'T']) {
        Some((d, t)) => (d, t),
        None => (s2, "00:00:00"),
    };
    let d: Vec<i64> = date
        .split('-')
        .map(|x| x.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let t: Vec<i64> = time
        .split(':')
        .map(|x| x.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    if d.len() != 3 || !(2..=3).contains(&t.len()) {
        return Err(bad());
    }
    let (y, m, day) = (d[0], d[1], d[2]);
    let (hh, mm, ss) = (t[0], t[1], *t.get(2).unwrap_or(&0));
    if !(1..=12).contains(&m)
        || !(1..=31).contains(&day)
        || !(0..24).contains(&hh)
        || !(0..60).contains(&mm)
        || !(0..=60).contains(&ss)
    {
        return Err(bad());
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(((days * 86_400) + hh * 3600 + mm * 60 + ss) * 1_000_000_000)
}

/// `println!` that outlives its reader: `cairn snapshots | head` made `println!` panic
/// ("failed printing to stdout: Broken pipe"). Lines to a closed pipe are dropped and the
/// command goes on, so that no operation (a state transition) stops halfway because its
/// output is not read. Any other write error panics as `println!` does.
#[macro_export]
macro_rules! outln {
    () => {
        $crate::ui::write_line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::ui::write_line(format_args!($($arg)*))
    };
}

/// Writes one line to standard output; see [`outln!`].
pub fn write_line(args: std::fmt::Arguments) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => panic!("failed printing to stdout: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_and_print_back() {
        for s in [
            "2026-11-26 08:38:23",
            "1970-01-01 00:00:00",
            "2000-02-29 23:59:59",
        ] {
            assert_eq!(time(parse_time(s).unwrap()), s);
        }
        assert_eq!(
            parse_time("2026-11-26T08:38:23Z").unwrap(),
            parse_time("2026-11-26 08:38:23").unwrap()
        );
        assert_eq!(
            parse_time("@86400").unwrap(),
            parse_time("1970-01-02").unwrap()
        );
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("2026-13-01").is_err());
    }
}
