//! Turns library progress events into what the user sees: progress bars on
//! a terminal, plain lines otherwise, JSON lines with `--json`. Everything
//! goes to stderr; stdout carries only results.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use broker_oci::Digest;
use broker_registry::{BlobOutcome, Reporter};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One bar per blob and a total.
    Bars,
    /// One line per finished blob and per retry.
    Lines,
    /// One JSON object per event.
    Json,
}

impl Mode {
    /// Bars on a terminal, lines in pipes and logs, JSON when asked.
    pub fn detect(json: bool) -> Self {
        if json {
            Self::Json
        } else if std::io::stderr().is_terminal() {
            Self::Bars
        } else {
            Self::Lines
        }
    }
}

/// The binary's [`Reporter`].
pub struct Progress {
    mode: Mode,
    verbose: u8,
    bars: MultiProgress,
    active: Mutex<HashMap<Digest, ProgressBar>>,
}

impl Progress {
    /// A reporter in `mode`; `verbose` > 0 also reports blobs that needed no
    /// transfer.
    pub fn new(mode: Mode, verbose: u8) -> Self {
        let target = if mode == Mode::Bars {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        Self {
            mode,
            verbose,
            bars: MultiProgress::with_draw_target(target),
            active: Mutex::new(HashMap::new()),
        }
    }

    /// Prints a line above the bars (or plainly).
    pub fn line(&self, text: &str) {
        match self.mode {
            Mode::Bars => {
                let _ = self.bars.println(text);
            }
            Mode::Lines => eprintln!("{text}"),
            Mode::Json => eprintln!("{}", serde_json::json!({"event": "message", "text": text})),
        }
    }

    fn active(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, ProgressBar>> {
        self.active
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn short(digest: &Digest) -> String {
    digest.hex()[..12].to_owned()
}

fn human(bytes: u64) -> String {
    indicatif::HumanBytes(bytes).to_string()
}

impl Reporter for Progress {
    fn blob_started(&self, image: &str, digest: &Digest, size: u64) {
        if self.mode != Mode::Bars {
            return;
        }
        let bar = self.bars.add(ProgressBar::new(size));
        let style = ProgressStyle::with_template(
            "{prefix:>12} {bar:30} {bytes:>10}/{total_bytes:<10} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(short(digest));
        bar.set_message(image.to_owned());
        if let Some(old) = self.active().insert(*digest, bar) {
            old.finish_and_clear();
        }
    }

    fn blob_progress(&self, digest: &Digest, bytes: u64) {
        if let Some(bar) = self.active().get(digest) {
            bar.inc(bytes);
        }
    }

    fn blob_resumed(&self, image: &str, digest: &Digest, offset: u64) {
        if let Some(bar) = self.active().get(digest) {
            bar.set_position(offset);
        }
        match self.mode {
            Mode::Json => eprintln!(
                "{}",
                serde_json::json!({"event": "resume", "image": image, "digest": digest.to_string(), "offset": offset})
            ),
            _ => self.line(&format!(
                "  resumed {} at {}  {image}",
                short(digest),
                human(offset)
            )),
        }
    }

    fn blob_restarted(&self, image: &str, digest: &Digest, why: &str) {
        if let Some(bar) = self.active().get(digest) {
            bar.set_position(0);
        }
        match self.mode {
            Mode::Json => eprintln!(
                "{}",
                serde_json::json!({"event": "restart", "image": image, "digest": digest.to_string(), "why": why})
            ),
            _ => self.line(&format!(
                "restarted {} from byte 0 ({why})  {image}",
                short(digest)
            )),
        }
    }

    fn blob_finished(&self, image: &str, digest: &Digest, size: u64, outcome: BlobOutcome) {
        if let Some(bar) = self.active().remove(digest) {
            bar.finish_and_clear();
        }
        let verb = match outcome {
            BlobOutcome::Uploaded => "uploaded",
            BlobOutcome::Mounted => "mounted",
            BlobOutcome::Existed => "exists",
        };
        match self.mode {
            Mode::Json => eprintln!(
                "{}",
                serde_json::json!({"event": "blob", "image": image, "digest": digest.to_string(), "size": size, "outcome": outcome})
            ),
            _ if outcome == BlobOutcome::Existed && self.verbose == 0 => {}
            _ => self.line(&format!(
                "{verb:>9} {} {:>10}  {image}",
                short(digest),
                human(size)
            )),
        }
    }

    fn retrying(&self, what: &str, attempt: u32, delay: Duration, why: &str) {
        match self.mode {
            Mode::Json => eprintln!(
                "{}",
                serde_json::json!({"event": "retry", "what": what, "attempt": attempt, "delay_ms": delay.as_millis() as u64, "why": why})
            ),
            _ => self.line(&format!(
                "    retry {what} (attempt {attempt} failed: {why}; next in {:.1}s)",
                delay.as_secs_f64()
            )),
        }
    }

    fn manifest_pushed(&self, reference: &str) {
        match self.mode {
            Mode::Json => eprintln!(
                "{}",
                serde_json::json!({"event": "manifest", "reference": reference})
            ),
            _ if self.verbose > 0 => self.line(&format!(" manifest {reference}")),
            _ => {}
        }
    }
}

impl broker_build::deps::BuildOutput for Progress {
    fn line(&self, image: &str, line: &str) {
        // Step headers always; the steps' own output with -v.
        if line.starts_with("Step ") || self.verbose > 0 {
            self.line(&format!("  [{image}] {line}"));
        }
    }
}

impl broker_build::build::BuildReporter for Progress {
    fn stage(&self, image: &str, message: &str) {
        match self.mode {
            Mode::Json => eprintln!(
                "{}",
                serde_json::json!({"event": "stage", "image": image, "message": message})
            ),
            _ => self.line(&format!("  [{image}] {message}")),
        }
    }

    fn notice(&self, message: &str) {
        match self.mode {
            Mode::Json => eprintln!(
                "{}",
                serde_json::json!({"event": "notice", "message": message})
            ),
            _ => self.line(&format!("note: {message}")),
        }
    }
}

impl broker_cluster::Reporter for Progress {
    fn line(&self, text: &str) {
        Progress::line(self, text);
    }
}

/// A warning on stderr: `warning: …`, or with `--json` a JSON event like
/// every other line the tool writes there.
pub fn warning(json: bool, message: &str) {
    if json {
        eprintln!(
            "{}",
            serde_json::json!({"event": "warning", "message": message})
        );
    } else {
        eprintln!("warning: {message}");
    }
}
