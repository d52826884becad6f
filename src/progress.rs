//! The replay's progress bar on standard error.
//!
//! Owns: drawing how far a replay has read its capture files (indicatif),
//! from the pipeline's [`Progress`] reports.
//!
//! Must not: draw when standard error is not a terminal (the caller
//! decides), or leave the bar on screen after the replay (the summary
//! follows it).

use qmwatch_sensor::pipeline::Progress;

/// A progress bar of capture bytes read, with rate and time left.
pub struct Bar(Option<indicatif::ProgressBar>);

impl Bar {
    /// A bar not yet shown: it appears when the replay starts.
    pub fn new() -> Bar {
        Bar(None)
    }
}

impl Progress for Bar {
    fn start(&mut self, total_bytes: u64) {
        let b = indicatif::ProgressBar::new(total_bytes);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} {bytes}/{total_bytes} {bar:40} {bytes_per_sec} eta {eta}",
        ) {
            b.set_style(style);
        }
        self.0 = Some(b);
    }

    fn advance(&mut self, bytes_done: u64) {
        if let Some(b) = &self.0 {
            b.set_position(bytes_done);
        }
    }

    fn finish(&mut self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}
