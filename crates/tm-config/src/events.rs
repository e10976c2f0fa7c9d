//! Change events: how long the outbox keeps them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Problems;
use crate::render::Lines;

/// The event settings as read.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct EventsRaw {
    /// How long the outbox keeps an event: how far behind a reader of the event API may
    /// fall.
    #[serde(with = "humantime_serde")]
    pub events_retention: Duration,
}

impl Default for EventsRaw {
    fn default() -> Self {
        Self {
            events_retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Change events.
#[derive(Clone, Debug)]
pub struct EventsConfig {
    /// Events older than this are deleted.
    pub retention: Duration,
}

impl EventsRaw {
    pub(crate) fn check(self, problems: &mut Problems) -> EventsConfig {
        problems.positive(&[("events_retention", self.events_retention)]);
        EventsConfig {
            retention: self.events_retention,
        }
    }
}

impl EventsConfig {
    /// The event lines of `check-config`.
    pub(crate) fn render(&self, out: &mut Lines) {
        out.duration("events_retention", self.retention);
    }
}
