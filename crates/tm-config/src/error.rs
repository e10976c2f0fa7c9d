//! What can be wrong with the settings: one [`SettingError`] per problem, each naming its
//! `TM_*` variable, all of them gathered into one [`ConfigError`].

use std::fmt;
use std::time::Duration;

/// One problem with one setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettingError {
    /// The environment variable that names the setting, e.g. `TM_LISTEN`.
    pub setting: String,
    pub message: String,
}

/// Every problem found in the configuration.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub struct ConfigError(pub Vec<SettingError>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration:")?;
        for e in &self.0 {
            write!(f, "\n  {}: {}", e.setting, e.message)?;
        }
        Ok(())
    }
}

/// `TM_DATABASE_URL` for the key `database_url`; the standard `OTEL_*` variables keep
/// their own names.
pub(crate) fn env_name(key: &str) -> String {
    if crate::otel::is_standard_key(key) {
        key.to_ascii_uppercase()
    } else {
        format!("TM_{}", key.to_ascii_uppercase())
    }
}

/// The problems found so far, in the order the sections are checked.
#[derive(Debug, Default)]
pub(crate) struct Problems(Vec<SettingError>);

impl Problems {
    /// Records that the setting `key` (as in the TOML file) is wrong.
    pub(crate) fn add(&mut self, key: &str, message: impl Into<String>) {
        self.0.push(SettingError {
            setting: env_name(key),
            message: message.into(),
        });
    }

    /// Each of these counts must be at least 1.
    pub(crate) fn at_least_one(&mut self, counts: &[(&str, u64)]) {
        for (key, value) in counts {
            if *value == 0 {
                self.add(key, "must be at least 1");
            }
        }
    }

    /// Each of these durations must be longer than zero.
    pub(crate) fn positive(&mut self, durations: &[(&str, Duration)]) {
        for (key, value) in durations {
            if value.is_zero() {
                self.add(key, "must be greater than zero");
            }
        }
    }

    /// `config` when nothing was found wrong; otherwise every problem. A section reports
    /// a problem whenever it yields nothing, so `None` comes with at least one.
    pub(crate) fn into_result<T>(self, config: Option<T>) -> Result<T, ConfigError> {
        match config {
            Some(config) if self.0.is_empty() => Ok(config),
            _ => Err(ConfigError(self.0)),
        }
    }
}
