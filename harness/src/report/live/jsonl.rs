//! The `trials.jsonl` reporter: every record, skipped cells included, appended as it arrives.

use wedge_core::sync::Mutex;

use super::{Event, Reporter};
use crate::model::record::JsonlWriter;

/// Appends each record to a `trials.jsonl`.
pub struct JsonlReporter<'a> {
    pub writer: &'a Mutex<JsonlWriter>,
}

impl Reporter for JsonlReporter<'_> {
    fn report(&self, event: &Event<'_>) -> std::io::Result<()> {
        match event {
            Event::Skipped(r) | Event::TrialFinished(r) => self.writer.lock().append(r),
            _ => Ok(()),
        }
    }
}
