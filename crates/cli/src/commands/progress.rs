//! How a job's progress is shown: a bar on a terminal; plain lines when stderr is a
//! pipe or a file (one every few seconds, as cargo and `hf download` print them).
//! Speed and ETA are the hive's own figures, measured over what this run fetched.

use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

use crate::commands::gguf::human_bytes;

/// How often a progress line is printed when stderr is not a terminal.
const LINE_EVERY: Duration = Duration::from_secs(5);

/// What the job's progress is counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Bytes,
    Steps,
}

enum Sink {
    /// A terminal: one bar, redrawn.
    Bar {
        bar: ProgressBar,
        unit: Option<Unit>,
    },
    /// A pipe or a file: lines.
    Lines { last: Option<Instant> },
    /// `--json`: nothing but the answer on stdout.
    Quiet,
}

/// Shows one job's events on stderr.
pub struct JobDisplay {
    sink: Sink,
}

impl JobDisplay {
    /// A bar when stderr is a terminal, lines otherwise, nothing with `quiet`.
    pub fn new(quiet: bool) -> Self {
        let sink = if quiet {
            Sink::Quiet
        } else if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(spinner_style());
            bar.enable_steady_tick(Duration::from_millis(200));
            Sink::Bar { bar, unit: None }
        } else {
            Sink::Lines { last: None }
        };
        Self { sink }
    }

    /// A `narration` event: printed as it comes.
    pub fn narration(&mut self, data: &Value) {
        if data["action"] == "done" {
            // the job's answer says it, once
            return;
        }
        let message = data["message"].as_str().unwrap_or("");
        match &self.sink {
            Sink::Bar { bar, .. } => bar.println(message),
            Sink::Lines { .. } => line(message),
            Sink::Quiet => {}
        }
    }

    /// A `progress` event: bytes moved.
    pub fn progress(&mut self, data: &Value) {
        let done = data["bytes_done"].as_u64().unwrap_or(0);
        let total = data["bytes_total"].as_u64();
        let rate = data["bytes_per_sec"].as_f64().unwrap_or(0.0);
        let eta = data["eta_secs"].as_f64();
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let speed = format!("{}/s", human_bytes(rate.max(0.0) as u64));
        let eta_text = eta
            .filter(|e| e.is_finite() && *e >= 0.0)
            .map(|e| format!("eta {}", human_secs(e)));
        match &mut self.sink {
            Sink::Bar { bar, unit } => {
                if *unit != Some(Unit::Bytes) {
                    *unit = Some(Unit::Bytes);
                    bar.set_style(bytes_style(total.is_some()));
                }
                if let Some(t) = total {
                    bar.set_length(t);
                }
                bar.set_position(done);
                bar.set_message(match eta_text {
                    Some(e) => format!("{speed} {e}"),
                    None => speed,
                });
            }
            Sink::Lines { last } => {
                if !due(last) {
                    return;
                }
                let amount = match total {
                    Some(t) if t > 0 => format!(
                        "{}% ({} of {})",
                        done.saturating_mul(100) / t,
                        human_bytes(done),
                        human_bytes(t)
                    ),
                    _ => human_bytes(done),
                };
                let eta = eta_text.map(|e| format!(", {e}")).unwrap_or_default();
                line(&format!("downloading {amount} at {speed}{eta}"));
            }
            Sink::Quiet => {}
        }
    }

    /// A `step` event: steps of work done (crates compiled), and what runs now.
    pub fn step(&mut self, data: &Value) {
        let done = data["done"].as_u64().unwrap_or(0);
        let total = data["total"].as_u64();
        let unit = data["unit"].as_str().unwrap_or("steps");
        let current = data["current"].as_str().unwrap_or("");
        match &mut self.sink {
            Sink::Bar { bar, unit: shown } => {
                if *shown != Some(Unit::Steps) {
                    *shown = Some(Unit::Steps);
                    bar.set_style(steps_style(unit, total.is_some()));
                }
                if let Some(t) = total {
                    bar.set_length(t);
                }
                bar.set_position(done);
                bar.set_message(current.to_owned());
            }
            Sink::Lines { last } => {
                if !due(last) {
                    return;
                }
                let of = total.map(|t| format!(" of {t}")).unwrap_or_default();
                let now = if current.is_empty() {
                    String::new()
                } else {
                    format!(" ({current})")
                };
                line(&format!("{done}{of} {unit}{now}"));
            }
            Sink::Quiet => {}
        }
    }

    /// Clears the bar before the answer is printed.
    pub fn finish(&self) {
        if let Sink::Bar { bar, .. } = &self.sink {
            bar.finish_and_clear();
        }
    }
}

/// Whether a line is due, and if so, notes that one goes out now.
fn due(last: &mut Option<Instant>) -> bool {
    if last.is_some_and(|t| t.elapsed() < LINE_EVERY) {
        return false;
    }
    *last = Some(Instant::now());
    true
}

fn line(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{text}");
    let _ = err.flush();
}

/// `1h02m`, `3m05s`, `42s`.
fn human_secs(secs: f64) -> String {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let s = secs.round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

fn spinner_style() -> ProgressStyle {
    style("{spinner} {elapsed} {msg}")
}

fn bytes_style(known_total: bool) -> ProgressStyle {
    if known_total {
        style("{bar:40} {bytes}/{total_bytes} {msg}")
    } else {
        style("{spinner} {bytes} {msg}")
    }
}

fn steps_style(unit: &str, known_total: bool) -> ProgressStyle {
    if known_total {
        style(&format!(
            "{{bar:40}} {{pos}}/{{len}} {unit} {{elapsed}} {{msg}}"
        ))
    } else {
        style(&format!("{{spinner}} {{pos}} {unit} {{elapsed}} {{msg}}"))
    }
}

#[cfg(test)]
mod tests {
    use super::human_secs;

    #[test]
    fn durations_read_like_a_clock() {
        assert_eq!(human_secs(0.2), "0s");
        assert_eq!(human_secs(42.4), "42s");
        assert_eq!(human_secs(185.0), "3m05s");
        assert_eq!(human_secs(3720.0), "1h02m");
    }
}
