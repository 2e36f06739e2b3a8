//! The progress bar: one tick per measurement, the message says what runs now.
use indicatif::{ProgressBar, ProgressStyle};

/// Progress of the run.
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar of `total` steps.
    pub fn new(total: u64) -> Progress {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template("[{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Progress { bar }
    }

    /// Names what runs now.
    pub fn doing(&self, what: &str) {
        self.bar.set_message(what.to_string());
        if self.bar.is_hidden() {
            eprintln!("  .. {what}");
        }
    }

    /// One step done.
    pub fn tick(&self) {
        self.bar.inc(1);
    }

    /// Prints a line above the bar.
    pub fn say(&self, line: &str) {
        self.bar.println(line);
        if self.bar.is_hidden() {
            eprintln!("{line}");
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
